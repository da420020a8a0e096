package main

// Our private Kademlia DHT (docs/protocol.md §12.1): go-libp2p-kad-dht under
// the /p2pvpn prefix, with the "p2pvpn" namespace as the only one and our
// NodeRecord validator on it (address keys, §18.2, get theirs). The vpn mode
// also publishes its own record, under its record key and its two address
// keys (§18.2), and provides the "members" key in full-mesh mode (§12.2, §12.9).

import (
	"context"
	"net/netip"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

const dhtPrefix = "/p2pvpn" // -> /p2pvpn/kad/1.0.0

// newDHT starts the DHT; revoked (nil outside an owned network) is the set the revocation-list
// validator checks an admin signer against, and the record validators a certificate (§15.9.4).
func newDHT(h host.Host, network string, server bool, revoked func() map[string]uint64) (*dht.IpfsDHT, error) {
	v := NodeRecordValidator{
		Network: network,
		Now:     func() int64 { return time.Now().Unix() },
		Revoked: revoked,
		OnVerdict: func(key string, err error) {
			ev := map[string]any{"key": key, "ok": err == nil}
			if err != nil {
				ev["error"] = err.Error()
			}
			emit("record_validated", ev)
		},
	}
	mode := dht.ModeServer
	if !server {
		mode = dht.ModeClient
	}
	return dht.New(h,
		dht.ProtocolPrefix(dhtPrefix),
		dht.Validator(record.NamespacedValidator{"p2pvpn": byKey{records: v, lists: RevocationListValidator{
			Network: network, Revoked: revoked, OnVerdict: v.OnVerdict,
		}, policies: PolicyValidator{Network: network, Revoked: revoked, OnVerdict: v.OnVerdict}}}),
		dht.Mode(mode),
	)
}

// bootstrapDHT connects to the bootstrap peers and waits (bounded) until the routing table has one.
func bootstrapDHT(ctx context.Context, h host.Host, d *dht.IpfsDHT, peers []peer.AddrInfo) {
	for _, info := range peers {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := h.Connect(cctx, info); err != nil {
			emit("bootstrap_failed", map[string]any{"peer": info.ID.String(), "error": err.Error()})
		}
		cancel()
	}
	if len(peers) == 0 {
		return
	}
	deadline := time.Now().Add(15 * time.Second)
	for d.RoutingTable().Size() == 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		sleepCtx(ctx, 100*time.Millisecond)
	}
	_ = d.Bootstrap(ctx)
	emit("bootstrapped", map[string]any{"routing_table": d.RoutingTable().Size()})
}

func membersCID(network string) cid.Cid {
	return cid.NewCidV1(cid.Raw, providerKey(network, "members"))
}

// ownRecord describes this vpn node (§12.4) with its dialable listen addresses.
func ownRecord(h host.Host, v *VPN, ttl time.Duration) *NodeRecord {
	now := time.Now()
	r := &NodeRecord{
		PeerID: []byte(h.ID()), Network: v.network,
		Seq: uint64(now.UnixMilli()), ExpiresUnix: uint64(now.Add(ttl).Unix()),
		IPv4: v.self.IPv4.AsSlice(), IPv6: v.self.IPv6.AsSlice(), AddressIndex: v.self.Index,
	}
	if v.member != nil && v.member.own != nil { // §15.9.4: our certificate admits our record
		r.Certificate = v.member.own.Raw
	}
	if v.relay != nil && (v.member == nil || v.member.own.Roles&roleRelay != 0) {
		r.Relay = v.relay // never a role our certificate does not grant (§15.9.4; main refuses to start with one)
	}
	for _, a := range h.Addrs() {
		if len(r.Addrs) < maxAddrs && checkRecordAddr(a.Bytes(), false) == nil {
			r.Addrs = append(r.Addrs, a.Bytes())
		}
	}
	return r
}

// publishLoop stores our record and, in full-mesh mode, provides "members" every ttl/2 (sooner after a
// failure). On demand it provides no "members" (§12.2: full-mesh nodes read it; on-demand nodes find
// members by their address records, §18.2, and at N nodes that one key cost its 20 closest peers N
// ADD_PROVIDERs per period).
func publishLoop(ctx context.Context, h host.Host, d *dht.IpfsDHT, key crypto.PrivKey, v *VPN, ttl time.Duration,
	onDemand bool) {
	for ctx.Err() == nil {
		own := ownRecord(h, v, ttl)
		sealed, err := sealRecord(own, key)
		if err != nil {
			fatal("sealing our record: %v", err)
		}
		ev := map[string]any{"key": recordKey(v.network, h.ID()), "bytes": len(sealed), "relay": own.Relay != nil}
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		// Provide first: PutValue's lookup of the record key fails against
		// py-libp2p 0.8.1 DHT servers (they reset FIND_NODE for keys that are
		// not peer IDs), and go-libp2p-kad-dht then drops them from its routing
		// table for a while, which would make Provide fail too (interop/README.md).
		var errProvide error
		if !onDemand {
			errProvide = d.Provide(pctx, membersCID(v.network), true)
		}
		if own.Relay != nil && errProvide == nil { // §12.2: a node offering the relay role provides "relay"
			errProvide = d.Provide(pctx, cid.NewCidV1(cid.Raw, providerKey(v.network, "relay")), true)
		}
		errPut := d.PutValue(pctx, recordKey(v.network, h.ID()), sealed)
		// §18.2: the same bytes under our two address keys, for on-demand nodes.
		for _, a := range []netip.Addr{v.self.IPv4, v.self.IPv6} {
			if err := d.PutValue(pctx, addressKey(v.network, a), sealed); err != nil && errPut == nil {
				errPut = err
			}
		}
		cancel()
		ok := errPut == nil && errProvide == nil
		ev["ok"] = ok
		if errPut != nil {
			ev["put_error"] = errPut.Error()
		}
		if errProvide != nil {
			ev["provide_error"] = errProvide.Error()
		}
		emit("published", ev)
		wait := ttl / 2
		if !ok {
			wait = 2 * time.Second
		}
		sleepCtx(ctx, wait)
	}
}
