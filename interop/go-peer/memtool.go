package main

// go-peer membership ...: the owner's and admins' offline work (§15.8, §15.5), done by this
// implementation so that tests can hand Go-signed certificates and lists to Python, and ask Go
// whether it accepts Python's. One JSON object on stdout; bad input exits 1 with a one-line error.
//
//	go-peer membership id      --seed HEX
//	go-peer membership network --owner-seed HEX
//	go-peer membership issue   --signer-seed HEX [--issuer-cert CERT] --network NID --peer ID [--name N]
//	                           [--roles relay,exit,admin] [--groups g1,g2] [--not-before T] [--lifetime 7d]
//	                           [--ipv4 A --ipv6 A] [--forge]
//	go-peer membership revoke  --signer-seed HEX [--issuer-cert CERT] --network NID --seq N --entry ID=T...
//	go-peer membership verify  --network NID --cert CERT [--peer ID] [--now T] [--list B64]...
//	go-peer membership check   stdin {"network","now","cert"|"list" (hex),"peer"?,"revoked"?} -> {"ok","error",...}

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func seedSigner(seedHex, issuerCert string) (Signer, error) {
	seed, err := hex.DecodeString(seedHex)
	if err != nil || len(seed) != ed25519.SeedSize {
		return Signer{}, fmt.Errorf("a seed is %d hex bytes", ed25519.SeedSize)
	}
	s := Signer{Key: ed25519.NewKeyFromSeed(seed)}
	if issuerCert != "" {
		if s.IssuerCert, err = certFromText(issuerCert); err != nil {
			return Signer{}, fmt.Errorf("--issuer-cert: %v", err)
		}
	}
	return s, nil
}

func parseLifetime(text string) (uint64, error) {
	if strings.HasSuffix(text, "d") {
		n, err := strconv.ParseUint(strings.TrimSuffix(text, "d"), 10, 32)
		return n * 86400, err
	}
	d, err := time.ParseDuration(text)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--lifetime %q is not a duration (90s, 12h, 7d)", text)
	}
	return uint64(d / time.Second), nil
}

func describeCert(c *Certificate) map[string]any {
	id, _ := peer.IDFromBytes(c.PeerID)
	return map[string]any{
		"peer_id": id.String(), "name": c.Name, "ipv4": c.Addr4().String(), "ipv6": c.Addr6().String(),
		"roles": rolesText(c.Roles), "groups": c.Groups, "not_before": c.NotBefore, "not_after": c.NotAfter,
		"admin_signed": c.Admin != nil,
	}
}

// checkLine judges one JSON line {"network", "now", "cert"|"list" (hex), "peer"?, "revoked"?: {ID: T}}:
// Go's verdict on a certificate (§15.4) or a revocation list (§15.5), to compare with Python's.
func checkLine(line []byte) any {
	var in struct {
		Network string            `json:"network"`
		Now     uint64            `json:"now"`
		Cert    string            `json:"cert"`
		List    string            `json:"list"`
		Peer    string            `json:"peer"`
		Revoked map[string]uint64 `json:"revoked"`
	}
	if err := json.Unmarshal(line, &in); err != nil {
		return map[string]any{"ok": false, "error": "bad input line: " + err.Error()}
	}
	r := map[string]uint64{}
	for text, t := range in.Revoked {
		id, err := peer.Decode(text)
		if err != nil {
			return map[string]any{"ok": false, "error": "bad revoked peer ID"}
		}
		r[string(id)] = t
	}
	var holder []byte
	if in.Peer != "" {
		id, err := peer.Decode(in.Peer)
		if err != nil {
			return map[string]any{"ok": false, "error": "bad peer ID"}
		}
		holder = []byte(id)
	}
	var err error
	out := map[string]any{}
	if in.List != "" {
		raw, _ := hex.DecodeString(in.List)
		var l *RevocationList
		if l, err = openList(raw, in.Network, in.Now, r); err == nil {
			out["seq"], out["entries"] = l.Seq, len(l.Entries)
		}
	} else {
		raw, _ := hex.DecodeString(in.Cert)
		var c *Certificate
		if c, err = verifyCertificate(raw, in.Network, in.Now, r, holder); c != nil && err == nil {
			out = describeCert(c)
		}
	}
	out["ok"] = err == nil
	if err != nil {
		out["error"] = err.Error()
	}
	return out
}

func runMembershipTool(args []string) {
	if len(args) >= 1 && args[0] == "check" {
		eachLine(checkLine)
		return
	}
	if len(args) < 1 {
		fatal("usage: go-peer membership id|network|issue|revoke|verify [flags]")
	}
	cmd := args[0]
	fs := flag.NewFlagSet("membership "+cmd, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	seed := fs.String("seed", "", "id: node key seed, 64 hex digits")
	ownerSeed := fs.String("owner-seed", "", "network: owner key seed")
	signerSeed := fs.String("signer-seed", "", "issue/revoke: owner key seed, or an admin's node key seed")
	issuerCert := fs.String("issuer-cert", "", "issue/revoke: the admin's own certificate (p2pvpn-cert1:...)")
	nid := fs.String("network", "", "network ID")
	peerText := fs.String("peer", "", "issue: the member's peer ID; verify: the presenting peer")
	name := fs.String("name", "", "issue: DNS label (default peer- + last 8 characters of the peer ID)")
	roles := fs.String("roles", "", "issue: relay,exit,admin")
	groups := fs.String("groups", "", "issue: g1,g2")
	notBefore := fs.Uint64("not-before", 0, "issue: Unix seconds (default now)")
	lifetime := fs.String("lifetime", "7d", "issue: validity")
	ipv4 := fs.String("ipv4", "", "issue: overlay IPv4 (default: the derivation of §3 with net = network ID)")
	ipv6 := fs.String("ipv6", "", "issue: overlay IPv6 (default: the derivation)")
	forge := fs.Bool("forge", false, "issue: sign without checking that the signer may (for refusal tests)")
	seq := fs.Uint64("seq", 1, "revoke: the list's sequence number")
	certArg := fs.String("cert", "", "verify: p2pvpn-cert1:...")
	now := fs.Uint64("now", 0, "verify: Unix seconds (default now)")
	var entries, lists listFlag
	fs.Var(&entries, "entry", "revoke: PEER_ID=NOT_BEFORE (repeatable)")
	fs.Var(&lists, "list", "verify: a base64url SignedRevocationList to merge first (repeatable)")
	if err := fs.Parse(args[1:]); err != nil {
		os.Exit(2)
	}
	out := map[string]any{}
	switch cmd {
	case "id":
		key, err := identity(*seed)
		if err != nil {
			fatal("%v", err)
		}
		id, _ := peer.IDFromPrivateKey(key)
		out["peer_id"] = id.String()
	case "network":
		s, err := seedSigner(*ownerSeed, "")
		if err != nil {
			fatal("--owner-seed: %v", err)
		}
		n := networkID(s.public())
		p := v6Prefix(n)
		out["network_id"], out["owner_key"] = n, hex.EncodeToString(s.public())
		out["v6_prefix"] = netip.PrefixFrom(netip.AddrFrom16([16]byte(append(p[:], make([]byte, 8)...))), 64).String()
	case "issue":
		s, err := seedSigner(*signerSeed, *issuerCert)
		if err != nil {
			fatal("--signer-seed: %v", err)
		}
		id, err := peer.Decode(*peerText)
		if err != nil {
			fatal("--peer %q: %v", *peerText, err)
		}
		r, err := parseRoles(*roles)
		if err != nil {
			fatal("--roles: %v", err)
		}
		life, err := parseLifetime(*lifetime)
		if err != nil {
			fatal("%v", err)
		}
		nb := *notBefore
		if nb == 0 {
			nb = nowUnix()
		}
		o, err := deriveOverlay([]byte(id), *nid, 0)
		if err != nil {
			fatal("%v", err)
		}
		v4, v6 := o.IPv4, o.IPv6
		if *ipv4 != "" {
			if v4, err = netip.ParseAddr(*ipv4); err != nil || !v4.Is4() {
				fatal("--ipv4 %q is not an IPv4 address", *ipv4)
			}
		}
		if *ipv6 != "" {
			if v6, err = netip.ParseAddr(*ipv6); err != nil || !v6.Is6() {
				fatal("--ipv6 %q is not an IPv6 address", *ipv6)
			}
		}
		n := *name
		if n == "" {
			text := id.String()
			n = "peer-" + strings.ToLower(text[len(text)-8:])
		}
		var gs []string
		for _, g := range strings.Split(*groups, ",") {
			if g = strings.TrimSpace(g); g != "" {
				gs = append(gs, g)
			}
		}
		fields := Certificate{
			NetworkID: *nid, PeerID: []byte(id), Name: n, IPv4: v4.AsSlice(), IPv6: v6.AsSlice(), Roles: r,
			Groups: gs, NotBefore: nb, NotAfter: nb + life,
		}
		if *forge { // signed as asked, checked by no one: what a stranger would make for itself
			out["certificate"] = certText(signCertificate(s, &fields))
			break
		}
		data, err := issueCertificate(s, fields)
		if err != nil {
			fatal("%v", err)
		}
		c, _ := openCertificate(data, *nid)
		out = describeCert(c)
		out["certificate"] = certText(data)
	case "revoke":
		s, err := seedSigner(*signerSeed, *issuerCert)
		if err != nil {
			fatal("--signer-seed: %v", err)
		}
		m := map[string]uint64{}
		for _, e := range entries {
			idText, tText, ok := strings.Cut(e, "=")
			id, err := peer.Decode(idText)
			t, err2 := strconv.ParseUint(tText, 10, 64)
			if !ok || err != nil || err2 != nil {
				fatal("--entry %q is not PEER_ID=NOT_BEFORE", e)
			}
			m[string(id)] = t
		}
		data, err := signRevocationList(s, *nid, *seq, m)
		if err != nil {
			fatal("%v", err)
		}
		out["list"], out["seq"], out["entries"] = b64url.EncodeToString(data), *seq, len(m)
	case "verify":
		data, err := certFromText(*certArg)
		if err != nil {
			fatal("--cert: %v", err)
		}
		t := *now
		if t == 0 {
			t = nowUnix()
		}
		set := RevocationSet{Entries: map[string]uint64{}}
		for _, text := range lists {
			raw, err := b64url.DecodeString(text)
			if err != nil {
				fatal("--list is not base64url")
			}
			l, err := openList(raw, *nid, t, set.Entries)
			if err != nil {
				fatal("--list: %v", err)
			}
			set.merge(l)
		}
		var holder []byte
		if *peerText != "" {
			id, err := peer.Decode(*peerText)
			if err != nil {
				fatal("--peer %q: %v", *peerText, err)
			}
			holder = []byte(id)
		}
		c, err := openCertificate(data, *nid)
		if err == nil {
			out = describeCert(c)
			err = checkCert(c, t, set.Entries, holder)
		}
		out["ok"] = err == nil
		if err != nil {
			out["error"] = err.Error()
		}
	default:
		fatal("unknown membership command %q (id, network, issue, revoke, verify)", cmd)
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
