package main

// Hole punching (DCUtR, /libp2p/dcutr) behind a NAT, for `vpn --reserve MA`:
// hold a slot on a circuit relay v2, and let go-libp2p's own holepunch
// service upgrade relayed connections to direct ones, in either role.
//
// Why not libp2p.EnableHolePunching(): the service it builds gets its
// addresses from the host's HolePunchAddrs, which keeps only addresses
// manet.IsPublicAddr accepts (go-libp2p p2p/host/basic/addrs_manager.go:498),
// and go-multiaddr lists both lab ranges, 198.18.0.0/15 and 203.0.113.0/24,
// as unroutable (net/private.go:39,41). With no "public" address the service
// never registers its stream handler (p2p/protocol/holepunch/svc.go:113-152): it neither
// answers nor starts a hole punch. So we build the same service
// (holepunch.NewService) with the one input changed: the addresses to offer
// in CONNECT are what identify says peers observed us at (go-libp2p's
// observedaddrs.Manager, one observer is enough: the relay), whatever the
// range. Everything else (who starts, CONNECT/SYNC, RTT/2, the simultaneous
// dials and the security roles) is go-libp2p v0.51's code, unchanged.
//
// Then the tunnel moves (docs/protocol.md §13.5): while a peer's tunnel runs
// over a relay and a direct connection to it exists, the peer with the
// smaller peer ID opens a new tunnel stream, which goes over the direct
// connection; the duplicate rule (§7.5, rules 1-2 suffice when the smaller
// peer opens it) keeps the new one on both ends.

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/observedaddrs"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

const (
	reserveRetry   = 2 * time.Second        // after a failed reservation
	reserveRefresh = 0.5                    // renew after this share of the reservation's lifetime
	moveInterval   = 500 * time.Millisecond // checks for relayed tunnels that could go direct (§13.5)
	moveRetry      = 5 * time.Second        // between two tries to move one peer's tunnel
)

// punchHostOptions turn on what a NATed peer needs besides the default host:
// the relay client transport (dial and accept /p2p-circuit). stock adds
// go-libp2p's own hole punching instead of ours, to show it stays off in the lab.
func punchHostOptions(stock bool) []libp2p.Option {
	opts := []libp2p.Option{libp2p.EnableRelay()}
	if stock {
		opts = append(opts, libp2p.EnableHolePunching(holepunch.WithTracer(stockTracer{})))
	}
	return opts
}

// stockTracer reports the stock service's hole punch events (there are none while it waits for a public address).
type stockTracer struct{}

func (stockTracer) Trace(evt *holepunch.Event) {
	emit("holepunch", map[string]any{"type": evt.Type, "peer": evt.Remote.String(), "stock": true})
}

type puncher struct {
	h      host.Host
	obs    *observedaddrs.Manager
	svc    *holepunch.Service
	relays map[peer.ID]bool

	mu       sync.Mutex
	reserved map[peer.ID]string // relay -> our /p2p-circuit address through it
	offered  []string           // last addresses offered in CONNECT
	events   map[string]int     // holepunch tracer events by type (+ "/ok" for successes)
}

// startPunch builds the hole punch service (unless stock: the host has go-libp2p's),
// keeps a slot on each relay and moves v's tunnels off relays.
func startPunch(ctx context.Context, h host.Host, v *VPN, relays []peer.AddrInfo, stock bool) (*puncher, error) {
	p := &puncher{h: h, relays: map[peer.ID]bool{}, reserved: map[peer.ID]string{}, events: map[string]int{}}
	for _, r := range relays {
		p.relays[r.ID] = true
	}
	obs, err := observedaddrs.NewManager(h.EventBus(), h.Network())
	if err != nil {
		return nil, err
	}
	obs.Start(h.Network())
	p.obs = obs
	ids, ok := h.(interface{ IDService() identify.IDService })
	if !ok {
		obs.Close()
		return nil, errNoIdentify
	}
	if !stock {
		p.svc, err = holepunch.NewService(h, ids.IDService(), p.offerAddrs, holepunch.WithTracer(p))
		if err != nil {
			obs.Close()
			return nil, err
		}
	}
	h.Network().Notify(&network.NotifyBundle{ConnectedF: p.connected})
	for _, r := range relays {
		go p.reserveLoop(ctx, r)
	}
	go p.moveLoop(ctx, v)
	go func() {
		<-ctx.Done()
		if p.svc != nil {
			p.svc.Close()
		}
		p.obs.Close()
	}()
	return p, nil
}

type punchError string

func (e punchError) Error() string { return string(e) }

const errNoIdentify = punchError("the host has no identify service")

// offerAddrs are the addresses we send in CONNECT: our observed direct
// addresses (not relayed, not loopback), see the file comment.
func (p *puncher) offerAddrs() []ma.Multiaddr {
	addrs := offerable(p.obs.Addrs(1))
	strs := make([]string, len(addrs))
	for i, a := range addrs {
		strs[i] = a.String()
	}
	p.mu.Lock()
	changed := !slices.Equal(strs, p.offered)
	p.offered = strs
	p.mu.Unlock()
	if changed {
		emit("punch_addrs", map[string]any{"addrs": strs})
	}
	return addrs
}

// offerable keeps what a peer behind another NAT could dial: no relayed, loopback or unspecified address.
func offerable(observed []ma.Multiaddr) []ma.Multiaddr {
	return slices.DeleteFunc(slices.Clone(observed), func(a ma.Multiaddr) bool {
		return isCircuit(a.String()) || manet.IsIPLoopback(a) || manet.IsIPUnspecified(a)
	})
}

// reserveLoop holds a slot on relay r, renewing it before it expires.
func (p *puncher) reserveLoop(ctx context.Context, r peer.AddrInfo) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := p.h.Connect(rctx, r)
		var rsv *client.Reservation
		if err == nil {
			rsv, err = client.Reserve(rctx, p.h, r)
		}
		cancel()
		if err != nil {
			emit("reserve_failed", map[string]any{"relay": r.ID.String(), "error": err.Error()})
			sleepCtx(ctx, reserveRetry)
			continue
		}
		var circuit []string
		for _, a := range r.Addrs {
			circuit = append(circuit, a.String()+"/p2p/"+r.ID.String()+"/p2p-circuit/p2p/"+p.h.ID().String())
		}
		p.mu.Lock()
		_, again := p.reserved[r.ID]
		if len(circuit) > 0 {
			p.reserved[r.ID] = circuit[0]
		}
		p.mu.Unlock()
		if !again {
			emit("reserved", map[string]any{"relay": r.ID.String(), "circuit_addrs": circuit,
				"expires": rsv.Expiration.Unix(), "relay_saw": addrStrings(rsv.Addrs)})
		}
		sleepCtx(ctx, time.Duration(float64(time.Until(rsv.Expiration))*reserveRefresh))
	}
}

// connected reports every direct (not relayed) connection to a peer other than a relay:
// after a hole punch this is the new connection, with the NAT's outside address as remote.
func (p *puncher) connected(_ network.Network, c network.Conn) {
	if p.relays[c.RemotePeer()] || isCircuit(c.RemoteMultiaddr().String()) {
		return
	}
	emit("direct_connection", connInfo(c))
}

// moveLoop is §13.5's second half: our relayed tunnels go direct once they can (we: the smaller peer ID).
func (p *puncher) moveLoop(ctx context.Context, v *VPN) {
	next := map[peer.ID]time.Time{}
	for ctx.Err() == nil {
		sleepCtx(ctx, moveInterval)
		v.mu.Lock()
		var relayed []peer.ID
		for id, vp := range v.peers {
			if t := vp.current; t != nil && isCircuit(t.s.Conn().RemoteMultiaddr().String()) {
				relayed = append(relayed, id)
			}
		}
		v.mu.Unlock()
		for _, id := range relayed {
			if string(p.h.ID()) >= string(id) || time.Now().Before(next[id]) || !p.hasDirect(id) {
				continue
			}
			next[id] = time.Now().Add(moveRetry)
			go p.move(ctx, v, id)
		}
	}
}

func (p *puncher) hasDirect(id peer.ID) bool {
	for _, c := range p.h.Network().ConnsToPeer(id) {
		if !isCircuit(c.RemoteMultiaddr().String()) {
			return true
		}
	}
	return false
}

// move opens the new tunnel stream; go-libp2p puts it on the direct connection (the swarm prefers direct ones).
func (p *puncher) move(ctx context.Context, v *VPN, id peer.ID) {
	sctx, cancel := context.WithTimeout(network.WithNoDial(ctx, "move tunnel"), 10*time.Second)
	s, err := p.h.NewStream(sctx, id, tunnelProtocol)
	cancel()
	if err != nil {
		emit("tunnel_move_failed", map[string]any{"peer": id.String(), "error": err.Error()})
		return
	}
	if isCircuit(s.Conn().RemoteMultiaddr().String()) { // the direct connection went away meanwhile
		_ = s.Reset()
		return
	}
	emit("tunnel_move", map[string]any{"peer": id.String(), "remote_addr": s.Conn().RemoteMultiaddr().String()})
	newTunnel(v, s, p.h.ID()).run()
}

// Trace implements holepunch.EventTracer: every step of go-libp2p's hole punch, as an event.
func (p *puncher) Trace(evt *holepunch.Event) {
	key := evt.Type
	if e, ok := evt.Evt.(*holepunch.EndHolePunchEvt); ok && e.Success {
		key += "/ok"
	}
	p.mu.Lock()
	p.events[key]++
	p.mu.Unlock()
	detail := map[string]any{}
	if b, err := json.Marshal(evt.Evt); err == nil {
		_ = json.Unmarshal(b, &detail)
	}
	emit("holepunch", map[string]any{"type": evt.Type, "peer": evt.Remote.String(), "detail": detail})
}

// describe is the puncher's part of the stats: reservations, hole punch
// events, and every connection with the protocols of its open streams, so a
// test can see which connection carries the tunnel.
func (p *puncher) describe() map[string]any {
	var conns []map[string]any
	for _, c := range p.h.Network().Conns() {
		info := connInfo(c)
		var protos []string
		for _, s := range c.GetStreams() {
			protos = append(protos, string(s.Protocol()))
		}
		info["streams"] = protos
		info["relayed"] = isCircuit(c.RemoteMultiaddr().String())
		conns = append(conns, info)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return map[string]any{
		"reserved": maps(p.reserved), "offered": slices.Clone(p.offered),
		"events": mapsInt(p.events), "conns": conns,
		"dcutr_handler": slices.Contains(p.h.Mux().Protocols(), holepunch.Protocol),
	}
}

func addrStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

func maps(m map[peer.ID]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k.String()] = v
	}
	return out
}

func mapsInt(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
