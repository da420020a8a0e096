package main

// The relay mode: a circuit relay v2 hop (go-libp2p's), accepting
// reservations from peers on any address, lab and loopback included.

import (
	"github.com/libp2p/go-libp2p/core/host"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
)

func startRelay(h host.Host) (*relayv2.Relay, error) {
	return relayv2.New(h,
		relayv2.WithInfiniteLimits(),
		relayv2.WithReservationAddressFilter(func(ma.Multiaddr) bool { return true }),
	)
}
