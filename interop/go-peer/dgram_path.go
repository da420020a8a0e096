package main

// The datagram path's I/O (docs/protocol.md §16): one UDP socket per node,
// datagrams demultiplexed by receiver_index, and per tunnel the path state
// stream <-> udp with probing, keepalives, timeouts and rekeying.
//
// Inbound flow (readLoop), §16.6, each drop counted under its name:
//  1. under 29 bytes or unknown type -> udp_short;
//  2. receiver_index not of a live epoch -> udp_unknown_index (the index of our offer still
//     waiting for the peer's: held up to 1 s, see heldDatagram);
//  3. counter >= 2^60, or too old / seen in the replay window -> udp_replayed;
//  4. AES-256-GCM open with that epoch's receive key -> else udp_bad_auth;
//  5. plaintext of the wrong length -> udp_malformed; else the window records the counter;
//  6. probe -> a probe reply to its source, nothing else (a probe proves only peer -> us);
//  7. probe reply or data -> the path is udp (§16.7); a new highest counter of the current
//     epoch from another address moves the endpoint (roaming);
//  8. data -> the same checks as stream packets (VPN.receive), then the responder.
//
// Outbound: tunnel.sendPacket hands a packet to sendData, which seals it and
// sends it to the endpoint while the state is udp; otherwise it goes on the stream.

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

const (
	dgTick          = 100 * time.Millisecond
	dgMaxDatagram   = 65535
	maxIndexRetries = 64
)

// dgNode is the node's UDP socket and the receiver_index table.
type dgNode struct {
	v          *VPN
	conn       *net.UDPConn
	port       uint16
	rekeyAfter time.Duration

	mu      sync.Mutex
	byIndex map[uint32]*dgEntry
}

// dgEntry is what a receiver_index names: a tunnel's datagram state and one epoch's keys.
type dgEntry struct {
	d    *dgTunnel
	keys *epochKeys
}

// listenUDP binds the node's socket: the port of the first TCP listen address when free and not
// used by a QUIC listener, otherwise an ephemeral port.
func listenUDP(v *VPN, rekeyAfter time.Duration) (*dgNode, error) {
	want := 0
	quic := map[string]bool{}
	for _, a := range v.h.Network().ListenAddresses() {
		if p, err := a.ValueForProtocol(ma.P_UDP); err == nil {
			if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err == nil {
				quic[p] = true
			}
		}
	}
	for _, a := range v.h.Network().ListenAddresses() {
		if p, err := a.ValueForProtocol(ma.P_TCP); err == nil {
			if !quic[p] {
				want, _ = strconv.Atoi(p)
			}
			break
		}
	}
	var conn *net.UDPConn
	var err error
	for _, port := range []int{want, 0} {
		if conn, err = net.ListenUDP("udp", &net.UDPAddr{Port: port}); err == nil {
			break
		}
		if conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port}); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	n := &dgNode{v: v, conn: conn, rekeyAfter: rekeyAfter, byIndex: map[uint32]*dgEntry{}}
	n.port = uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	go n.readLoop()
	return n, nil
}

// newIndex is a random non-zero receiver_index not in use on this node (reserved until released).
func (n *dgNode) newIndex(d *dgTunnel) uint32 {
	n.mu.Lock()
	defer n.mu.Unlock()
	var b [4]byte
	for range maxIndexRetries {
		_, _ = rand.Read(b[:])
		i := binary.BigEndian.Uint32(b[:])
		if i != 0 && n.byIndex[i] == nil {
			n.byIndex[i] = &dgEntry{d: d} // reserved; keys come at install
			return i
		}
	}
	panic("no free receiver_index")
}

func (n *dgNode) setKeys(index uint32, d *dgTunnel, k *epochKeys) {
	n.mu.Lock()
	n.byIndex[index] = &dgEntry{d: d, keys: k}
	n.mu.Unlock()
}

func (n *dgNode) release(indexes ...uint32) {
	n.mu.Lock()
	for _, i := range indexes {
		delete(n.byIndex, i)
	}
	n.mu.Unlock()
}

func (n *dgNode) indexes() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.byIndex)
}

func (n *dgNode) lookup(index uint32) *dgEntry {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byIndex[index]
}

func (n *dgNode) readLoop() {
	buf := make([]byte, dgMaxDatagram)
	for {
		size, from, err := n.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return // socket closed
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		n.handle(buf[:size], from)
	}
}

// handle is the inbound ladder of checks for one datagram.
func (n *dgNode) handle(d []byte, from netip.AddrPort) {
	h, drop := parseDatagram(d)
	if drop != "" {
		n.v.count(drop)
		return
	}
	e := n.lookup(h.index)
	if e == nil {
		n.v.count(dropUnknownIndex)
		return
	}
	keys := e.keys
	if keys == nil { // our offer's index, the peer's offer not here yet
		held, installed := e.d.hold(h, d, from)
		if held {
			n.v.count("udp_held") // opened once that epoch is installed
			return
		}
		if keys = installed; keys == nil { // installed since the lookup, or else dropped
			n.v.count(dropUnknownIndex)
			return
		}
	}
	e.d.received(keys, h, d, from)
}

// dgTunnel is one tunnel's datagram state: its key schedule and its path.
type dgTunnel struct {
	n *dgNode
	t *tunnel

	mu        sync.Mutex
	keys      dgKeySchedule
	path      dgPathState
	closed    bool
	remote    netip.Addr // IP of the connection carrying the tunnel
	loopback  bool       // the tunnel's connection is over loopback: loopback endpoints are allowed
	txPackets uint64     // data datagrams sent
	rxPackets uint64     // data datagrams received and authenticated
	reserved  []uint32   // indexes of offers whose epoch has not completed yet
	early     []heldDatagram
	heldBytes int
}

// heldDatagram arrived for our pending offer's receiver_index before the peer's offer of that epoch.
// On a rekey the responder installs the new epoch, and seals with it, as soon as it gets the
// initiator's offer; its own offer travels back on the stream and may arrive after its first
// datagrams. Holding them a moment (bounded) instead of dropping them loses nothing at a rekey.
type heldDatagram struct {
	h    dgHeader
	d    []byte
	from netip.AddrPort
	at   time.Time
}

const (
	maxHeld      = 256
	maxHeldBytes = 1 << 20 // unauthenticated until the keys come: bounded in bytes too
	holdTime     = time.Second
)

// hold keeps a copy of a datagram for a pending index. Not held: the hold is full or the tunnel
// ended (then it is dropped), or the epoch was installed meanwhile (its keys are returned).
func (d *dgTunnel) hold(h dgHeader, datagram []byte, from netip.AddrPort) (bool, *epochKeys) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur := d.keys.cur; !d.closed && cur != nil && cur.localIndex == h.index {
		return false, cur
	}
	if d.closed || len(d.early) >= maxHeld || d.heldBytes+len(datagram) > maxHeldBytes ||
		!slices.Contains(d.reserved, h.index) {
		return false, nil
	}
	d.early = append(d.early, heldDatagram{h, append([]byte{}, datagram...), from, time.Now()})
	d.heldBytes += len(datagram)
	return true, nil
}

// takeHeld returns the held datagrams of index (which now has keys), in arrival order; stale ones are dropped.
func (d *dgTunnel) takeHeld(index uint32, now time.Time) (out []heldDatagram, stale int) {
	keep := d.early[:0]
	d.heldBytes = 0
	for _, x := range d.early {
		switch {
		case now.Sub(x.at) > holdTime:
			stale++
		case x.h.index == index:
			out = append(out, x)
		default:
			keep = append(keep, x)
			d.heldBytes += len(x.d)
		}
	}
	d.early = keep
	return out, stale
}

// newDgTunnel prepares t's datagram state; remote is the IP of the connection carrying the tunnel.
func (n *dgNode) newDgTunnel(t *tunnel, remote netip.Addr) *dgTunnel {
	remote = remote.Unmap()
	d := &dgTunnel{n: n, t: t, path: newPathState(), remote: remote, loopback: remote.IsLoopback()}
	d.keys = dgKeySchedule{
		self: n.v.h.ID(), remote: t.remote, initiator: t.initiator == n.v.h.ID(), port: uint32(n.port),
		rand: rand.Reader,
	}
	d.keys.newIndex = func() uint32 {
		i := n.newIndex(d)
		d.reserved = append(d.reserved, i)
		return i
	}
	return d
}

// remoteIP is the IP of a direct connection's remote multiaddr; ok is false for a relayed one.
func remoteIP(addr ma.Multiaddr) (netip.Addr, bool) {
	if _, err := addr.ValueForProtocol(ma.P_CIRCUIT); err == nil {
		return netip.Addr{}, false
	}
	for _, p := range []int{ma.P_IP4, ma.P_IP6} {
		if s, err := addr.ValueForProtocol(p); err == nil {
			ip, err := netip.ParseAddr(s)
			return ip, err == nil
		}
	}
	return netip.Addr{}, false
}

// start sends our epoch-1 offer.
func (d *dgTunnel) start() {
	d.mu.Lock()
	o := d.keys.start()
	d.mu.Unlock()
	if o != nil {
		d.t.send(o)
	}
}

// handleOffer applies a peer's offer; an error is a protocol error for the tunnel.
func (d *dgTunnel) handleOffer(o *DatagramOffer) error {
	now := time.Now()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	answer, k, dropped, err := d.keys.handleOffer(o, now)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	if dropped != nil {
		d.n.release(dropped.localIndex)
	}
	if o.Epoch == 1 { // the peer's candidate endpoints (§16.2): the connection's IP with its port, then its list
		var cands []netip.AddrPort
		if d.remote.IsValid() {
			cands = append(cands, netip.AddrPortFrom(d.remote, uint16(o.Port)))
		}
		for _, e := range o.Endpoints {
			cands = append(cands, offerEndpoint(e))
		}
		d.path.addCandidates(slices.DeleteFunc(cands, func(c netip.AddrPort) bool { return !d.usableEndpoint(c) }))
	}
	d.n.setKeys(k.localIndex, d, k)
	d.reserved = removeIndex(d.reserved, k.localIndex)
	held, stale := d.takeHeld(k.localIndex, now)
	d.mu.Unlock()
	if answer != nil {
		d.t.send(answer)
	}
	if stale > 0 {
		d.n.v.countN(dropUnknownIndex, uint64(stale))
	}
	for _, x := range held {
		d.received(k, x.h, x.d, x.from)
	}
	emit("datagram_keys", map[string]any{"peer": d.t.remote.String(), "epoch": k.epoch})
	return nil
}

func removeIndex(list []uint32, i uint32) []uint32 {
	out := list[:0]
	for _, x := range list {
		if x != i {
			out = append(out, x)
		}
	}
	return out
}

// usableEndpoint skips what can name no peer (§16.2, the scope rules of §12.5): unspecified, multicast,
// broadcast, and loopback unless the tunnel's connection is over loopback.
func (d *dgTunnel) usableEndpoint(ep netip.AddrPort) bool {
	a := ep.Addr().Unmap()
	return ep.Port() != 0 && a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255}) && (!a.IsLoopback() || d.loopback)
}

// received is steps 3-8 of the inbound flow for a datagram whose receiver_index named epoch k.
func (d *dgTunnel) received(k *epochKeys, h dgHeader, datagram []byte, from netip.AddrPort) {
	d.mu.Lock()
	drop := ""
	var plain, reply []byte
	changed := false
	switch {
	case d.closed:
		drop = dropUnknownIndex // the tunnel ended between lookup and here: its keys are gone
	case !k.window.check(h.counter):
		drop = dropReplayed
	default:
		if plain, drop = openDatagram(k.recv, h, datagram); drop != "" {
			break
		}
		newHighest := k.window.accept(h.counter)
		now := time.Now()
		switch h.typ {
		case dgTypeProbe:
			reply, _ = d.keys.seal(dgTypeProbeReply, plain)
		case dgTypeData, dgTypeProbeReply:
			changed = d.path.alive(from, newHighest && k == d.keys.cur, now)
			if h.typ == dgTypeData {
				d.rxPackets++
			}
		}
	}
	endpoint := d.path.endpoint
	d.mu.Unlock()
	if drop != "" {
		d.n.v.count(drop)
		return
	}
	if changed {
		d.emitPath(endpoint)
	}
	switch h.typ {
	case dgTypeData:
		d.n.v.count("udp_packets_in")
		d.n.v.receive(d.t, [][]byte{plain})
	case dgTypeProbe:
		if reply != nil {
			d.write(reply, from) // to the probe's source, whatever the path state
		}
	}
}

func (d *dgTunnel) emitPath(endpoint netip.AddrPort) {
	ev := map[string]any{"peer": d.t.remote.String(), "path": d.pathName()}
	if endpoint.IsValid() {
		ev["udp_endpoint"] = endpoint.String()
	}
	emit("path", ev)
}

func (d *dgTunnel) pathName() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.path.state
}

func (d *dgTunnel) write(b []byte, to netip.AddrPort) {
	if _, err := d.n.conn.WriteToUDPAddrPort(b, to); err != nil {
		d.n.v.count("udp_send_errors")
		return
	}
	d.mu.Lock()
	d.path.sent(time.Now())
	d.mu.Unlock()
}

// sendData sends one IP packet over UDP if the path is udp; false means: use the stream.
func (d *dgTunnel) sendData(p []byte) bool {
	d.mu.Lock()
	if d.closed || d.path.state != pathUDP {
		d.mu.Unlock()
		return false
	}
	b, err := d.keys.seal(dgTypeData, p)
	if err != nil {
		d.mu.Unlock()
		return false
	}
	d.txPackets++
	to := d.path.endpoint
	d.mu.Unlock()
	d.write(b, to)
	return true
}

// loop runs the timers: rekey, old keys, path timeout, probes and keepalives; until stop closes.
func (d *dgTunnel) loop(stop <-chan struct{}) {
	tick := time.NewTicker(dgTick)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			d.step(time.Now())
		}
	}
}

type dgSend struct {
	b  []byte
	to netip.AddrPort
}

func (d *dgTunnel) step(now time.Time) {
	var out []dgSend
	var offer *DatagramOffer
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	if d.keys.rekeyDue(now, d.n.rekeyAfter) {
		offer = d.keys.rekey()
	}
	if old := d.keys.expirePrev(now); old != nil {
		d.n.release(old.localIndex)
	}
	_, stale := d.takeHeld(0, now) // index 0 is never ours: this only drops stale ones
	timedOut := false
	if d.keys.cur != nil { // probing starts once epoch 1 is installed
		var due []netip.AddrPort
		due, timedOut = d.path.poll(now)
		for _, to := range due {
			var id [dgProbeIDLen]byte
			_, _ = rand.Read(id[:])
			if b, err := d.keys.seal(dgTypeProbe, id[:]); err == nil {
				out = append(out, dgSend{b, to})
			}
		}
	}
	d.mu.Unlock()
	if stale > 0 { // counted outside d.mu: VPN.stats takes v.mu, then d.mu
		d.n.v.countN(dropUnknownIndex, uint64(stale))
	}
	if timedOut {
		d.emitPath(netip.AddrPort{})
	}
	if offer != nil {
		d.t.send(offer)
	}
	for _, s := range out {
		d.write(s.b, s.to)
	}
}

// close drops the tunnel's keys at once (the stream ended).
func (d *dgTunnel) close() {
	d.mu.Lock()
	d.closed = true
	idx := append([]uint32{}, d.reserved...)
	if d.keys.cur != nil {
		idx = append(idx, d.keys.cur.localIndex)
	}
	if d.keys.prev != nil {
		idx = append(idx, d.keys.prev.localIndex)
	}
	d.keys.cur, d.keys.prev, d.path = nil, nil, newPathState()
	d.mu.Unlock()
	d.n.release(idx...)
}

// stats is what `stats` reports for the tunnel's path.
func (d *dgTunnel) stats() map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := map[string]any{
		"path": d.path.state, "udp_endpoint": nil, "udp_tx_packets": d.txPackets, "udp_rx_packets": d.rxPackets,
		"epoch": d.keys.current,
	}
	if d.path.state == pathUDP && d.path.endpoint.IsValid() {
		m["udp_endpoint"] = d.path.endpoint.String()
	}
	return m
}
