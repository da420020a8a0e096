package main

import (
	"math"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

func TestDelayOnly(t *testing.T) {
	s := NewShaper(Impairment{Delay: 4 * time.Millisecond}, 1)
	for i := int64(0); i < 100; i++ {
		due, v := s.Decide(i*ms, 1500)
		if v != Forward || due != i*ms+4*ms {
			t.Fatalf("frame %d: verdict %v due %d", i, v, due)
		}
	}
}

func TestLossRateAndSeed(t *testing.T) {
	const n = 200000
	count := func(seed uint64) int {
		s := NewShaper(Impairment{LossPct: 1}, seed)
		lost := 0
		for i := 0; i < n; i++ {
			if _, v := s.Decide(int64(i), 1500); v == DropLoss {
				lost++
			}
		}
		return lost
	}
	lost := count(7)
	if math.Abs(float64(lost)/n-0.01) > 0.002 {
		t.Fatalf("1%% loss dropped %d of %d", lost, n)
	}
	if count(7) != lost {
		t.Fatal("same seed, different decisions")
	}
}

func TestJitterNeverReorders(t *testing.T) {
	s := NewShaper(Impairment{Delay: 4 * time.Millisecond, Jitter: 3 * time.Millisecond}, 3)
	last := int64(0)
	for i := int64(0); i < 10000; i++ {
		now := i * 10000 // 10 us apart
		due, v := s.Decide(now, 1500)
		if v != Forward || due < last || due < now+ms {
			t.Fatalf("frame %d: due %d after %d", i, due, last)
		}
		last = due
	}
}

func TestReorderedFramesAreOvertaken(t *testing.T) {
	s := NewShaper(Impairment{Delay: 4 * time.Millisecond, ReorderPct: 10, ReorderExtra: time.Millisecond}, 5)
	d := NewDelayLine(1000, 64)
	held := 0
	for i := 0; i < 1000; i++ {
		now := int64(i) * 10000
		due, v := s.Decide(now, 64)
		idx := d.Take()
		f := d.Frame(idx)
		f.due, f.n = due, i // n carries the arrival order here
		d.Push(idx, v == Reorder)
		if v == Reorder {
			held++
		}
	}
	if held < 50 || held > 150 {
		t.Fatalf("10%% reorder held %d of 1000", held)
	}
	prevDue, overtaken, prevSeq := int64(0), 0, -1
	for d.Len() > 0 {
		next, _ := d.NextDue()
		idx, ok := d.PopDue(next)
		if !ok {
			t.Fatal("NextDue frame not due")
		}
		f := d.Frame(idx)
		if f.due < prevDue {
			t.Fatalf("departures not in time order: %d after %d", f.due, prevDue)
		}
		if f.n < prevSeq {
			overtaken++
		}
		prevDue, prevSeq = f.due, max(prevSeq, f.n)
		d.Release(idx)
	}
	if overtaken != held {
		t.Fatalf("%d frames left out of order, %d were held back", overtaken, held)
	}
	if d.Free() != 1000 {
		t.Fatalf("pool leaked: %d free", d.Free())
	}
}

func TestRateLimitSerialisesAndDropsTail(t *testing.T) {
	// 12 Mbit/s: a 1500-byte frame takes 1 ms; the backlog holds 5 ms.
	s := NewShaper(Impairment{RateBps: 12_000_000, RateQueue: 5 * time.Millisecond}, 1)
	var dues []int64
	drops := 0
	for i := 0; i < 20; i++ { // a burst at t=0
		due, v := s.Decide(0, 1500)
		if v == DropRate {
			drops++
			continue
		}
		dues = append(dues, due)
	}
	if len(dues) != 6 || drops != 14 {
		t.Fatalf("burst of 20: %d sent, %d dropped; want 6 and 14", len(dues), drops)
	}
	for i, due := range dues {
		if due != int64(i+1)*ms {
			t.Fatalf("frame %d due %d, want %d", i, due, int64(i+1)*ms)
		}
	}
}

func TestFlags(t *testing.T) {
	o, err := parseFlags([]string{"-a", "x", "-b", "y", "-delay", "4ms,0", "-loss", "0.5", "-rate", "1gbit"})
	if err != nil {
		t.Fatal(err)
	}
	if o.ab.Delay != 4*time.Millisecond || o.ba.Delay != 0 || o.ab.LossPct != 0.5 || o.ba.RateBps != 1e9 {
		t.Fatalf("parsed %+v %+v", o.ab, o.ba)
	}
	for _, bad := range [][]string{
		{"-a", "x", "-b", "x"},
		{"-a", "x", "-b", "y", "-loss", "101"},
		{"-a", "x", "-b", "y", "-delay", "4"},
		{"-a", "x", "-b", "y", "-delay", "1ms,2ms,3ms"},
		{"-a", "x", "-b", "y", "-rate", "fast"},
		{"-a", "x", "-b", "y", "-limit", "0"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Fatalf("%v accepted", bad)
		}
	}
}
