package main

// The receiving node's stateful check of the network policy, docs/protocol.md
// §17.5. Sans-IO: a packet, the sending peer and a clock go in; a verdict
// ("" = deliver, else the reason it is denied, counted) comes out.
//
// Per packet a peer sends us:
//  1. no policy, or default allow and no rule about us: deliver, track nothing;
//  2. a packet of a tracked flow (its tuple, or its reversed tuple, is a
//     forward key) passes; a flow the peer opened under an older policy is
//     decided again first, and cut (policy_changed) if now denied;
//  3. an ICMP error quoting a tracked flow passes (related);
//  4. else a new flow: the first matching rule decides, else the default;
//     allowed flows are tracked (ICMP: echo requests only).
// Every packet we send opens or refreshes its flow, so its replies pass.

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	maxFlows        = 65536
	flagFIN         = 0x01
	flagSYN         = 0x02
	flagRST         = 0x04
	flagACK         = 0x10
	flagEchoRequest = 0x100 // in flow.flags of ICMP: an echo request (no TCP flag is this high)
	maxV6ExtHeaders = 4
)

var (
	ctTCPHandshake   = 30 * time.Second
	ctTCPEstablished = 3600 * time.Second
	ctTCPClosing     = 30 * time.Second
	ctUDP            = 180 * time.Second
	ctICMP           = 30 * time.Second
	ctOther          = 180 * time.Second
)

// flow is what §17.5 reads of a packet.
type flow struct {
	proto      uint8
	src, dst   []byte
	sport      uint16
	dport      uint16
	noPorts    bool // a non-first fragment
	flags      uint16
	inner      *flow // an ICMP error's quoted packet
	innerValid bool
}

func (f *flow) key() string { return ctKey(f.proto, f.src, f.sport, f.dst, f.dport) }

func (f *flow) reverseKey() string { return ctKey(f.proto, f.dst, f.dport, f.src, f.sport) }

// ctKey is proto || initiator address || responder address || initiator port || responder port.
func ctKey(proto uint8, src []byte, sport uint16, dst []byte, dport uint16) string {
	b := make([]byte, 0, 1+2*len(src)+4)
	b = append(b, proto)
	b = append(b, src...)
	b = append(b, dst...)
	b = binary.BigEndian.AppendUint16(b, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	return string(b)
}

func isICMPError(proto, kind uint8) bool {
	if proto == protoICMP {
		return kind == 3 || kind == 4 || kind == 5 || kind == 11 || kind == 12
	}
	return kind >= 1 && kind <= 4
}

// parseFlow reads a packet's flow; nil when its headers are cut short or it is not IPv4/IPv6 (malformed).
// A quoted packet (inside an ICMP error) needs only 4 bytes of a TCP/UDP header.
func parseFlow(p []byte, quoted bool) *flow {
	if len(p) < 20 {
		return nil
	}
	f := &flow{}
	var start int
	fragmented := false
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0x0f) * 4
		if ihl < 20 {
			return nil
		}
		f.proto, f.src, f.dst = p[9], p[12:16], p[16:20]
		fragmented = binary.BigEndian.Uint16(p[6:8])&0x1fff != 0
		start = ihl
	case 6:
		if len(p) < 40 {
			return nil
		}
		f.proto, f.src, f.dst = p[6], p[8:24], p[24:40]
		start = 40
		for range maxV6ExtHeaders {
			if f.proto == 0 || f.proto == 43 || f.proto == 60 {
				if len(p) < start+2 {
					return nil
				}
				f.proto, start = p[start], start+(int(p[start+1])+1)*8
			} else if f.proto == 44 {
				if len(p) < start+8 {
					return nil
				}
				fragmented = binary.BigEndian.Uint16(p[start+2:start+4])>>3 != 0
				f.proto, start = p[start], start+8
			} else {
				break
			}
		}
	default:
		return nil
	}
	if fragmented {
		f.noPorts = true
		return f
	}
	switch f.proto {
	case protoTCP, protoUDP:
		need := 4
		if f.proto == protoTCP && !quoted {
			need = 14 // through the flags
		}
		if len(p) < start+need {
			return nil
		}
		f.sport, f.dport = binary.BigEndian.Uint16(p[start:]), binary.BigEndian.Uint16(p[start+2:])
		if f.proto == protoTCP && len(p) >= start+14 {
			f.flags = uint16(p[start+13])
		}
	case protoICMP, protoICMPv6:
		if len(p) < start+8 {
			return nil
		}
		kind, ident := p[start], binary.BigEndian.Uint16(p[start+4:])
		request, reply := uint8(8), uint8(0)
		if f.proto == protoICMPv6 {
			request, reply = 128, 129
		}
		switch {
		case kind == request:
			f.sport, f.flags = ident, flagEchoRequest
		case kind == reply:
			f.dport = ident
		case !quoted && isICMPError(f.proto, kind):
			f.inner = parseFlow(p[start+8:], true)
			f.innerValid = f.inner != nil && !f.inner.noPorts
		}
	}
	return f
}

type ctState uint8

const (
	ctOpen ctState = iota // not TCP
	ctHandshake
	ctEstablished
	ctClosing
)

type ctRef struct {
	key   string
	order uint64
}

type ctEntry struct {
	expires time.Time
	state   ctState
	peer    peer.ID // who opened the flow to us; "" for a flow we opened
	seq     uint64  // the policy under which it was admitted
	order   uint64
}

func ctTimeout(proto uint8, s ctState) time.Duration {
	switch {
	case proto == protoTCP && s == ctHandshake:
		return ctTCPHandshake
	case proto == protoTCP && s == ctClosing:
		return ctTCPClosing
	case proto == protoTCP:
		return ctTCPEstablished
	case proto == protoUDP:
		return ctUDP
	case proto == protoICMP || proto == protoICMPv6:
		return ctICMP
	}
	return ctOther
}

// Firewall holds the policy in force, the rules about this node, and the tracked flows.
type Firewall struct {
	self     peer.ID
	groupsOf func(peer.ID) []string // the groups of the certificate a peer presented (still valid)

	mu       sync.Mutex
	policy   *Policy // nil: no policy
	groups   []string
	here     []PolicyRule // the rules whose "to" matches this node
	active   bool
	flows    map[string]*ctEntry
	fifo     []ctRef // insertion order, for eviction (entries removed or replaced since are skipped)
	nextID   uint64
	denied   map[string]uint64
	ctCounts map[string]uint64
	max      int
}

func newFirewall(self peer.ID, groups []string, groupsOf func(peer.ID) []string) *Firewall {
	return &Firewall{self: self, groups: groups, groupsOf: groupsOf, flows: map[string]*ctEntry{},
		denied: map[string]uint64{}, ctCounts: map[string]uint64{}, max: maxFlows}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func selectorMatches(group string, peerID []byte, id peer.ID, groups []string) bool {
	switch {
	case len(peerID) > 0:
		return string(peerID) == string(id)
	case group != "":
		return contains(groups, group)
	}
	return true
}

// setPolicy puts a policy in force: new flows follow it at once, flows peers opened are
// re-decided on their next packet.
func (fw *Firewall) setPolicy(p *Policy) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.install(p)
}

// setIfBetter is setPolicy for a policy better than the one in force (§17.3), checked atomically.
func (fw *Firewall) setIfBetter(p *Policy) bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if !betterPolicy(p, fw.policy) {
		return false
	}
	fw.install(p)
	return true
}

func (fw *Firewall) install(p *Policy) {
	fw.policy = p
	fw.here = nil
	for _, r := range p.Rules {
		if selectorMatches(r.ToGroup, r.ToPeer, fw.self, fw.groups) {
			fw.here = append(fw.here, r)
		}
	}
	fw.active = len(fw.here) > 0 || p.Default == actionDeny
}

func (fw *Firewall) current() *Policy {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.policy
}

func ruleMatchesFlow(r *PolicyRule, proto uint8, dport uint16, noPorts bool) bool {
	switch {
	case r.Proto == protoICMP:
		if proto != protoICMP && proto != protoICMPv6 {
			return false
		}
	case r.Proto != protoAny && uint32(proto) != r.Proto:
		return false
	}
	if r.PortFirst == 0 && r.PortLast == 0 {
		return true
	}
	return !noPorts && uint32(dport) >= r.PortFirst && uint32(dport) <= r.PortLast
}

// decide is step 4: whether from may open a flow to us; the reason ("rule" or "default").
func (fw *Firewall) decide(from peer.ID, proto uint8, dport uint16, noPorts bool) (bool, string) {
	groups := fw.groupsOf(from)
	for i := range fw.here {
		r := &fw.here[i]
		if selectorMatches(r.FromGroup, r.FromPeer, from, groups) && ruleMatchesFlow(r, proto, dport, noPorts) {
			return r.Action == actionAllow, "rule"
		}
	}
	return fw.policy.Default == actionAllow, "default"
}

func (fw *Firewall) get(key string, now time.Time) *ctEntry {
	e := fw.flows[key]
	if e != nil && !now.Before(e.expires) {
		delete(fw.flows, key)
		fw.ctCounts["expired"]++
		return nil
	}
	return e
}

func (fw *Firewall) open(f *flow, from peer.ID, now time.Time) {
	key := f.key()
	if _, ok := fw.flows[key]; !ok {
		for len(fw.flows) >= fw.max && len(fw.fifo) > 0 {
			oldest := fw.fifo[0]
			fw.fifo = fw.fifo[1:]
			if e, ok := fw.flows[oldest.key]; ok && e.order == oldest.order {
				if !now.Before(e.expires) {
					fw.ctCounts["expired"]++
				} else {
					fw.ctCounts["evicted"]++
				}
				delete(fw.flows, oldest.key)
			}
		}
	}
	state := ctOpen
	if f.proto == protoTCP {
		state = ctEstablished // picked up mid-way
		if f.flags&(flagSYN|flagACK) == flagSYN {
			state = ctHandshake
		}
		if f.flags&(flagFIN|flagRST) != 0 {
			state = ctClosing
		}
	}
	fw.nextID++
	fw.flows[key] = &ctEntry{expires: now.Add(ctTimeout(f.proto, state)), state: state, peer: from,
		seq: fw.policy.Seq, order: fw.nextID}
	fw.fifo = append(fw.fifo, ctRef{key, fw.nextID})
	if len(fw.fifo) > 2*fw.max { // drop the references to flows that are gone
		live := fw.fifo[:0]
		for _, r := range fw.fifo {
			if e, ok := fw.flows[r.key]; ok && e.order == r.order {
				live = append(live, r)
			}
		}
		fw.fifo = live
	}
	fw.ctCounts["opened"]++
}

func (fw *Firewall) seen(e *ctEntry, f *flow, fromInitiator bool, now time.Time) {
	if f.proto == protoTCP {
		if f.flags&(flagFIN|flagRST) != 0 {
			e.state = ctClosing
		} else if e.state == ctHandshake && !fromInitiator && f.flags&flagACK != 0 {
			e.state = ctEstablished
		}
	}
	e.expires = now.Add(ctTimeout(f.proto, e.state))
}

// redecide is step 2's check of a flow a peer opened under an older policy (dport: the flow's own).
func (fw *Firewall) redecide(key string, e *ctEntry, f *flow, dport uint16) bool {
	if e.seq == fw.policy.Seq {
		return true
	}
	if e.peer != "" {
		if ok, _ := fw.decide(e.peer, f.proto, dport, false); !ok {
			delete(fw.flows, key)
			return false
		}
	}
	e.seq = fw.policy.Seq
	return true
}

// inbound is §17.5 for a packet from peer from: "" to deliver it, else the reason it is denied (counted).
func (fw *Firewall) inbound(from peer.ID, p []byte, now time.Time) string {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if !fw.active {
		return ""
	}
	f := parseFlow(p, false)
	if f == nil {
		return fw.deny("malformed")
	}
	if !f.noPorts {
		key := f.key()
		if e := fw.get(key, now); e != nil { // the peer opened this flow
			if !fw.redecide(key, e, f, f.dport) {
				return fw.deny("policy_changed")
			}
			fw.seen(e, f, true, now)
			return ""
		}
		rkey := f.reverseKey()
		if e := fw.get(rkey, now); e != nil { // a reply in a flow we opened (or answered)
			if !fw.redecide(rkey, e, f, f.sport) {
				return fw.deny("policy_changed")
			}
			fw.seen(e, f, false, now)
			return ""
		}
		if f.innerValid { // an ICMP error about a tracked flow, either direction
			if fw.get(f.inner.key(), now) != nil || fw.get(f.inner.reverseKey(), now) != nil {
				return ""
			}
		}
	}
	if ok, reason := fw.decide(from, f.proto, f.dport, f.noPorts); !ok {
		return fw.deny(reason)
	}
	isICMP := f.proto == protoICMP || f.proto == protoICMPv6
	if !f.noPorts && f.inner == nil && (!isICMP || f.flags&flagEchoRequest != 0) {
		fw.open(f, from, now)
	}
	return ""
}

// outbound is a packet we send: it refreshes its flow, or opens one so that its replies pass.
func (fw *Firewall) outbound(p []byte, now time.Time) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if !fw.active {
		return
	}
	f := parseFlow(p, false)
	if f == nil || f.noPorts || f.inner != nil {
		return
	}
	if e := fw.get(f.reverseKey(), now); e != nil { // our answer in a flow the peer opened
		fw.seen(e, f, false, now)
		return
	}
	if e := fw.get(f.key(), now); e != nil {
		if e.peer == "" {
			e.seq = fw.policy.Seq // our own flows are never re-decided
		}
		fw.seen(e, f, true, now)
		return
	}
	isICMP := f.proto == protoICMP || f.proto == protoICMPv6
	if !isICMP || f.flags&flagEchoRequest != 0 {
		fw.open(f, "", now)
	}
}

// sweep drops every expired flow.
func (fw *Firewall) sweep(now time.Time) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for k, e := range fw.flows {
		if !now.Before(e.expires) {
			delete(fw.flows, k)
			fw.ctCounts["expired"]++
		}
	}
}

func (fw *Firewall) deny(reason string) string {
	fw.denied[reason]++
	return reason
}

// status is §17.6's policy object (without the service's counters).
func (fw *Firewall) status() map[string]any {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var total uint64
	byReason := map[string]uint64{}
	for k, n := range fw.denied {
		byReason[k], total = n, total+n
	}
	ct := map[string]uint64{}
	for k, n := range fw.ctCounts {
		ct[k] = n
	}
	st := map[string]any{"seq": uint64(0), "default": "allow", "rules": 0, "rules_here": len(fw.here),
		"active": fw.active, "denied": total, "denied_by_reason": byReason, "flows": len(fw.flows),
		"max_flows": fw.max, "conntrack": ct}
	if fw.policy != nil {
		st["seq"], st["rules"] = fw.policy.Seq, len(fw.policy.Rules)
		if fw.policy.Default == actionDeny {
			st["default"] = "deny"
		}
	}
	return st
}
