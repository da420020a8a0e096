package main

// A bounded delay line: a fixed pool of frame buffers and two FIFOs, one for
// in-order frames and one for reordered (held-back) frames. The Shaper makes
// departure times monotonic within each FIFO, so the next frame to leave is
// always the earlier of the two heads: O(1), no heap. Memory is the pool,
// allocated once; when the pool is empty the caller drops (drop-tail).

type frame struct {
	buf []byte
	n   int   // bytes used in buf
	due int64 // ns
}

type fifo struct {
	slots      []int32 // frame indices
	head, size int
}

func (f *fifo) push(i int32) {
	f.slots[(f.head+f.size)%len(f.slots)] = i
	f.size++
}

func (f *fifo) peek() int32 { return f.slots[f.head] }

func (f *fifo) pop() int32 {
	i := f.slots[f.head]
	f.head = (f.head + 1) % len(f.slots)
	f.size--
	return i
}

// DelayLine holds up to len(frames) frames; used by one goroutine.
type DelayLine struct {
	frames []frame
	free   []int32 // stack of unused frame indices
	order  fifo
	held   fifo
}

// NewDelayLine allocates limit buffers of bufSize bytes each, once.
func NewDelayLine(limit, bufSize int) *DelayLine {
	d := &DelayLine{frames: make([]frame, limit), free: make([]int32, limit)}
	mem := make([]byte, limit*bufSize)
	for i := range d.frames {
		d.frames[i].buf = mem[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
		d.free[i] = int32(limit - 1 - i)
	}
	d.order.slots = make([]int32, limit)
	d.held.slots = make([]int32, limit)
	return d
}

// Free is how many buffers can be taken.
func (d *DelayLine) Free() int { return len(d.free) }

// Len is how many frames wait to leave.
func (d *DelayLine) Len() int { return d.order.size + d.held.size }

// Take reserves a buffer (caller checked Free() > 0).
func (d *DelayLine) Take() int32 {
	i := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	return i
}

// Release returns a buffer to the pool.
func (d *DelayLine) Release(i int32) { d.free = append(d.free, i) }

// Frame gives access to a buffer's frame.
func (d *DelayLine) Frame(i int32) *frame { return &d.frames[i] }

// Push queues a taken buffer that now holds a frame due at f.due.
func (d *DelayLine) Push(i int32, held bool) {
	if held {
		d.held.push(i)
	} else {
		d.order.push(i)
	}
}

// NextDue is the departure time of the next frame; ok is false when empty.
func (d *DelayLine) NextDue() (int64, bool) {
	q := d.next()
	if q == nil {
		return 0, false
	}
	return d.frames[q.peek()].due, true
}

// PopDue removes the next frame if it is due at or before now.
func (d *DelayLine) PopDue(now int64) (int32, bool) {
	q := d.next()
	if q == nil || d.frames[q.peek()].due > now {
		return 0, false
	}
	return q.pop(), true
}

func (d *DelayLine) next() *fifo {
	switch {
	case d.order.size == 0 && d.held.size == 0:
		return nil
	case d.held.size == 0:
		return &d.order
	case d.order.size == 0:
		return &d.held
	case d.frames[d.held.peek()].due < d.frames[d.order.peek()].due:
		return &d.held
	default:
		return &d.order
	}
}
