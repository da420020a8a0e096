package main

// One tunnel = one /p2pvpn/tunnel/1.0.0 stream (docs/protocol.md §7).
//
// Flow of a tunnel, inbound or outbound:
//  1. the writer task starts and sends our Hello at once (§7.1);
//  2. the reader waits (10 s at most) for the peer's Hello and validates it
//     against the peer ID the secure channel authenticated (§7.2);
//  3. established: the VPN attaches it, closing a duplicate if there is one
//     (§7.5); keepalives go out every interval (§7.4);
//  4. each Data packet passes the checks of §7.3 and goes to the responder;
//     its answer goes back to the same peer as a Data frame;
//  5. a Close, a protocol error, a timeout or the end of the stream ends it (§7.7).

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	"github.com/multiformats/go-varint"
)

const (
	helloTimeout  = 10 * time.Second
	sendQueueLen  = 1024
	maxBatchBytes = 64 * 1024
	closeLinger   = 2 * time.Second
)

// outItem is a frame to write; packets are batched into Data frames by the writer.
type outItem struct {
	frame  Frame // a control frame, or nil for a packet
	packet []byte
}

type tunnel struct {
	vpn       *VPN
	s         network.Stream
	remote    peer.ID
	initiator peer.ID
	hello     *Hello
	upAt      time.Time

	out       chan outItem
	stop      chan struct{} // closed when the tunnel ends: writer and keepalive exit
	stopOnce  sync.Once
	closed    chan struct{} // closed by the writer once it wrote our Close (or gave up)
	sendMu    sync.Mutex
	sendDone  bool // after our Close, or after the peer's: nothing more is sent (§7.7)
	sentClose *uint32
	recvClose *uint32

	kaMu   sync.Mutex
	kaSent map[uint64]time.Time
	rtt    time.Duration

	dg *dgTunnel // the datagram path (§16), when both sides announced udp/1 on a direct connection

	traffic atomic.Uint64 // IP packets carried, both directions, stream or datagram (§18.4)
}

func newTunnel(v *VPN, s network.Stream, initiator peer.ID) *tunnel {
	return &tunnel{
		vpn: v, s: s, remote: s.Conn().RemotePeer(), initiator: initiator,
		out: make(chan outItem, sendQueueLen), stop: make(chan struct{}), closed: make(chan struct{}),
		kaSent: map[uint64]time.Time{},
	}
}

// send queues a control frame; it never blocks (a full queue means the peer stopped reading).
func (t *tunnel) send(f Frame) bool {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	if t.sendDone {
		return false // nothing after a Close (§7.7)
	}
	if c, ok := f.(*Close); ok {
		code := c.Code
		t.sentClose, t.sendDone = &code, true
	}
	select {
	case t.out <- outItem{frame: f}:
		return true
	default:
		return false
	}
}

// sendPacket queues one IP packet; a full queue drops it (counted), never blocks.
func (t *tunnel) sendPacket(p []byte) {
	if t.vpn.policy != nil { // §17.5: what we send opens or refreshes its flow
		t.vpn.policy.fw.outbound(p, time.Now())
	}
	if t.dg != nil && t.dg.sendData(p) {
		t.traffic.Add(1)
		return // over UDP (§16)
	}
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	if t.sendDone {
		t.vpn.count("dropped_after_close")
		return
	}
	select {
	case t.out <- outItem{packet: p}:
		t.traffic.Add(1)
	default:
		t.vpn.count("queue_full")
	}
}

// writeLoop writes queued frames, batching consecutive packets into one Data frame (§9).
func (t *tunnel) writeLoop() {
	defer close(t.closed)
	var pending *outItem
	for {
		var it outItem
		if pending != nil {
			it, pending = *pending, nil
		} else {
			select {
			case it = <-t.out:
			case <-t.stop:
				return
			}
		}
		var frame Frame = it.frame
		if it.frame == nil {
			batch, size := [][]byte{it.packet}, len(it.packet)
		drain:
			for len(batch) < maxPacketsPerFrame && size < maxBatchBytes {
				select {
				case next := <-t.out:
					if next.frame != nil || size+len(next.packet) > maxBatchBytes {
						pending = &next
						break drain
					}
					batch, size = append(batch, next.packet), size+len(next.packet)
				default:
					break drain
				}
			}
			frame = &Data{Packets: batch}
		}
		if _, err := t.s.Write(encodeFrame(frame)); err != nil {
			return
		}
		if _, ok := frame.(*Close); ok {
			_ = t.s.CloseWrite()
			return
		}
	}
}

// end stops the tunnel's tasks once.
func (t *tunnel) end() { t.stopOnce.Do(func() { close(t.stop) }) }

// closeWith sends Close(code) as the last frame and closes our side (§7.7);
// reset additionally resets the stream, as a protocol error requires.
func (t *tunnel) closeWith(code uint32, reason string, reset bool) {
	if t.send(&Close{Code: code, Reason: reason}) {
		select {
		case <-t.closed:
		case <-time.After(closeLinger):
		}
	}
	t.end()
	if reset {
		_ = t.s.Reset()
	}
}

// run drives the tunnel until it ends; it returns the Close code received, if any.
func (t *tunnel) run() (received *uint32) {
	v := t.vpn
	defer func() {
		t.end()
		v.detach(t)
		if t.dg != nil {
			t.dg.close()
		}
		_ = t.s.Close()
		ev := map[string]any{"peer": t.remote.String()}
		if t.sentClose != nil {
			ev["sent_close"] = closeName(*t.sentClose)
		}
		if t.recvClose != nil {
			ev["received_close"] = closeName(*t.recvClose)
		}
		if t.hello != nil {
			emit("tunnel_down", ev)
		}
	}()
	go t.writeLoop()
	caps := []string{"go-interop/1"}
	if v.dg != nil {
		caps = append(caps, capUDP)
	}
	ours := &Hello{
		Version: protocolVersion, Network: v.network, IPv4: v.self.IPv4, IPv6: v.self.IPv6,
		MTU: v.mtu, AddressIndex: v.self.Index, Capabilities: caps,
	}
	if v.member != nil { // §15.9.1: our certificate, whose addresses v.self holds
		ours.Capabilities = append(ours.Capabilities, membershipCapability)
		ours.Certificate = v.member.own.Raw
	}
	t.send(ours)
	r := msgio.NewVarintReaderSize(t.s, maxFrameLen)

	// 2. The peer's Hello, first (§7.1).
	_ = t.s.SetReadDeadline(time.Now().Add(helloTimeout))
	first, err := t.readFrame(r)
	if err != nil {
		t.fail(err)
		return nil
	}
	hello, ok := first.(*Hello)
	if !ok {
		t.reject(closeProtocolError, fmt.Sprintf("expected Hello first, got %T", first))
		return nil
	}
	if code, why := v.checkHello(hello, t.remote); code != closeNormal {
		t.reject(code, why)
		return nil
	}
	t.hello, t.upAt = hello, time.Now()
	if ip, direct := remoteIP(t.s.Conn().RemoteMultiaddr()); v.dg != nil && direct && hasCapability(hello, capUDP) {
		t.dg = v.dg.newDgTunnel(t, ip)
	}
	v.attach(t)
	emit("tunnel_up", map[string]any{
		"peer": t.remote.String(), "initiator": t.initiator == v.h.ID(),
		"remote_ipv4": hello.IPv4.String(), "remote_ipv6": hello.IPv6.String(),
		"remote_mtu": hello.MTU, "remote_capabilities": hello.Capabilities,
		"transport": t.s.Conn().ConnState().Transport,
	})
	go t.keepaliveLoop()
	if t.dg != nil {
		t.dg.start()
		go t.dg.loop(t.stop)
	}

	// 4. Established: frames in any order until the end (§7.3).
	for {
		_ = t.s.SetReadDeadline(time.Now().Add(v.timeout()))
		f, err := t.readFrame(r)
		if err != nil {
			t.fail(err)
			return t.recvClose
		}
		switch m := f.(type) {
		case *Hello:
			t.reject(closeProtocolError, "second Hello")
			return nil
		case *Data:
			v.receive(t, m.Packets)
		case *Keepalive:
			if !m.Reply {
				t.send(&Keepalive{Seq: m.Seq, Reply: true})
			} else {
				t.kaMu.Lock()
				if at, ok := t.kaSent[m.Seq]; ok {
					t.rtt = time.Since(at)
					delete(t.kaSent, m.Seq)
				}
				t.kaMu.Unlock()
			}
		case *DatagramOffer:
			if err := t.handleOffer(m); err != nil {
				t.fail(err)
				return nil
			}
		case *Close:
			code := m.Code
			t.recvClose = &code
			emit("close_received", map[string]any{"peer": t.remote.String(), "code": closeName(code), "reason": m.Reason})
			t.sendMu.Lock()
			t.sendDone = true // stop sending; no Close of our own in answer
			t.sendMu.Unlock()
			t.end()
			_ = t.s.CloseWrite()
			return t.recvClose
		}
	}
}

// handleOffer is §16.1: an offer is a protocol error unless we announced udp/1; a tunnel that does not
// use the path (relayed, or the peer's Hello lacked udp/1) ignores it.
func (t *tunnel) handleOffer(o *DatagramOffer) error {
	switch {
	case t.vpn.dg == nil:
		return perr("DatagramOffer, but we did not announce %s", capUDP)
	case t.dg == nil:
		return nil
	}
	return t.dg.handleOffer(o)
}

func hasCapability(h *Hello, c string) bool {
	for _, x := range h.Capabilities {
		if x == c {
			return true
		}
	}
	return false
}

var errTimeout = errors.New("timeout")

// readFrame reads one frame; framing and body errors come back as *protocolError.
func (t *tunnel) readFrame(r msgio.ReadCloser) (Frame, error) {
	msg, err := r.ReadMsg()
	if err != nil {
		switch {
		case errors.Is(err, msgio.ErrMsgTooLarge):
			return nil, perr("frame length over %d", maxFrameLen)
		case errors.Is(err, varint.ErrNotMinimal), errors.Is(err, varint.ErrOverflow):
			return nil, perr("bad frame length prefix: %v", err)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, errTimeout
		}
		return nil, err
	}
	return decodeBody(msg) // an empty message (zero length) is an empty Frame: an error
}

// fail ends the tunnel after a read error: protocol error, timeout, or the stream going away.
func (t *tunnel) fail(err error) {
	var pe *protocolError
	switch {
	case errors.As(err, &pe):
		t.vpn.count("protocol_errors")
		emit("protocol_error", map[string]any{"peer": t.remote.String(), "error": pe.msg})
		t.closeWith(pe.code, pe.msg, true)
	case errors.Is(err, errTimeout):
		if t.hello == nil { // §7.1: Close(HELLO_TIMEOUT), then close the stream
			emit("hello_timeout", map[string]any{"peer": t.remote.String()})
			t.closeWith(closeHelloTimeout, "no Hello within 10 s", false)
			return
		}
		t.closeWith(closeTimeout, "nothing received", false)
	case errors.Is(err, io.EOF):
		t.end()
	default:
		t.end()
	}
}

// reject refuses the peer's Hello (or frame order) with a Close code (§7.2).
func (t *tunnel) reject(code uint32, reason string) {
	emit("hello_rejected", map[string]any{"peer": t.remote.String(), "code": closeName(code), "reason": reason})
	t.closeWith(code, reason, code == closeProtocolError)
}

func (t *tunnel) keepaliveLoop() {
	tick := time.NewTicker(t.vpn.keepalive)
	defer tick.Stop()
	var seq uint64
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			seq++
			t.kaMu.Lock()
			t.kaSent[seq] = time.Now()
			for s := range t.kaSent { // bounded: forget unanswered requests
				if s+16 < seq {
					delete(t.kaSent, s)
				}
			}
			t.kaMu.Unlock()
			t.send(&Keepalive{Seq: seq})
		}
	}
}
