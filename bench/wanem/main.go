// wanem bridges two interfaces and impairs what crosses: a netem stand-in for
// kernels without sch_netem, for p2pvpn's benchmarks and tests.
//
//	wanem -a wa -b wb -delay 4ms -jitter 0 -loss 0.5 -reorder 1 -seed 7
//
// Each impairment flag takes one value for both directions, or two separated
// by a comma: "a->b,b->a" (e.g. -delay 4ms,0 delays only frames from a to b).
//
// stdout: one JSON line {"event":"ready",...} once both sockets are open, then
// on SIGTERM/SIGINT one JSON line of counters, and exit 0. Bad flags or a
// socket that cannot be opened: one line on stderr, exit 2 or 1.
//
// Run it inside a namespace that holds only the two bridged veths. Offloads
// must be off on the veths' far ends (ethtool -K tx off tso off gso off):
// a GSO super-frame longer than the buffer is dropped and counted as
// dropped_oversize, and a frame with a partial checksum would arrive corrupt.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	maxLimit = 1 << 16 // frames per direction; bounds memory at 64 Ki buffers
	maxBatch = 1024
	vlanRoom = 4 + 14 // 802.1Q tag + Ethernet header on top of the MTU
)

type options struct {
	a, b      string
	ab, ba    Impairment
	seed      uint64
	limit     int
	batchSize int
}

// pair parses "v" or "v_ab,v_ba" with parse.
func pair[T any](flagName, s string, parse func(string) (T, error)) (T, T, error) {
	parts := strings.Split(s, ",")
	var zero T
	if len(parts) > 2 {
		return zero, zero, fmt.Errorf("-%s %q: give one value or two separated by a comma", flagName, s)
	}
	first, err := parse(strings.TrimSpace(parts[0]))
	if err != nil {
		return zero, zero, fmt.Errorf("-%s %q: %v", flagName, s, err)
	}
	if len(parts) == 1 {
		return first, first, nil
	}
	second, err := parse(strings.TrimSpace(parts[1]))
	if err != nil {
		return zero, zero, fmt.Errorf("-%s %q: %v", flagName, s, err)
	}
	return first, second, nil
}

func parseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("not a duration like 4ms")
	}
	if d < 0 || d > 10*time.Second {
		return 0, errors.New("must be within 0..10s")
	}
	return d, nil
}

func parsePct(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || v < 0 || v > 100 {
		return 0, errors.New("not a percentage within 0..100")
	}
	return v, nil
}

var rateRE = regexp.MustCompile(`^(\d+(?:\.\d+)?)([kmg]?)bit$`)

func parseRate(s string) (int64, error) {
	if s == "0" || s == "" {
		return 0, nil
	}
	m := rateRE.FindStringSubmatch(strings.ToLower(s))
	if m == nil {
		return 0, errors.New("not a rate like 100mbit or 1gbit")
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	v *= map[string]float64{"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]
	if v < 8000 || v > 1e12 {
		return 0, errors.New("must be within 8kbit..1000gbit")
	}
	return int64(v), nil
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("wanem", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	o := &options{}
	fs.StringVar(&o.a, "a", "", "first interface (required)")
	fs.StringVar(&o.b, "b", "", "second interface (required)")
	delay := fs.String("delay", "0", "one-way delay, e.g. 4ms")
	jitter := fs.String("jitter", "0", "uniform +- jitter on top of the delay; never reorders")
	loss := fs.String("loss", "0", "random loss, percent")
	reorder := fs.String("reorder", "0", "percent of frames held back by -reorder-extra")
	extra := fs.String("reorder-extra", "1ms", "how long a reordered frame is held back")
	rate := fs.String("rate", "0", "rate limit, e.g. 1gbit (0 = none)")
	rateQueue := fs.String("rate-queue", "10ms", "most backlog the rate limiter holds before drop-tail")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed; the same seed repeats the same decisions")
	fs.IntVar(&o.limit, "limit", 8192, "frames queued per direction at most (drop-tail beyond)")
	fs.IntVar(&o.batchSize, "batch", 64, "frames per recvmmsg/sendmmsg")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.a == "" || o.b == "" || o.a == o.b {
		return nil, errors.New("-a and -b must name two different interfaces")
	}
	if o.limit < 1 || o.limit > maxLimit {
		return nil, fmt.Errorf("-limit must be within 1..%d", maxLimit)
	}
	if o.batchSize < 1 || o.batchSize > maxBatch {
		return nil, fmt.Errorf("-batch must be within 1..%d", maxBatch)
	}
	var err error
	set := func(e error) {
		if err == nil {
			err = e
		}
	}
	var e error
	o.ab.Delay, o.ba.Delay, e = pair("delay", *delay, parseDuration)
	set(e)
	o.ab.Jitter, o.ba.Jitter, e = pair("jitter", *jitter, parseDuration)
	set(e)
	o.ab.LossPct, o.ba.LossPct, e = pair("loss", *loss, parsePct)
	set(e)
	o.ab.ReorderPct, o.ba.ReorderPct, e = pair("reorder", *reorder, parsePct)
	set(e)
	o.ab.ReorderExtra, o.ba.ReorderExtra, e = pair("reorder-extra", *extra, parseDuration)
	set(e)
	o.ab.RateBps, o.ba.RateBps, e = pair("rate", *rate, parseRate)
	set(e)
	o.ab.RateQueue, o.ba.RateQueue, e = pair("rate-queue", *rateQueue, parseDuration)
	set(e)
	return o, err
}

func bufSizeFor(names ...string) (int, error) {
	mtu := 0
	for _, n := range names {
		ifc, err := net.InterfaceByName(n)
		if err != nil {
			return 0, fmt.Errorf("interface %s: %w", n, err)
		}
		mtu = max(mtu, ifc.MTU)
	}
	return mtu + vlanRoom, nil
}

type report struct {
	Event     string    `json:"event"`
	Forwarded uint64    `json:"forwarded"`
	Dropped   uint64    `json:"dropped"`
	Reordered uint64    `json:"reordered"`
	AtoB      *Counters `json:"a_to_b"`
	BtoA      *Counters `json:"b_to_a"`
	Seconds   float64   `json:"seconds"`
	Error     string    `json:"error,omitempty"`
}

func run(o *options) error {
	bufSize, err := bufSizeFor(o.a, o.b)
	if err != nil {
		return err
	}
	sa, err := openPacketSock(o.a)
	if err != nil {
		return err
	}
	defer sa.close()
	sb, err := openPacketSock(o.b)
	if err != nil {
		return err
	}
	defer sb.close()
	ab := newDirection(sa, sb, o.ab, o.seed, o.limit, bufSize, o.batchSize)
	ba := newDirection(sb, sa, o.ba, o.seed+1, o.limit, bufSize, o.batchSize)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	var stop atomic.Bool
	errs := make([]error, 2)
	var wg sync.WaitGroup
	start := time.Now()
	for i, d := range []*direction{ab, ba} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = d.run(&stop); errs[i] != nil {
				stop.Store(true)
				sigs <- syscall.SIGTERM // wake main
			}
		}()
	}
	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(map[string]any{"event": "ready", "a": o.a, "b": o.b, "buffer": bufSize,
		"limit": o.limit, "batch": o.batchSize})
	<-sigs
	stop.Store(true)
	wg.Wait()
	r := report{Event: "counters", AtoB: &ab.c, BtoA: &ba.c, Seconds: time.Since(start).Seconds()}
	for _, c := range []*Counters{&ab.c, &ba.c} {
		r.Forwarded += c.Forwarded
		r.Dropped += c.Dropped()
		r.Reordered += c.Reordered
	}
	runErr := errors.Join(errs...)
	if runErr != nil {
		r.Error = runErr.Error()
	}
	_ = out.Encode(r)
	return runErr
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "wanem: %v\n", err)
		}
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "wanem: %v\n", err)
		os.Exit(1)
	}
}
