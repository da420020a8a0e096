package main

// Path state of one tunnel, docs/protocol.md §16.7, sans-IO: events and a
// clock in, endpoints to probe out. dgTunnel (dgram_path.go) owns one and
// does the sending.
//
//   - stream (initial): probe every candidate endpoint every 1 s for its first
//     10 probes, then every 5 s;
//   - stream -> udp: an authenticated probe reply or data datagram; its source
//     becomes the endpoint;
//   - udp: a keepalive probe to the endpoint when none went out for 2 s and
//     either nothing was sent over UDP, or nothing came back, for 2 s; a new
//     highest counter of the current epoch from another address moves the
//     endpoint (roaming);
//   - udp -> stream: no authenticated probe reply or data for 6 s; probing
//     starts over with the fast probes.
//
// A probe from the peer proves only peer -> us: it is answered, but it is no
// event here (else a one-way block would hold us on udp and black-hole data).

import (
	"net/netip"
	"slices"
	"time"
)

const (
	dgKeepalive   = 2 * time.Second // a keepalive probe while udp (see above)
	dgPathTimeout = 6 * time.Second // udp -> stream without an authenticated probe reply or data
	dgProbeFast   = 1 * time.Second
	dgProbeSlow   = 5 * time.Second
	dgProbeFastN  = 10 // probes per endpoint at dgProbeFast, then dgProbeSlow
	pathStream    = "stream"
	pathUDP       = "udp"
)

type probeState struct {
	sent int
	last time.Time
}

type dgPathState struct {
	state      string
	endpoint   netip.AddrPort // where data goes while udp
	candidates []netip.AddrPort
	probes     map[netip.AddrPort]*probeState
	lastAlive  time.Time // last authenticated probe reply or data
	lastSent   time.Time // last datagram sent over UDP to the peer
	lastProbe  time.Time // last keepalive probe while udp
}

func newPathState() dgPathState {
	return dgPathState{state: pathStream, probes: map[netip.AddrPort]*probeState{}}
}

// addCandidates appends the peer's candidate endpoints (in order, once each); new ones are probed at once.
func (p *dgPathState) addCandidates(eps []netip.AddrPort) {
	for _, e := range eps {
		if !slices.Contains(p.candidates, e) {
			p.candidates = append(p.candidates, e)
		}
	}
}

// alive is an authenticated probe reply or data datagram from source; newHighest: its counter is a new
// highest of the current epoch. It returns true when the path just became udp.
func (p *dgPathState) alive(source netip.AddrPort, newHighest bool, now time.Time) bool {
	p.lastAlive = now
	if p.state != pathUDP {
		p.state, p.endpoint, p.lastProbe = pathUDP, source, now
		return true
	}
	if newHighest && source != p.endpoint {
		p.endpoint = source // roaming
	}
	return false
}

// sent records a datagram sent to the peer (data, probe or probe reply).
func (p *dgPathState) sent(now time.Time) { p.lastSent = now }

// poll advances the timers: the endpoints to send a probe to now, and whether the path fell back to stream.
func (p *dgPathState) poll(now time.Time) (probe []netip.AddrPort, fellBack bool) {
	if p.state == pathUDP && now.Sub(p.lastAlive) >= dgPathTimeout {
		p.state, p.endpoint, fellBack = pathStream, netip.AddrPort{}, true
		p.probes = map[netip.AddrPort]*probeState{} // probing starts over, fast
	}
	if p.state == pathUDP {
		if now.Sub(p.lastProbe) >= dgKeepalive && (now.Sub(p.lastSent) >= dgKeepalive || now.Sub(p.lastAlive) >= dgKeepalive) {
			p.lastProbe = now
			probe = append(probe, p.endpoint)
		}
		return probe, fellBack
	}
	for _, c := range p.candidates {
		ps := p.probes[c]
		if ps == nil {
			ps = &probeState{}
			p.probes[c] = ps
		}
		every := dgProbeFast
		if ps.sent >= dgProbeFastN {
			every = dgProbeSlow
		}
		if ps.sent == 0 || now.Sub(ps.last) >= every {
			ps.sent++
			ps.last = now
			probe = append(probe, c)
		}
	}
	return probe, fellBack
}
