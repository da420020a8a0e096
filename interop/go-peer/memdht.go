package main

// The network's revocation list in the DHT (docs/protocol.md §15.9.4): the
// key /p2pvpn/<network_id>/revocations holds the best valid list (§15.5);
// a member reads it at start and every 30 s and stores its own best list
// there when that is better than what it read.

import (
	"context"
	"errors"
	"strings"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
)

const (
	dhtListInterval   = 30 * time.Second
	dhtListEarlyRetry = 2 * time.Second // while the DHT has given us nothing yet
	dhtListEarlyTries = 10
	dhtListTimeout    = 20 * time.Second
)

func revocationsKey(network string) string { return "/p2pvpn/" + network + "/revocations" }

// RevocationListValidator validates and selects lists under this network's revocation key;
// Revoked is the node's current set, against which an admin signer is checked (nil: none known).
type RevocationListValidator struct {
	Network   string
	Revoked   func() map[string]uint64
	OnVerdict func(key string, err error)
}

func (v RevocationListValidator) open(key string, value []byte) (*RevocationList, error) {
	if key != revocationsKey(v.Network) {
		return nil, errors.New("not this network's revocation key")
	}
	r := map[string]uint64{}
	if v.Revoked != nil {
		r = v.Revoked()
	}
	return openList(value, v.Network, nowUnix(), r)
}

func (v RevocationListValidator) Validate(key string, value []byte) error {
	_, err := v.open(key, value)
	if v.OnVerdict != nil {
		v.OnVerdict(key, err)
	}
	return err
}

// Select: highest seq, then the larger bytes (§15.5).
func (v RevocationListValidator) Select(key string, values [][]byte) (int, error) {
	best := -1
	var bestList *RevocationList
	for i, value := range values {
		l, err := v.open(key, value)
		if err == nil && (best < 0 || better(l, bestList)) {
			best, bestList = i, l
		}
	}
	if best < 0 {
		return 0, errors.New("no valid revocation list among the values")
	}
	return best, nil
}

// byKey sends the revocation key to the list validator, the policy key to the policy validator,
// address keys (§18.2) to the address-record validator and every other key to the record validator.
type byKey struct {
	records  NodeRecordValidator
	lists    RevocationListValidator
	policies PolicyValidator
}

func (b byKey) isList(key string) bool { return strings.HasSuffix(key, "/revocations") }

func (b byKey) isPolicy(key string) bool { return strings.HasSuffix(key, dhtPolicyKeySuffix) }

func (b byKey) Validate(key string, value []byte) error {
	if isAddressKey(key) {
		return AddressRecordValidator{Records: b.records}.Validate(key, value)
	}
	if b.isPolicy(key) {
		return b.policies.Validate(key, value)
	}
	if b.isList(key) {
		return b.lists.Validate(key, value)
	}
	return b.records.Validate(key, value)
}

func (b byKey) Select(key string, values [][]byte) (int, error) {
	if isAddressKey(key) {
		return AddressRecordValidator{Records: b.records}.Select(key, values)
	}
	if b.isPolicy(key) {
		return b.policies.Select(key, values)
	}
	if b.isList(key) {
		return b.lists.Select(key, values)
	}
	return b.records.Select(key, values)
}

// revoked is a copy of the member's revocation set, for the DHT validator.
func (m *Member) revoked() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]uint64, len(m.rset.Entries))
	for p, t := range m.rset.Entries {
		out[p] = t
	}
	return out
}

// dhtLoop takes in the DHT's list and puts ours there when it is better (or the DHT has none).
func (m *Member) dhtLoop(ctx context.Context, d *dht.IpfsDHT) {
	key := revocationsKey(m.network)
	misses := 0
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, dhtListTimeout)
		value, err := d.GetValue(gctx, key)
		cancel()
		var theirs *RevocationList
		if err == nil {
			if taught, terr := m.take(value, "dht", ""); terr == nil {
				theirs, _ = openListBytes(value, m.network)
				misses = dhtListEarlyTries
				if taught {
					m.enforce()
					go m.spread(ctx, "")
				}
			}
		} else {
			misses++
		}
		m.mu.Lock()
		best := m.rset.Best
		m.mu.Unlock()
		if best != nil && (theirs == nil || better(best, theirs)) {
			pctx, cancel := context.WithTimeout(ctx, dhtListTimeout)
			err := d.PutValue(pctx, key, best.Raw)
			cancel()
			ev := map[string]any{"key": key, "seq": best.Seq, "ok": err == nil}
			if err != nil {
				ev["error"] = err.Error()
			}
			emit("revocations_published", ev)
		}
		wait := dhtListInterval
		if misses < dhtListEarlyTries && best == nil {
			wait = dhtListEarlyRetry
		}
		sleepCtx(ctx, wait)
	}
}
