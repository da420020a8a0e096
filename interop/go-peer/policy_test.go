package main

// The network policy (docs/protocol.md §17): §17.7's vector reproduced byte for
// byte and evaluated as the document says, its negative vectors refused, admin
// signers, the better-rule, and the stateful filter of §17.5 (replies to our
// flows, re-decided flows, ICMP errors, fragments, eviction).

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func section17(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatalf("reading the document: %v", err)
	}
	s := string(doc)
	i := strings.Index(s, "## 17. Network policy")
	if i < 0 {
		t.Fatal("no §17 in docs/protocol.md")
	}
	if j := strings.Index(s[i+10:], "\n## "); j >= 0 {
		return s[i : i+10+j]
	}
	return s[i:]
}

// docRule is the hex of "N. ...:\n   `HEX` (M bytes)" in §17.7, with <peer 1's peer_id_bytes> filled in.
func docRule(t *testing.T, sec string, n int) []byte {
	t.Helper()
	m := regexp.MustCompile(`(?s)\n` + string(rune('0'+n)) + `\. [^\n]*:\n\s+` + "`([^`]+)`" + ` \((\d+) bytes\)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("no rule %d in §17.7", n)
	}
	text := strings.ReplaceAll(m[1], "<peer 1's peer_id_bytes>", hex.EncodeToString(pidOf(1)))
	b, err := hex.DecodeString(strings.ReplaceAll(text, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func vectorRules() []PolicyRule {
	return []PolicyRule{
		{Action: actionDeny, FromGroup: "A", ToGroup: "B", Proto: protoTCP, PortFirst: 22, PortLast: 22},
		{Action: actionAllow, FromPeer: pidOf(1), Proto: protoUDP, PortFirst: 5000, PortLast: 5010},
	}
}

func policyP(t *testing.T) []byte {
	t.Helper()
	out, err := signPolicy(ownerSigner, Policy{NetworkID: vecNID(), Seq: 1, Default: actionAllow, Rules: vectorRules()})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rawPolicy signs any body bytes (no checks): only the reader's rules can refuse it.
func rawPolicy(body []byte, s Signer) []byte {
	sp := signedPolicy{policy: body, signature: signWithContext(s, policyContext, body), issuerCert: s.IssuerCert}
	return sp.encode()
}

func signWithContext(s Signer, context string, body []byte) []byte {
	return ed25519.Sign(s.Key, append([]byte(context), body...))
}

func TestPolicyVectorByteForByte(t *testing.T) {
	sec := section17(t)
	if !strings.Contains(sec, "`"+hex.EncodeToString([]byte(policyContext))+"`") {
		t.Error("the policy context is not in §17 in hex")
	}
	for i, r := range vectorRules() {
		if got, want := encodeRule(&r), docRule(t, sec, i+1); !bytes.Equal(got, want) {
			t.Errorf("rule %d:\n got %x\nwant %x", i+1, got, want)
		}
	}
	body := encodePolicyBody(&Policy{NetworkID: vecNID(), Seq: 1, Default: actionAllow, Rules: vectorRules(),
		Issuer: ownerSigner.public()})
	if len(body) != 140 {
		t.Errorf("Policy is %d bytes, the document says 140", len(body))
	}
	doc := hexBlock(t, sec, "Policy P")
	got := policyP(t)
	if !bytes.Equal(got, doc) {
		t.Fatalf("policy P:\n got %x\nwant %x", got, doc)
	}
	p, err := openPolicy(doc, vecNID(), t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Seq != 1 || p.Default != actionAllow || len(p.Rules) != 2 || p.Admin != nil || !bytes.Equal(p.Raw, doc) {
		t.Fatalf("policy P reads back as %+v", p)
	}
	back, err := policyFromText(policyText(doc))
	if err != nil || !bytes.Equal(back, doc) {
		t.Fatalf("text form round trip: %v", err)
	}
}

func TestPolicyVectorEvaluation(t *testing.T) {
	p, err := openPolicy(hexBlock(t, section17(t), "Policy P"), vecNID(), t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	memberA, peer1 := peer.ID(pidOf(2)), peer.ID(pidOf(1))
	groups := map[peer.ID][]string{memberA: {"A"}}
	groupsOf := func(id peer.ID) []string { return groups[id] }
	self, other := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.9")
	now := time.Unix(t0, 0)

	atB := newFirewall(peer.ID(pidOf(3)), []string{"B"}, groupsOf)
	atB.setPolicy(p)
	if got := atB.inbound(memberA, tcpPacket(other, self, 40000, 22, flagSYN), now); got != "rule" {
		t.Errorf("SYN to 22 from group A at B: %q, want denied by rule", got)
	}
	if got := atB.inbound(memberA, tcpPacket(other, self, 40001, 80, flagSYN), now); got != "" {
		t.Errorf("SYN to 80 from group A at B: %q, want allowed (default)", got)
	}
	if got := atB.inbound(peer1, udpPacket(other, self, 40002, 5005), now); got != "" {
		t.Errorf("UDP 5005 from peer 1 at B: %q, want allowed by rule 2", got)
	}
	if st := atB.status(); st["rules_here"] != 2 || st["denied"] != uint64(1) || st["active"] != true {
		t.Errorf("status at B: %v", st)
	}

	notB := newFirewall(peer.ID(pidOf(3)), []string{"C"}, groupsOf)
	notB.setPolicy(p)
	if got := notB.inbound(memberA, tcpPacket(other, self, 40000, 22, flagSYN), now); got != "" {
		t.Errorf("SYN to 22 from group A at a node without B: %q, want allowed", got)
	}
	if st := notB.status(); st["rules_here"] != 1 {
		t.Errorf("rules here at a node without B: %v", st["rules_here"])
	}
}

func TestPolicyNegativeVectors(t *testing.T) {
	sec := section17(t)
	doc := hexBlock(t, sec, "Policy P")
	refuse := func(name string, data []byte) {
		t.Helper()
		if _, err := openPolicy(data, vecNID(), t0, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	refuse("78 01 appended", append(append([]byte{}, doc...), 0x78, 0x01))
	for i := range doc {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := append([]byte{}, doc...)
			b[i] ^= x
			refuse("byte changed", b)
		}
	}
	resign := func(p Policy) []byte {
		p.NetworkID, p.Issuer = vecNID(), ownerSigner.public()
		return rawPolicy(encodePolicyBody(&p), ownerSigner)
	}
	refuse("seq 0", resign(Policy{Seq: 0, Default: actionAllow, Rules: vectorRules()}))
	refuse("default 3", resign(Policy{Seq: 1, Default: 3, Rules: vectorRules()}))
	refuse("icmp with ports", resign(Policy{Seq: 1, Default: actionAllow, Rules: []PolicyRule{
		{Action: actionDeny, Proto: protoICMP, PortFirst: 1, PortLast: 2}}}))
	refuse("from group and peer", resign(Policy{Seq: 1, Default: actionAllow, Rules: []PolicyRule{
		{Action: actionDeny, FromGroup: "A", FromPeer: pidOf(1)}}}))
	refuse("action 0", resign(Policy{Seq: 1, Default: actionAllow, Rules: []PolicyRule{{Proto: protoTCP}}}))
	refuse("proto 2", resign(Policy{Seq: 1, Default: actionAllow, Rules: []PolicyRule{{Action: 1, Proto: 2}}}))
	refuse("ports reversed", resign(Policy{Seq: 1, Default: actionAllow, Rules: []PolicyRule{
		{Action: 1, Proto: protoUDP, PortFirst: 9, PortLast: 8}}}))
	refuse("port 65536", resign(Policy{Seq: 1, Default: actionAllow, Rules: []PolicyRule{
		{Action: 1, Proto: protoUDP, PortFirst: 1, PortLast: 65536}}}))
	refuse("bad group", resign(Policy{Seq: 1, Default: actionAllow, Rules: []PolicyRule{{Action: 1, ToGroup: "a b"}}}))
	refuse("peer not Ed25519", resign(Policy{Seq: 1, Default: actionAllow, Rules: []PolicyRule{
		{Action: 1, ToPeer: []byte{0x12, 0x20, 1}}}}))
	many := make([]PolicyRule, 257)
	for i := range many {
		many[i] = PolicyRule{Action: actionAllow}
	}
	refuse("257 rules", resign(Policy{Seq: 1, Default: actionAllow, Rules: many}))
	if _, err := openPolicy(resign(Policy{Seq: 1, Default: actionAllow, Rules: many[:256]}), vecNID(), t0, nil); err != nil {
		t.Errorf("256 rules: %v", err)
	}
	refuse("other network", rawPolicy(encodePolicyBody(&Policy{NetworkID: strings.Repeat("a", 32), Seq: 1,
		Default: 1, Issuer: ownerSigner.public()}), ownerSigner))
	stranger := Signer{Key: seedKey(0x66)}
	refuse("signed by a stranger", rawPolicy(encodePolicyBody(&Policy{NetworkID: vecNID(), Seq: 1, Default: 1,
		Issuer: stranger.public()}), stranger))
	body := encodePolicyBody(&Policy{NetworkID: vecNID(), Seq: 1, Default: 1, Issuer: ownerSigner.public()})
	refuse("certificate context", (&signedPolicy{policy: body,
		signature: signWithContext(ownerSigner, certContext, body)}).encode())
	refuse("empty issuer_certificate on the wire", append(rawPolicy(body, ownerSigner), 0x1a, 0x00))
	refuse("too big", append(rawPolicy(body, ownerSigner), make([]byte, maxPolicySize)...))
}

func TestAdminSignedPolicyNeedsAValidAdmin(t *testing.T) {
	admin := Signer{Key: seedKey(1), IssuerCert: certA(t)} // certificate A: peer 1 is an admin
	data, err := signPolicy(admin, Policy{NetworkID: vecNID(), Seq: 5, Default: actionDeny})
	if err != nil {
		t.Fatal(err)
	}
	p, err := openPolicy(data, vecNID(), t0, nil)
	if err != nil || p.Admin == nil {
		t.Fatalf("admin-signed policy: %v", err)
	}
	if _, err := openPolicy(data, vecNID(), t0, map[string]uint64{string(pidOf(1)): t0 + 1}); err == nil {
		t.Error("a policy of a revoked admin was accepted")
	}
	if _, err := openPolicy(data, vecNID(), t0+400*day, nil); err == nil {
		t.Error("a policy of an expired admin was accepted")
	}
	v4, v6 := derived(t, 2)
	member, err := issueCertificate(ownerSigner, Certificate{NetworkID: vecNID(), PeerID: pidOf(2), Name: "beta",
		IPv4: v4.AsSlice(), IPv6: v6.AsSlice(), Roles: roleRelay, NotBefore: t0, NotAfter: t0 + day})
	if err != nil {
		t.Fatal(err)
	}
	body := encodePolicyBody(&Policy{NetworkID: vecNID(), Seq: 1, Default: 1, Issuer: Signer{Key: seedKey(2)}.public()})
	if _, err := openPolicy(rawPolicy(body, Signer{Key: seedKey(2), IssuerCert: member}), vecNID(), t0, nil); err == nil {
		t.Error("a policy signed by a member without the admin role was accepted")
	}
}

func TestBetterPolicy(t *testing.T) {
	mk := func(seq uint64, def uint32) *Policy {
		data, err := signPolicy(ownerSigner, Policy{NetworkID: vecNID(), Seq: seq, Default: def})
		if err != nil {
			t.Fatal(err)
		}
		p, _ := openPolicyBytes(data, vecNID())
		return p
	}
	a, b, c := mk(1, 1), mk(2, 1), mk(2, 2)
	if !betterPolicy(b, a) || betterPolicy(a, b) || !betterPolicy(a, nil) || betterPolicy(nil, a) {
		t.Error("higher seq must win")
	}
	if betterPolicy(b, c) == betterPolicy(c, b) || betterPolicy(b, b) {
		t.Error("equal seq: exactly one of two different policies is better, and none is better than itself")
	}
	if betterPolicy(b, c) != (bytes.Compare(b.Raw, c.Raw) > 0) {
		t.Error("equal seq: the larger SignedPolicy bytes win")
	}
}

// -- §17.5: the stateful filter -------------------------------------------------------------------

func tcpPacket(src, dst netip.Addr, sport, dport uint16, flags byte) []byte {
	body := make([]byte, 20)
	binary.BigEndian.PutUint16(body[0:], sport)
	binary.BigEndian.PutUint16(body[2:], dport)
	body[12], body[13] = 0x50, flags
	if src.Is4() {
		return ipv4Packet(src, dst, protoTCP, body)
	}
	return ipv6Packet(src, dst, protoTCP, body)
}

func udpPacket(src, dst netip.Addr, sport, dport uint16) []byte {
	body := make([]byte, 12)
	binary.BigEndian.PutUint16(body[0:], sport)
	binary.BigEndian.PutUint16(body[2:], dport)
	binary.BigEndian.PutUint16(body[4:], 12)
	if src.Is4() {
		return ipv4Packet(src, dst, protoUDP, body)
	}
	return ipv6Packet(src, dst, protoUDP, body)
}

func icmpPacket(src, dst netip.Addr, kind byte, ident uint16, quoted []byte) []byte {
	body := append([]byte{kind, 0, 0, 0, byte(ident >> 8), byte(ident), 0, 1}, quoted...)
	if src.Is4() {
		return ipv4Packet(src, dst, protoICMP, body)
	}
	return ipv6Packet(src, dst, protoICMPv6, body)
}

// denyAll is a policy with default deny and the given rules, at seq.
func denyAll(t *testing.T, seq uint64, rules ...PolicyRule) *Policy {
	t.Helper()
	data, err := signPolicy(ownerSigner, Policy{NetworkID: vecNID(), Seq: seq, Default: actionDeny, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	p, err := openPolicyBytes(data, vecNID())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRepliesToOurFlowsPassUnderDefaultDeny(t *testing.T) {
	for _, fam := range []struct{ me, them string }{{"100.64.0.2", "100.64.0.9"}, {"fd00::2", "fd00::9"}} {
		me, them := netip.MustParseAddr(fam.me), netip.MustParseAddr(fam.them)
		fw := newFirewall(peer.ID(pidOf(3)), nil, func(peer.ID) []string { return nil })
		fw.setPolicy(denyAll(t, 1))
		from, now := peer.ID(pidOf(1)), time.Unix(t0, 0)
		// Unsolicited: denied by the default.
		for _, p := range [][]byte{udpPacket(them, me, 7, 40000), tcpPacket(them, me, 80, 40001, flagSYN|flagACK),
			icmpPacket(them, me, map[bool]byte{true: 0, false: 129}[me.Is4()], 5, nil)} {
			if got := fw.inbound(from, p, now); got != "default" {
				t.Errorf("%s: unsolicited packet %q, want default", fam.me, got)
			}
		}
		// Ours: UDP, TCP, ICMP echo. Their replies pass; an ICMP error about our UDP flow passes.
		fw.outbound(udpPacket(me, them, 40000, 7), now)
		fw.outbound(tcpPacket(me, them, 40001, 80, flagSYN), now)
		echoReq, echoRep := byte(8), byte(0)
		if me.Is6() {
			echoReq, echoRep = 128, 129
		}
		fw.outbound(icmpPacket(me, them, echoReq, 5, nil), now)
		for name, p := range map[string][]byte{
			"udp reply": udpPacket(them, me, 7, 40000), "syn-ack": tcpPacket(them, me, 80, 40001, flagSYN|flagACK),
			"echo reply": icmpPacket(them, me, echoRep, 5, nil),
			"icmp error": icmpPacket(them, me, map[bool]byte{true: 3, false: 1}[me.Is4()], 0, udpPacket(me, them, 40000, 7)[:map[bool]int{true: 28, false: 48}[me.Is4()]]),
		} {
			if got := fw.inbound(from, p, now); got != "" {
				t.Errorf("%s: %s denied (%q)", fam.me, name, got)
			}
		}
		// The TCP flow is established now: 3600 s; UDP lives 180 s after its last packet.
		if got := fw.inbound(from, tcpPacket(them, me, 80, 40001, flagACK), now.Add(3000*time.Second)); got != "" {
			t.Errorf("established TCP after 3000 s: %q", got)
		}
		if got := fw.inbound(from, udpPacket(them, me, 7, 40000), now.Add(181*time.Second)); got != "default" {
			t.Errorf("UDP reply after 181 s of silence: %q, want default (expired)", got)
		}
	}
}

func TestNewFlowsByRuleAndPolicyChangeRedecides(t *testing.T) {
	me, them := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.9")
	a := peer.ID(pidOf(1))
	fw := newFirewall(peer.ID(pidOf(3)), []string{"srv"}, func(id peer.ID) []string {
		if id == a {
			return []string{"ops"}
		}
		return nil
	})
	fw.setPolicy(denyAll(t, 1, PolicyRule{Action: actionAllow, FromGroup: "ops", ToGroup: "srv", Proto: protoTCP,
		PortFirst: 22, PortLast: 22}, PolicyRule{Action: actionAllow, Proto: protoICMP}))
	now := time.Unix(t0, 0)
	if got := fw.inbound(a, tcpPacket(them, me, 50000, 22, flagSYN), now); got != "" {
		t.Fatalf("ops -> srv:22: %q", got)
	}
	if got := fw.inbound(peer.ID(pidOf(2)), tcpPacket(them, me, 50001, 22, flagSYN), now); got != "default" {
		t.Fatalf("a peer without ops -> 22: %q", got)
	}
	if got := fw.inbound(a, tcpPacket(them, me, 50002, 23, flagSYN), now); got != "default" {
		t.Fatalf("ops -> 23: %q", got)
	}
	fw.outbound(tcpPacket(me, them, 22, 50000, flagSYN|flagACK), now) // our answer refreshes the peer's flow
	if got := fw.inbound(a, tcpPacket(them, me, 50000, 22, flagACK), now); got != "" {
		t.Fatalf("the flow's next packet: %q", got)
	}
	// Our own flow to the peer: untouched by the change below.
	fw.outbound(udpPacket(me, them, 41000, 53), now)
	// A better policy drops the ssh rule: the peer's open flow is cut on its next packet.
	fw.setPolicy(denyAll(t, 2, PolicyRule{Action: actionAllow, Proto: protoICMP}))
	if got := fw.inbound(a, tcpPacket(them, me, 50000, 22, flagACK), now); got != "policy_changed" {
		t.Fatalf("after the change: %q, want policy_changed", got)
	}
	if got := fw.inbound(a, tcpPacket(them, me, 50000, 22, flagACK), now); got != "default" {
		t.Fatalf("the cut flow is forgotten: %q", got)
	}
	if got := fw.inbound(a, udpPacket(them, me, 53, 41000), now); got != "" {
		t.Fatalf("the reply to our own flow after the change: %q", got)
	}
	// Echo requests are allowed by rule and open a flow; echo replies we send keep it alive.
	echo := icmpPacket(them, me, 8, 77, nil)
	if got := fw.inbound(a, echo, now); got != "" {
		t.Fatalf("echo request: %q", got)
	}
	st := fw.status()
	byReason := st["denied_by_reason"].(map[string]uint64)
	if byReason["default"] != 3 || byReason["policy_changed"] != 1 || st["denied"] != uint64(4) {
		t.Fatalf("counters: %v", st)
	}
}

func TestMalformedFragmentsAndExtensionHeaders(t *testing.T) {
	me, them := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.9")
	fw := newFirewall(peer.ID(pidOf(3)), nil, func(peer.ID) []string { return nil })
	fw.setPolicy(denyAll(t, 1,
		PolicyRule{Action: actionAllow, Proto: protoUDP, PortFirst: 53, PortLast: 53},
		PolicyRule{Action: actionAllow, Proto: protoTCP}))
	from, now := peer.ID(pidOf(1)), time.Unix(t0, 0)
	if got := fw.inbound(from, tcpPacket(them, me, 1, 2, flagSYN)[:30], now); got != "malformed" {
		t.Errorf("TCP cut before its flags: %q", got)
	}
	if got := fw.inbound(from, []byte{0x45, 0, 0}, now); got != "malformed" {
		t.Errorf("three bytes: %q", got)
	}
	frag := udpPacket(them, me, 9, 53)
	binary.BigEndian.PutUint16(frag[6:], 0x0010) // offset 16*8: a non-first fragment has no ports
	if got := fw.inbound(from, frag, now); got != "default" {
		t.Errorf("non-first UDP fragment under a port rule: %q, want default", got)
	}
	if got := fw.inbound(from, udpPacket(them, me, 9, 53), now); got != "" {
		t.Errorf("UDP 53: %q", got)
	}
	// IPv6 with a hop-by-hop header before UDP 53.
	me6, them6 := netip.MustParseAddr("fd00::2"), netip.MustParseAddr("fd00::9")
	plain := udpPacket(them6, me6, 9, 53)
	withHBH := append(append(append([]byte{}, plain[:40]...), protoUDP, 0, 0, 0, 0, 0, 0, 0), plain[40:]...)
	withHBH[6] = 0
	if got := fw.inbound(from, withHBH, now); got != "" {
		t.Errorf("UDP 53 after a hop-by-hop header: %q", got)
	}
}

func TestConntrackEvictsTheOldestWhenFull(t *testing.T) {
	me, them := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.9")
	fw := newFirewall(peer.ID(pidOf(3)), nil, func(peer.ID) []string { return nil })
	fw.max = 4
	fw.setPolicy(denyAll(t, 1))
	now := time.Unix(t0, 0)
	for i := range 6 {
		fw.outbound(udpPacket(me, them, uint16(40000+i), 7), now)
	}
	st := fw.status()
	if st["flows"] != 4 || st["conntrack"].(map[string]uint64)["evicted"] != 2 {
		t.Fatalf("after 6 flows in a table of 4: %v", st)
	}
	if got := fw.inbound(peer.ID(pidOf(1)), udpPacket(them, me, 7, 40000), now); got != "default" {
		t.Errorf("the reply of an evicted flow: %q", got)
	}
	if got := fw.inbound(peer.ID(pidOf(1)), udpPacket(them, me, 7, 40005), now); got != "" {
		t.Errorf("the reply of a kept flow: %q", got)
	}
}

func TestNoPolicyOrAllowAllIsInactive(t *testing.T) {
	fw := newFirewall(peer.ID(pidOf(3)), nil, func(peer.ID) []string { return nil })
	if fw.inbound(peer.ID(pidOf(1)), []byte{1}, time.Now()) != "" {
		t.Error("without a policy every packet passes")
	}
	data, _ := signPolicy(ownerSigner, Policy{NetworkID: vecNID(), Seq: 1, Default: actionAllow,
		Rules: []PolicyRule{{Action: actionDeny, ToPeer: pidOf(2)}}})
	p, _ := openPolicyBytes(data, vecNID())
	fw.setPolicy(p)
	if st := fw.status(); st["active"] != false || st["rules_here"] != 0 {
		t.Errorf("a rule about another node: %v", st)
	}
}

func FuzzOpenPolicy(f *testing.F) {
	f.Add([]byte{})
	f.Add(mustHex("0a02080112"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := openPolicyBytes(data, vecNID())
		if err == nil && !bytes.Equal(p.Raw, data) {
			t.Fatal("accepted bytes are not kept as they are")
		}
		fw := newFirewall(peer.ID(pidOf(3)), nil, func(peer.ID) []string { return nil })
		fw.setPolicy(&Policy{Seq: 1, Default: actionDeny})
		fw.inbound(peer.ID(pidOf(1)), data, time.Unix(t0, 0)) // never panics on any bytes
		fw.outbound(data, time.Unix(t0, 0))
	})
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}
