package main

// The vpn mode: a p2pvpn node without a TUN. It accepts (and with --peer
// opens) tunnels, answers echo traffic sent to its overlay addresses through
// the Responder, and publishes its own signed NodeRecord in the DHT.

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	backoffFirst = 500 * time.Millisecond
	backoffMax   = 4 * time.Second
	backoffReset = 5 * time.Second
)

type vpnPeer struct{ current *tunnel }

type VPN struct {
	h         host.Host
	network   string
	self      Overlay
	mtu       uint32
	keepalive time.Duration
	allowAny  bool
	allow     map[peer.ID]bool
	resp      *Responder
	member    *Member                // nil unless the network has an owner (§15)
	dg        *dgNode                // the UDP socket of the datagram path (§16); nil with --udp=false
	traffic   []*trafficGen          // --traffic-to: answers to our own traffic are taken before the responder
	policy    *PolicyService         // the network policy (§17); nil unless the network has an owner
	demand    atomic.Pointer[demand] // --on-demand: address lookups for --traffic-to (§18); nil: off
	static    map[peer.ID]bool       // --peer: never closed for idleness (§18.4)
	relay     *RelayRole             // --relay: the relay role we offer (§13.2); nil: none

	mu       sync.Mutex
	peers    map[peer.ID]*vpnPeer
	counters map[string]uint64
}

func (v *VPN) timeout() time.Duration { return 4 * v.keepalive } // §7.4: four intervals

func (v *VPN) count(name string) { v.countN(name, 1) }

func (v *VPN) countN(name string, n uint64) {
	v.mu.Lock()
	v.counters[name] += n
	v.mu.Unlock()
}

func (v *VPN) stats() map[string]any {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := map[string]uint64{}
	for k, n := range v.counters {
		c[k] = n
	}
	tunnels := map[string]any{}
	for id, p := range v.peers {
		if t := p.current; t != nil {
			t.kaMu.Lock()
			st := map[string]any{"rtt_ms": float64(t.rtt.Microseconds()) / 1000, "initiator": t.initiator == v.h.ID(), "path": pathStream}
			t.kaMu.Unlock()
			if t.dg != nil {
				for k, x := range t.dg.stats() {
					st[k] = x
				}
			}
			tunnels[id.String()] = st
		}
	}
	st := map[string]any{"counters": c, "tunnels": tunnels}
	if v.policy != nil {
		st["policy"] = v.policy.status()
	}
	if v.dg != nil {
		st["udp_indexes"] = v.dg.indexes() // receiver_indexes held: at most 3 per tunnel (§16.4)
	}
	return st
}

// checkHello is §7.2; it returns closeNormal when the Hello is acceptable.
func (v *VPN) checkHello(h *Hello, remote peer.ID) (uint32, string) {
	if h.Version != protocolVersion {
		return closeVersionMismatch, "version is not 1"
	}
	if h.Network != v.network {
		return closeWrongNetwork, "network " + h.Network + " is not " + v.network
	}
	if h.MTU < minMTU || h.MTU > maxMTU {
		return closeProtocolError, "mtu out of 1280..65535"
	}
	if h.AddressIndex > maxAddressIndex {
		return closeAddressMismatch, "address_index over 1024"
	}
	if v.member != nil && len(h.Certificate) > 0 { // §15.9.1: the certificate replaces the derivation
		return v.member.checkHello(h, remote)
	}
	v4, used, err := deriveIPv4([]byte(remote), v.network, h.AddressIndex)
	if err != nil || used != h.AddressIndex || v4 != h.IPv4 {
		return closeAddressMismatch, "ipv4/address_index do not match the peer ID"
	}
	if deriveIPv6([]byte(remote), v.network) != h.IPv6 {
		return closeAddressMismatch, "ipv6 does not match the peer ID"
	}
	if v.member != nil && !v.allow[remote] { // a stranger in an owned network: only if listed
		return closeNotAuthorized, "no membership certificate, and not on the allow list"
	}
	if !v.allowAny && !v.allow[remote] {
		return closeNotAuthorized, "peer is not on the allow list"
	}
	return closeNormal, ""
}

// preferred is §7.5: different initiators -> the smaller initiator's; same -> the newer.
func preferred(a, b *tunnel) *tunnel {
	if a.initiator != b.initiator {
		if bytes.Compare([]byte(a.initiator), []byte(b.initiator)) < 0 {
			return a
		}
		return b
	}
	if b.upAt.After(a.upAt) {
		return b
	}
	return a
}

func (v *VPN) attach(t *tunnel) {
	v.mu.Lock()
	p := v.peers[t.remote]
	if p == nil {
		p = &vpnPeer{}
		v.peers[t.remote] = p
	}
	var loser *tunnel
	if old := p.current; old == nil {
		p.current = t
	} else {
		keep := preferred(old, t)
		loser = old
		if keep == old {
			loser = t
		}
		p.current = keep
	}
	v.mu.Unlock()
	if loser != nil {
		emit("duplicate", map[string]any{"peer": t.remote.String(), "closing_initiator_local": loser.initiator == v.h.ID()})
		go loser.closeWith(closeDuplicate, "duplicate tunnel", false)
	}
}

func (v *VPN) detach(t *tunnel) {
	v.mu.Lock()
	if p := v.peers[t.remote]; p != nil && p.current == t {
		p.current = nil
	}
	v.mu.Unlock()
}

func (v *VPN) current(id peer.ID) *tunnel {
	v.mu.Lock()
	defer v.mu.Unlock()
	if p := v.peers[id]; p != nil {
		return p.current
	}
	return nil
}

// receive applies §7.3 to each packet of a Data frame from t's peer.
func (v *VPN) receive(t *tunnel, packets [][]byte) {
	v.countN("packets_in", uint64(len(packets)))
	for _, p := range packets {
		var src netip.Addr
		switch {
		case p[0]>>4 == 4 && len(p) >= 20:
			src = netip.AddrFrom4([4]byte(p[12:16]))
			if src != t.hello.IPv4 {
				v.count("spoofed_source")
				continue
			}
		case p[0]>>4 == 6 && len(p) >= 40:
			src = netip.AddrFrom16([16]byte(p[8:24]))
			if src != t.hello.IPv6 {
				v.count("spoofed_source")
				continue
			}
		default:
			v.count("malformed")
			continue
		}
		if len(p) > int(v.mtu) {
			v.count("too_big")
			continue
		}
		if v.policy != nil { // §17.5, after the source check of §7.3
			if reason := v.policy.fw.inbound(t.remote, p, time.Now()); reason != "" {
				v.count("policy_denied")
				continue
			}
		}
		t.traffic.Add(1) // §18.4: a packet delivered (past §7.3 and §17.5) is traffic; a dropped one is not
		if v.takeTraffic(p) {
			v.count("traffic_replies")
			continue
		}
		reply, verdict := v.resp.Handle(p)
		v.count(verdict)
		if reply != nil {
			// The reply goes to the peer owning its destination: the sender (checked above).
			if cur := v.current(t.remote); cur != nil {
				cur.sendPacket(reply)
				v.count("replies")
			}
		}
	}
}

func (v *VPN) takeTraffic(p []byte) bool {
	for _, g := range v.traffic {
		if g.take(p) {
			return true
		}
	}
	return false
}

// handleStream accepts a tunnel the peer opened.
func (v *VPN) handleStream(s network.Stream) {
	newTunnel(v, s, s.Conn().RemotePeer()).run()
}

// dialLoop keeps a tunnel to info open, re-dialling with the backoff of §7.6.
func (v *VPN) dialLoop(ctx context.Context, info peer.AddrInfo) {
	delay := backoffFirst
	for ctx.Err() == nil {
		if v.current(info.ID) != nil {
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := v.h.Connect(dctx, info)
		var s network.Stream
		if err == nil {
			s, err = v.h.NewStream(dctx, info.ID, tunnelProtocol)
		}
		cancel()
		if err != nil {
			emit("dial_failed", map[string]any{"peer": info.ID.String(), "error": err.Error()})
		} else {
			start := time.Now()
			code := newTunnel(v, s, v.h.ID()).run()
			if time.Since(start) >= backoffReset {
				delay = backoffFirst
			}
			if code != nil && *code == closeDuplicate {
				continue // the kept tunnel carries on; no re-dial because of it (§7.5)
			}
		}
		jitter := 0.8 + 0.4*rand.Float64()
		sleepCtx(ctx, time.Duration(float64(delay)*jitter))
		delay = min(delay*2, backoffMax)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
