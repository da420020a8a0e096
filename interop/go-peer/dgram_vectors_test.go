package main

// docs/protocol.md §16.10: the test vectors, recomputed from their inputs.

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The vectors as §16.10 prints them (hex wrapped at 64 digits).
var dgVectors = map[string]string{
	"public1": "7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13",
	"public2": "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20",
	"shared":  "9e004098efc091d4ec2663b4e9f5cfd4d7064571690b4bea97ab146ab9f35056",
	"key12":   "3b8e435adf0160b1b8f586b1c5a60c438d8a2665e3b6bbdb5acf77f61150e18e",
	"key21":   "192561f332e841511e3d16b51c66aeb8295aeea68f2595ee64052734af615c18",
	"offer1": `362a34080112207b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f
74892cb0f73f13188486880820a11f2a06c61200010fa1`,
	"offer2": `2e2a2c080112200faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1
c4cf2678570f20188d98ac5020a21f`,
	"data": `010a0b0c0d0000000000000007bacbc5c7c9e8da80f1194f558de8fafeeda888
13b28dfb061e86902e2c7f0739f44d9780e8e7bf96641cefcd`,
	"probe": `020102030400000000000000003661d5a79048b7e1b8944b43fad6e807e7f0ab
26c4620e72`,
	"reply": `030a0b0c0d00000000000000084d01b78e6b01528b5573a51af82cfba6f1a92b
1bb7d9a52d`,
	"icmp":     "4500001c00004000400100006f6fbccd6441a7590800f7ff00000000",
	"probe_id": "0102030405060708",
	// §3.4's peer_id_bytes of peers 1 and 2.
	"id1": "0024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
	"id2": "0024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394",
}

func vec(t *testing.T, name string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(dgVectors[name], "\n", ""))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

func seedPeer(t *testing.T, n byte) peer.ID {
	t.Helper()
	key, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func x25519(t *testing.T, n byte) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{n}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func want(t *testing.T, what string, got []byte, name string) {
	t.Helper()
	if exp := vec(t, name); !bytes.Equal(got, exp) {
		t.Errorf("%s:\n got %x\nwant %x", what, got, exp)
	}
}

func TestSection16Vectors(t *testing.T) {
	id1, id2 := seedPeer(t, 1), seedPeer(t, 2)
	want(t, "peer 1 id bytes", []byte(id1), "id1")
	want(t, "peer 2 id bytes", []byte(id2), "id2")
	priv1, priv2 := x25519(t, 0x11), x25519(t, 0x22)
	pub1, pub2 := priv1.PublicKey().Bytes(), priv2.PublicKey().Bytes()
	want(t, "public1", pub1, "public1")
	want(t, "public2", pub2, "public2")
	shared, err := priv1.ECDH(priv2.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	want(t, "shared", shared, "shared")
	want(t, "key12", directionKey(shared, id1, id2, pub1, pub2), "key12")
	want(t, "key21", directionKey(shared, id2, id1, pub2, pub1), "key21")

	// The framed offers, both ways through the codec.
	offer1 := &DatagramOffer{Epoch: 1, PublicKey: pub1, ReceiverIndex: 0x01020304, Port: 4001,
		Endpoints: [][]byte{{198, 18, 0, 1, 0x0f, 0xa1}}}
	offer2 := &DatagramOffer{Epoch: 1, PublicKey: pub2, ReceiverIndex: 0x0a0b0c0d, Port: 4002}
	want(t, "offer1", encodeFrame(offer1), "offer1")
	want(t, "offer2", encodeFrame(offer2), "offer2")
	var decoded [2]*DatagramOffer
	for i, name := range []string{"offer1", "offer2"} {
		b := vec(t, name)
		_, n := binary.Uvarint(b)
		f, err := decodeBody(b[n:])
		if err != nil {
			t.Fatalf("decode %s: %v", name, err)
		}
		decoded[i] = f.(*DatagramOffer)
	}
	if offerEndpoint(decoded[0].Endpoints[0]).String() != "198.18.0.1:4001" || decoded[1].ReceiverIndex != 0x0a0b0c0d {
		t.Fatalf("decoded offers: %+v %+v", decoded[0], decoded[1])
	}

	// Each side's key schedule from the decoded offers: the same keys and indexes.
	k1, err := deriveEpoch(id1, id2, priv1, offer1, decoded[1])
	if err != nil {
		t.Fatal(err)
	}
	k2, err := deriveEpoch(id2, id1, priv2, offer2, decoded[0])
	if err != nil {
		t.Fatal(err)
	}
	want(t, "peer 1 send key", k1.sendKey, "key12")
	want(t, "peer 2 send key", k2.sendKey, "key21")
	if k1.remoteIndex != 0x0a0b0c0d || k2.remoteIndex != 0x01020304 {
		t.Fatalf("indexes %x %x", k1.remoteIndex, k2.remoteIndex)
	}

	// The datagrams, sealed as the document says and opened by the other side.
	want(t, "data", sealDatagram(k1.send, dgTypeData, k1.remoteIndex, 7, vec(t, "icmp")), "data")
	want(t, "probe", sealDatagram(k2.send, dgTypeProbe, k2.remoteIndex, 0, vec(t, "probe_id")), "probe")
	want(t, "reply", sealDatagram(k1.send, dgTypeProbeReply, k1.remoteIndex, 8, vec(t, "probe_id")), "reply")
	for _, c := range []struct {
		name  string
		keys  *epochKeys
		typ   byte
		count uint64
		plain string
	}{{"data", k2, dgTypeData, 7, "icmp"}, {"probe", k1, dgTypeProbe, 0, "probe_id"}, {"reply", k2, dgTypeProbeReply, 8, "probe_id"}} {
		d := vec(t, c.name)
		h, drop := parseDatagram(d)
		if drop != "" || h.typ != c.typ || h.counter != c.count || h.index != c.keys.localIndex {
			t.Fatalf("%s header %+v %q", c.name, h, drop)
		}
		plain, drop := openDatagram(c.keys.recv, h, d)
		if drop != "" || !bytes.Equal(plain, vec(t, c.plain)) {
			t.Fatalf("%s: open %q", c.name, drop)
		}
		d[len(d)-1] ^= 0x80
		if _, drop := openDatagram(c.keys.recv, h, d); drop != dropBadAuth {
			t.Fatalf("%s with a flipped tag bit: %q", c.name, drop)
		}
	}
}
