package main

// docs/protocol.md §18.2: address keys of §12.10's record 1, its validation
// under them, and the selection rule for two members claiming one address.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// §12.10's record 1 (network default, expires 1767225600), as printed there.
const record1Hex = `0a24080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf374
8801b40f6f5c12152f70327076706e2f6e6f64652d7265636f72642f311add01
0a260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121b
f3748801b40f6f5c120764656661756c7418012080f2d6ca062a04646fbccd32
10fd1f6ae60c5b0000be309543b4d8919e420804c0000201060fa14217292001
0db800000000000000000000000191020fa1cd034a3304c6336407060fa1a503
260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25d
f60f5b8fc9b394a202520508800110105a2b0a09302e302e302e302f300a0d5b
3a3a2f305d3a38302c343433120a31302e302e302e302f38186420fa012a4057
ddde1111c43f2aac7ad9bf7345e17ce4f3609f51529638ddcab9eb15fb088736
7102a43c2cadc1bfc717dc52ec74401fc8b945c23b2182e447a57b8522bd0c`

const (
	record1Expires = 1767225600
	vectorNow      = record1Expires - 1
	key1v4         = "/p2pvpn/default/addr/100.111.188.205"
	key1v6         = "/p2pvpn/default/addr/fd1f:6ae6:c5b:0:be30:9543:b4d8:919e"
)

func record1(t *testing.T) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(record1Hex, "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func addrValidator(network string, now int64) AddressRecordValidator {
	return AddressRecordValidator{Records: NodeRecordValidator{Network: network, Now: func() int64 { return now }}}
}

func TestAddressKeysOfTheDocumentsRecord1(t *testing.T) {
	r, err := openSealed(record1(t))
	if err != nil {
		t.Fatal(err)
	}
	v4, _ := netip.AddrFromSlice(r.IPv4)
	v6, _ := netip.AddrFromSlice(r.IPv6)
	if got := addressKey("default", v4); got != key1v4 {
		t.Errorf("IPv4 key %q, the document says %q", got, key1v4)
	}
	if got := addressKey("default", v6); got != key1v6 {
		t.Errorf("IPv6 key %q, the document says %q", got, key1v6)
	}
	// The longest key §18.2 mentions: a 64-character network and a 39-character IPv6.
	long := addressKey(strings.Repeat("n", 64), netip.MustParseAddr("fd12:3456:789a:bcde:f012:3456:789a:bcde"))
	if len(long) != 117 || len(long) > maxKeyLen {
		t.Errorf("longest key is %d bytes, the document says 117", len(long))
	}
}

func TestAddressRecordValidation(t *testing.T) {
	value := record1(t)
	v := addrValidator("default", vectorNow)
	for _, key := range []string{key1v4, key1v6} {
		if err := v.Validate(key, value); err != nil {
			t.Errorf("%s: %v", key, err)
		}
	}
	forged := bytes.Clone(value)
	forged[len(forged)-1] ^= 1
	refused := map[string]struct {
		v     AddressRecordValidator
		key   string
		value []byte
	}{
		"another member's address":    {v, "/p2pvpn/default/addr/100.106.251.185", value},
		"leading zero":                {v, "/p2pvpn/default/addr/100.111.188.0205", value},
		"upper-case IPv6":             {v, "/p2pvpn/default/addr/FD1F:6AE6:C5B:0:BE30:9543:B4D8:919E", value},
		"IPv6 with leading zeros":     {v, "/p2pvpn/default/addr/fd1f:6ae6:0c5b:0000:be30:9543:b4d8:919e", value},
		"IPv4-mapped IPv6 of the v4":  {v, "/p2pvpn/default/addr/::ffff:100.111.188.205", value},
		"zone":                        {v, key1v6 + "%eth0", value},
		"key of another network":      {v, "/p2pvpn/lab/addr/100.111.188.205", value},
		"reader of another network":   {addrValidator("lab", vectorNow), "/p2pvpn/lab/addr/100.111.188.205", value},
		"record key, not address key": {v, "/p2pvpn/default/node/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5", value},
		"trailing slash":              {v, key1v4 + "/", value},
		"CIDR":                        {v, key1v4 + "/32", value},
		"expired":                     {addrValidator("default", record1Expires), key1v4, value},
		"more than a day ahead":       {addrValidator("default", record1Expires-86401), key1v4, value},
		"bad signature":               {v, key1v4, forged},
		"truncated":                   {v, key1v4, value[:len(value)-1]},
		"empty":                       {v, key1v4, nil},
	}
	for name, c := range refused {
		if err := c.v.Validate(c.key, c.value); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The first second a reader may accept it (expiry at most a day ahead).
	if err := addrValidator("default", record1Expires-86400).Validate(key1v4, value); err != nil {
		t.Errorf("a day ahead: %v", err)
	}
}

func TestTheDHTValidatorRoutesAddressKeys(t *testing.T) {
	value := record1(t)
	b := byKey{records: NodeRecordValidator{Network: "default", Now: func() int64 { return vectorNow }}}
	for _, key := range []string{key1v4, key1v6, "/p2pvpn/default/node/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"} {
		if err := b.Validate(key, value); err != nil {
			t.Errorf("%s: %v", key, err)
		}
		if i, err := b.Select(key, [][]byte{value}); err != nil || i != 0 {
			t.Errorf("%s: select %d %v", key, i, err)
		}
	}
	if err := b.Validate("/p2pvpn/default/addr/100.106.251.185", value); err == nil {
		t.Error("an address key the record does not claim was accepted")
	}
}

// colliding finds two keys whose derived IPv4 (candidate 0) in network is the same (§12.12).
func colliding(t *testing.T, network string) (crypto.PrivKey, crypto.PrivKey) {
	t.Helper()
	seen := map[netip.Addr]crypto.PrivKey{}
	for i := 0; i < 50000; i++ {
		seed := sha256.Sum256([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
		key, err := identity(hex.EncodeToString(seed[:]))
		if err != nil {
			t.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(key)
		a, _, err := deriveIPv4([]byte(id), network, 0)
		if err != nil {
			continue
		}
		if other, ok := seen[a]; ok {
			return other, key
		}
		seen[a] = key
	}
	t.Fatal("no IPv4 collision among 50000 keys")
	return nil, nil
}

func TestAddressRecordSelectionPrefersTheSmallestPeerID(t *testing.T) {
	const now = 1767225600 - 3600
	k1, k2 := colliding(t, "lab")
	seal := func(key crypto.PrivKey, seq uint64, expires int64) []byte {
		id, _ := peer.IDFromPrivateKey(key)
		ov, err := deriveOverlay([]byte(id), "lab", 0)
		if err != nil || ov.Index != 0 {
			t.Fatalf("derive: %v", err)
		}
		b, err := sealRecord(&NodeRecord{PeerID: []byte(id), Network: "lab", Seq: seq, ExpiresUnix: uint64(expires),
			IPv4: ov.IPv4.AsSlice(), IPv6: ov.IPv6.AsSlice()}, key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	id1, _ := peer.IDFromPrivateKey(k1)
	id2, _ := peer.IDFromPrivateKey(k2)
	small, large := k1, k2
	if bytes.Compare([]byte(id1), []byte(id2)) > 0 {
		small, large = k2, k1
	}
	idSmall, _ := peer.IDFromPrivateKey(small)
	a, _, _ := deriveIPv4([]byte(idSmall), "lab", 0)
	key := addressKey("lab", a)
	smallOld, smallNew := seal(small, 1, now+100), seal(small, 2, now+50)
	largeNew, expired := seal(large, 9, now+300), seal(small, 10, now)
	v := addrValidator("lab", now)
	cases := []struct {
		values [][]byte
		want   int
	}{
		{[][]byte{largeNew, smallOld}, 1}, // smaller peer ID beats a higher seq
		{[][]byte{smallOld, largeNew}, 0},
		{[][]byte{largeNew, smallOld, smallNew}, 2}, // then §12.8: the higher seq
		{[][]byte{expired, largeNew}, 1},            // an invalid value never wins
		{[][]byte{smallNew, smallNew}, 0},           // identical bytes: the first
	}
	for i, c := range cases {
		if got, err := v.Select(key, c.values); err != nil || got != c.want {
			t.Errorf("case %d: select %d (%v), want %d", i, got, err, c.want)
		}
	}
	if _, err := v.Select(key, [][]byte{expired}); err == nil {
		t.Error("select found a best value among invalid ones")
	}
	// The other member's IPv6 key holds only its own record.
	idLarge, _ := peer.IDFromPrivateKey(large)
	if err := v.Validate(addressKey("lab", deriveIPv6([]byte(idLarge), "lab")), smallNew); err == nil {
		t.Error("a record was accepted under another member's IPv6 key")
	}
}
