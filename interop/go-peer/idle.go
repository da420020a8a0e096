package main

// Idle on-demand tunnels (docs/protocol.md §18.4), the sans-IO half.
//
// A tunnel's traffic is the number of IP packets it carried in Data frames
// or datagrams, both directions: sent, and received past §7.3's checks and
// the policy (tunnel.traffic: counted in sendPacket and VPN.receive); dropped
// packets, Keepalives, Hellos, offers and probes are not traffic. The
// tracker is shown each open tunnel's total; a tunnel we opened whose total
// has not moved for the timeout is idle, unless it is pinned (a static
// --peer; the Go peer uses no exit). Only the opener closes, so the two
// sides never disagree: the other side cannot know whether the opener pins
// the peer. The loop around it (VPN.idleLoop) sends Close(IDLE).

import (
	"context"
	"fmt"
	"time"
)

const (
	defaultIdleTimeout = 300 * time.Second
	minIdleTimeout     = 500 * time.Millisecond // the reference's config range (0.5 .. 86400 s)
	maxIdleTimeout     = 86400 * time.Second
	maxIdleCheck       = 5 * time.Second
)

type idleSeen struct {
	traffic uint64
	since   time.Time // when traffic last changed, or when the tunnel was first seen
}

// idleTracker keys tunnels by identity: a new tunnel to the same peer starts its own count.
type idleTracker[K comparable] struct {
	timeout time.Duration
	seen    map[K]idleSeen
	closed  uint64 // tunnels found idle
}

func newIdleTracker[K comparable](timeout time.Duration) (*idleTracker[K], error) {
	if timeout < minIdleTimeout || timeout > maxIdleTimeout {
		return nil, fmt.Errorf("idle timeout %v is out of range %v..%v", timeout, minIdleTimeout, maxIdleTimeout)
	}
	return &idleTracker[K]{timeout: timeout, seen: map[K]idleSeen{}}, nil
}

// checkInterval is §18.4's "at least every min(5, idle_timeout / 4) seconds".
func (t *idleTracker[K]) checkInterval() time.Duration { return min(maxIdleCheck, t.timeout/4) }

// observe records the traffic total of every open tunnel we opened and are not pinned to, and forgets
// tunnels that are gone or not ours to close; it returns the tunnels idle for the timeout (forgotten here).
func (t *idleTracker[K]) observe(open map[K]uint64, now time.Time) []K {
	var idle []K
	for k := range t.seen {
		if _, ok := open[k]; !ok {
			delete(t.seen, k)
		}
	}
	for k, traffic := range open {
		s, ok := t.seen[k]
		switch {
		case !ok || s.traffic != traffic:
			t.seen[k] = idleSeen{traffic: traffic, since: now}
		case now.Sub(s.since) >= t.timeout:
			idle = append(idle, k)
			delete(t.seen, k)
		}
	}
	t.closed += uint64(len(idle))
	return idle
}

// openedIdle: the traffic totals of the tunnels this node opened, less the pinned ones (static peers).
func (v *VPN) openedIdle() map[*tunnel]uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[*tunnel]uint64{}
	for id, p := range v.peers {
		if t := p.current; t != nil && t.initiator == v.h.ID() && !v.static[id] {
			out[t] = t.traffic.Load()
		}
	}
	return out
}

// idleLoop closes the tunnels we opened that carried no traffic for the tracker's timeout (§18.4).
func (v *VPN) idleLoop(ctx context.Context, tr *idleTracker[*tunnel]) {
	tick := time.NewTicker(tr.checkInterval())
	defer tick.Stop()
	reason := fmt.Sprintf("idle for %g s", tr.timeout.Seconds())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for _, t := range tr.observe(v.openedIdle(), now) {
				v.count("idle_closed")
				emit("idle_close", map[string]any{"peer": t.remote.String(), "traffic": t.traffic.Load(),
					"idle_timeout": tr.timeout.Seconds()})
				v.detach(t) // retired (§7.5): a packet from now on dials a new tunnel, this one only delivers
				go t.closeWith(closeIdle, reason, false)
			}
		}
	}
}
