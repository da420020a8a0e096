package main

// Signed node records, docs/protocol.md §12: the NodeRecord payload (§12.4),
// its multiaddr grammar (§12.5) and exit policy syntax (§12.6), the signed
// envelope (§12.3), validation (§12.7) and selection (§12.8). Written from
// the document; every rule cites its section.

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	recordDomain      = "p2pvpn-node-record"
	maxRecordSize     = 4096
	maxKeyLen         = 128
	maxAddrs          = 16
	maxAddrLen        = 512
	maxPolicyEntries  = 16
	maxPolicyEntryLen = 64
	maxTTL            = 86400
	defaultTTL        = 300
)

var (
	recordPayloadType = []byte("/p2pvpn/node-record/1")
	ed25519IDPrefix   = []byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}
	networkRe         = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

type RelayRole struct {
	MaxReservations uint32 `json:"max_reservations"`
	MaxCircuits     uint32 `json:"max_circuits"`
}

type ExitRole struct {
	Allow        []string `json:"allow"`
	Deny         []string `json:"deny"`
	CapacityMbit uint32   `json:"capacity_mbit"`
	LoadPermille uint32   `json:"load_permille"`
}

// NodeRecord is the payload of §12.4; Addrs/RelayAddrs hold binary multiaddrs.
type NodeRecord struct {
	PeerID       []byte
	Network      string
	Seq          uint64
	ExpiresUnix  uint64
	IPv4         []byte
	IPv6         []byte
	AddressIndex uint32
	Addrs        [][]byte
	RelayAddrs   [][]byte
	Relay        *RelayRole
	Exit         *ExitRole
	Certificate  []byte // owned network: the node's SignedCertificate (§15.9.4); empty otherwise
}

// Domain, Codec, MarshalRecord, UnmarshalRecord make NodeRecord a go-libp2p record.Record (§12.3).
func (r *NodeRecord) Domain() string { return recordDomain }
func (r *NodeRecord) Codec() []byte  { return recordPayloadType }

func (r *NodeRecord) MarshalRecord() ([]byte, error) { return r.marshal(), nil }

func (r *NodeRecord) UnmarshalRecord(b []byte) error {
	parsed, err := parseNodeRecord(b)
	if err != nil {
		return err
	}
	*r = *parsed
	return nil
}

func init() { record.RegisterType(&NodeRecord{}) }

// marshal writes fields in field-number order, default scalars omitted (§12.10).
func (r *NodeRecord) marshal() []byte {
	var w pbWriter
	w.bytes(1, r.PeerID)
	w.bytes(2, []byte(r.Network))
	w.varint(3, r.Seq)
	w.varint(4, r.ExpiresUnix)
	w.bytes(5, r.IPv4)
	w.bytes(6, r.IPv6)
	w.varint(7, uint64(r.AddressIndex))
	for _, a := range r.Addrs {
		w.repeated(8, a)
	}
	for _, a := range r.RelayAddrs {
		w.repeated(9, a)
	}
	if r.Relay != nil {
		var m pbWriter
		m.varint(1, uint64(r.Relay.MaxReservations))
		m.varint(2, uint64(r.Relay.MaxCircuits))
		w.repeated(10, m.b) // present even when empty: the role is on (§12.4)
	}
	if r.Exit != nil {
		var m pbWriter
		for _, e := range r.Exit.Allow {
			m.repeated(1, []byte(e))
		}
		for _, e := range r.Exit.Deny {
			m.repeated(2, []byte(e))
		}
		m.varint(3, uint64(r.Exit.CapacityMbit))
		m.varint(4, uint64(r.Exit.LoadPermille))
		w.repeated(11, m.b)
	}
	w.bytes(12, r.Certificate)
	return w.b
}

// parseNodeRecord decodes the payload (proto3 rules of §12.4) and checks every
// limit that needs no reader context (§12.4-§12.6).
func parseNodeRecord(b []byte) (*NodeRecord, error) {
	r := &NodeRecord{}
	var relay, exit []byte
	var hasRelay, hasExit bool
	err := pbWalk(b, func(f pbField) error {
		if f.typ == protowire.VarintType {
			switch f.num {
			case 3:
				r.Seq = f.varint
			case 4:
				r.ExpiresUnix = f.varint
			case 7:
				r.AddressIndex = uint32(f.varint)
			}
			return nil
		}
		if f.typ != protowire.BytesType {
			return nil
		}
		switch f.num {
		case 1:
			r.PeerID = f.bytes
		case 2:
			s, err := pbString("network", f.bytes)
			if err != nil {
				return err
			}
			r.Network = s
		case 5:
			r.IPv4 = f.bytes
		case 6:
			r.IPv6 = f.bytes
		case 8:
			if len(r.Addrs) == maxAddrs {
				return fmt.Errorf("more than %d addrs", maxAddrs)
			}
			r.Addrs = append(r.Addrs, f.bytes)
		case 9:
			if len(r.RelayAddrs) == maxAddrs {
				return fmt.Errorf("more than %d relay_addrs", maxAddrs)
			}
			r.RelayAddrs = append(r.RelayAddrs, f.bytes)
		case 10:
			hasRelay, relay = true, append(relay, f.bytes...)
		case 11:
			hasExit, exit = true, append(exit, f.bytes...)
		case 12:
			r.Certificate = f.bytes
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("payload is not a NodeRecord: %w", err)
	}
	if hasRelay {
		r.Relay = &RelayRole{}
		err := pbWalk(relay, func(f pbField) error {
			if f.typ == protowire.VarintType && f.num == 1 {
				r.Relay.MaxReservations = uint32(f.varint)
			} else if f.typ == protowire.VarintType && f.num == 2 {
				r.Relay.MaxCircuits = uint32(f.varint)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("relay role is not valid protobuf: %w", err)
		}
	}
	if hasExit {
		r.Exit = &ExitRole{}
		err := pbWalk(exit, func(f pbField) error {
			switch {
			case f.typ == protowire.BytesType && (f.num == 1 || f.num == 2):
				s, err := pbString("exit policy entry", f.bytes)
				if err != nil {
					return err
				}
				if f.num == 1 {
					r.Exit.Allow = append(r.Exit.Allow, s)
				} else {
					r.Exit.Deny = append(r.Exit.Deny, s)
				}
			case f.typ == protowire.VarintType && f.num == 3:
				r.Exit.CapacityMbit = uint32(f.varint)
			case f.typ == protowire.VarintType && f.num == 4:
				r.Exit.LoadPermille = uint32(f.varint)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("exit role is not valid: %w", err)
		}
	}
	return r, r.checkFields()
}

// checkFields: §12.4 limits, §12.5 grammar, §12.6 syntax.
func (r *NodeRecord) checkFields() error {
	if len(r.PeerID) != 38 || !bytes.HasPrefix(r.PeerID, ed25519IDPrefix) {
		return errors.New("peer_id is not the 38-byte Ed25519 peer ID form")
	}
	if !networkRe.MatchString(r.Network) {
		return fmt.Errorf("network %q is not [A-Za-z0-9._-]{1,64}", r.Network)
	}
	if len(r.IPv4) != 4 {
		return fmt.Errorf("ipv4 is %d bytes, expected 4", len(r.IPv4))
	}
	if len(r.IPv6) != 16 {
		return fmt.Errorf("ipv6 is %d bytes, expected 16", len(r.IPv6))
	}
	if r.AddressIndex > maxAddressIndex {
		return fmt.Errorf("address_index %d is over %d", r.AddressIndex, maxAddressIndex)
	}
	if len(r.Certificate) > maxCertSize {
		return fmt.Errorf("certificate of %d bytes, over %d", len(r.Certificate), maxCertSize)
	}
	if len(r.Addrs) > maxAddrs || len(r.RelayAddrs) > maxAddrs {
		return fmt.Errorf("more than %d addrs or relay_addrs", maxAddrs)
	}
	for _, a := range r.Addrs {
		if err := checkRecordAddr(a, false); err != nil {
			return err
		}
	}
	for _, a := range r.RelayAddrs {
		if err := checkRecordAddr(a, true); err != nil {
			return err
		}
	}
	if r.Exit != nil {
		for _, list := range [][]string{r.Exit.Allow, r.Exit.Deny} {
			if len(list) > maxPolicyEntries {
				return fmt.Errorf("exit role has more than %d allow or deny entries", maxPolicyEntries)
			}
			for _, e := range list {
				if err := checkPolicyEntry(e); err != nil {
					return err
				}
			}
		}
		if r.Exit.LoadPermille > 1000 {
			return fmt.Errorf("exit load_permille %d is over 1000", r.Exit.LoadPermille)
		}
	}
	return nil
}

// ---- §12.5 multiaddrs ------------------------------------------------------

const (
	maIP4     = 4
	maTCP     = 6
	maDNS     = 53
	maDNS4    = 54
	maDNS6    = 55
	maIP6     = 41
	maUDP     = 273
	maCircuit = 290
	maP2P     = 421
	maQUICv1  = 461
)

var maFixed = map[uint64]int{maIP4: 4, maIP6: 16, maTCP: 2, maUDP: 2, maQUICv1: 0, maCircuit: 0}

// minimalUvarint reads a minimally encoded uvarint (§12.5: varints MUST be minimal).
func minimalUvarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 9; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			if i > 0 && b[i] == 0 {
				return 0, 0, errors.New("non-minimal varint")
			}
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("truncated or oversized varint")
}

type maPart struct {
	code  uint64
	value []byte
}

func maParts(raw []byte) ([]maPart, error) {
	var parts []maPart
	for len(raw) > 0 {
		code, n, err := minimalUvarint(raw)
		if err != nil {
			return nil, fmt.Errorf("multiaddr: %w", err)
		}
		raw = raw[n:]
		size, fixed := maFixed[code]
		if !fixed {
			switch code {
			case maDNS, maDNS4, maDNS6, maP2P:
				l, m, err := minimalUvarint(raw)
				if err != nil {
					return nil, fmt.Errorf("multiaddr: %w", err)
				}
				raw, size = raw[m:], int(l)
				if l > uint64(len(raw)) {
					return nil, errors.New("multiaddr is truncated")
				}
			default:
				return nil, fmt.Errorf("multiaddr protocol code %d is not allowed in records", code)
			}
		}
		if size > len(raw) {
			return nil, errors.New("multiaddr is truncated")
		}
		parts = append(parts, maPart{code, raw[:size]})
		raw = raw[size:]
	}
	return parts, nil
}

var dnsLabelRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

func checkDNSName(v []byte) error {
	if len(v) < 1 || len(v) > 253 {
		return fmt.Errorf("DNS name of %d bytes", len(v))
	}
	for _, label := range strings.Split(string(v), ".") {
		if !dnsLabelRe.MatchString(label) || (len(label) >= 4 && label[2:4] == "--") {
			return fmt.Errorf("DNS name %q is not a plain LDH host name", v)
		}
	}
	return nil
}

func checkP2PValue(v []byte) error {
	if len(v) >= 2 && v[0] == 0x00 && int(v[1]) == len(v)-2 && v[1] >= 1 && v[1] <= 42 {
		return nil
	}
	if len(v) == 34 && v[0] == 0x12 && v[1] == 0x20 {
		return nil
	}
	return errors.New("/p2p value is not an identity (1..42 bytes) or sha2-256 multihash")
}

// checkRecordAddr: addrs entry = host transport; relay_addrs entry = host transport /p2p/<relay>/p2p-circuit.
func checkRecordAddr(raw []byte, relay bool) error {
	if len(raw) > maxAddrLen {
		return fmt.Errorf("multiaddr of %d bytes, over %d", len(raw), maxAddrLen)
	}
	parts, err := maParts(raw)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return errors.New("empty multiaddr")
	}
	switch host := parts[0]; host.code {
	case maIP4:
		if bytes.Equal(host.value, make([]byte, 4)) {
			return errors.New("multiaddr has 0.0.0.0")
		}
	case maIP6:
		if bytes.Equal(host.value, make([]byte, 16)) {
			return errors.New("multiaddr has ::")
		}
	case maDNS, maDNS4, maDNS6:
		if err := checkDNSName(host.value); err != nil {
			return err
		}
	default:
		return errors.New("multiaddr must start with /ip4, /ip6, /dns, /dns4 or /dns6")
	}
	var rest []maPart
	switch {
	case len(parts) >= 2 && parts[1].code == maTCP:
		rest = parts[2:]
	case len(parts) >= 3 && parts[1].code == maUDP && parts[2].code == maQUICv1:
		rest = parts[3:]
	default:
		return errors.New("multiaddr must continue with /tcp/P or /udp/P/quic-v1")
	}
	if parts[1].value[0] == 0 && parts[1].value[1] == 0 {
		return errors.New("multiaddr has port 0")
	}
	if !relay {
		if len(rest) != 0 {
			return errors.New("listen multiaddr must be host and transport only")
		}
		return nil
	}
	if len(rest) != 2 || rest[0].code != maP2P || rest[1].code != maCircuit {
		return errors.New("relay multiaddr must end with /p2p/<relay>/p2p-circuit")
	}
	return checkP2PValue(rest[0].value)
}

// ---- §12.6 exit policy entries --------------------------------------------

var (
	portsRe   = regexp.MustCompile(`^(\*|[1-9][0-9]{0,4}(-[1-9][0-9]{0,4})?(,[1-9][0-9]{0,4}(-[1-9][0-9]{0,4})?)*)$`)
	v4PartsRe = regexp.MustCompile(`^(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}$`)
	bitsRe    = regexp.MustCompile(`^(0|[1-9][0-9]{0,2})$`)
)

func checkPolicyEntry(e string) error {
	bad := fmt.Errorf("exit policy entry %q is not PREFIX[:PORTS] (§12.6)", e)
	if len(e) > maxPolicyEntryLen {
		return fmt.Errorf("exit policy entry of %d bytes, over %d", len(e), maxPolicyEntryLen)
	}
	var prefix, ports string
	var v6 bool
	if strings.HasPrefix(e, "[") {
		end := strings.IndexByte(e, ']')
		if end < 0 {
			return bad
		}
		prefix, v6 = e[1:end], true
		rest := e[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return bad
			}
			ports = rest[1:]
			if ports == "" {
				return bad
			}
		}
	} else {
		prefix, ports, _ = strings.Cut(e, ":")
		if strings.Contains(e, ":") && ports == "" {
			return bad
		}
	}
	addrText, bitsText, ok := strings.Cut(prefix, "/")
	if !ok || !bitsRe.MatchString(bitsText) {
		return bad
	}
	if !v6 && !v4PartsRe.MatchString(addrText) {
		return bad
	}
	if strings.Contains(addrText, "%") {
		return bad
	}
	addr, err := netip.ParseAddr(addrText)
	if err != nil || addr.Is6() != v6 || addr.Is4In6() && !v6 {
		return bad
	}
	bits, _ := strconv.Atoi(bitsText)
	p, err := addr.Prefix(bits)
	if err != nil || p.Addr() != addr {
		return fmt.Errorf("exit policy entry %q has host bits set or a bad prefix length", e)
	}
	if ports != "" {
		if !portsRe.MatchString(ports) {
			return bad
		}
		if ports != "*" {
			for _, rng := range strings.Split(ports, ",") {
				lo, hi, found := strings.Cut(rng, "-")
				if !found {
					hi = lo
				}
				l, _ := strconv.Atoi(lo)
				h, _ := strconv.Atoi(hi)
				if l < 1 || h > 65535 || l > h {
					return bad
				}
			}
		}
	}
	return nil
}

// ---- §12.2 keys -------------------------------------------------------------

func recordKey(network string, id peer.ID) string {
	return "/p2pvpn/" + network + "/node/" + id.String()
}

// parseRecordKey checks §12.2 and returns the peer the key names.
func parseRecordKey(key, network string) (peer.ID, error) {
	if len(key) > maxKeyLen {
		return "", fmt.Errorf("key of %d bytes, over %d", len(key), maxKeyLen)
	}
	parts := strings.Split(key, "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "p2pvpn" || parts[3] != "node" {
		return "", fmt.Errorf("%q is not /p2pvpn/<network>/node/<peer-id>", key)
	}
	if !networkRe.MatchString(parts[2]) || parts[2] != network {
		return "", fmt.Errorf("key network %q is not ours (%q)", parts[2], network)
	}
	id, err := peer.Decode(parts[4])
	if err != nil || len(id) != 38 || !bytes.HasPrefix([]byte(id), ed25519IDPrefix) || id.String() != parts[4] {
		return "", fmt.Errorf("key peer %q is not a canonical base58 Ed25519 peer ID", parts[4])
	}
	return id, nil
}

func providerKey(network, role string) mh.Multihash {
	h, _ := mh.Sum([]byte("/p2pvpn/"+network+"/"+role), mh.SHA2_256, -1)
	return h
}

// ---- §12.3 envelope, §12.7 validation, §12.8 selection ----------------------

func sealRecord(r *NodeRecord, key crypto.PrivKey) ([]byte, error) {
	env, err := record.Seal(r, key)
	if err != nil {
		return nil, err
	}
	return env.Marshal()
}

// openSealed is §12.7 steps 2-5: size, envelope, key type, payload type, signature, fields, signer.
func openSealed(v []byte) (*NodeRecord, error) {
	if len(v) > maxRecordSize {
		return nil, fmt.Errorf("sealed record of %d bytes, over %d", len(v), maxRecordSize)
	}
	env, err := record.UnmarshalEnvelope(v)
	if err != nil {
		return nil, fmt.Errorf("not a signed envelope: %w", err)
	}
	if env.PublicKey.Type() != crypto.Ed25519 {
		return nil, errors.New("envelope key is not Ed25519")
	}
	if !bytes.Equal(env.PayloadType, recordPayloadType) {
		return nil, fmt.Errorf("payload type %q is not %q", env.PayloadType, recordPayloadType)
	}
	// ConsumeTypedEnvelope verifies the signature over domain || payload type || payload.
	r := &NodeRecord{}
	if _, err := record.ConsumeTypedEnvelope(v, r); err != nil {
		return nil, err
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal([]byte(signer), r.PeerID) {
		return nil, errors.New("record peer_id is not the signer's peer ID")
	}
	return r, nil
}

// checkRecord is §12.7 steps 6-9; revoked is the reader's revocation set in a network with an
// owner (there the certificate replaces step 9, §15.9.4) and nil in a network without one.
// In a network with an owner it also drops from r the roles its certificate does not grant.
func checkRecord(r *NodeRecord, keyPeer peer.ID, network string, now int64, revoked map[string]uint64) error {
	if !bytes.Equal(r.PeerID, []byte(keyPeer)) {
		return errors.New("record peer_id is not the peer named by the key")
	}
	if r.Network != network {
		return fmt.Errorf("record network %q is not %q", r.Network, network)
	}
	if now < 0 || r.ExpiresUnix <= uint64(now) {
		return errors.New("record has expired")
	}
	if r.ExpiresUnix > uint64(now)+maxTTL {
		return errors.New("record expires more than 86400 s ahead")
	}
	if revoked != nil {
		if len(r.Certificate) == 0 {
			return errors.New("record has no certificate (the network has an owner)")
		}
		c, err := verifyCertificate(r.Certificate, network, uint64(now), revoked, r.PeerID)
		if err != nil {
			return fmt.Errorf("record certificate: %w", err)
		}
		if !bytes.Equal(r.IPv4, c.IPv4) || !bytes.Equal(r.IPv6, c.IPv6) {
			return fmt.Errorf("record addresses are not its certificate's (%s, %s)", c.Addr4(), c.Addr6())
		}
		r.dropUngrantedRoles(c.Roles)
		return nil
	}
	v4, used, err := deriveIPv4(r.PeerID, network, r.AddressIndex)
	if err != nil || used != r.AddressIndex || !bytes.Equal(v4.AsSlice(), r.IPv4) {
		return errors.New("record ipv4/address_index do not match the peer ID")
	}
	if !bytes.Equal(deriveIPv6(r.PeerID, network).AsSlice(), r.IPv6) {
		return errors.New("record ipv6 does not match the peer ID")
	}
	return nil
}

// NodeRecordValidator is go-libp2p-record's Validator for the "p2pvpn" namespace.
type NodeRecordValidator struct {
	Network   string
	Now       func() int64
	Revoked   func() map[string]uint64    // set in a network with an owner (§15.9.4); nil: no owner
	OnVerdict func(key string, err error) // optional: observe every validation
}

// check is §12.7 steps 6-9 for this reader.
func (v NodeRecordValidator) check(r *NodeRecord, keyPeer peer.ID) error {
	var revoked map[string]uint64
	if v.Revoked != nil {
		if revoked = v.Revoked(); revoked == nil {
			revoked = map[string]uint64{}
		}
	}
	return checkRecord(r, keyPeer, v.Network, v.Now(), revoked)
}

func (v NodeRecordValidator) open(key string, value []byte) (*NodeRecord, error) {
	keyPeer, err := parseRecordKey(key, v.Network)
	if err != nil {
		return nil, err
	}
	r, err := openSealed(value)
	if err != nil {
		return nil, err
	}
	if err := v.check(r, keyPeer); err != nil {
		return nil, err
	}
	return r, nil
}

func (v NodeRecordValidator) Validate(key string, value []byte) error {
	_, err := v.open(key, value)
	if v.OnVerdict != nil {
		v.OnVerdict(key, err)
	}
	return err
}

// Select: highest seq, then latest expiry, then largest envelope bytes, then the first (§12.8).
func (v NodeRecordValidator) Select(key string, values [][]byte) (int, error) {
	best := -1
	var bestRec *NodeRecord
	for i, value := range values {
		r, err := v.open(key, value)
		if err != nil {
			continue
		}
		if best < 0 || r.Seq > bestRec.Seq ||
			r.Seq == bestRec.Seq && (r.ExpiresUnix > bestRec.ExpiresUnix ||
				r.ExpiresUnix == bestRec.ExpiresUnix && bytes.Compare(value, values[best]) > 0) {
			best, bestRec = i, r
		}
	}
	if best < 0 {
		return 0, errors.New("no valid record among the values")
	}
	return best, nil
}

// dropUngrantedRoles is §15.9.4 step 3: the record's relay and exit roles count only when the
// certificate has the relay or exit bit; a role it does not grant is treated as absent (the record
// stays valid). The DHT keeps and serves the sealed bytes as they are; what reads them through a
// validator sees only the roles that count, so this node never offers, picks or announces the others.
func (r *NodeRecord) dropUngrantedRoles(roles uint32) {
	if roles&roleRelay == 0 {
		r.Relay = nil
	}
	if roles&roleExit == 0 {
		r.Exit = nil
	}
}
