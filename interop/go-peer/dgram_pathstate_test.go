package main

// §16.7's path state, driven by hand with a fake clock.

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestProbingFastThenSlowThenUDPThenTimeout(t *testing.T) {
	a, b := netip.MustParseAddrPort("198.18.0.2:4001"), netip.MustParseAddrPort("198.18.1.2:4001")
	p := newPathState()
	p.addCandidates([]netip.AddrPort{a, b, a})
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	if due, _ := p.poll(at(0)); !slices.Equal(due, []netip.AddrPort{a, b}) {
		t.Fatalf("first poll probes every candidate once: %v", due)
	}
	if due, _ := p.poll(at(500 * time.Millisecond)); len(due) != 0 {
		t.Fatalf("no probe before 1 s: %v", due)
	}
	probes := 1
	for s := 1; s < 30; s++ { // 1 s apart for the first 10 probes per endpoint, then 5 s
		if due, _ := p.poll(at(time.Duration(s) * time.Second)); len(due) > 0 {
			probes++
			if want := s < dgProbeFastN || (s-(dgProbeFastN-1))%5 == 0; !want {
				t.Fatalf("probe at %d s", s)
			}
		}
	}
	if probes != dgProbeFastN+4 { // 10 fast (0..9 s), then 14, 19, 24, 29 s
		t.Fatalf("%d probe rounds in 30 s", probes)
	}

	// A reply from b: udp, endpoint b; probes stop while replies and data keep coming.
	now := at(30 * time.Second)
	if !p.alive(b, true, now) || p.state != pathUDP || p.endpoint != b {
		t.Fatalf("after a reply: %s %v", p.state, p.endpoint)
	}
	for s := 1; s <= 5; s++ {
		now = now.Add(time.Second)
		p.sent(now)
		p.alive(b, true, now)
		if due, _ := p.poll(now); len(due) != 0 {
			t.Fatalf("keepalive while traffic flows both ways: %v", due)
		}
	}
	// Sending but nothing coming back: a keepalive probe every 2 s, then the timeout at 6 s.
	var keepalives int
	var fell bool
	var restart []netip.AddrPort
	for ms := 100; ms <= 6000; ms += 100 {
		p.sent(now.Add(time.Duration(ms) * time.Millisecond))
		due, fellBack := p.poll(now.Add(time.Duration(ms) * time.Millisecond))
		if fellBack {
			fell, restart = ms == 6000, due
			break
		}
		if len(due) == 1 && due[0] == b {
			keepalives++
		}
	}
	if keepalives != 2 || !fell || p.state != pathStream || p.endpoint.IsValid() {
		t.Fatalf("keepalives %d, fell back at 6 s %v, state %s", keepalives, fell, p.state)
	}
	if !slices.Equal(restart, []netip.AddrPort{a, b}) {
		t.Fatalf("probing starts over at once: %v", restart)
	}
	if due, _ := p.poll(now.Add(7 * time.Second)); !slices.Equal(due, []netip.AddrPort{a, b}) {
		t.Fatalf("fast probes again, 1 s apart: %v", due)
	}
}

func TestKeepaliveWhenIdleAndRoaming(t *testing.T) {
	a, c := netip.MustParseAddrPort("198.18.0.2:4001"), netip.MustParseAddrPort("198.18.9.9:5555")
	p := newPathState()
	p.addCandidates([]netip.AddrPort{a})
	t0 := time.Unix(1000, 0)
	p.alive(a, true, t0)
	// Idle both ways: the peer's data arrives (so alive) but we send nothing -> a probe at 2 s.
	p.alive(a, true, t0.Add(1900*time.Millisecond))
	if due, _ := p.poll(t0.Add(2 * time.Second)); !slices.Equal(due, []netip.AddrPort{a}) {
		t.Fatalf("idle keepalive: %v", due)
	}
	// Roaming: only a new highest counter moves the endpoint.
	p.alive(c, false, t0.Add(2100*time.Millisecond))
	if p.endpoint != a {
		t.Fatal("an old counter from another address moved the endpoint")
	}
	if p.alive(c, true, t0.Add(2200*time.Millisecond)) || p.endpoint != c {
		t.Fatal("a new highest counter from another address moves the endpoint (and is no state change)")
	}
}
