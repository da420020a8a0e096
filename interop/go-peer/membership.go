package main

// Networks with an owner, docs/protocol.md §15: network IDs (§15.1),
// membership certificates (§15.2), their one canonical byte form and
// signatures (§15.3), validation (§15.4), revocation lists (§15.5), and the
// values an invite derives (§15.6). Sans-IO: bytes, a network ID, a clock
// value and a revocation set go in; a *Certificate / *RevocationList or an
// error saying why comes out. Written from the document alone.
//
// Canonical form is checked the way §15.3 describes: parse the known fields
// (a known number with another wire type counts as unknown), encode them
// again in field order with proto3's omissions, and refuse the input unless
// the bytes are identical.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

const (
	certContext          = "p2pvpn/membership/certificate/1\x00"
	revocationContext    = "p2pvpn/membership/revocation-list/1\x00"
	networkIDContext     = "p2pvpn/membership/network-id/1\x00"
	inviteIDContext      = "p2pvpn/membership/invite-id/1\x00"
	joinProofContext     = "p2pvpn/membership/join-proof/1\x00"
	maxCertSize          = 4096
	maxListSize          = 65536
	maxRevocations       = 1024
	maxGroups            = 16
	maxLifetime          = 400 * 86400
	clockSkew            = 300
	roleRelay            = 1
	roleExit             = 2
	roleAdmin            = 4
	membershipCapability = "membership/1"
	certTextPrefix       = "p2pvpn-cert1:"
	inviteTextPrefix     = "p2pvpn-invite1:"
)

var (
	networkIDRe  = regexp.MustCompile(`^[a-z2-7]{32}$`)
	memberNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	groupRe      = regexp.MustCompile(`^[A-Za-z0-9._-]{1,32}$`)
	b32Lower     = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	b64url       = base64.RawURLEncoding.Strict() // no padding; non-zero trailing bits refused
	v4OverlayNet = netip.MustParsePrefix("100.64.0.0/10")
	roleNames    = []struct {
		name string
		bit  uint32
	}{{"relay", roleRelay}, {"exit", roleExit}, {"admin", roleAdmin}}
)

// networkID is §15.1: base32(SHA-256(context || 08 01 12 20 || K)[0:20]), lowercase, unpadded.
func networkID(ownerKey []byte) string {
	h := sha256.New()
	h.Write([]byte(networkIDContext))
	h.Write([]byte{0x08, 0x01, 0x12, 0x20})
	h.Write(ownerKey)
	return b32Lower.EncodeToString(h.Sum(nil)[:20])
}

func peerIDOfKey(key []byte) []byte { return append(append([]byte{}, ed25519IDPrefix...), key...) }

// keyOfPeerID is the Ed25519 key inlined in a 38-byte peer ID, or nil.
func keyOfPeerID(id []byte) []byte {
	if len(id) == 38 && bytes.HasPrefix(id, ed25519IDPrefix) {
		return id[6:]
	}
	return nil
}

// Certificate is a certificate whose bytes and signatures are good (§15.4 steps 1-6).
type Certificate struct {
	NetworkID string
	PeerID    []byte
	Name      string
	IPv4      []byte
	IPv6      []byte
	Roles     uint32
	Groups    []string
	NotBefore uint64
	NotAfter  uint64
	Issuer    []byte
	Admin     *Certificate // the signing admin's certificate; nil when the owner signed
	Raw       []byte       // the SignedCertificate bytes as received
}

func (c *Certificate) Addr4() netip.Addr { a, _ := netip.AddrFromSlice(c.IPv4); return a }
func (c *Certificate) Addr6() netip.Addr { a, _ := netip.AddrFromSlice(c.IPv6); return a }

func rolesText(roles uint32) string {
	var names []string
	for _, r := range roleNames {
		if roles&r.bit != 0 {
			names = append(names, r.name)
		}
	}
	return strings.Join(names, ",")
}

func parseRoles(text string) (uint32, error) {
	var roles uint32
	for _, part := range strings.Split(text, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		found := false
		for _, r := range roleNames {
			if r.name == part {
				roles, found = roles|r.bit, true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown role %q (known: relay, exit, admin)", part)
		}
	}
	return roles, nil
}

// -- canonical encoding (§15.3) ---------------------------------------------------------------------

func encodeCertBody(c *Certificate) []byte {
	var w pbWriter
	w.bytes(1, []byte(c.NetworkID))
	w.bytes(2, c.PeerID)
	w.bytes(3, []byte(c.Name))
	w.bytes(4, c.IPv4)
	w.bytes(5, c.IPv6)
	w.varint(6, uint64(c.Roles))
	for _, g := range c.Groups {
		w.repeated(7, []byte(g))
	}
	w.varint(8, c.NotBefore)
	w.varint(9, c.NotAfter)
	w.bytes(10, c.Issuer)
	return w.b
}

// signed is a SignedCertificate or a SignedRevocationList: the same three fields.
type signed struct {
	body, signature []byte
	issuerCert      []byte
	hasIssuerCert   bool // a present message field is on the wire even when empty
}

func (s *signed) encode() []byte {
	var w pbWriter
	w.bytes(1, s.body)
	w.bytes(2, s.signature)
	if s.hasIssuerCert {
		w.repeated(3, s.issuerCert)
	}
	return w.b
}

var errNotCanonical = errors.New("not canonically encoded")

// parseSigned parses a Signed* container and insists on its canonical form.
func parseSigned(data []byte, what string) (*signed, error) {
	s := &signed{}
	err := pbWalk(data, func(f pbField) error {
		if f.typ != protowire.BytesType {
			return nil
		}
		switch f.num {
		case 1:
			s.body = f.bytes
		case 2:
			s.signature = f.bytes
		case 3: // embedded message seen twice merges; canonical form allows it once anyway
			s.issuerCert, s.hasIssuerCert = append(s.issuerCert, f.bytes...), true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s is not a valid protobuf message", what)
	}
	if !bytes.Equal(s.encode(), data) {
		return nil, fmt.Errorf("%s is %w", what, errNotCanonical)
	}
	return s, nil
}

func utf8Field(what string, b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%s is not valid UTF-8", what)
	}
	return string(b), nil
}

func parseCertBody(data []byte) (*Certificate, error) {
	c := &Certificate{}
	err := pbWalk(data, func(f pbField) error {
		var err error
		switch {
		case f.typ == protowire.VarintType && f.num == 6:
			if f.varint > math.MaxUint32 {
				return errNotCanonical // a uint32 field: a runtime would truncate, so the bytes cannot round-trip
			}
			c.Roles = uint32(f.varint)
		case f.typ == protowire.VarintType && f.num == 8:
			c.NotBefore = f.varint
		case f.typ == protowire.VarintType && f.num == 9:
			c.NotAfter = f.varint
		case f.typ != protowire.BytesType:
		case f.num == 1:
			c.NetworkID, err = utf8Field("network_id", f.bytes)
		case f.num == 2:
			c.PeerID = f.bytes
		case f.num == 3:
			c.Name, err = utf8Field("name", f.bytes)
		case f.num == 4:
			c.IPv4 = f.bytes
		case f.num == 5:
			c.IPv6 = f.bytes
		case f.num == 7:
			var g string
			g, err = utf8Field("group", f.bytes)
			c.Groups = append(c.Groups, g)
		case f.num == 10:
			c.Issuer = f.bytes
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("certificate body is not a valid protobuf Certificate: %v", err)
	}
	if !bytes.Equal(encodeCertBody(c), data) {
		return nil, fmt.Errorf("certificate body is %w", errNotCanonical)
	}
	return c, nil
}

// -- validation (§15.4) -------------------------------------------------------------------------------

// checkCertFields is step 4: every field of §15.2's table, for network n.
func checkCertFields(c *Certificate, n string) error {
	if !networkIDRe.MatchString(c.NetworkID) {
		return errors.New("certificate: network_id is not a network ID")
	}
	if c.NetworkID != n {
		return fmt.Errorf("certificate is for network %s, not %s", c.NetworkID, n)
	}
	if keyOfPeerID(c.PeerID) == nil {
		return errors.New("certificate: peer_id is not an Ed25519 peer ID")
	}
	if !memberNameRe.MatchString(c.Name) {
		return fmt.Errorf("certificate: name %q is not a lowercase DNS label", c.Name)
	}
	if len(c.IPv4) != 4 {
		return errors.New("certificate: ipv4 is not 4 bytes")
	}
	a4 := c.Addr4()
	if !v4OverlayNet.Contains(a4) || a4 == netip.MustParseAddr("100.64.0.0") || a4 == netip.MustParseAddr("100.127.255.255") {
		return fmt.Errorf("certificate: ipv4 %s is not a host of %s", a4, v4OverlayNet)
	}
	if len(c.IPv6) != 16 {
		return errors.New("certificate: ipv6 is not 16 bytes")
	}
	prefix := v6Prefix(c.NetworkID)
	if !bytes.Equal(c.IPv6[:8], prefix[:]) || bytes.Equal(c.IPv6[8:], make([]byte, 8)) {
		return fmt.Errorf("certificate: ipv6 %s is not a host of the network's /64", c.Addr6())
	}
	if len(c.Groups) > maxGroups {
		return fmt.Errorf("certificate: more than %d groups", maxGroups)
	}
	for i, g := range c.Groups {
		if !groupRe.MatchString(g) {
			return fmt.Errorf("certificate: group %q is not [A-Za-z0-9._-]{1,32}", g)
		}
		if i > 0 && c.Groups[i-1] >= g { // Go compares strings as unsigned bytes
			return errors.New("certificate: groups must be sorted and unique")
		}
	}
	if c.NotBefore == 0 || c.NotAfter <= c.NotBefore || c.NotAfter-c.NotBefore > maxLifetime {
		return fmt.Errorf("certificate: validity must satisfy 0 < not_before < not_after <= not_before + %d", maxLifetime)
	}
	if len(c.Issuer) != 32 {
		return errors.New("certificate: issuer is not a 32-byte Ed25519 key")
	}
	return nil
}

// openCertificate is steps 1-6 of §15.4: size, canonical bytes, fields, signer, signature.
func openCertificate(data []byte, n string) (*Certificate, error) { return openCert(data, n, 0) }

func openCert(data []byte, n string, depth int) (*Certificate, error) {
	if len(data) > maxCertSize {
		return nil, fmt.Errorf("certificate is %d bytes, more than %d", len(data), maxCertSize)
	}
	s, err := parseSigned(data, "certificate")
	if err != nil {
		return nil, err
	}
	c, err := parseCertBody(s.body)
	if err != nil {
		return nil, err
	}
	if err := checkCertFields(c, n); err != nil {
		return nil, err
	}
	if len(s.signature) != 64 {
		return nil, errors.New("certificate: signature is not 64 bytes")
	}
	if s.hasIssuerCert {
		if depth > 0 {
			return nil, errors.New("certificate: an admin certificate must be signed by the owner (chain too long)")
		}
		admin, err := openCert(s.issuerCert, n, 1)
		if err != nil {
			return nil, fmt.Errorf("its admin's %v", err)
		}
		if admin.Roles&roleAdmin == 0 {
			return nil, errors.New("certificate: its signer's certificate does not have the admin role")
		}
		if !bytes.Equal(admin.PeerID, peerIDOfKey(c.Issuer)) {
			return nil, errors.New("certificate: issuer key is not the key of the attached admin certificate")
		}
		c.Admin = admin
	} else if networkID(c.Issuer) != n {
		return nil, errors.New("certificate: issuer is neither the network owner nor an admin")
	}
	// crypto/ed25519 verifies strictly (RFC 8032: S < L), as §15.3 requires.
	if !ed25519.Verify(ed25519.PublicKey(c.Issuer), append([]byte(certContext), s.body...), s.signature) {
		return nil, errors.New("certificate: bad signature")
	}
	c.Raw = data
	return c, nil
}

// revokedBy is step 9 for one certificate: revocation is by peer ID and time, never by bytes.
func revokedBy(c *Certificate, r map[string]uint64) bool {
	t, ok := r[string(c.PeerID)]
	return ok && c.NotBefore < t
}

// checkCert is steps 7-9 of §15.4: the holder (if peerID is given), the clock and revocations,
// for the certificate and for its admin's.
func checkCert(c *Certificate, now uint64, r map[string]uint64, peerID []byte) error {
	if peerID != nil && !bytes.Equal(c.PeerID, peerID) {
		return errors.New("certificate belongs to another peer")
	}
	for _, x := range []struct {
		c   *Certificate
		who string
	}{{c, "certificate"}, {c.Admin, "its admin's certificate"}} {
		if x.c == nil {
			continue
		}
		if now+clockSkew < x.c.NotBefore {
			return fmt.Errorf("%s is not valid yet (from %d)", x.who, x.c.NotBefore)
		}
		if now >= x.c.NotAfter && now-x.c.NotAfter >= clockSkew {
			return fmt.Errorf("%s expired at %d", x.who, x.c.NotAfter)
		}
		if revokedBy(x.c, r) {
			return fmt.Errorf("%s is revoked", x.who)
		}
	}
	return nil
}

// verifyCertificate is the whole of §15.4.
func verifyCertificate(data []byte, n string, now uint64, r map[string]uint64, peerID []byte) (*Certificate, error) {
	c, err := openCertificate(data, n)
	if err != nil {
		return nil, err
	}
	return c, checkCert(c, now, r, peerID)
}

// -- issuing -------------------------------------------------------------------------------------------

// Signer signs certificates and lists: the owner key (no certificate), or an admin's node key
// with the admin's own certificate attached.
type Signer struct {
	Key        ed25519.PrivateKey
	IssuerCert []byte
}

func (s Signer) public() []byte { return []byte(s.Key.Public().(ed25519.PublicKey)) }

// issueCertificate signs c (its Issuer is set here) and checks the result as a verifier would.
func issueCertificate(s Signer, c Certificate) ([]byte, error) {
	c.Issuer = s.public()
	groups := append([]string{}, c.Groups...)
	sort.Strings(groups)
	c.Groups = groups[:0]
	for i, g := range groups {
		if i == 0 || g != groups[i-1] {
			c.Groups = append(c.Groups, g)
		}
	}
	if err := checkCertFields(&c, c.NetworkID); err != nil {
		return nil, err
	}
	out := signCertificate(s, &c)
	if _, err := openCertificate(out, c.NetworkID); err != nil {
		return nil, fmt.Errorf("refusing to hand out what a verifier would refuse: %v", err)
	}
	return out, nil
}

// signCertificate encodes and signs c as it is, checking nothing: issueCertificate's core, and
// how tests forge a certificate (a key that is neither the owner's nor an admin's).
func signCertificate(s Signer, c *Certificate) []byte {
	c.Issuer = s.public()
	body := encodeCertBody(c)
	return (&signed{
		body: body, signature: ed25519.Sign(s.Key, append([]byte(certContext), body...)),
		issuerCert: s.IssuerCert, hasIssuerCert: s.IssuerCert != nil,
	}).encode()
}

// addressIndexFor is the derivation index (§3.1) that gives ipv4 for peerID, or 0 if none does:
// what a member puts into Hello.address_index (§15.9.1).
func addressIndexFor(peerID []byte, network string, ipv4 netip.Addr) uint32 {
	for i := uint32(0); i <= maxAddressIndex; {
		a, used, err := deriveIPv4(peerID, network, i)
		if err != nil || used > maxAddressIndex {
			return 0
		}
		if a == ipv4 {
			return used
		}
		i = used + 1
	}
	return 0
}

func certText(data []byte) string { return certTextPrefix + b64url.EncodeToString(data) }

func certFromText(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if !strings.HasPrefix(text, certTextPrefix) {
		return nil, fmt.Errorf("not a certificate: it must start with %q", certTextPrefix)
	}
	data, err := b64url.DecodeString(text[len(certTextPrefix):])
	if err != nil {
		return nil, errors.New("certificate is not canonical base64url")
	}
	return data, nil
}

// -- revocation lists (§15.5) ----------------------------------------------------------------------------

type revocation struct {
	PeerID    []byte
	NotBefore uint64
}

// RevocationList is a list whose bytes, signer and signature are good.
type RevocationList struct {
	NetworkID string
	Seq       uint64
	Entries   []revocation
	Issuer    []byte
	Admin     *Certificate
	Raw       []byte
}

func encodeListBody(l *RevocationList) []byte {
	var w pbWriter
	w.bytes(1, []byte(l.NetworkID))
	w.varint(2, l.Seq)
	for _, e := range l.Entries {
		var ew pbWriter
		ew.bytes(1, e.PeerID)
		ew.varint(2, e.NotBefore)
		w.repeated(3, ew.b)
	}
	w.bytes(4, l.Issuer)
	return w.b
}

func parseListBody(data []byte) (*RevocationList, error) {
	l := &RevocationList{}
	err := pbWalk(data, func(f pbField) error {
		var err error
		switch {
		case f.typ == protowire.VarintType && f.num == 2:
			l.Seq = f.varint
		case f.typ != protowire.BytesType:
		case f.num == 1:
			l.NetworkID, err = utf8Field("network_id", f.bytes)
		case f.num == 3:
			if len(l.Entries) >= maxRevocations {
				return fmt.Errorf("more than %d entries", maxRevocations)
			}
			var e revocation
			err = pbWalk(f.bytes, func(g pbField) error {
				switch {
				case g.num == 1 && g.typ == protowire.BytesType:
					e.PeerID = g.bytes
				case g.num == 2 && g.typ == protowire.VarintType:
					e.NotBefore = g.varint
				}
				return nil
			})
			l.Entries = append(l.Entries, e)
		case f.num == 4:
			l.Issuer = f.bytes
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revocation list body is not a valid protobuf RevocationList: %v", err)
	}
	if !bytes.Equal(encodeListBody(l), data) {
		return nil, fmt.Errorf("revocation list body is %w", errNotCanonical)
	}
	return l, nil
}

// openListBytes checks a list's bytes, fields, signer and signature (§15.5), without a clock.
func openListBytes(data []byte, n string) (*RevocationList, error) {
	if len(data) > maxListSize {
		return nil, fmt.Errorf("revocation list is %d bytes, more than %d", len(data), maxListSize)
	}
	s, err := parseSigned(data, "revocation list")
	if err != nil {
		return nil, err
	}
	l, err := parseListBody(s.body)
	if err != nil {
		return nil, err
	}
	if !networkIDRe.MatchString(l.NetworkID) || l.NetworkID != n {
		return nil, fmt.Errorf("revocation list is for network %q, not %s", l.NetworkID, n)
	}
	for i, e := range l.Entries {
		if keyOfPeerID(e.PeerID) == nil {
			return nil, errors.New("revocation list: an entry's peer_id is not an Ed25519 peer ID")
		}
		if i > 0 && bytes.Compare(l.Entries[i-1].PeerID, e.PeerID) >= 0 {
			return nil, errors.New("revocation list: entries must be sorted by peer_id, one per peer")
		}
		if e.NotBefore == 0 {
			return nil, errors.New("revocation list: an entry has not_before 0")
		}
	}
	if len(l.Issuer) != 32 || len(s.signature) != 64 {
		return nil, errors.New("revocation list: issuer must be 32 bytes and signature 64 bytes")
	}
	if s.hasIssuerCert {
		admin, err := openCert(s.issuerCert, n, 1)
		if err != nil {
			return nil, fmt.Errorf("revocation list: its admin's %v", err)
		}
		if admin.Roles&roleAdmin == 0 || !bytes.Equal(admin.PeerID, peerIDOfKey(l.Issuer)) {
			return nil, errors.New("revocation list: signer is not the admin of the attached certificate")
		}
		l.Admin = admin
	} else if networkID(l.Issuer) != n {
		return nil, errors.New("revocation list: issuer is neither the network owner nor an admin")
	}
	if !ed25519.Verify(ed25519.PublicKey(l.Issuer), append([]byte(revocationContext), s.body...), s.signature) {
		return nil, errors.New("revocation list: bad signature")
	}
	l.Raw = data
	return l, nil
}

// openList is the whole validation of §15.5: bytes and signature, then an admin signer's
// certificate at now against the reader's current revocations.
func openList(data []byte, n string, now uint64, r map[string]uint64) (*RevocationList, error) {
	l, err := openListBytes(data, n)
	if err != nil {
		return nil, err
	}
	if l.Admin != nil {
		if err := checkCert(l.Admin, now, r, nil); err != nil {
			return nil, fmt.Errorf("revocation list: signer's %v", err)
		}
	}
	return l, nil
}

// signRevocationList signs a list of entries (peer_id_bytes -> not_before), sorted by peer ID.
func signRevocationList(s Signer, n string, seq uint64, entries map[string]uint64) ([]byte, error) {
	if len(entries) > maxRevocations {
		return nil, fmt.Errorf("revocation list: more than %d entries", maxRevocations)
	}
	l := &RevocationList{NetworkID: n, Seq: seq, Issuer: s.public()}
	for p, t := range entries {
		l.Entries = append(l.Entries, revocation{PeerID: []byte(p), NotBefore: t})
	}
	sort.Slice(l.Entries, func(i, j int) bool { return bytes.Compare(l.Entries[i].PeerID, l.Entries[j].PeerID) < 0 })
	body := encodeListBody(l)
	out := (&signed{
		body: body, signature: ed25519.Sign(s.Key, append([]byte(revocationContext), body...)),
		issuerCert: s.IssuerCert, hasIssuerCert: s.IssuerCert != nil,
	}).encode()
	if _, err := openListBytes(out, n); err != nil {
		return nil, err
	}
	return out, nil
}

// better is the select rule: higher seq, then the lexicographically larger bytes.
func better(a, b *RevocationList) bool {
	if a.Seq != b.Seq {
		return a.Seq > b.Seq
	}
	return bytes.Compare(a.Raw, b.Raw) > 0
}

// RevocationSet is what a node knows: per peer the latest not_before of every valid list,
// and the best list to pass on.
type RevocationSet struct {
	Entries map[string]uint64
	Best    *RevocationList
}

// merge takes in a valid list; it returns the peers whose threshold moved.
func (r *RevocationSet) merge(l *RevocationList) []string {
	var changed []string
	for _, e := range l.Entries {
		if e.NotBefore > r.Entries[string(e.PeerID)] {
			r.Entries[string(e.PeerID)] = e.NotBefore
			changed = append(changed, string(e.PeerID))
		}
	}
	if r.Best == nil || better(l, r.Best) {
		r.Best = l
	}
	return changed
}

// -- invites (§15.6) ---------------------------------------------------------------------------------

type Invite struct {
	NetworkID   string
	Inviter     []byte
	Addrs       [][]byte
	Secret      []byte
	Expires     uint64
	NetworkName string
}

func encodeInvite(i *Invite) []byte {
	var w pbWriter
	w.bytes(1, []byte(i.NetworkID))
	w.bytes(2, i.Inviter)
	for _, a := range i.Addrs {
		w.repeated(3, a)
	}
	w.bytes(4, i.Secret)
	w.varint(5, i.Expires)
	w.bytes(6, []byte(i.NetworkName))
	return w.b
}

func inviteToken(i *Invite) string { return inviteTextPrefix + b64url.EncodeToString(encodeInvite(i)) }

func inviteID(secret []byte) []byte {
	d := sha256.Sum256(append([]byte(inviteIDContext), secret...))
	return d[:16]
}

func joinProof(secret []byte, network string, joiner []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(joinProofContext))
	m.Write([]byte(network))
	m.Write([]byte{0})
	m.Write(joiner)
	return m.Sum(nil)
}

func encodeJoinRequest(inviteID, proof []byte) []byte {
	var w pbWriter
	w.bytes(1, inviteID)
	w.bytes(2, proof)
	return w.b
}
