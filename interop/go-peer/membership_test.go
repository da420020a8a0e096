package main

// The test vectors of docs/protocol.md §15.10, read from the document itself:
// this implementation reproduces every byte (signatures are deterministic) and
// accepts and refuses exactly what the document says.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"math/big"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

const (
	t0  = 1767225600
	day = 86400
)

func section15(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatalf("reading the document: %v", err)
	}
	s := string(doc)
	i := strings.Index(s, "## 15. Networks with an owner")
	if i < 0 {
		t.Fatal("no §15 in docs/protocol.md")
	}
	return s[i:]
}

// hexBlock is the "<title>, N bytes:" code block of §15.10.
func hexBlock(t *testing.T, sec, title string) []byte {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(title) + `, (\d+) bytes:\n\n` + "```\n([0-9a-f\n]+)```")
	m := re.FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("no hex block %q in §15", title)
	}
	b, err := hex.DecodeString(strings.ReplaceAll(m[2], "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(m[1]); n != len(b) {
		t.Fatalf("%s: the document says %d bytes, the block has %d", title, n, len(b))
	}
	return b
}

func tableValue(t *testing.T, sec, item string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(item) + " \\| `([^`]+)` \\|$").FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("no table row %q in §15", item)
	}
	return m[1]
}

func seedKey(b byte) ed25519.PrivateKey { return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, 32)) }

func pidOf(b byte) []byte { return peerIDOfKey(seedKey(b).Public().(ed25519.PublicKey)) }

var ownerSigner = Signer{Key: seedKey(0x10)}

func vecNID() string { return networkID(ownerSigner.public()) }

func derived(t *testing.T, n byte) (netip.Addr, netip.Addr) {
	t.Helper()
	o, err := deriveOverlay(pidOf(n), vecNID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return o.IPv4, o.IPv6
}

func certA(t *testing.T) []byte {
	v4, v6 := derived(t, 1)
	out, err := issueCertificate(ownerSigner, Certificate{
		NetworkID: vecNID(), PeerID: pidOf(1), Name: "alpha", IPv4: v4.AsSlice(), IPv6: v6.AsSlice(),
		Roles: roleRelay | roleAdmin, NotBefore: t0, NotAfter: t0 + 365*day,
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestNetworkIDVector(t *testing.T) {
	sec := section15(t)
	if got, want := hex.EncodeToString(ownerSigner.public()), tableValue(t, sec, "owner key `K`"); got != want {
		t.Fatalf("owner key %s, document %s", got, want)
	}
	if got, want := vecNID(), tableValue(t, sec, "network ID"); got != want {
		t.Fatalf("network ID %s, document %s", got, want)
	}
	if !networkIDRe.MatchString(vecNID()) {
		t.Fatal("the network ID does not match its own grammar")
	}
	p := v6Prefix(vecNID())
	if got, want := netip.PrefixFrom(netip.AddrFrom16([16]byte(append(p[:], make([]byte, 8)...))), 64).String(),
		tableValue(t, sec, "ULA /64"); got != want {
		t.Fatalf("ULA prefix %s, document %s", got, want)
	}
}

func TestContextsInTheDocument(t *testing.T) {
	sec := section15(t)
	for _, c := range []string{certContext, revocationContext} {
		if !strings.Contains(sec, "`"+hex.EncodeToString([]byte(c))+"`") {
			t.Errorf("context %q is not in the document in hex", c)
		}
	}
}

func TestCertificateAVector(t *testing.T) {
	sec := section15(t)
	doc := hexBlock(t, sec, "Certificate A")
	a := certA(t)
	if !bytes.Equal(a, doc) {
		t.Fatalf("certificate A:\n got %x\nwant %x", a, doc)
	}
	c, err := verifyCertificate(doc, vecNID(), t0, map[string]uint64{}, pidOf(1))
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "alpha" || c.Roles != 5 || c.Addr4().String() != "100.91.146.140" ||
		c.Addr6().String() != "fdf0:4a77:a1c4:0:48a5:a4d8:9f45:36b2" || c.Admin != nil || len(c.Groups) != 0 {
		t.Fatalf("certificate A reads back as %+v", c)
	}
	body, _ := parseSigned(doc, "certificate")
	if len(body.body) != 153 {
		t.Fatalf("Certificate body is %d bytes, the document says 153", len(body.body))
	}
}

func TestCertificateBVectorAndItsValidityWindow(t *testing.T) {
	sec := section15(t)
	doc := hexBlock(t, sec, "Certificate B")
	admin := Signer{Key: seedKey(1), IssuerCert: certA(t)}
	b, err := issueCertificate(admin, Certificate{
		NetworkID: vecNID(), PeerID: pidOf(2), Name: "bravo",
		IPv4: netip.MustParseAddr("100.101.133.182").AsSlice(), IPv6: netip.MustParseAddr("fdf0:4a77:a1c4:0:f252:99a9:2ff8:69a").AsSlice(),
		Roles: roleExit, Groups: []string{"ops", "dev"}, NotBefore: t0, NotAfter: t0 + 7*day,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, doc) {
		t.Fatalf("certificate B:\n got %x\nwant %x", b, doc)
	}
	none := map[string]uint64{}
	for _, now := range []uint64{t0 - 300, t0, 1767830699} {
		c, err := verifyCertificate(doc, vecNID(), now, none, pidOf(2))
		if err != nil {
			t.Fatalf("B at %d: %v", now, err)
		}
		if c.Admin == nil || c.Admin.Name != "alpha" || strings.Join(c.Groups, ",") != "dev,ops" {
			t.Fatalf("B reads back as %+v", c)
		}
	}
	for _, now := range []uint64{t0 - 301, 1767830700} {
		if _, err := verifyCertificate(doc, vecNID(), now, none, nil); err == nil {
			t.Fatalf("B valid at %d", now)
		}
	}
	if _, err := verifyCertificate(certA(t), vecNID(), 1798761899, none, nil); err != nil {
		t.Fatalf("A at its last second: %v", err)
	}
	if _, err := verifyCertificate(certA(t), vecNID(), 1798761900, none, nil); err == nil {
		t.Fatal("A valid after its end + skew")
	}
	// R = {peer 1: T0 + 1}: A is revoked and B (signed by A's holder) is void.
	r := map[string]uint64{string(pidOf(1)): t0 + 1}
	if _, err := verifyCertificate(certA(t), vecNID(), t0, r, nil); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("A with peer 1 revoked: %v", err)
	}
	if _, err := verifyCertificate(doc, vecNID(), t0, r, nil); err == nil || !strings.Contains(err.Error(), "admin") {
		t.Fatalf("B with its admin revoked: %v", err)
	}
	// A revocation at exactly not_before voids nothing (strictly earlier certificates only).
	if _, err := verifyCertificate(certA(t), vecNID(), t0, map[string]uint64{string(pidOf(1)): t0}, nil); err != nil {
		t.Fatalf("A with a revocation at its own not_before: %v", err)
	}
	// Step 7: held by another peer; step 3: another network.
	if _, err := verifyCertificate(doc, vecNID(), t0, none, pidOf(3)); err == nil {
		t.Fatal("B accepted from peer 3")
	}
	if _, err := verifyCertificate(doc, networkID(seedKey(0x11).Public().(ed25519.PublicKey)), t0, none, nil); err == nil {
		t.Fatal("B accepted in another network")
	}
	// Text form (§15.11).
	text := certText(doc)
	if !strings.HasPrefix(text, "p2pvpn-cert1:") || strings.ContainsAny(text, "=+/") {
		t.Fatalf("text form %q", text)
	}
	back, err := certFromText(text)
	if err != nil || !bytes.Equal(back, doc) {
		t.Fatalf("text form does not round-trip: %v", err)
	}
}

func TestRevocationListVector(t *testing.T) {
	sec := section15(t)
	doc := hexBlock(t, sec, "Revocation list L")
	l, err := signRevocationList(ownerSigner, vecNID(), 1, map[string]uint64{string(pidOf(3)): t0 + day})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(l, doc) {
		t.Fatalf("list L:\n got %x\nwant %x", l, doc)
	}
	opened, err := openList(doc, vecNID(), t0, map[string]uint64{})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := parseSigned(doc, "list")
	if len(s.body) != 118 || opened.Seq != 1 || len(opened.Entries) != 1 || opened.Entries[0].NotBefore != 1767312000 {
		t.Fatalf("list L reads back as %+v (body %d bytes)", opened, len(s.body))
	}
	set := &RevocationSet{Entries: map[string]uint64{}}
	if changed := set.merge(opened); len(changed) != 1 || set.Best != opened {
		t.Fatalf("merge: %v", changed)
	}
	if changed := set.merge(opened); len(changed) != 0 {
		t.Fatal("merging the same list twice changed something")
	}
	// A certificate of peer 3 from before T0 + 1 day is void; one from then on is not.
	v4, v6 := derived(t, 3)
	for _, nb := range []uint64{t0, t0 + day} {
		c3, err := issueCertificate(ownerSigner, Certificate{NetworkID: vecNID(), PeerID: pidOf(3), Name: "charlie",
			IPv4: v4.AsSlice(), IPv6: v6.AsSlice(), NotBefore: nb, NotAfter: nb + 7*day})
		if err != nil {
			t.Fatal(err)
		}
		_, err = verifyCertificate(c3, vecNID(), nb, set.Entries, pidOf(3))
		if (nb == t0) != (err != nil) {
			t.Fatalf("certificate of peer 3 from %d: %v", nb, err)
		}
	}
}

func TestAdminSignedListNeedsAValidAdmin(t *testing.T) {
	admin := Signer{Key: seedKey(1), IssuerCert: certA(t)}
	l, err := signRevocationList(admin, vecNID(), 2, map[string]uint64{string(pidOf(3)): t0 + day})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openList(l, vecNID(), t0, map[string]uint64{}); err != nil {
		t.Fatal(err)
	}
	if _, err := openList(l, vecNID(), t0, map[string]uint64{string(pidOf(1)): t0 + 1}); err == nil {
		t.Fatal("a list from a revoked admin was accepted")
	}
	if _, err := openList(l, vecNID(), 1798761900, map[string]uint64{}); err == nil {
		t.Fatal("a list from an expired admin was accepted")
	}
	// A member (no admin bit) cannot sign.
	b := hexBlock(t, section15(t), "Certificate B")
	if _, err := signRevocationList(Signer{Key: seedKey(2), IssuerCert: b}, vecNID(), 3, nil); err == nil {
		t.Fatal("a member signed a list")
	}
	// Nor can a stranger's key pretend to be the owner.
	if _, err := signRevocationList(Signer{Key: seedKey(9)}, vecNID(), 3, nil); err == nil {
		t.Fatal("a stranger signed a list")
	}
}

func TestInviteVector(t *testing.T) {
	sec := section15(t)
	addr, err := ma.NewMultiaddr("/ip4/198.18.0.1/tcp/4242")
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f")
	inv := &Invite{NetworkID: vecNID(), Inviter: pidOf(1), Addrs: [][]byte{addr.Bytes()}, Secret: secret,
		Expires: 1767312000, NetworkName: "lab"}
	if n := len(encodeInvite(inv)); n != 113 {
		t.Fatalf("Invite is %d bytes, the document says 113", n)
	}
	m := regexp.MustCompile("(?s)The token:\n\n```\n(p2pvpn-invite1:[A-Za-z0-9_-]+)\n```").FindStringSubmatch(sec)
	if m == nil {
		t.Fatal("no invite token in §15.10")
	}
	if got := inviteToken(inv); got != m[1] {
		t.Fatalf("token\n got %s\nwant %s", got, m[1])
	}
	id := inviteID(secret)
	proof := joinProof(secret, vecNID(), pidOf(2))
	for item, got := range map[string][]byte{
		"`invite_id`": id, "`proof` for peer 2": proof, "`JoinRequest` of peer 2": encodeJoinRequest(id, proof),
	} {
		if want := tableValue(t, sec, item); hex.EncodeToString(got) != want {
			t.Errorf("%s: got %x, document %s", item, got, want)
		}
	}
}

// The negative vectors of §15.10: each is certificate A changed as described.
func TestNegativeVectors(t *testing.T) {
	a := hexBlock(t, section15(t), "Certificate A")
	s, err := parseSigned(a, "certificate")
	if err != nil {
		t.Fatal(err)
	}
	var w pbWriter
	tag := func(num int) []byte { return []byte{byte(num<<3 | 2)} }
	cases := map[string][]byte{}
	cases["unknown field 78 01 appended"] = append(append([]byte{}, a...), 0x78, 0x01)

	w = pbWriter{}
	w.bytes(1, s.body)
	w.bytes(2, s.signature)
	w.bytes(2, s.signature)
	cases["signature written twice"] = w.b

	long := append(tag(1), 0x99|0x80, 0x81, 0x00) // 153 as a 3-byte varint
	long = append(append(long, s.body...), a[len(a)-66:]...)
	cases["certificate length as a 3-byte varint"] = long

	w = pbWriter{}
	w.bytes(2, s.signature)
	w.bytes(1, s.body)
	cases["signature before certificate"] = w.b

	// S + L: the same signature in its non-canonical form (a lax verifier would accept it).
	l, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	sLE := append([]byte{}, s.signature[32:]...)
	for i, j := 0, len(sLE)-1; i < j; i, j = i+1, j-1 {
		sLE[i], sLE[j] = sLE[j], sLE[i]
	}
	sum := new(big.Int).Add(new(big.Int).SetBytes(sLE), l).FillBytes(make([]byte, 32))
	for i, j := 0, len(sum)-1; i < j; i, j = i+1, j-1 {
		sum[i], sum[j] = sum[j], sum[i]
	}
	w = pbWriter{}
	w.bytes(1, s.body)
	w.bytes(2, append(append([]byte{}, s.signature[:32]...), sum...))
	cases["S replaced by S + L"] = w.b

	for name, data := range cases {
		if _, err := openCertificate(data, vecNID()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for i := range a {
		for _, flip := range []byte{0x01, 0x80} {
			bad := append([]byte{}, a...)
			bad[i] ^= flip
			if _, err := openCertificate(bad, vecNID()); err == nil {
				t.Fatalf("byte %d ^ %#x: accepted", i, flip)
			}
		}
	}
	if _, err := openCertificate(a, vecNID()); err != nil {
		t.Fatalf("the unchanged certificate: %v", err)
	}
}

func TestListsRefuseNonCanonicalAndForgedBytes(t *testing.T) {
	l := hexBlock(t, section15(t), "Revocation list L")
	for i := range l {
		bad := append([]byte{}, l...)
		bad[i] ^= 0x01
		if _, err := openListBytes(bad, vecNID()); err == nil {
			t.Fatalf("list with byte %d changed: accepted", i)
		}
	}
	if _, err := openListBytes(append(append([]byte{}, l...), 0x78, 0x01), vecNID()); err == nil {
		t.Fatal("list with an unknown field: accepted")
	}
	// Unsorted entries, duplicates and not_before 0 are refused even when signed.
	for name, entries := range map[string][]revocation{
		"unsorted":     {{pidOf(3), 5}, {pidOf(1), 5}},
		"duplicate":    {{pidOf(1), 5}, {pidOf(1), 6}},
		"not_before 0": {{pidOf(1), 0}},
	} {
		body := encodeListBody(&RevocationList{NetworkID: vecNID(), Seq: 9, Entries: entries, Issuer: ownerSigner.public()})
		data := (&signed{body: body, signature: ed25519.Sign(ownerSigner.Key, append([]byte(revocationContext), body...))}).encode()
		if _, err := openListBytes(data, vecNID()); err == nil {
			t.Errorf("%s entries: accepted", name)
		}
	}
}

func TestFieldRulesOnIssue(t *testing.T) {
	v4, v6 := derived(t, 2)
	good := Certificate{NetworkID: vecNID(), PeerID: pidOf(2), Name: "ok", IPv4: v4.AsSlice(), IPv6: v6.AsSlice(),
		NotBefore: t0, NotAfter: t0 + day}
	if _, err := issueCertificate(ownerSigner, good); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(c *Certificate){
		"upper-case name":   func(c *Certificate) { c.Name = "Bad" },
		"ipv4 outside":      func(c *Certificate) { c.IPv4 = []byte{10, 0, 0, 1} },
		"ipv4 network addr": func(c *Certificate) { c.IPv4 = []byte{100, 64, 0, 0} },
		"ipv6 outside":      func(c *Certificate) { c.IPv6 = netip.MustParseAddr("fd00::1").AsSlice() },
		"ipv6 zero IID":     func(c *Certificate) { c.IPv6 = append(append([]byte{}, c.IPv6[:8]...), make([]byte, 8)...) },
		"too long":          func(c *Certificate) { c.NotAfter = c.NotBefore + maxLifetime + 1 },
		"ends before start": func(c *Certificate) { c.NotAfter = c.NotBefore },
		"bad group":         func(c *Certificate) { c.Groups = []string{"a b"} },
		"17 groups": func(c *Certificate) {
			for i := 0; i < 17; i++ {
				c.Groups = append(c.Groups, "g"+strconv.Itoa(i))
			}
		},
	}
	for name, change := range bad {
		c := good
		change(&c)
		if _, err := issueCertificate(ownerSigner, c); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}

func TestAddressIndexFor(t *testing.T) {
	v4, _ := derived(t, 1)
	if i := addressIndexFor(pidOf(1), vecNID(), v4); i != 0 {
		t.Fatalf("index %d", i)
	}
	o, _ := deriveOverlay(pidOf(1), vecNID(), 3)
	if i := addressIndexFor(pidOf(1), vecNID(), o.IPv4); i != o.Index {
		t.Fatalf("index %d, want %d", i, o.Index)
	}
	if i := addressIndexFor(pidOf(1), vecNID(), netip.MustParseAddr("100.64.0.1")); i != 0 {
		t.Fatalf("a non-derived address gave index %d", i)
	}
}

// Fuzz targets (go test runs the seeds; go test -fuzz=FuzzOpenCertificate explores): no input
// panics, and whatever is accepted is exactly the canonical encoding of what was read.
func FuzzOpenCertificate(f *testing.F) {
	f.Add(certA(&testing.T{}))
	admin := Signer{Key: seedKey(1), IssuerCert: certA(&testing.T{})}
	v4, v6 := netip.MustParseAddr("100.101.133.182"), netip.MustParseAddr("fdf0:4a77:a1c4:0:f252:99a9:2ff8:69a")
	b, _ := issueCertificate(admin, Certificate{NetworkID: vecNID(), PeerID: pidOf(2), Name: "bravo",
		IPv4: v4.AsSlice(), IPv6: v6.AsSlice(), Roles: roleExit, Groups: []string{"dev"}, NotBefore: t0, NotAfter: t0 + day})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := openCertificate(data, vecNID())
		if err != nil {
			return
		}
		s, err := parseSigned(data, "certificate")
		if err != nil || !bytes.Equal(encodeCertBody(c), s.body) || !bytes.Equal(c.Raw, data) {
			t.Fatalf("accepted %x but it does not re-encode", data)
		}
		_ = checkCert(c, t0, map[string]uint64{string(c.PeerID): c.NotBefore + 1}, nil)
	})
}

func FuzzOpenList(f *testing.F) {
	l, _ := signRevocationList(ownerSigner, vecNID(), 1, map[string]uint64{string(pidOf(3)): t0 + day, string(pidOf(1)): 5})
	f.Add(l)
	f.Fuzz(func(t *testing.T, data []byte) {
		opened, err := openList(data, vecNID(), t0, map[string]uint64{})
		if err != nil {
			return
		}
		set := &RevocationSet{Entries: map[string]uint64{}}
		set.merge(opened)
		if len(set.Entries) != len(opened.Entries) {
			t.Fatalf("accepted %x with duplicate entries", data)
		}
	})
}

func FuzzHelloCertificateField(f *testing.F) {
	f.Add(encodeFrame(&Hello{Version: 1, Network: vecNID(), IPv4: netip.MustParseAddr("100.64.0.1"),
		IPv6: netip.MustParseAddr("fdf0:4a77:a1c4::1"), MTU: 1400, Certificate: certA(&testing.T{})})[2:])
	f.Fuzz(func(t *testing.T, body []byte) {
		fr, err := decodeBody(body)
		if h, ok := fr.(*Hello); err == nil && ok && len(h.Certificate) > maxCertificateLen {
			t.Fatalf("a Hello with a %d-byte certificate was accepted", len(h.Certificate))
		}
	})
}
