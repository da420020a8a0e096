package main

// Traffic the Go peer starts itself (--traffic-to ADDR), so tests see its own
// packets cross a tunnel, not only its answers: ICMP echo requests to ADDR,
// then a transfer of --traffic-bytes over UDP to an echo server at
// ADDR:--traffic-port, chunk by chunk (8-byte sequence number + data),
// retransmitting what is not echoed. It waits until the tunnel to ADDR's
// owner is up (and, by default, on the datagram path) and reports one
// {"event":"traffic_done"} with SHA-256 of what it sent and of what came
// back, in sequence order. With --traffic-on-usr2, each SIGUSR2 starts one round.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"sync"
	"time"
)

const (
	trafficChunk     = 1200
	trafficWindow    = 32
	trafficRetry     = 400 * time.Millisecond
	trafficMaxTries  = 20
	trafficDeadline  = 90 * time.Second
	trafficPingEvery = 100 * time.Millisecond
)

type trafficGen struct {
	v       *VPN
	dst     netip.Addr
	pings   int
	bytes   int
	port    uint16
	path    string // "udp": start once the tunnel's path is udp; "any": once the tunnel is up
	srcPort uint16
	ident   uint16
	running sync.Mutex // one round at a time (SIGUSR2 may ask for more)

	mu      sync.Mutex
	pongs   map[uint16]bool
	echoed  map[uint64][]byte
	arrived chan struct{} // a reply came (capacity 1: a wake-up, not a queue)
}

func newTrafficGen(v *VPN, dst netip.Addr, pings, bytes int, port uint16, path string) *trafficGen {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return &trafficGen{
		v: v, dst: dst, pings: pings, bytes: bytes, port: port, path: path,
		srcPort: 40000 + binary.BigEndian.Uint16(r[:2])%20000, ident: binary.BigEndian.Uint16(r[2:]),
		pongs: map[uint16]bool{}, echoed: map[uint64][]byte{}, arrived: make(chan struct{}, 1),
	}
}

// tunnel is the current tunnel to the peer owning dst, once it is up and (with wantUDP) on the udp path.
func (g *trafficGen) tunnel(wantUDP bool) *tunnel {
	g.v.mu.Lock()
	var found *tunnel
	for _, p := range g.v.peers {
		if t := p.current; t != nil && (t.hello.IPv4 == g.dst || t.hello.IPv6 == g.dst) {
			found = t
		}
	}
	g.v.mu.Unlock()
	if found == nil || (wantUDP && (found.dg == nil || found.dg.pathName() != pathUDP)) {
		return nil
	}
	return found
}

func (g *trafficGen) send(p []byte) bool {
	t := g.tunnel(false) // the packet goes over UDP if the path is udp, else over the stream
	if t == nil {
		return false
	}
	t.sendPacket(p)
	return true
}

func (g *trafficGen) self() netip.Addr {
	if g.dst.Is4() {
		return g.v.self.IPv4
	}
	return g.v.self.IPv6
}

func (g *trafficGen) run(ctx context.Context) {
	g.running.Lock()
	defer g.running.Unlock()
	g.mu.Lock()
	// Late answers of a round before are not ours: new ICMP ident, new UDP source port.
	g.pongs, g.echoed, g.ident, g.srcPort = map[uint16]bool{}, map[uint64][]byte{}, g.ident+1, 40000+(g.srcPort-40000+1)%20000
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, trafficDeadline)
	defer cancel()
	start := time.Now()
	result := map[string]any{"dst": g.dst.String()}
	defer func() {
		result["seconds"] = time.Since(start).Seconds()
		emit("traffic_done", result)
	}()
	var t *tunnel
	looked := false
	for t = g.tunnel(g.path == pathUDP); t == nil; t = g.tunnel(g.path == pathUDP) {
		if o := g.v.demand.Load(); o != nil && !looked && g.tunnel(false) == nil {
			looked = true // one lookup and dial per round (§18.3: it retries inside)
			result["looked_up"] = o.open(ctx, g.dst) == nil
		}
		if ctx.Err() != nil {
			result["error"] = "no tunnel to " + g.dst.String() + " on path " + g.path
			return
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	result["path_at_start"] = pathStream
	if t.dg != nil {
		result["path_at_start"] = t.dg.pathName()
	}

	// 1. Pings.
	for seq := range g.pings {
		g.send(g.echoRequest(uint16(seq + 1)))
		sleepCtx(ctx, trafficPingEvery)
	}
	for wait := time.Now().Add(2 * time.Second); g.pongCount() < g.pings && time.Now().Before(wait); {
		sleepCtx(ctx, 50*time.Millisecond)
	}
	result["pings_sent"], result["pings_answered"] = g.pings, g.pongCount()

	// 2. The transfer: a window of chunks in flight, each resent until echoed.
	data := make([]byte, g.bytes)
	_, _ = rand.Read(data)
	chunks := (len(data) + trafficChunk - 1) / trafficChunk
	tries := make([]int, chunks)
	sentAt := make([]time.Time, chunks)
	retransmits, next := 0, 0
	chunk := func(i int) []byte { return data[i*trafficChunk : min((i+1)*trafficChunk, len(data))] }
	for ctx.Err() == nil {
		g.mu.Lock()
		done := len(g.echoed)
		var resend []int
		inFlight := 0
		for i := 0; i < next; i++ {
			if g.echoed[uint64(i)] != nil {
				continue
			}
			inFlight++
			if time.Since(sentAt[i]) >= trafficRetry {
				resend = append(resend, i)
			}
		}
		g.mu.Unlock()
		if done == chunks {
			break
		}
		for _, i := range resend {
			if tries[i] >= trafficMaxTries {
				result["error"] = "chunk not echoed after retries"
				ctx = canceled()
				break
			}
			tries[i]++
			retransmits++
			sentAt[i] = time.Now()
			g.send(g.udpChunk(uint64(i), chunk(i)))
		}
		for ; next < chunks && inFlight < trafficWindow; next, inFlight = next+1, inFlight+1 {
			tries[next]++
			sentAt[next] = time.Now()
			g.send(g.udpChunk(uint64(next), chunk(next)))
		}
		select {
		case <-g.arrived:
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	sent, back := sha256.Sum256(data), sha256.New()
	g.mu.Lock()
	echoedChunks := len(g.echoed)
	for i := range chunks {
		back.Write(g.echoed[uint64(i)])
	}
	g.mu.Unlock()
	result["bytes"], result["chunks"], result["chunks_echoed"], result["retransmits"] = len(data), chunks, echoedChunks, retransmits
	result["sent_sha256"], result["echo_sha256"] = hex.EncodeToString(sent[:]), hex.EncodeToString(back.Sum(nil))
	if ctx.Err() != nil && result["error"] == nil {
		result["error"] = "transfer timed out"
	}
	if t := g.tunnel(false); t != nil && t.dg != nil {
		result["path_at_end"] = t.dg.pathName()
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func (g *trafficGen) pongCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pongs)
}

func (g *trafficGen) echoRequest(seq uint16) []byte {
	src := g.self()
	body := make([]byte, 8, 8+32)
	body = append(body, []byte("p2pvpn go-peer echo request.....")...)
	binary.BigEndian.PutUint16(body[4:], g.ident)
	binary.BigEndian.PutUint16(body[6:], seq)
	if g.dst.Is4() {
		body[0] = 8
		binary.BigEndian.PutUint16(body[2:], checksum(0, body))
		return ipv4Packet(src, g.dst, protoICMP, body)
	}
	body[0] = 128
	binary.BigEndian.PutUint16(body[2:], checksum(pseudoSum(src, g.dst, protoICMPv6, len(body)), body))
	return ipv6Packet(src, g.dst, protoICMPv6, body)
}

func (g *trafficGen) udpChunk(seq uint64, data []byte) []byte {
	src := g.self()
	body := make([]byte, 16+len(data))
	binary.BigEndian.PutUint16(body[0:], g.srcPort)
	binary.BigEndian.PutUint16(body[2:], g.port)
	binary.BigEndian.PutUint16(body[4:], uint16(len(body)))
	binary.BigEndian.PutUint64(body[8:], seq)
	copy(body[16:], data)
	proto := uint8(protoUDP)
	c := checksum(pseudoSum(src, g.dst, proto, len(body)), body)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(body[6:], c)
	if g.dst.Is4() {
		return ipv4Packet(src, g.dst, proto, body)
	}
	return ipv6Packet(src, g.dst, proto, body)
}

// take consumes a packet that answers our traffic (an echo reply, or an echoed chunk); false: not ours.
func (g *trafficGen) take(p []byte) bool {
	var src, dst netip.Addr
	var proto uint8
	var body []byte
	switch {
	case p[0]>>4 == 4 && len(p) >= 20:
		ihl := int(p[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(p[2:4]))
		if ihl < 20 || total < ihl || total > len(p) {
			return false
		}
		src, dst, proto, body = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), p[9], p[ihl:total]
	case p[0]>>4 == 6 && len(p) >= 40:
		plen := int(binary.BigEndian.Uint16(p[4:6]))
		if 40+plen > len(p) {
			return false
		}
		src, dst, proto, body = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), p[6], p[40:40+plen]
	default:
		return false
	}
	if src != g.dst || dst != g.self() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case (proto == protoICMP && len(body) >= 8 && body[0] == 0) || (proto == protoICMPv6 && len(body) >= 8 && body[0] == 129):
		if binary.BigEndian.Uint16(body[4:]) != g.ident {
			return false
		}
		g.pongs[binary.BigEndian.Uint16(body[6:])] = true
	case proto == protoUDP && len(body) >= 16:
		if binary.BigEndian.Uint16(body[0:]) != g.port || binary.BigEndian.Uint16(body[2:]) != g.srcPort {
			return false
		}
		seq := binary.BigEndian.Uint64(body[8:])
		if g.echoed[seq] == nil {
			g.echoed[seq] = append([]byte{}, body[16:]...)
		}
	default:
		return false
	}
	select {
	case g.arrived <- struct{}{}:
	default:
	}
	return true
}
