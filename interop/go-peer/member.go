package main

// The vpn mode as a member of a network with an owner (docs/protocol.md §15.9).
//
// Flow:
//  1. our Hello carries our certificate (tunnel.go); a peer's Hello with a
//     certificate is judged by it (checkHello: §15.4, then the addresses);
//  2. every second the revocation file (--revocations, one base64url
//     SignedRevocationList per line, written by whoever revokes) is re-read
//     when it changed, and every live tunnel's certificate is re-checked
//     (§15.9.3): a revoked or expired one is closed with NOT_AUTHORIZED;
//  3. membership pushes (/p2pvpn/membership/1.0.0, §15.9.2) bring renewed
//     certificates and revocation lists; a list that taught us something is
//     enforced at once and pushed on to every other member we have a tunnel
//     with, as is a list learned from the file.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	"github.com/multiformats/go-varint"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	pushProtocol    = "/p2pvpn/membership/1.0.0"
	pushTimeout     = 5 * time.Second
	maxPushSize     = 73728
	maxResponseSize = 131072
	checkInterval   = time.Second
	statusOK        = 0
	statusBadReq    = 5
)

type Member struct {
	v       *VPN
	network string
	own     *Certificate
	revFile string

	mu        sync.Mutex
	rset      RevocationSet
	presented map[peer.ID]*Certificate // the certificate each peer showed on its tunnel (or in a push)
	fileStamp string
}

func nowUnix() uint64 { return uint64(time.Now().Unix()) }

// newMember opens our certificate for the host's peer ID; an invalid one (expired, not yet valid)
// is reported but still presented: peers decide, and tests need to see them refuse it.
func newMember(v *VPN, network, text, revFile string) (*Member, error) {
	if !networkIDRe.MatchString(network) {
		return nil, fmt.Errorf("--network must be the network ID (32 characters a-z2-7) with --cert")
	}
	data, err := certFromText(text)
	if err != nil {
		return nil, err
	}
	own, err := openCertificate(data, network)
	if err == nil {
		err = checkCert(own, nowUnix(), nil, []byte(v.h.ID()))
	} else if own, err2 := readCertificate(data); err2 == nil && len(own.IPv4) == 4 && len(own.IPv6) == 16 {
		emit("own_certificate_invalid", map[string]any{"error": err.Error()})
		return newMemberWith(v, network, own, revFile), nil // a forgery, presented so that tests see it refused
	}
	if err != nil {
		if own == nil || strings.Contains(err.Error(), "another peer") {
			return nil, err
		}
		emit("own_certificate_invalid", map[string]any{"error": err.Error()})
	}
	return newMemberWith(v, network, own, revFile), nil
}

// readCertificate reads a certificate's fields without judging them (for our own, possibly forged, one).
func readCertificate(data []byte) (*Certificate, error) {
	s, err := parseSigned(data, "certificate")
	if err != nil {
		return nil, err
	}
	c, err := parseCertBody(s.body)
	if err != nil {
		return nil, err
	}
	c.Raw = data
	return c, nil
}

func newMemberWith(v *VPN, network string, own *Certificate, revFile string) *Member {
	return &Member{
		v: v, network: network, own: own, revFile: revFile,
		rset: RevocationSet{Entries: map[string]uint64{}}, presented: map[peer.ID]*Certificate{},
	}
}

// overlay is our certificate's addresses, with the derivation index that gives the IPv4 (§15.9.1).
func (m *Member) overlay() Overlay {
	return Overlay{IPv4: m.own.Addr4(), IPv6: m.own.Addr6(), Index: addressIndexFor(m.own.PeerID, m.network, m.own.Addr4())}
}

// checkHello is §15.9.1's replacement of the address rows of §7.2.
func (m *Member) checkHello(h *Hello, remote peer.ID) (uint32, string) {
	m.mu.Lock()
	c, err := verifyCertificate(h.Certificate, m.network, nowUnix(), m.rset.Entries, []byte(remote))
	m.mu.Unlock()
	if err != nil {
		m.v.count("certificate_refused")
		return closeNotAuthorized, "certificate refused: " + err.Error()
	}
	if h.IPv4 != c.Addr4() || h.IPv6 != c.Addr6() {
		m.v.count("certificate_address_mismatch")
		return closeAddressMismatch, fmt.Sprintf("peer claims %s/%s, its certificate says %s/%s", h.IPv4, h.IPv6, c.Addr4(), c.Addr6())
	}
	m.mu.Lock()
	for id, other := range m.presented { // §15.9.1: one address, one peer (whoever was first)
		if id != remote && m.v.current(id) != nil && (other.Addr4() == c.Addr4() || other.Addr6() == c.Addr6()) {
			m.mu.Unlock()
			m.v.count("certificate_address_taken")
			return closeAddressMismatch, fmt.Sprintf("overlay address %s is already used by %s", c.Addr4(), id)
		}
	}
	m.presented[remote] = c
	m.mu.Unlock()
	emit("certificate_accepted", map[string]any{
		"peer": remote.String(), "name": c.Name, "roles": rolesText(c.Roles), "groups": c.Groups,
		"ipv4": c.Addr4().String(), "ipv6": c.Addr6().String(), "not_after": c.NotAfter, "admin_signed": c.Admin != nil,
	})
	return closeNormal, ""
}

// run re-reads the revocation file and re-checks tunnels every second (§15.9.3).
func (m *Member) run(ctx context.Context) {
	m.v.h.SetStreamHandler(pushProtocol, m.handlePush)
	tick := time.NewTicker(checkInterval)
	defer tick.Stop()
	for {
		if m.reloadFile() {
			go m.spread(ctx, "")
		}
		m.enforce()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// reloadFile merges every valid list in the revocation file when the file changed; true if R changed.
func (m *Member) reloadFile() bool {
	if m.revFile == "" {
		return false
	}
	st, err := os.Stat(m.revFile)
	if err != nil {
		return false
	}
	stamp := fmt.Sprintf("%d/%d", st.ModTime().UnixNano(), st.Size())
	if stamp == m.fileStamp {
		return false
	}
	m.fileStamp = stamp
	data, err := os.ReadFile(m.revFile)
	if err != nil {
		return false
	}
	changed := false
	for _, line := range strings.Fields(string(data)) {
		raw, err := b64url.DecodeString(line)
		if err != nil {
			emit("revocation_list_refused", map[string]any{"via": "file", "error": "not canonical base64url"})
			continue
		}
		if taught, _ := m.take(raw, "file", ""); taught {
			changed = true
		}
	}
	return changed
}

// take validates and merges one list (§15.5); true if it taught us something.
func (m *Member) take(raw []byte, via, from string) (bool, error) {
	m.mu.Lock()
	l, err := openList(raw, m.network, nowUnix(), m.rset.Entries)
	var changed []string
	if err == nil {
		changed = m.rset.merge(l)
	}
	m.mu.Unlock()
	if err != nil {
		m.v.count("revocation_list_refused")
		emit("revocation_list_refused", map[string]any{"via": via, "from": from, "error": err.Error()})
		return false, err
	}
	var peers []string
	for _, p := range changed {
		if id, err := peer.IDFromBytes([]byte(p)); err == nil {
			peers = append(peers, id.String())
		}
	}
	emit("revocations_merged", map[string]any{"via": via, "from": from, "seq": l.Seq, "changed": peers})
	return len(changed) > 0, nil
}

// enforce closes every tunnel whose peer's certificate is void now (revoked or expired).
func (m *Member) enforce() {
	now := nowUnix()
	m.v.mu.Lock()
	live := map[peer.ID]*tunnel{}
	for id, p := range m.v.peers {
		if p.current != nil {
			live[id] = p.current
		}
	}
	m.v.mu.Unlock()
	for id, t := range live {
		m.mu.Lock()
		c := m.presented[id]
		var err error
		if c != nil {
			err = checkCert(c, now, m.rset.Entries, nil)
			if err != nil {
				delete(m.presented, id)
			}
		}
		m.mu.Unlock()
		if err == nil {
			continue
		}
		m.v.count("membership_closed")
		emit("membership_closed", map[string]any{"peer": id.String(), "reason": err.Error()})
		go t.closeWith(closeNotAuthorized, err.Error(), false)
	}
}

// -- pushes (§15.9.2) ---------------------------------------------------------------------------------

// pushMessage is a canonical Membership{certificate?, revocations?}.
func pushMessage(certificate, revocations []byte) []byte {
	var w pbWriter
	if certificate != nil {
		w.repeated(1, certificate)
	}
	if revocations != nil {
		w.repeated(2, revocations)
	}
	return w.b
}

func parsePush(data []byte) (certificate, revocations []byte, err error) {
	var hasC, hasR bool
	err = pbWalk(data, func(f pbField) error {
		if f.typ == protowire.BytesType && f.num == 1 {
			certificate, hasC = append(certificate, f.bytes...), true
		}
		if f.typ == protowire.BytesType && f.num == 2 {
			revocations, hasR = append(revocations, f.bytes...), true
		}
		return nil
	})
	if err != nil {
		return nil, nil, errors.New("membership push is not a valid protobuf message")
	}
	if !hasC {
		certificate = nil
	} else if certificate == nil {
		certificate = []byte{}
	}
	if !hasR {
		revocations = nil
	} else if revocations == nil {
		revocations = []byte{}
	}
	if string(pushMessage(certificate, revocations)) != string(data) {
		return nil, nil, fmt.Errorf("membership push is %w", errNotCanonical)
	}
	return certificate, revocations, nil
}

func joinResponse(status uint32, message string) []byte {
	var w pbWriter
	w.varint(1, uint64(status))
	w.bytes(2, []byte(message))
	return w.b
}

func writeMsg(s network.Stream, b []byte) error {
	_, err := s.Write(append(varint.ToUvarint(uint64(len(b))), b...))
	return err
}

// handlePush takes one Membership from a peer and answers one JoinResponse with only a status.
func (m *Member) handlePush(s network.Stream) {
	defer s.Close()
	sender := s.Conn().RemotePeer()
	_ = s.SetDeadline(time.Now().Add(pushTimeout))
	msg, err := msgio.NewVarintReaderSize(s, maxPushSize).ReadMsg()
	if err != nil {
		m.v.count("push_failed_in")
		_ = s.Reset()
		return
	}
	certificate, revocations, err := parsePush(msg)
	changed := false
	if err == nil && certificate != nil {
		var c *Certificate
		m.mu.Lock()
		c, err = verifyCertificate(certificate, m.network, nowUnix(), m.rset.Entries, []byte(sender))
		m.mu.Unlock()
		if err == nil {
			if t := m.v.current(sender); t != nil && (t.hello.IPv4 != c.Addr4() || t.hello.IPv6 != c.Addr6()) {
				err = errors.New("a renewed certificate must keep the addresses of the tunnel")
			} else {
				m.mu.Lock()
				m.presented[sender] = c
				m.mu.Unlock()
				emit("certificate_pushed", map[string]any{"peer": sender.String(), "name": c.Name, "not_after": c.NotAfter})
			}
		}
	}
	if err == nil && revocations != nil {
		changed, err = m.take(revocations, "push", sender.String())
	}
	if err != nil {
		m.v.count("push_refused")
		emit("push_refused", map[string]any{"peer": sender.String(), "error": err.Error()})
		_ = writeMsg(s, joinResponse(statusBadReq, err.Error()))
		return
	}
	_ = writeMsg(s, joinResponse(statusOK, ""))
	m.v.count("push_received")
	if changed {
		m.enforce()
		go m.spread(context.Background(), sender)
	}
}

// spread pushes our best list to every member we have a tunnel with, except one.
func (m *Member) spread(ctx context.Context, exclude peer.ID) {
	m.mu.Lock()
	best := m.rset.Best
	var to []peer.ID
	for id := range m.presented {
		if id != exclude && m.v.current(id) != nil {
			to = append(to, id)
		}
	}
	m.mu.Unlock()
	if best == nil {
		return
	}
	msg := pushMessage(nil, best.Raw)
	for _, id := range to {
		go m.pushOne(ctx, id, msg)
	}
}

func (m *Member) pushOne(ctx context.Context, to peer.ID, msg []byte) {
	status, text, err := pushSigned(ctx, m.v.h, to, pushProtocol, msg, maxResponseSize)
	ev := map[string]any{"peer": to.String()}
	switch {
	case err != nil:
		m.v.count("push_failed")
		ev["error"] = err.Error()
	case status != statusOK:
		m.v.count("push_refused_by_peer")
		ev["status"], ev["message"] = status, text
	default:
		m.v.count("pushed")
		ev["status"] = status
	}
	emit("pushed", ev)
}
