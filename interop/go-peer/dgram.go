package main

// The datagram path, capability "udp/1" (docs/protocol.md §16), sans-IO part:
// the DatagramOffer frame, the per-epoch key schedule, the datagram format
// and the replay window. Bytes and a clock go in; keys, datagrams and
// verdicts come out. The socket, the path state and the timers are in
// dgram_path.go.
//
// Theory of operation:
//  1. after both Hellos listed udp/1 on a direct connection, each side sends
//     a DatagramOffer for epoch 1 (a fresh X25519 public key, the index it
//     wants to see on datagrams sent to it, its UDP port);
//  2. holding both offers of an epoch, a side derives one AES-256-GCM key per
//     direction (HKDF-SHA256 over the X25519 secret, bound to both peer IDs
//     and both public keys) and sends with them at once;
//  3. the tunnel stream's initiator starts epoch e+1 every 120 s; the
//     responder answers it; epochs arrive strictly +1 (else protocol error);
//  4. the previous epoch's receive key lives 10 s more for datagrams in flight.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	capUDP             = "udp/1"
	frameDatagramOffer = 5

	dgTypeData       = 1
	dgTypeProbe      = 2
	dgTypeProbeReply = 3
	dgHeaderLen      = 13
	dgTagLen         = 16
	dgMinLen         = dgHeaderLen + dgTagLen // 29; a data datagram needs one byte more
	dgProbeIDLen     = 8

	maxOfferEndpoints = 8
	replayWindowSize  = 2048
	maxCounter        = uint64(1) << 60 // a receiver rejects counters >= 2^60

	rekeyAfterTime    = 120 * time.Second
	rekeyAfterPackets = uint64(1) << 32
	oldKeyGrace       = 10 * time.Second
)

var dgSalt = []byte("p2pvpn udp/1")

// DatagramOffer is Frame field 5: one side's half of an epoch's key exchange.
type DatagramOffer struct {
	Epoch         uint32
	PublicKey     []byte
	ReceiverIndex uint32
	Port          uint32
	Endpoints     [][]byte // 6 bytes (IPv4 + port) or 18 bytes (IPv6 + port), big-endian port
}

func encodeDatagramOffer(w *pbWriter, o *DatagramOffer) {
	w.varint(1, uint64(o.Epoch))
	w.bytes(2, o.PublicKey)
	w.varint(3, uint64(o.ReceiverIndex))
	w.varint(4, uint64(o.Port))
	for _, e := range o.Endpoints {
		w.repeated(5, e)
	}
}

// decodeDatagramOffer parses and checks an offer's limits; any violation is a protocol error.
func decodeDatagramOffer(b []byte) (*DatagramOffer, error) {
	o := &DatagramOffer{}
	var epoch, index, port uint64
	err := pbWalk(b, func(f pbField) error {
		switch {
		case f.typ == protowire.VarintType && f.num == 1:
			epoch = f.varint
		case f.typ == protowire.BytesType && f.num == 2:
			o.PublicKey = f.bytes
		case f.typ == protowire.VarintType && f.num == 3:
			index = f.varint
		case f.typ == protowire.VarintType && f.num == 4:
			port = f.varint
		case f.typ == protowire.BytesType && f.num == 5:
			if len(o.Endpoints) == maxOfferEndpoints {
				return fmt.Errorf("more than %d endpoints", maxOfferEndpoints)
			}
			o.Endpoints = append(o.Endpoints, f.bytes)
		}
		return nil
	})
	if err != nil {
		return nil, perr("DatagramOffer is not valid: %v", err)
	}
	// uint32 fields: protobuf truncates a larger varint to its low 32 bits.
	o.Epoch, o.ReceiverIndex, o.Port = uint32(epoch), uint32(index), uint32(port)
	switch {
	case o.Epoch < 1:
		return nil, perr("DatagramOffer epoch is 0")
	case len(o.PublicKey) != 32:
		return nil, perr("DatagramOffer public_key is %d bytes, expected 32", len(o.PublicKey))
	case o.ReceiverIndex == 0:
		return nil, perr("DatagramOffer receiver_index is 0")
	case o.Port < 1 || o.Port > 65535:
		return nil, perr("DatagramOffer port %d is not 1..65535", o.Port)
	}
	for _, e := range o.Endpoints {
		if len(e) != 6 && len(e) != 18 {
			return nil, perr("DatagramOffer endpoint is %d bytes, expected 6 or 18", len(e))
		}
	}
	return o, nil
}

// offerEndpoint reads one 6- or 18-byte endpoint of an offer.
func offerEndpoint(e []byte) netip.AddrPort {
	if len(e) == 6 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(e[:4])), binary.BigEndian.Uint16(e[4:]))
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(e[:16])), binary.BigEndian.Uint16(e[16:]))
}

// directionKey is K(S->R) of §16: HKDF-SHA256(shared, "p2pvpn udp/1", idS||idR||pkS||pkR, 32).
func directionKey(shared []byte, idS, idR peer.ID, pkS, pkR []byte) []byte {
	info := make([]byte, 0, len(idS)+len(idR)+64)
	info = append(append(append(append(info, idS...), idR...), pkS...), pkR...)
	key, err := hkdf.Key(sha256.New, shared, dgSalt, string(info), 32)
	if err != nil {
		panic(err) // only for lengths over 255*32
	}
	return key
}

// epochKeys are the keys of one epoch: what this side sends with, and what it opens with.
type epochKeys struct {
	epoch       uint32
	localIndex  uint32 // datagrams sent to us carry it (our offer's receiver_index)
	remoteIndex uint32 // datagrams we send carry it (the peer's offer's receiver_index)
	sendKey     []byte
	recvKey     []byte
	send        cipher.AEAD
	recv        cipher.AEAD
	sendCounter uint64
	window      replayWindow
	installedAt time.Time
}

func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // a 32-byte key never fails
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// deriveEpoch computes both direction keys from our private key and the two offers.
func deriveEpoch(self, remote peer.ID, priv *ecdh.PrivateKey, own, theirs *DatagramOffer) (*epochKeys, error) {
	pub, err := ecdh.X25519().NewPublicKey(theirs.PublicKey)
	if err != nil {
		return nil, perr("DatagramOffer public_key: %v", err)
	}
	shared, err := priv.ECDH(pub)
	if err != nil || bytes.Equal(shared, make([]byte, 32)) { // Go refuses an all-zero result itself
		return nil, perr("DatagramOffer public_key gives an all-zero shared secret")
	}
	k := &epochKeys{
		epoch: own.Epoch, localIndex: own.ReceiverIndex, remoteIndex: theirs.ReceiverIndex,
		sendKey: directionKey(shared, self, remote, own.PublicKey, theirs.PublicKey),
		recvKey: directionKey(shared, remote, self, theirs.PublicKey, own.PublicKey),
	}
	k.send, k.recv = newGCM(k.sendKey), newGCM(k.recvKey)
	return k, nil
}

// sealDatagram builds type || receiver_index || counter || AES-256-GCM(plain), header as associated data.
func sealDatagram(aead cipher.AEAD, typ byte, index uint32, counter uint64, plain []byte) []byte {
	out := make([]byte, dgHeaderLen, dgHeaderLen+len(plain)+dgTagLen)
	out[0] = typ
	binary.BigEndian.PutUint32(out[1:5], index)
	binary.BigEndian.PutUint64(out[5:13], counter)
	var nonce [12]byte
	binary.BigEndian.PutUint64(nonce[4:], counter)
	return aead.Seal(out, nonce[:], plain, out[:dgHeaderLen])
}

// dgHeader is a datagram's clear header.
type dgHeader struct {
	typ     byte
	index   uint32
	counter uint64
}

// Drop reasons (node-wide counters) for datagrams that arrive.
const (
	dropShort        = "udp_short"
	dropUnknownIndex = "udp_unknown_index"
	dropBadAuth      = "udp_bad_auth"
	dropReplayed     = "udp_replayed"
	dropMalformed    = "udp_malformed"
)

// parseDatagram reads the header (§16.6 step 1): under 29 bytes or an unknown type is "udp_short".
func parseDatagram(d []byte) (dgHeader, string) {
	if len(d) < dgMinLen {
		return dgHeader{}, dropShort
	}
	h := dgHeader{typ: d[0], index: binary.BigEndian.Uint32(d[1:5]), counter: binary.BigEndian.Uint64(d[5:13])}
	if h.typ < dgTypeData || h.typ > dgTypeProbeReply {
		return h, dropShort
	}
	return h, ""
}

// openDatagram is §16.6 steps 4-5: authenticate and decrypt d with aead, then check the plaintext's length.
func openDatagram(aead cipher.AEAD, h dgHeader, d []byte) ([]byte, string) {
	var nonce [12]byte
	binary.BigEndian.PutUint64(nonce[4:], h.counter)
	plain, err := aead.Open(nil, nonce[:], d[dgHeaderLen:], d[:dgHeaderLen])
	if err != nil {
		return nil, dropBadAuth
	}
	if (h.typ == dgTypeData && (len(plain) < 1 || len(plain) > maxPacketLen)) ||
		(h.typ != dgTypeData && len(plain) != dgProbeIDLen) {
		return nil, dropMalformed
	}
	return plain, ""
}

// replayWindow accepts each counter once, and only within 2048 of the highest seen.
type replayWindow struct {
	next uint64 // highest accepted + 1; 0 = nothing accepted yet
	bits [replayWindowSize / 64]uint64
}

func (w *replayWindow) bit(c uint64) (int, uint64) {
	i := c % replayWindowSize
	return int(i / 64), uint64(1) << (i % 64)
}

// check says whether c would be accepted (a pre-check; accept records c once its tag verified).
func (w *replayWindow) check(c uint64) bool {
	if c >= maxCounter {
		return false
	}
	if c >= w.next {
		return true
	}
	if c+replayWindowSize < w.next { // c <= highest - 2048
		return false
	}
	word, mask := w.bit(c)
	return w.bits[word]&mask == 0
}

// accept records c; it reports whether c is the new highest counter.
func (w *replayWindow) accept(c uint64) bool {
	if !w.check(c) {
		return false
	}
	highest := c >= w.next
	if highest {
		for n := w.next; n < c && n < w.next+replayWindowSize; n++ { // forget what slid out
			word, mask := w.bit(n)
			w.bits[word] &^= mask
		}
		w.next = c + 1
	}
	word, mask := w.bit(c)
	w.bits[word] |= mask
	return highest
}

// dgKeySchedule is one tunnel's epoch state machine (§16 "Epochs, rekey").
type dgKeySchedule struct {
	self, remote peer.ID
	initiator    bool // this side opened the tunnel stream: it starts rekeys
	port         uint32
	endpoints    [][]byte
	rand         io.Reader
	newIndex     func() uint32 // a fresh non-zero receiver_index, unique on this node

	current   uint32 // the last completed epoch (0: none yet)
	ownPriv   *ecdh.PrivateKey
	ownOffer  *DatagramOffer // our offer for epoch current+1, once sent
	peerOffer *DatagramOffer // the peer's offer for epoch current+1, once received
	cur, prev *epochKeys
	prevUntil time.Time
}

// offer creates and returns our offer for epoch current+1 (it must not exist yet).
func (s *dgKeySchedule) offer() *DatagramOffer {
	priv, err := ecdh.X25519().GenerateKey(s.rand)
	if err != nil {
		panic(err)
	}
	s.ownPriv = priv
	s.ownOffer = &DatagramOffer{
		Epoch: s.current + 1, PublicKey: priv.PublicKey().Bytes(), ReceiverIndex: s.newIndex(),
		Port: s.port, Endpoints: s.endpoints,
	}
	return s.ownOffer
}

// start is epoch 1: our first offer, sent right after the Hellos.
func (s *dgKeySchedule) start() *DatagramOffer {
	if s.current != 0 || s.ownOffer != nil {
		return nil
	}
	return s.offer()
}

// rekeyDue says whether the initiator should start the next epoch now.
func (s *dgKeySchedule) rekeyDue(now time.Time, after time.Duration) bool {
	return s.initiator && s.cur != nil && s.ownOffer == nil &&
		(now.Sub(s.cur.installedAt) >= after || s.cur.sendCounter >= rekeyAfterPackets)
}

// rekey is the initiator's offer for epoch current+1.
func (s *dgKeySchedule) rekey() *DatagramOffer {
	if !s.initiator || s.cur == nil || s.ownOffer != nil {
		return nil
	}
	return s.offer()
}

// handleOffer takes the peer's offer. It returns our own offer when one must be sent in answer, the keys
// installed when the epoch completed (the current keys move to prev, for the grace period), and the
// keys dropped because of it (a prev still in its grace: only two epochs are ever held).
func (s *dgKeySchedule) handleOffer(o *DatagramOffer, now time.Time) (answer *DatagramOffer, installed, dropped *epochKeys, err error) {
	if o.Epoch != s.current+1 || s.peerOffer != nil {
		return nil, nil, nil, perr("DatagramOffer for epoch %d, expected %d", o.Epoch, s.current+1)
	}
	if o.Epoch > 1 && s.initiator && s.ownOffer == nil {
		return nil, nil, nil, perr("DatagramOffer for epoch %d from the responder before the initiator's", o.Epoch)
	}
	s.peerOffer = o
	if s.ownOffer == nil {
		answer = s.offer()
	}
	k, err := deriveEpoch(s.self, s.remote, s.ownPriv, s.ownOffer, o)
	if err != nil {
		return nil, nil, nil, err
	}
	k.installedAt = now
	if s.cur != nil {
		dropped = s.prev
		s.prev, s.prevUntil = s.cur, now.Add(oldKeyGrace)
	}
	s.cur, s.current = k, o.Epoch
	s.ownPriv, s.ownOffer, s.peerOffer = nil, nil, nil // ephemerals go: forward secrecy
	return answer, k, dropped, nil
}

// expirePrev drops the previous epoch's keys after the grace period; it returns them when it did.
func (s *dgKeySchedule) expirePrev(now time.Time) *epochKeys {
	if s.prev == nil || now.Before(s.prevUntil) {
		return nil
	}
	old := s.prev
	s.prev = nil
	return old
}

var errNoKeys = errors.New("no datagram keys")

// seal encrypts one datagram of type typ with the current epoch's send key.
func (s *dgKeySchedule) seal(typ byte, plain []byte) ([]byte, error) {
	k := s.cur
	if k == nil {
		return nil, errNoKeys
	}
	if k.sendCounter >= maxCounter {
		return nil, errNoKeys // a sender must rekey before 2^60; never reached in practice
	}
	d := sealDatagram(k.send, typ, k.remoteIndex, k.sendCounter, plain)
	k.sendCounter++
	return d, nil
}
