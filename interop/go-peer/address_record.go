package main

// Address records, docs/protocol.md §18.2: a member's sealed node record,
// unchanged, also stored under /p2pvpn/<network>/addr/<address> for each of
// its two overlay addresses, so that an on-demand node finds the member of a
// packet's destination with one GET_VALUE. Validation is the node record's
// (§12.7, with the record's own peer as the key's peer) plus: the key names
// one of the record's two addresses, spelled canonically. Selection prefers
// the smallest peer ID (the address's holder under §12.12), then §12.8.

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
)

const addressKind = "addr"

// addressKey is /p2pvpn/<network>/addr/<address>, IPv4 dotted quad, IPv6 in RFC 5952 form (§18.2).
func addressKey(network string, a netip.Addr) string {
	return "/p2pvpn/" + network + "/" + addressKind + "/" + a.String()
}

// isAddressKey: the third component (after "" and "p2pvpn", the network) is "addr".
func isAddressKey(key string) bool {
	parts := strings.Split(key, "/")
	return len(parts) == 5 && parts[0] == "" && parts[1] == "p2pvpn" && parts[3] == addressKind
}

// parseAddressKey checks §18.2 rule 1 and returns the address the key names.
func parseAddressKey(key, network string) (netip.Addr, error) {
	if len(key) > maxKeyLen {
		return netip.Addr{}, fmt.Errorf("key of %d bytes, over %d", len(key), maxKeyLen)
	}
	if !isAddressKey(key) {
		return netip.Addr{}, fmt.Errorf("%q is not /p2pvpn/<network>/addr/<address>", key)
	}
	parts := strings.Split(key, "/")
	if !networkRe.MatchString(parts[2]) || parts[2] != network {
		return netip.Addr{}, fmt.Errorf("key network %q is not ours (%q)", parts[2], network)
	}
	a, err := netip.ParseAddr(parts[4])
	if err != nil || a.Zone() != "" || a.String() != parts[4] {
		return netip.Addr{}, fmt.Errorf("address key %q does not end in a canonically spelled IP address", key)
	}
	return a, nil
}

// AddressRecordValidator validates and selects values under address keys, with the node-record
// validator's network and clock.
type AddressRecordValidator struct {
	Records NodeRecordValidator
}

// open is §18.2's validation: the key, the record as under its own record key, the address.
func (v AddressRecordValidator) open(key string, value []byte) (*NodeRecord, error) {
	a, err := parseAddressKey(key, v.Records.Network)
	if err != nil {
		return nil, err
	}
	r, err := openSealed(value)
	if err != nil {
		return nil, err
	}
	if err := v.Records.check(r, peer.ID(r.PeerID)); err != nil {
		return nil, err
	}
	want := a.AsSlice()
	if !bytes.Equal(r.IPv4, want) && !bytes.Equal(r.IPv6, want) {
		v4, _ := netip.AddrFromSlice(r.IPv4)
		v6, _ := netip.AddrFromSlice(r.IPv6)
		return nil, fmt.Errorf("record claims %s and %s, not %s", v4, v6, a)
	}
	return r, nil
}

func (v AddressRecordValidator) Validate(key string, value []byte) error {
	_, err := v.open(key, value)
	if v.Records.OnVerdict != nil {
		v.Records.OnVerdict(key, err)
	}
	return err
}

// Select: smallest peer ID (raw bytes, unsigned), then §12.8 among that peer's values.
func (v AddressRecordValidator) Select(key string, values [][]byte) (int, error) {
	best := -1
	var bestRec *NodeRecord
	for i, value := range values {
		r, err := v.open(key, value)
		if err != nil {
			continue
		}
		if best < 0 {
			best, bestRec = i, r
			continue
		}
		if c := bytes.Compare(r.PeerID, bestRec.PeerID); c < 0 ||
			c == 0 && (r.Seq > bestRec.Seq ||
				r.Seq == bestRec.Seq && (r.ExpiresUnix > bestRec.ExpiresUnix ||
					r.ExpiresUnix == bestRec.ExpiresUnix && bytes.Compare(value, values[best]) > 0)) {
			best, bestRec = i, r
		}
	}
	if best < 0 {
		return 0, errors.New("no valid address record among the values")
	}
	return best, nil
}
