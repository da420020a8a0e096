package main

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestIdleTrackerClosesOnlyWhatCarriedNothingForTheTimeout(t *testing.T) {
	tr, err := newIdleTracker[string](2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1767225600, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	if got := tr.observe(map[string]uint64{"busy": 0, "quiet": 5}, at(0)); len(got) != 0 {
		t.Fatalf("first sight closes nothing: %v", got)
	}
	if got := tr.observe(map[string]uint64{"busy": 3, "quiet": 5}, at(1.9)); len(got) != 0 {
		t.Fatalf("1.9 s: %v", got)
	}
	// quiet has not moved for 2 s; busy moved at 1.9 s.
	got := tr.observe(map[string]uint64{"busy": 3, "quiet": 5}, at(2))
	if len(got) != 1 || got[0] != "quiet" || tr.closed != 1 {
		t.Fatalf("2 s: want [quiet], got %v (closed %d)", got, tr.closed)
	}
	// A new tunnel under the key quiet starts its own count, even with the old total.
	if got := tr.observe(map[string]uint64{"busy": 3, "quiet": 5}, at(3)); len(got) != 0 {
		t.Fatalf("3 s: %v", got)
	}
	if got := tr.observe(map[string]uint64{"busy": 3, "quiet": 5}, at(3.9)); len(got) != 1 || got[0] != "busy" {
		t.Fatalf("3.9 s: want [busy] (quiet since 1.9), got %v", got)
	}
	// A tunnel that is gone is forgotten: when it comes back its time starts again.
	tr.observe(map[string]uint64{}, at(4.5))
	if got := tr.observe(map[string]uint64{"quiet": 5}, at(5.5)); len(got) != 0 || len(tr.seen) != 1 {
		t.Fatalf("after a gap: %v, seen %v", got, tr.seen)
	}
}

func TestIdleTimeoutRangeAndCheckInterval(t *testing.T) {
	for _, bad := range []time.Duration{0, 499 * time.Millisecond, 86401 * time.Second} {
		if _, err := newIdleTracker[int](bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	for timeout, want := range map[time.Duration]time.Duration{
		defaultIdleTimeout: 5 * time.Second, 8 * time.Second: 2 * time.Second, 500 * time.Millisecond: 125 * time.Millisecond,
	} {
		tr, err := newIdleTracker[int](timeout)
		if err != nil || tr.checkInterval() != want {
			t.Errorf("%v: check every %v, want %v (%v)", timeout, tr.checkInterval(), want, err)
		}
	}
}

// testVPN is a vpn-mode node on loopback, as main builds it, without DHT or UDP.
func testVPN(t *testing.T) *VPN {
	t.Helper()
	key, err := identity("")
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHost(key, []string{"/ip4/127.0.0.1/tcp/0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	self, err := deriveOverlay([]byte(h.ID()), "default", 0)
	if err != nil {
		t.Fatal(err)
	}
	v := &VPN{
		h: h, network: "default", self: self, mtu: 1400, keepalive: time.Second, allowAny: true,
		allow: map[peer.ID]bool{}, resp: &Responder{self: self, udpPort: 7},
		peers: map[peer.ID]*vpnPeer{}, counters: map[string]uint64{}, static: map[peer.ID]bool{},
	}
	h.SetStreamHandler(tunnelProtocol, v.handleStream)
	return v
}

// open dials b from a (a is the initiator) and returns the tunnel's outcome: the Close code a received, if any.
func openTunnel(t *testing.T, ctx context.Context, a, b *VPN) (*tunnel, <-chan *uint32) {
	t.Helper()
	if err := a.h.Connect(ctx, peer.AddrInfo{ID: b.h.ID(), Addrs: b.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := a.h.NewStream(ctx, b.h.ID(), tunnelProtocol)
	if err != nil {
		t.Fatal(err)
	}
	tun, done := newTunnel(a, s, a.h.ID()), make(chan *uint32, 1)
	go func() { done <- tun.run() }()
	for deadline := time.Now().Add(10 * time.Second); a.current(b.h.ID()) == nil || b.current(a.h.ID()) == nil; {
		if time.Now().After(deadline) {
			t.Fatal("tunnel did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tun, done
}

func TestTheOpenerClosesAnIdleTunnelWithCloseIdleAndTrafficKeepsItOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := testVPN(t), testVPN(t)
	const timeout = 2 * time.Second // pings every 200 ms: a stall of 2 s under load would be needed to close early
	tr, err := newIdleTracker[*tunnel](timeout)
	if err != nil {
		t.Fatal(err)
	}
	go a.idleLoop(ctx, tr)
	trB, _ := newIdleTracker[*tunnel](timeout)
	go b.idleLoop(ctx, trB) // b runs the same loop: it never closes a tunnel it did not open
	tun, done := openTunnel(t, ctx, a, b)

	// Echo requests every 200 ms for 4 s (twice the timeout): traffic, so the tunnel stays.
	ping := icmpPacket(a.self.IPv4, b.self.IPv4, 8, 7, []byte("idle?"))
	var lastSent time.Time
	for i := 0; i < 20; i++ {
		tun.sendPacket(ping)
		lastSent = time.Now()
		time.Sleep(200 * time.Millisecond)
		if a.current(b.h.ID()) != tun {
			t.Fatalf("closed after %d packets, while it carried traffic", i+1)
		}
	}
	if n := tun.traffic.Load(); n < 20 {
		t.Fatalf("traffic %d, want >= 20 (the requests sent)", n)
	}
	// Keepalives go on (every 1 s) but are no traffic: a closes after the timeout, within a check interval.
	select {
	case code := <-done:
		if code != nil {
			t.Fatalf("the opener received Close %s; it should have sent Close(IDLE)", closeName(*code))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("idle tunnel not closed")
	}
	if waited := time.Since(lastSent); waited < timeout {
		t.Fatalf("closed %v after the last packet, before the timeout", waited)
	}
	if sent := tun.sent(); sent == nil || *sent != closeIdle {
		t.Fatalf("sent close %v, want IDLE", sent)
	}
	for deadline := time.Now().Add(5 * time.Second); b.current(a.h.ID()) != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("b kept its side of the tunnel")
		}
	}
	if a.counter("idle_closed") != 1 || b.counter("idle_closed") != 0 {
		t.Fatalf("idle_closed a=%d b=%d", a.counter("idle_closed"), b.counter("idle_closed"))
	}

	// Nobody redials by itself; a new packet (the demand path) opens a new tunnel, whose count starts anew.
	time.Sleep(500 * time.Millisecond)
	if a.current(b.h.ID()) != nil || b.current(a.h.ID()) != nil {
		t.Fatal("a tunnel came back by itself")
	}
	again, done2 := openTunnel(t, ctx, a, b)
	again.sendPacket(ping)
	select {
	case <-done2:
	case <-time.After(10 * time.Second):
		t.Fatal("second idle tunnel not closed")
	}
	if a.counter("idle_closed") != 2 {
		t.Fatalf("idle_closed %d, want 2", a.counter("idle_closed"))
	}
}

func TestStaticPeersAndTunnelsThePeerOpenedAreNeverIdle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, c := testVPN(t), testVPN(t), testVPN(t)
	a.static[b.h.ID()] = true // a lists b with --peer
	tr, _ := newIdleTracker[*tunnel](500 * time.Millisecond)
	go a.idleLoop(ctx, tr)
	toB, _ := openTunnel(t, ctx, a, b)
	fromC, _ := openTunnel(t, ctx, c, a) // c opened it: not a's to close
	time.Sleep(2 * time.Second)          // four timeouts, no traffic
	if a.current(b.h.ID()) != toB || a.current(c.h.ID()) == nil || fromC.sent() != nil || toB.sent() != nil {
		t.Fatal("a pinned or foreign tunnel was closed for idleness")
	}
	if a.counter("idle_closed") != 0 {
		t.Fatalf("idle_closed %d", a.counter("idle_closed"))
	}
}

func (v *VPN) counter(name string) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.counters[name]
}

func (t *tunnel) sent() *uint32 {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	return t.sentClose
}

func TestDroppedPacketsAreNoTraffic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := testVPN(t), testVPN(t)
	tun, _ := openTunnel(t, ctx, a, b)
	spoofed := icmpPacket(a.self.IPv4, a.self.IPv4, 8, 7, []byte("not from b")) // b sends a's address as source
	b.current(a.h.ID()).sendPacket(spoofed)
	for deadline := time.Now().Add(5 * time.Second); a.counter("spoofed_source") == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the spoofed packet did not arrive")
		}
	}
	if n := tun.traffic.Load(); n != 0 {
		t.Fatalf("a counted %d packets of traffic for a dropped packet", n)
	}
	tun.sendPacket(icmpPacket(a.self.IPv4, b.self.IPv4, 8, 7, []byte("sent")))
	if n := tun.traffic.Load(); n != 1 {
		t.Fatalf("traffic %d after one packet sent", n)
	}
}
