package main

// The network policy, docs/protocol.md §17.1-§17.3: its schema, its one
// canonical byte form, signing and validation, and which of two policies is
// better. Sans-IO: bytes, a network ID, a clock value and a revocation set go
// in; a *Policy or an error saying why comes out. Written from the document.
//
// Canonical form is checked as for certificates (§15.3): parse the known
// fields, encode them again in field order with proto3's omissions, and refuse
// the input unless the bytes are identical.

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

const (
	policyContext    = "p2pvpn/policy/1\x00"
	policyTextPrefix = "p2pvpn-policy1:"
	maxPolicySize    = 32768
	maxPolicyRules   = 256
	actionAllow      = 1
	actionDeny       = 2
	protoAny         = 0
	protoTCP         = 6
)

// PolicyRule is one Rule of §17.1.
type PolicyRule struct {
	Action    uint32
	FromGroup string
	FromPeer  []byte
	ToGroup   string
	ToPeer    []byte
	Proto     uint32
	PortFirst uint32
	PortLast  uint32
}

// Policy is a SignedPolicy whose bytes, signer and signature are good (§17.3 steps 1-6).
type Policy struct {
	NetworkID string
	Seq       uint64
	Default   uint32
	Rules     []PolicyRule
	Issuer    []byte
	Admin     *Certificate // the signing admin's certificate; nil when the owner signed
	Raw       []byte       // the SignedPolicy bytes
}

func encodeRule(r *PolicyRule) []byte {
	var w pbWriter
	w.varint(1, uint64(r.Action))
	w.bytes(2, []byte(r.FromGroup))
	w.bytes(3, r.FromPeer)
	w.bytes(4, []byte(r.ToGroup))
	w.bytes(5, r.ToPeer)
	w.varint(6, uint64(r.Proto))
	w.varint(7, uint64(r.PortFirst))
	w.varint(8, uint64(r.PortLast))
	return w.b
}

func encodePolicyBody(p *Policy) []byte {
	var w pbWriter
	w.bytes(1, []byte(p.NetworkID))
	w.varint(2, p.Seq)
	w.varint(3, uint64(p.Default))
	for i := range p.Rules {
		w.repeated(4, encodeRule(&p.Rules[i]))
	}
	w.bytes(5, p.Issuer)
	return w.b
}

// signedPolicy is SignedPolicy{policy, signature, issuer_certificate}: three proto3 bytes fields.
type signedPolicy struct{ policy, signature, issuerCert []byte }

func (s *signedPolicy) encode() []byte {
	var w pbWriter
	w.bytes(1, s.policy)
	w.bytes(2, s.signature)
	w.bytes(3, s.issuerCert)
	return w.b
}

// u32 is a varint field declared uint32: a value above 2^32-1 cannot be canonical.
func u32(f pbField, dst *uint32) error {
	if f.varint > math.MaxUint32 {
		return fmt.Errorf("field %d is above 2^32-1", f.num)
	}
	*dst = uint32(f.varint)
	return nil
}

func parseRule(data []byte) (*PolicyRule, error) {
	r := &PolicyRule{}
	err := pbWalk(data, func(f pbField) error {
		var err error
		switch {
		case f.typ == protowire.VarintType && f.num == 1:
			err = u32(f, &r.Action)
		case f.typ == protowire.BytesType && f.num == 2:
			r.FromGroup, err = pbString("from_group", f.bytes)
		case f.typ == protowire.BytesType && f.num == 3:
			r.FromPeer = f.bytes
		case f.typ == protowire.BytesType && f.num == 4:
			r.ToGroup, err = pbString("to_group", f.bytes)
		case f.typ == protowire.BytesType && f.num == 5:
			r.ToPeer = f.bytes
		case f.typ == protowire.VarintType && f.num == 6:
			err = u32(f, &r.Proto)
		case f.typ == protowire.VarintType && f.num == 7:
			err = u32(f, &r.PortFirst)
		case f.typ == protowire.VarintType && f.num == 8:
			err = u32(f, &r.PortLast)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("policy rule: %v", err)
	}
	if !bytes.Equal(encodeRule(r), data) {
		return nil, fmt.Errorf("policy rule is %w", errNotCanonical)
	}
	return r, nil
}

func parsePolicyBody(data []byte) (*Policy, error) {
	p := &Policy{}
	err := pbWalk(data, func(f pbField) error {
		var err error
		switch {
		case f.typ == protowire.BytesType && f.num == 1:
			p.NetworkID, err = pbString("network_id", f.bytes)
		case f.typ == protowire.VarintType && f.num == 2:
			p.Seq = f.varint
		case f.typ == protowire.VarintType && f.num == 3:
			err = u32(f, &p.Default)
		case f.typ == protowire.BytesType && f.num == 4:
			if len(p.Rules) >= maxPolicyRules {
				return fmt.Errorf("more than %d rules", maxPolicyRules)
			}
			var r *PolicyRule
			if r, err = parseRule(f.bytes); err == nil {
				p.Rules = append(p.Rules, *r)
			}
		case f.typ == protowire.BytesType && f.num == 5:
			p.Issuer = f.bytes
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("policy: %v", err)
	}
	if !bytes.Equal(encodePolicyBody(p), data) {
		return nil, fmt.Errorf("policy body is %w", errNotCanonical)
	}
	return p, nil
}

func parseSignedPolicy(data []byte) (*signedPolicy, error) {
	s := &signedPolicy{}
	err := pbWalk(data, func(f pbField) error {
		if f.typ == protowire.BytesType {
			switch f.num {
			case 1:
				s.policy = f.bytes
			case 2:
				s.signature = f.bytes
			case 3:
				s.issuerCert = f.bytes
			}
		}
		return nil
	})
	if err != nil {
		return nil, errors.New("policy is not a valid protobuf message")
	}
	if !bytes.Equal(s.encode(), data) {
		return nil, fmt.Errorf("policy is %w", errNotCanonical)
	}
	return s, nil
}

// checkSelector is §17.1's rows for from/to: at most one of group and peer, each well formed.
func checkSelector(group string, peerID []byte, which string, i int) error {
	if group != "" && len(peerID) > 0 {
		return fmt.Errorf("policy: rule %d: %s_group and %s_peer are both set", i, which, which)
	}
	if group != "" && !groupRe.MatchString(group) {
		return fmt.Errorf("policy: rule %d: %s_group %q is not a group name", i, which, group)
	}
	if len(peerID) > 0 && keyOfPeerID(peerID) == nil {
		return fmt.Errorf("policy: rule %d: %s_peer is not an Ed25519 peer ID", i, which)
	}
	return nil
}

func checkRule(r *PolicyRule, i int) error {
	if r.Action != actionAllow && r.Action != actionDeny {
		return fmt.Errorf("policy: rule %d: action %d is neither 1 (allow) nor 2 (deny)", i, r.Action)
	}
	if err := checkSelector(r.FromGroup, r.FromPeer, "from", i); err != nil {
		return err
	}
	if err := checkSelector(r.ToGroup, r.ToPeer, "to", i); err != nil {
		return err
	}
	switch r.Proto {
	case protoAny, protoICMP, protoTCP, protoUDP:
	default:
		return fmt.Errorf("policy: rule %d: proto %d is not 0, 1, 6 or 17", i, r.Proto)
	}
	if r.PortFirst != 0 || r.PortLast != 0 {
		if r.Proto != protoTCP && r.Proto != protoUDP {
			return fmt.Errorf("policy: rule %d: ports need proto 6 (tcp) or 17 (udp)", i)
		}
		if r.PortFirst < 1 || r.PortFirst > r.PortLast || r.PortLast > 65535 {
			return fmt.Errorf("policy: rule %d: ports must satisfy 1 <= port_first <= port_last <= 65535", i)
		}
	}
	return nil
}

// openPolicyBytes is §17.3 steps 1-6: size, canonical bytes, fields, signer and signature (no clock).
func openPolicyBytes(data []byte, n string) (*Policy, error) {
	if len(data) > maxPolicySize {
		return nil, fmt.Errorf("policy is %d bytes, more than %d", len(data), maxPolicySize)
	}
	s, err := parseSignedPolicy(data)
	if err != nil {
		return nil, err
	}
	p, err := parsePolicyBody(s.policy)
	if err != nil {
		return nil, err
	}
	if !networkIDRe.MatchString(p.NetworkID) || p.NetworkID != n {
		return nil, fmt.Errorf("policy is for network %q, not %s", p.NetworkID, n)
	}
	if p.Seq < 1 {
		return nil, errors.New("policy: seq must be at least 1")
	}
	if p.Default != actionAllow && p.Default != actionDeny {
		return nil, fmt.Errorf("policy: default_action %d is neither 1 (allow) nor 2 (deny)", p.Default)
	}
	for i := range p.Rules {
		if err := checkRule(&p.Rules[i], i); err != nil {
			return nil, err
		}
	}
	if len(p.Issuer) != 32 || len(s.signature) != 64 {
		return nil, errors.New("policy: issuer must be 32 bytes and signature 64 bytes")
	}
	if len(s.issuerCert) > 0 {
		admin, err := openCert(s.issuerCert, n, 1)
		if err != nil {
			return nil, fmt.Errorf("policy: signer's %v", err)
		}
		if admin.Roles&roleAdmin == 0 || !bytes.Equal(admin.PeerID, peerIDOfKey(p.Issuer)) {
			return nil, errors.New("policy: signer is not the admin of the attached certificate")
		}
		p.Admin = admin
	} else if networkID(p.Issuer) != n {
		return nil, errors.New("policy: issuer is neither the network owner nor an admin")
	}
	if !ed25519.Verify(ed25519.PublicKey(p.Issuer), append([]byte(policyContext), s.policy...), s.signature) {
		return nil, errors.New("policy: bad signature")
	}
	p.Raw = data
	return p, nil
}

// openPolicy is the whole of §17.3: steps 1-6, then an admin signer's certificate at now against R.
func openPolicy(data []byte, n string, now uint64, r map[string]uint64) (*Policy, error) {
	p, err := openPolicyBytes(data, n)
	if err != nil {
		return nil, err
	}
	if p.Admin != nil {
		if err := checkCert(p.Admin, now, r, nil); err != nil {
			return nil, fmt.Errorf("policy: signer's %v", err)
		}
	}
	return p, nil
}

// betterPolicy is §17.3's order: the higher seq, then the lexicographically larger SignedPolicy bytes.
func betterPolicy(a, b *Policy) bool {
	if b == nil {
		return a != nil
	}
	if a == nil || a.Seq != b.Seq {
		return a != nil && a.Seq > b.Seq
	}
	return bytes.Compare(a.Raw, b.Raw) > 0
}

// signPolicy signs p (its Issuer is set here) and checks the result as a reader would.
func signPolicy(s Signer, p Policy) ([]byte, error) {
	p.Issuer = s.public()
	body := encodePolicyBody(&p)
	sp := signedPolicy{policy: body, signature: ed25519.Sign(s.Key, append([]byte(policyContext), body...)),
		issuerCert: s.IssuerCert}
	data := sp.encode()
	if _, err := openPolicyBytes(data, p.NetworkID); err != nil {
		return nil, err
	}
	return data, nil
}

func policyText(data []byte) string { return policyTextPrefix + b64url.EncodeToString(data) }

func policyFromText(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if !strings.HasPrefix(text, policyTextPrefix) {
		return nil, fmt.Errorf("a policy in text form starts with %s", policyTextPrefix)
	}
	data, err := b64url.DecodeString(text[len(policyTextPrefix):])
	if err != nil {
		return nil, errors.New("policy text is not canonical base64url")
	}
	return data, nil
}
