package main

// On-demand dial from the Go side (docs/protocol.md §18.2-§18.3), for
// --traffic-to: a destination no tunnel routes is looked up under its address
// key (GET_VALUE; our DHT validator has checked and selected the value, and it
// is checked again here), the member the record names is dialed once at the
// addresses its record gives. Lookups that find nothing are asked again with
// growing pauses (§18.3 step 4: 0.25, 0.5, 0.75 ... s, at most 8 attempts),
// since a member that just started may not have stored its address records.
// A record found is kept and used again while it is valid (§18.2's "a reader
// that holds a valid copy uses it"), so a packet after an idle close (§18.4,
// idle.go) dials the member at once (§18.3 step 5).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

const (
	demandAttempts = 8
	demandPause    = 250 * time.Millisecond
	demandTimeout  = 5 * time.Second // one GET_VALUE lookup (§18.3's LOOKUP_TIMEOUT)
	demandCacheMax = 1024            // records held for destinations
)

// demand resolves overlay addresses through the DHT and dials their members.
type demand struct {
	v *VPN
	d *dht.IpfsDHT

	mu    sync.Mutex
	cache map[netip.Addr][]byte // destination -> the sealed record last found for it (re-validated on use)
}

// resolve is §18.2's reading: the member holding dst, from its address record (held: from our copy).
func (o *demand) resolve(ctx context.Context, dst netip.Addr) (r *NodeRecord, held bool, err error) {
	key := addressKey(o.v.network, dst)
	check := AddressRecordValidator{Records: NodeRecordValidator{
		Network: o.v.network, Now: func() int64 { return time.Now().Unix() }, Revoked: o.revoked(),
	}}
	o.mu.Lock()
	copied := o.cache[dst]
	o.mu.Unlock()
	if copied != nil {
		if r, err := check.open(key, copied); err == nil {
			return r, true, nil
		}
		o.mu.Lock()
		delete(o.cache, dst) // expired or revoked: look it up again
		o.mu.Unlock()
	}
	var last error
	for attempt := 1; attempt <= demandAttempts && ctx.Err() == nil; attempt++ {
		gctx, cancel := context.WithTimeout(ctx, demandTimeout)
		value, err := o.d.GetValue(gctx, key)
		cancel()
		if err == nil {
			r, err := check.open(key, value)
			if err != nil {
				return nil, false, fmt.Errorf("address record under %s: %w", key, err)
			}
			o.mu.Lock()
			if len(o.cache) >= demandCacheMax {
				clear(o.cache) // bounded; the DHT has them all
			}
			o.cache[dst] = value
			o.mu.Unlock()
			return r, false, nil
		}
		last = err
		sleepCtx(ctx, time.Duration(attempt)*demandPause)
	}
	return nil, false, fmt.Errorf("no address record under %s: %v", key, last)
}

func (o *demand) revoked() func() map[string]uint64 {
	if o.v.member == nil {
		return nil
	}
	return o.v.member.revoked
}

// admitted: in an owned network the record's certificate (checked by resolve) admits its peer;
// without an owner only a peer we list (--allow) gets a tunnel from a record (§18.2).
func (o *demand) admitted(id peer.ID) bool {
	return o.v.member != nil || o.v.allow[id]
}

// dialable: the record's listen addresses we may dial (§12.5; loopback only when we listen on loopback only).
func (o *demand) dialable(r *NodeRecord) []ma.Multiaddr {
	loopbackOnly := true
	for _, a := range o.v.h.Addrs() {
		if !manet.IsIPLoopback(a) {
			loopbackOnly = false
		}
	}
	var out []ma.Multiaddr
	for _, raw := range r.Addrs {
		a, err := ma.NewMultiaddrBytes(raw)
		if err != nil {
			continue
		}
		ip, err := manet.ToIP(a)
		if err == nil && (ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsMulticast() ||
			ip.Equal([]byte{255, 255, 255, 255}) || ip.IsLoopback() && !loopbackOnly) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// open finds dst's member and starts one tunnel to it; the tunnel runs until it ends.
func (o *demand) open(ctx context.Context, dst netip.Addr) error {
	start := time.Now()
	r, held, err := o.resolve(ctx, dst)
	if err != nil {
		emit("demand_failed", map[string]any{"dst": dst.String(), "error": err.Error()})
		return err
	}
	id := peer.ID(r.PeerID)
	if id == o.v.h.ID() {
		return errors.New("the address is ours")
	}
	if !o.admitted(id) {
		err := fmt.Errorf("%s holds %s but is not listed (--allow)", id, dst)
		emit("demand_failed", map[string]any{"dst": dst.String(), "error": err.Error()})
		return err
	}
	info := peer.AddrInfo{ID: id, Addrs: o.dialable(r)}
	emit("demand_resolved", map[string]any{"dst": dst.String(), "peer": id.String(), "addrs": len(info.Addrs),
		"seconds": time.Since(start).Seconds(), "held": held})
	if o.v.current(id) != nil {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, demandTimeout)
	defer cancel()
	if err := o.v.h.Connect(dctx, info); err != nil {
		emit("dial_failed", map[string]any{"peer": id.String(), "error": err.Error()})
		return err
	}
	var s network.Stream
	if s, err = o.v.h.NewStream(dctx, id, tunnelProtocol); err != nil {
		emit("dial_failed", map[string]any{"peer": id.String(), "error": err.Error()})
		return err
	}
	go newTunnel(o.v, s, o.v.h.ID()).run()
	return nil
}
