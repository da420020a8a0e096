package main

// The relay mode: a circuit relay v2 hop (go-libp2p's), accepting
// reservations from peers on any address, lab and loopback included. The
// same hop serves `vpn --relay`, which also offers the relay role in its
// record (§13.2) when its certificate grants it (§15.2, §15.9.4).

import (
	"errors"

	"github.com/libp2p/go-libp2p/core/host"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
)

func startRelay(h host.Host) (*relayv2.Relay, error) {
	return relayv2.New(h,
		relayv2.WithResources(relayResources()),
		relayv2.WithInfiniteLimits(),
		relayv2.WithReservationAddressFilter(func(ma.Multiaddr) bool { return true }),
	)
}

// relayResources: go-libp2p's defaults; circuits are unlimited in time and bytes (WithInfiniteLimits, §13.2).
func relayResources() relayv2.Resources { return relayv2.DefaultResources() }

// relayRole is what our record says of the hop startRelay runs (§12.4).
func relayRole() *RelayRole {
	rc := relayResources()
	return &RelayRole{MaxReservations: uint32(rc.MaxReservations), MaxCircuits: uint32(rc.MaxCircuits)}
}

// checkOwnRoles: a node whose certificate lacks the relay bit refuses to start with that role,
// since no member would count it (§15.9.4). own is nil in a network without owner: any node may offer it.
func checkOwnRoles(own *Certificate, relay bool) error {
	if relay && own != nil && own.Roles&roleRelay == 0 {
		return errors.New("our certificate does not grant the relay role (roles: " + rolesOrNone(own.Roles) +
			"); ask an admin for one with --roles relay")
	}
	return nil
}

func rolesOrNone(roles uint32) string {
	if t := rolesText(roles); t != "" {
		return t
	}
	return "none"
}
