package main

// The impairment model of one direction, sans-IO: a frame's arrival time and
// size go in, its departure time (or a drop reason) comes out. No sockets, no
// clock: the caller passes "now", so tests drive it with made-up times.
//
// Per frame, in this order:
//
//  1. loss      drop with probability LossPct/100;
//  2. rate      serialise at RateBps behind the frames before it; drop-tail
//               when the backlog would exceed RateQueue (like tbf's latency);
//  3. delay     add Delay and a uniform jitter in [-Jitter, +Jitter]; jitter
//               never reorders: a frame leaves no earlier than the one before;
//  4. reorder   with probability ReorderPct/100 add ReorderExtra on top, so
//               the frames behind it overtake it.

import (
	"math/rand/v2"
	"time"
)

// Impairment is what one direction does to the frames it carries.
type Impairment struct {
	Delay        time.Duration // fixed one-way delay
	Jitter       time.Duration // uniform +-; clamped so it never reorders
	LossPct      float64       // random loss, percent of frames
	ReorderPct   float64       // percent of frames held back by ReorderExtra
	ReorderExtra time.Duration // how long a reordered frame is held back
	RateBps      int64         // 0 = unlimited
	RateQueue    time.Duration // most backlog the rate limiter holds
}

// Verdict says what happens to one frame.
type Verdict int

const (
	Forward  Verdict = iota // in order, at Due
	Reorder                 // held back, at Due
	DropLoss                // random loss
	DropRate                // rate limiter's backlog full
)

// Shaper applies an Impairment; one per direction, used by one goroutine.
type Shaper struct {
	cfg         Impairment
	rng         *rand.Rand
	txFree      int64 // ns: when the rate limiter's "wire" is free again
	lastInOrder int64 // ns: departure of the previous in-order frame
	lastHeld    int64 // ns: departure of the previous reordered frame
}

// NewShaper seeds its own generator, so a run is repeatable from its seed.
func NewShaper(cfg Impairment, seed uint64) *Shaper {
	return &Shaper{cfg: cfg, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Decide returns the frame's verdict and, unless dropped, its departure time (ns).
func (s *Shaper) Decide(now int64, size int) (int64, Verdict) {
	c := &s.cfg
	if c.LossPct > 0 && s.rng.Float64()*100 < c.LossPct {
		return 0, DropLoss
	}
	base := now
	if c.RateBps > 0 {
		start := max(now, s.txFree)
		if start-now > int64(c.RateQueue) {
			return 0, DropRate
		}
		s.txFree = start + int64(size)*8*int64(time.Second)/c.RateBps
		base = s.txFree
	}
	due := base + int64(c.Delay)
	if c.Jitter > 0 {
		due += s.rng.Int64N(2*int64(c.Jitter)+1) - int64(c.Jitter)
		due = max(due, base)
	}
	due = max(due, s.lastInOrder)
	if c.ReorderPct > 0 && s.rng.Float64()*100 < c.ReorderPct {
		due = max(due+int64(c.ReorderExtra), s.lastHeld)
		s.lastHeld = due
		return due, Reorder
	}
	s.lastInOrder = due
	return due, Forward
}
