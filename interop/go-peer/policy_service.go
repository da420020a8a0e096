package main

// The member's policy duties (docs/protocol.md §17.4): learn the best valid
// policy, pass it on, enforce it (policy_filter.go).
//
//  1. every second: re-read the --policy file when it changed (the text form
//     p2pvpn-policy1:..., as `p2pvpn policy set` writes it), and push the
//     current policy on /p2pvpn/policy/1.0.0 to every peer that presented a
//     certificate on a live tunnel and has not had it (or sent us a better one)
//     on that tunnel;
//  2. a pushed policy is validated (§17.3) and answered OK or BAD_REQUEST; a
//     better one is enforced at once, saved to the --policy file, and spread
//     by step 1; a sender of a worse one gets ours back by step 1;
//  3. the DHT key /p2pvpn/<network_id>/policy is read at start and every 30 s
//     (every 2 s while none was found, at most 10 times); ours is stored there
//     when it is better than what we read.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
)

const (
	policyProtocol     = "/p2pvpn/policy/1.0.0"
	policySweepEvery   = 10 * time.Second
	maxPolicyAnswer    = 1024
	dhtPolicyKeySuffix = "/policy"
)

func policyKey(network string) string { return "/p2pvpn/" + network + dhtPolicyKeySuffix }

type policyMark struct {
	seq uint64
	t   *tunnel
}

type PolicyService struct {
	v    *VPN
	m    *Member
	fw   *Firewall
	file string

	mu        sync.Mutex
	sent      map[peer.ID]policyMark // what each member peer has had from us (or sent us) on which tunnel
	counters  map[string]uint64
	fileStamp string
}

func newPolicyService(v *VPN, m *Member, file string) *PolicyService {
	groupsOf := func(id peer.ID) []string {
		m.mu.Lock()
		defer m.mu.Unlock()
		if c := m.presented[id]; c != nil {
			return c.Groups
		}
		return nil // a listed stranger has no groups
	}
	return &PolicyService{v: v, m: m, fw: newFirewall(v.h.ID(), m.own.Groups, groupsOf), file: file,
		sent: map[peer.ID]policyMark{}, counters: map[string]uint64{}}
}

func (s *PolicyService) count(name string) {
	s.mu.Lock()
	s.counters[name]++
	s.mu.Unlock()
}

// status is §17.6's policy object.
func (s *PolicyService) status() map[string]any {
	st := s.fw.status()
	s.mu.Lock()
	c := map[string]uint64{}
	for k, n := range s.counters {
		c[k] = n
	}
	s.mu.Unlock()
	st["counters"] = c
	return st
}

// accept validates a policy and enforces it if it is better than ours; true when it replaced ours.
func (s *PolicyService) accept(data []byte, via string) (*Policy, bool, error) {
	p, err := openPolicy(data, s.m.network, nowUnix(), s.m.revoked())
	if err != nil {
		return nil, false, err
	}
	if !s.fw.setIfBetter(p) {
		return p, false, nil
	}
	s.count("applied")
	st := s.fw.status()
	emit("policy_applied", map[string]any{"via": via, "seq": p.Seq, "default": st["default"],
		"rules": len(p.Rules), "rules_here": st["rules_here"], "active": st["active"]})
	if via != "file" {
		s.save(p)
	}
	return p, true, nil
}

// save writes a better policy we learned to the --policy file (§17.4, Local).
func (s *PolicyService) save(p *Policy) {
	if s.file == "" {
		return
	}
	tmp := s.file + ".tmp"
	if err := os.WriteFile(tmp, []byte(policyText(p.Raw)+"\n"), 0o600); err != nil || os.Rename(tmp, s.file) != nil {
		s.count("save_failed")
		return
	}
	if st, err := os.Stat(s.file); err == nil {
		s.mu.Lock()
		s.fileStamp = fileStamp(st)
		s.mu.Unlock()
	}
}

func fileStamp(st os.FileInfo) string {
	return fmt.Sprintf("%d/%d", st.ModTime().UnixNano(), st.Size())
}

func (s *PolicyService) reloadFile() {
	if s.file == "" {
		return
	}
	st, err := os.Stat(s.file)
	if err != nil {
		return
	}
	stamp := fileStamp(st)
	s.mu.Lock()
	same := stamp == s.fileStamp
	s.fileStamp = stamp
	s.mu.Unlock()
	if same {
		return
	}
	text, err := os.ReadFile(s.file)
	var data []byte
	if err == nil {
		data, err = policyFromText(strings.TrimSpace(string(text)))
	}
	if err == nil {
		_, _, err = s.accept(data, "file")
	}
	if err != nil {
		s.count("file_refused")
		emit("policy_refused", map[string]any{"via": "file", "error": err.Error()})
	}
}

// run is step 1, and the conntrack sweep.
func (s *PolicyService) run(ctx context.Context) {
	s.v.h.SetStreamHandler(policyProtocol, s.handlePush)
	tick := time.NewTicker(checkInterval)
	defer tick.Stop()
	nextSweep := time.Now().Add(policySweepEvery)
	for {
		s.reloadFile()
		s.spread(ctx)
		if now := time.Now(); now.After(nextSweep) {
			s.fw.sweep(now)
			nextSweep = now.Add(policySweepEvery)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// spread pushes our policy once per policy and tunnel to every member peer that has not had it.
func (s *PolicyService) spread(ctx context.Context) {
	p := s.fw.current()
	if p == nil {
		return
	}
	s.m.mu.Lock()
	var members []peer.ID
	for id := range s.m.presented {
		members = append(members, id)
	}
	s.m.mu.Unlock()
	for _, id := range members {
		t := s.v.current(id)
		if t == nil {
			continue
		}
		s.mu.Lock()
		had, ok := s.sent[id]
		due := !ok || (had != policyMark{p.Seq, t} && had.seq <= p.Seq)
		if due {
			s.sent[id] = policyMark{p.Seq, t} // one attempt per policy and tunnel; the DHT covers a failed one
		}
		s.mu.Unlock()
		if due {
			go s.pushOne(ctx, id, p.Raw)
		}
	}
}

func policyAnswer(status uint32, message string) []byte {
	if len(message) > 200 {
		message = message[:200]
	}
	return joinResponse(status, message) // the same two fields: status = 1, message = 2
}

// handlePush is step 2: one SignedPolicy in, one PolicyAnswer out.
func (s *PolicyService) handlePush(st network.Stream) {
	defer st.Close()
	sender := st.Conn().RemotePeer()
	_ = st.SetDeadline(time.Now().Add(pushTimeout))
	msg, err := msgio.NewVarintReaderSize(st, maxPolicySize).ReadMsg()
	if err != nil {
		s.count("push_refused")
		_ = st.Reset()
		return
	}
	theirs, changed, err := s.accept(msg, "push")
	if err != nil {
		s.count("push_refused")
		emit("policy_refused", map[string]any{"via": "push", "peer": sender.String(), "error": err.Error()})
		_ = writeMsg(st, policyAnswer(statusBadReq, err.Error()))
		return
	}
	_ = writeMsg(st, policyAnswer(statusOK, ""))
	s.count("received")
	ours := s.fw.current()
	s.mu.Lock()
	if t := s.v.current(sender); t != nil && !betterPolicy(ours, theirs) {
		s.sent[sender] = policyMark{ours.Seq, t} // it has ours already
	} else {
		delete(s.sent, sender) // theirs is worse: ours goes back at the next check
	}
	s.mu.Unlock()
	if changed {
		go s.spread(context.Background())
	}
}

func (s *PolicyService) pushOne(ctx context.Context, to peer.ID, data []byte) {
	status, text, err := pushSigned(ctx, s.v.h, to, policyProtocol, data, maxPolicyAnswer)
	ev := map[string]any{"peer": to.String()}
	switch {
	case err != nil:
		s.count("push_failed")
		ev["error"] = err.Error()
	case status != statusOK:
		s.count("push_refused_by_peer")
		ev["status"], ev["message"] = status, text
	default:
		s.count("pushed")
		ev["status"] = status
	}
	emit("policy_pushed", ev)
}

// -- the DHT (§17.4) --------------------------------------------------------------------------------

// PolicyValidator validates and selects policies under this network's policy key.
type PolicyValidator struct {
	Network   string
	Revoked   func() map[string]uint64
	OnVerdict func(key string, err error)
}

func (pv PolicyValidator) open(key string, value []byte) (*Policy, error) {
	if key != policyKey(pv.Network) {
		return nil, errors.New("not this network's policy key")
	}
	r := map[string]uint64{}
	if pv.Revoked != nil {
		r = pv.Revoked()
	}
	return openPolicy(value, pv.Network, nowUnix(), r)
}

func (pv PolicyValidator) Validate(key string, value []byte) error {
	_, err := pv.open(key, value)
	if pv.OnVerdict != nil {
		pv.OnVerdict(key, err)
	}
	return err
}

func (pv PolicyValidator) Select(key string, values [][]byte) (int, error) {
	best := -1
	var bestP *Policy
	for i, value := range values {
		if p, err := pv.open(key, value); err == nil && (best < 0 || betterPolicy(p, bestP)) {
			best, bestP = i, p
		}
	}
	if best < 0 {
		return 0, errors.New("no valid policy among the values")
	}
	return best, nil
}

// dhtLoop is step 3.
func (s *PolicyService) dhtLoop(ctx context.Context, d *dht.IpfsDHT) {
	key := policyKey(s.m.network)
	misses := 0
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, dhtListTimeout)
		value, err := d.GetValue(gctx, key)
		cancel()
		var theirs *Policy
		if err == nil {
			var changed bool
			if theirs, changed, err = s.accept(value, "dht"); err == nil {
				s.count("dht_fetched")
				misses = dhtListEarlyTries
				if changed {
					go s.spread(ctx)
				}
			} else {
				s.count("dht_refused")
			}
		} else {
			misses++
		}
		ours := s.fw.current()
		if ours != nil && (theirs == nil || betterPolicy(ours, theirs)) {
			pctx, cancel := context.WithTimeout(ctx, dhtListTimeout)
			if err := d.PutValue(pctx, key, ours.Raw); err == nil {
				s.count("dht_published")
			}
			cancel()
		}
		wait := dhtListInterval
		if misses < dhtListEarlyTries && ours == nil {
			wait = dhtListEarlyRetry
		}
		sleepCtx(ctx, wait)
	}
}
