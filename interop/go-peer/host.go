package main

// The libp2p host every mode uses: an Ed25519 identity, TCP and QUIC v1,
// noise as the only security protocol and yamux as the only muxer
// (docs/protocol.md §2), and a notifier that reports each connection with
// what was negotiated on it.

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// identity returns the key for a 64-hex-digit Ed25519 seed, or a fresh key.
func identity(seedHex string) (crypto.PrivKey, error) {
	if seedHex == "" {
		k, _, err := crypto.GenerateEd25519Key(nil)
		return k, err
	}
	seed, err := hex.DecodeString(seedHex)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("--seed must be %d hex bytes", ed25519.SeedSize)
	}
	return crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed))
}

func newHost(key crypto.PrivKey, listen []string, extra ...libp2p.Option) (host.Host, error) {
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.DisableRelay(),
	}
	h, err := libp2p.New(append(opts, extra...)...)
	if err != nil {
		return nil, err
	}
	h.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			emit("connected", connInfo(c))
		},
		DisconnectedF: func(_ network.Network, c network.Conn) {
			emit("disconnected", map[string]any{"peer": c.RemotePeer().String()})
		},
	})
	return h, nil
}

// connInfo describes what a connection negotiated, as reported in events and by probe.
func connInfo(c network.Conn) map[string]any {
	st := c.ConnState()
	return map[string]any{
		"peer":        c.RemotePeer().String(),
		"direction":   c.Stat().Direction.String(),
		"transport":   st.Transport,
		"security":    string(st.Security),
		"muxer":       string(st.StreamMultiplexer),
		"remote_addr": c.RemoteMultiaddr().String(),
		"local_addr":  c.LocalMultiaddr().String(),
	}
}

// fullAddrs are the host's addresses with /p2p/<id>, as the ready line reports them.
func fullAddrs(h host.Host) []string {
	var out []string
	for _, a := range h.Addrs() {
		out = append(out, a.Encapsulate(ma.StringCast("/p2p/"+h.ID().String())).String())
	}
	return out
}

func parsePeerAddrs(addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, a := range addrs {
		info, err := peer.AddrInfoFromString(a)
		if err != nil {
			return nil, fmt.Errorf("%q is not a multiaddr with /p2p/<id>: %v", a, err)
		}
		out = append(out, *info)
	}
	return out, nil
}
