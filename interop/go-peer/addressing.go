package main

// Overlay addressing, docs/protocol.md §3: a node's IPv4 (in 100.64.0.0/10)
// and IPv6 (in the network's ULA /64) are pure functions of its peer ID bytes
// and the network name.

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
)

const (
	maxAddressIndex = 1024 // §3.1: Hello.address_index and NodeRecord.address_index are 0..1024
	v4HostBits      = 22   // 100.64.0.0/10
	v4Base          = 0x64400000
)

// Overlay is a node's overlay addresses and the IPv4 candidate index used.
type Overlay struct {
	IPv4  netip.Addr
	IPv6  netip.Addr
	Index uint32
}

func sha256Join(parts ...[]byte) [32]byte {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write(p)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// deriveIPv4 tries candidates index, index+1, ... (at most 1024) and returns the
// first whose host part is neither 0 nor 2^22-1, with the candidate used (§3.1).
func deriveIPv4(peerID []byte, network string, index uint32) (netip.Addr, uint32, error) {
	for i := uint64(index); i < uint64(index)+maxAddressIndex; i++ {
		var be [4]byte
		binary.BigEndian.PutUint32(be[:], uint32(i))
		d := sha256Join([]byte("p2pvpn/v4"), []byte(network), peerID, be[:])
		host := binary.BigEndian.Uint32(d[:4]) % (1 << v4HostBits)
		if host == 0 || host == (1<<v4HostBits)-1 {
			continue
		}
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], v4Base|host)
		return netip.AddrFrom4(a), uint32(i), nil
	}
	return netip.Addr{}, 0, fmt.Errorf("no usable IPv4 candidate from index %d", index)
}

// v6Prefix is the network's /64: fd || SHA-256("p2pvpn/ula" 0 net)[0:5] || 0000 (§3.2).
func v6Prefix(network string) [8]byte {
	d := sha256Join([]byte("p2pvpn/ula"), []byte(network))
	var p [8]byte
	p[0] = 0xfd
	copy(p[1:6], d[:5])
	return p
}

func deriveIPv6(peerID []byte, network string) netip.Addr {
	var a [16]byte
	p := v6Prefix(network)
	copy(a[:8], p[:])
	d := sha256Join([]byte("p2pvpn/v6"), []byte(network), peerID)
	copy(a[8:], d[:8])
	return netip.AddrFrom16(a)
}

func deriveOverlay(peerID []byte, network string, index uint32) (Overlay, error) {
	v4, used, err := deriveIPv4(peerID, network, index)
	if err != nil {
		return Overlay{}, err
	}
	return Overlay{IPv4: v4, IPv6: deriveIPv6(peerID, network), Index: used}, nil
}
