package main

// One direction of the bridge: frames read on `in` leave on `out`, impaired.
//
// Flow, one goroutine on its own OS thread, no locks:
//
//  1. flush     send every frame whose departure time has come (sendmmsg);
//  2. wait      ppoll(in) until the next departure, or at most idleWait;
//  3. receive   recvmmsg a batch into free pool buffers (none free: into a
//               scratch batch, counted as drop-tail);
//  4. decide    Shaper.Decide per frame: drop (counted by reason) or queue.

import (
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	idleWait   = 50 * time.Millisecond // bound on noticing a stop request
	timerSlack = 1000                  // ns; the default 50 us would blur short delays
	// A frame due within sendAhead leaves now: one wake-up and one sendmmsg
	// then carry several frames, where a rate limit spaces them 12 us apart
	// at 1 Gbit/s. 50 us is noise against any delay worth emulating.
	sendAhead = int64(50 * time.Microsecond)
)

// Counters of one direction; every frame received ends in exactly one of
// forwarded or a dropped_* counter (or still queued at exit).
type Counters struct {
	Received        uint64 `json:"received"`
	Forwarded       uint64 `json:"forwarded"`
	Reordered       uint64 `json:"reordered"` // held back (subset of forwarded or queued)
	DroppedLoss     uint64 `json:"dropped_loss"`
	DroppedRate     uint64 `json:"dropped_rate"`     // rate limiter's backlog full
	DroppedQueue    uint64 `json:"dropped_queue"`    // pool full: drop-tail
	DroppedOversize uint64 `json:"dropped_oversize"` // longer than the buffer: offloads on?
	SendErrors      uint64 `json:"send_errors"`
	QueuedAtExit    uint64 `json:"queued_at_exit"`
	KernelDrops     uint64 `json:"kernel_rx_drops"` // our socket's receive buffer overflowed
	MaxQueued       uint64 `json:"max_queued"`
}

// Dropped sums every drop reason, ours and the kernel's.
func (c *Counters) Dropped() uint64 {
	return c.DroppedLoss + c.DroppedRate + c.DroppedQueue + c.DroppedOversize + c.SendErrors + c.KernelDrops
}

type direction struct {
	in, out   *packetSock
	shaper    *Shaper
	line      *DelayLine
	bufSize   int
	batchSize int
	rx, tx    *batch
	scratch   *batch
	taken     []int32
	sending   []int32
	epoch     time.Time
	c         Counters
}

func newDirection(in, out *packetSock, imp Impairment, seed uint64, limit, bufSize, batchSize int) *direction {
	d := &direction{
		in: in, out: out, shaper: NewShaper(imp, seed), line: NewDelayLine(limit, bufSize),
		bufSize: bufSize, batchSize: batchSize,
		rx: newBatch(batchSize), tx: newBatch(batchSize), scratch: newBatch(batchSize),
		taken: make([]int32, 0, batchSize), sending: make([]int32, 0, batchSize),
		epoch: time.Now(),
	}
	for i := 0; i < batchSize; i++ {
		d.scratch.set(i, make([]byte, bufSize))
	}
	in.kernelDrops() // reading resets: count from now on
	return d
}

func (d *direction) now() int64 { return int64(time.Since(d.epoch)) }

// run bridges until stop is set; returns the first socket error.
func (d *direction) run(stop *atomic.Bool) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, timerSlack, 0, 0, 0) // best effort: precision only
	fds := []unix.PollFd{{Fd: int32(d.in.fd), Events: unix.POLLIN}}
	more := false // the last receive filled its batch: read again before sleeping
	for !stop.Load() {
		if err := d.flush(d.now() + sendAhead); err != nil {
			return err
		}
		if !more {
			wait := int64(idleWait)
			if due, ok := d.line.NextDue(); ok {
				wait = min(wait, due-sendAhead-d.now())
			}
			if wait > 0 {
				ts := unix.NsecToTimespec(wait)
				n, err := unix.Ppoll(fds, &ts, nil)
				if err != nil && err != unix.EINTR {
					return err
				}
				if n <= 0 {
					continue // a departure is due, or idle: flush, check stop
				}
			}
		}
		got, err := d.receive()
		if err != nil {
			return err
		}
		more = got == d.batchSize
	}
	d.c.QueuedAtExit = uint64(d.line.Len())
	d.c.KernelDrops += d.in.kernelDrops()
	return nil
}

// receive reads one batch without blocking and queues or drops each frame.
func (d *direction) receive() (int, error) {
	n := min(d.batchSize, d.line.Free())
	if n == 0 { // pool exhausted: read into scratch to keep the socket drained, drop all
		got, err := d.in.recv(d.scratch, d.batchSize)
		d.c.Received += uint64(got)
		d.c.DroppedQueue += uint64(got)
		return got, err
	}
	d.taken = d.taken[:0]
	for i := 0; i < n; i++ {
		idx := d.line.Take()
		d.taken = append(d.taken, idx)
		d.rx.set(i, d.line.Frame(idx).buf)
	}
	got, err := d.in.recv(d.rx, n)
	now := d.now()
	for i, idx := range d.taken {
		if i >= got {
			d.line.Release(idx)
			continue
		}
		d.c.Received++
		size := int(d.rx.hdrs[i].Len)
		if size > d.bufSize {
			d.c.DroppedOversize++
			d.line.Release(idx)
			continue
		}
		due, verdict := d.shaper.Decide(now, size)
		switch verdict {
		case DropLoss:
			d.c.DroppedLoss++
			d.line.Release(idx)
		case DropRate:
			d.c.DroppedRate++
			d.line.Release(idx)
		default:
			f := d.line.Frame(idx)
			f.n, f.due = size, due
			if verdict == Reorder {
				d.c.Reordered++
			}
			d.line.Push(idx, verdict == Reorder)
		}
	}
	if q := uint64(d.line.Len()); q > d.c.MaxQueued {
		d.c.MaxQueued = q
	}
	return got, err
}

// flush sends every frame due at or before now, a batch per sendmmsg.
func (d *direction) flush(now int64) error {
	for {
		d.sending = d.sending[:0]
		for len(d.sending) < d.batchSize {
			idx, ok := d.line.PopDue(now)
			if !ok {
				break
			}
			f := d.line.Frame(idx)
			d.tx.set(len(d.sending), f.buf[:f.n])
			d.sending = append(d.sending, idx)
		}
		if len(d.sending) == 0 {
			return nil
		}
		for off := 0; off < len(d.sending); {
			sent, err := d.out.send(d.tx, off, len(d.sending)-off)
			d.c.Forwarded += uint64(sent)
			off += sent
			if err == nil && sent == 0 {
				err = unix.ENOBUFS // cannot happen per sendmmsg(2); never spin on it
			}
			if err != nil { // this frame was refused (e.g. ENOBUFS): count it, go on with the next
				if err != unix.ENOBUFS && err != unix.EAGAIN && err != unix.ENETDOWN && err != unix.ENXIO {
					return err
				}
				d.c.SendErrors++
				off++
			}
		}
		for _, idx := range d.sending {
			d.line.Release(idx)
		}
		if len(d.sending) < d.batchSize {
			return nil
		}
	}
}
