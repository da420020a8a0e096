package main

// Tests of the datagram path's sans-IO core (docs/protocol.md §16): two key
// schedules talking to each other through offers, the datagram format, the
// replay window against a slow reference, and the offer limits.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"math/big"
	mrand "math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func testPeerID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func schedulePair(t *testing.T) (*dgKeySchedule, *dgKeySchedule) {
	a, b := testPeerID(t), testPeerID(t)
	var next uint32
	idx := func() uint32 { next++; return next }
	return &dgKeySchedule{self: a, remote: b, initiator: true, port: 4001, rand: rand.Reader, newIndex: idx},
		&dgKeySchedule{self: b, remote: a, port: 4002, rand: rand.Reader, newIndex: idx}
}

// viaWire sends an offer through the frame codec, as the tunnel stream would.
func viaWire(t *testing.T, o *DatagramOffer) *DatagramOffer {
	t.Helper()
	enc := encodeFrame(o)
	_, n := binary.Uvarint(enc)
	f, err := decodeBody(enc[n:])
	if err != nil {
		t.Fatalf("decode own offer: %v", err)
	}
	return f.(*DatagramOffer)
}

func isProtocolError(err error) bool {
	var pe *protocolError
	return errors.As(err, &pe)
}

func TestEpochOneBothOffersAtOnceThenData(t *testing.T) {
	a, b := schedulePair(t)
	now := time.Now()
	oa, ob := viaWire(t, a.start()), viaWire(t, b.start())
	ansA, ka, _, err := a.handleOffer(ob, now)
	if err != nil || ansA != nil || ka == nil {
		t.Fatalf("a: answer %v keys %v err %v", ansA, ka, err)
	}
	ansB, kb, _, err := b.handleOffer(oa, now)
	if err != nil || ansB != nil || kb == nil {
		t.Fatalf("b: answer %v keys %v err %v", ansB, kb, err)
	}
	if !bytes.Equal(ka.sendKey, kb.recvKey) || !bytes.Equal(ka.recvKey, kb.sendKey) || bytes.Equal(ka.sendKey, ka.recvKey) {
		t.Fatal("direction keys do not pair up")
	}
	if ka.remoteIndex != kb.localIndex || kb.remoteIndex != ka.localIndex {
		t.Fatal("receiver indexes do not pair up")
	}
	for i := range 3 {
		pkt := bytes.Repeat([]byte{byte(0x45 + i)}, 100+i)
		d, err := a.seal(dgTypeData, pkt)
		if err != nil {
			t.Fatal(err)
		}
		h, drop := parseDatagram(d)
		if drop != "" || h.counter != uint64(i) || h.index != kb.localIndex || h.typ != dgTypeData {
			t.Fatalf("header %+v drop %q", h, drop)
		}
		plain, drop := openDatagram(kb.recv, h, d)
		if drop != "" || !bytes.Equal(plain, pkt) {
			t.Fatalf("open: %q", drop)
		}
		if !kb.window.accept(h.counter) {
			t.Fatal("fresh counter refused")
		}
		if kb.window.check(h.counter) {
			t.Fatal("replayed counter accepted")
		}
		// Any flipped bit, header included, fails authentication.
		bad := append([]byte{}, d...)
		bad[mrand.IntN(len(bad))] ^= 1 << mrand.IntN(8)
		if hb, drop := parseDatagram(bad); drop == "" {
			if e := hb.index; e == kb.localIndex {
				if _, drop := openDatagram(kb.recv, hb, bad); drop != dropBadAuth {
					t.Fatalf("forged datagram: %q", drop)
				}
			}
		}
	}
}

func TestRekeyResponderAnswersAndOldKeyHasGrace(t *testing.T) {
	a, b := schedulePair(t)
	t0 := time.Now()
	oa := a.start()
	ob := b.start()
	_, _, _, _ = a.handleOffer(ob, t0)
	_, k1b, _, _ := b.handleOffer(oa, t0)

	if a.rekeyDue(t0.Add(time.Second), rekeyAfterTime) || !a.rekeyDue(t0.Add(rekeyAfterTime), rekeyAfterTime) {
		t.Fatal("initiator's rekey timer")
	}
	if b.rekeyDue(t0.Add(rekeyAfterTime), rekeyAfterTime) || b.rekey() != nil {
		t.Fatal("the responder never starts a rekey")
	}
	// A datagram sealed with epoch 1 is still in flight when epoch 2 starts.
	late, _ := a.seal(dgTypeData, []byte{0x45, 1, 2, 3})
	t1 := t0.Add(rekeyAfterTime)
	o2 := viaWire(t, a.rekey())
	if o2.Epoch != 2 || a.rekey() != nil {
		t.Fatalf("rekey offer %+v", o2)
	}
	ans, k2b, _, err := b.handleOffer(o2, t1)
	if err != nil || ans == nil || ans.Epoch != 2 || k2b == nil {
		t.Fatalf("responder: %+v %v %v", ans, k2b, err)
	}
	_, k2a, _, err := a.handleOffer(viaWire(t, ans), t1)
	if err != nil || k2a == nil || !bytes.Equal(k2a.sendKey, k2b.recvKey) {
		t.Fatalf("initiator installs epoch 2: %v", err)
	}
	if bytes.Equal(k2a.sendKey, k1b.recvKey) {
		t.Fatal("epoch 2 reuses epoch 1's key")
	}
	d, _ := a.seal(dgTypeData, []byte{0x45})
	if h, _ := parseDatagram(d); h.counter != 0 || h.index != k2b.localIndex {
		t.Fatalf("epoch 2 starts at counter 0 with the new index: %+v", h)
	}
	h, _ := parseDatagram(late)
	if b.prev != k1b || h.index != k1b.localIndex {
		t.Fatal("epoch 1 keys kept as prev")
	}
	if _, drop := openDatagram(b.prev.recv, h, late); drop != "" {
		t.Fatal("in-flight epoch-1 datagram refused")
	}
	if b.expirePrev(t1.Add(oldKeyGrace-time.Millisecond)) != nil {
		t.Fatal("old key dropped before 10 s")
	}

	// Epoch 3 within epoch 1's grace: epoch 1 goes at once (only two epochs are held), epoch 2 is prev.
	t2 := t1.Add(time.Second)
	ans, k3b, dropped, err := b.handleOffer(viaWire(t, a.rekey()), t2)
	if err != nil || dropped != k1b || b.prev != k2b || b.cur != k3b {
		t.Fatalf("epoch 3: dropped %v, prev %v, err %v", dropped, b.prev, err)
	}
	if _, _, dropped, err := a.handleOffer(viaWire(t, ans), t2); err != nil || dropped == nil || dropped.epoch != 1 {
		t.Fatalf("initiator's epoch 3: dropped %v err %v", dropped, err)
	}
	if b.expirePrev(t2.Add(oldKeyGrace)) != k2b || b.prev != nil {
		t.Fatal("old key grace of 10 s")
	}
}

func TestEpochsArriveStrictlyPlusOne(t *testing.T) {
	now := time.Now()
	for name, bad := range map[string]func(a, b *dgKeySchedule) *DatagramOffer{
		"epoch 2 first": func(a, b *dgKeySchedule) *DatagramOffer {
			o := b.start()
			o.Epoch = 2
			return o
		},
		"repeat of a completed epoch": func(a, b *dgKeySchedule) *DatagramOffer {
			ob := b.start()
			_, _, _, _ = a.handleOffer(ob, now)
			return ob
		},
		"responder starts a rekey": func(a, b *dgKeySchedule) *DatagramOffer {
			oa, ob := a.start(), b.start()
			_, _, _, _ = a.handleOffer(ob, now)
			_, _, _, _ = b.handleOffer(oa, now)
			return b.offer() // epoch 2, though b is not the initiator
		},
	} {
		a, b := schedulePair(t)
		if _, _, _, err := a.handleOffer(bad(a, b), now); !isProtocolError(err) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
}

func TestAllZeroSharedSecretIsAProtocolError(t *testing.T) {
	a, b := schedulePair(t)
	a.start()
	ob := b.start()
	ob.PublicKey = make([]byte, 32) // a low-order point: X25519 gives all zeros
	if _, _, _, err := a.handleOffer(ob, time.Now()); !isProtocolError(err) {
		t.Fatalf("%v, want a protocol error", err)
	}
}

func TestOfferLimits(t *testing.T) {
	good := func() *DatagramOffer {
		return &DatagramOffer{Epoch: 1, PublicKey: make([]byte, 32), ReceiverIndex: 7, Port: 4001,
			Endpoints: [][]byte{{198, 18, 0, 1, 0x0f, 0xa1}, make([]byte, 18)}}
	}
	if o := viaWire(t, good()); o.Port != 4001 || len(o.Endpoints) != 2 || offerEndpoint(o.Endpoints[0]).String() != "198.18.0.1:4001" {
		t.Fatalf("roundtrip: %+v", o)
	}
	for name, mutate := range map[string]func(o *DatagramOffer){
		"epoch 0":          func(o *DatagramOffer) { o.Epoch = 0 },
		"31-byte key":      func(o *DatagramOffer) { o.PublicKey = o.PublicKey[:31] },
		"index 0":          func(o *DatagramOffer) { o.ReceiverIndex = 0 },
		"port 0":           func(o *DatagramOffer) { o.Port = 0 },
		"port 65536":       func(o *DatagramOffer) { o.Port = 65536 },
		"7-byte endpoint":  func(o *DatagramOffer) { o.Endpoints[0] = make([]byte, 7) },
		"nine endpoints":   func(o *DatagramOffer) { o.Endpoints = make([][]byte, 9); fill(o.Endpoints) },
		"empty public key": func(o *DatagramOffer) { o.PublicKey = nil },
	} {
		o := good()
		mutate(o)
		enc := encodeFrame(o)
		_, n := binary.Uvarint(enc)
		if _, err := decodeBody(enc[n:]); !isProtocolError(err) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
}

func fill(eps [][]byte) {
	for i := range eps {
		eps[i] = []byte{198, 18, 0, byte(i), 0, 1}
	}
}

func TestShortAndUnknownDatagrams(t *testing.T) {
	for _, c := range []struct {
		d    []byte
		drop string
	}{
		{make([]byte, 28), dropShort},
		{append([]byte{dgTypeData}, make([]byte, 28)...), ""}, // its empty plaintext is udp_malformed, later
		{append([]byte{dgTypeProbe}, make([]byte, 28)...), ""},
		{append([]byte{0}, make([]byte, 40)...), dropShort},
		{append([]byte{4}, make([]byte, 40)...), dropShort},
	} {
		if _, drop := parseDatagram(c.d); drop != c.drop {
			t.Errorf("% x: %q, want %q", c.d[:1], drop, c.drop)
		}
	}
	var w replayWindow
	if w.check(maxCounter) || !w.check(maxCounter-1) {
		t.Error("counters >= 2^60 are refused (udp_replayed), 2^60-1 is not")
	}
	k := newGCM(make([]byte, 32))
	d := sealDatagram(k, dgTypeProbe, 1, 0, []byte{1, 2, 3}) // a probe id is 8 bytes
	h, _ := parseDatagram(d)
	if _, drop := openDatagram(k, h, d); drop != dropMalformed {
		t.Errorf("3-byte probe: %q", drop)
	}
	d = sealDatagram(k, dgTypeData, 1, 0, nil)
	h, _ = parseDatagram(d)
	if _, drop := openDatagram(k, h, d); drop != dropMalformed {
		t.Errorf("empty data: %q", drop)
	}
}

// refWindow is the slow reference: the set of accepted counters and the highest.
type refWindow struct {
	seen    map[uint64]bool
	highest *big.Int
}

func (r *refWindow) accept(c uint64) bool {
	if r.seen[c] {
		return false
	}
	if r.highest != nil && new(big.Int).SetUint64(c).Cmp(new(big.Int).Sub(r.highest, big.NewInt(replayWindowSize))) <= 0 {
		return false
	}
	r.seen[c] = true
	if r.highest == nil || new(big.Int).SetUint64(c).Cmp(r.highest) > 0 {
		r.highest = new(big.Int).SetUint64(c)
	}
	return true
}

func TestReplayWindowAgainstReference(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	for round := range 50 {
		var w replayWindow
		ref := &refWindow{seen: map[uint64]bool{}}
		var base uint64
		for range 3000 {
			var c uint64
			switch rng.IntN(4) {
			case 0:
				base += uint64(rng.IntN(3000)) // jumps, some beyond the window
				c = base
			case 1:
				c = base + uint64(rng.IntN(10))
			default:
				c = base - min(base, uint64(rng.IntN(2100))) // old ones, around the window's edge
			}
			want := ref.accept(c)
			if got := w.check(c); got != want {
				t.Fatalf("round %d: check(%d) = %v, reference %v", round, c, got, want)
			}
			w.accept(c)
		}
	}
}

func TestHeldDatagramsWaitForTheirEpochBounded(t *testing.T) {
	d := &dgTunnel{reserved: []uint32{42}}
	now := time.Now()
	h := dgHeader{typ: dgTypeData, index: 42}
	if held, _ := d.hold(dgHeader{typ: dgTypeData, index: 43}, make([]byte, 100), netip.AddrPort{}); held {
		t.Fatal("held a datagram for an index that is not our pending offer's")
	}
	for range maxHeld {
		if held, _ := d.hold(h, make([]byte, 100), netip.AddrPort{}); !held {
			t.Fatal("not held")
		}
	}
	if held, _ := d.hold(h, make([]byte, 100), netip.AddrPort{}); held {
		t.Fatalf("held more than %d", maxHeld)
	}
	out, stale := d.takeHeld(42, now.Add(holdTime/2))
	if len(out) != maxHeld || stale != 0 || len(d.early) != 0 || d.heldBytes != 0 {
		t.Fatalf("taken %d, stale %d, left %d", len(out), stale, len(d.early))
	}
	// Bytes are bounded too (unauthenticated data), and what waits over a second is dropped.
	big := make([]byte, 60000)
	n := 0
	for held, _ := d.hold(h, big, netip.AddrPort{}); held; held, _ = d.hold(h, big, netip.AddrPort{}) {
		n++
	}
	if n != maxHeldBytes/len(big) {
		t.Fatalf("%d big datagrams held", n)
	}
	if out, stale := d.takeHeld(0, time.Now().Add(holdTime+time.Millisecond)); len(out) != 0 || stale != n {
		t.Fatalf("stale: %d of %d", stale, n)
	}
	// Once the epoch is installed, a late lookup gets its keys instead of a hold.
	d.keys.cur = &epochKeys{localIndex: 42}
	if held, keys := d.hold(h, big, netip.AddrPort{}); held || keys != d.keys.cur {
		t.Fatal("installed epoch not returned")
	}
}
