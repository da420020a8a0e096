// Command go-peer is a go-libp2p peer for p2pvpn interop tests.
//
//	go-peer dht   [--listen MA]... [--seed HEX] [--network N] [--bootstrap MA]...
//	go-peer relay [--listen MA]... [--seed HEX]
//	go-peer vpn   [--listen MA]... [--seed HEX] [--network N] [--bootstrap MA]... [--peer MA]...
//	              [--mtu 1400] [--keepalive 5s] [--udp-echo-port 7] [--record-ttl 300s] [--allow ID]...
//	              [--cert p2pvpn-cert1:... --network NID [--revocations FILE]]   (an owned network, §15)
//	              [--udp=true] [--rekey-after 120s]
//	              [--relay]   (serve circuit relay v2, offer the relay role; with --cert only if it grants relay)
//	              [--on-demand [--idle-timeout 300s]]   (§18: find members by address record; close idle tunnels)
//	              [--reserve RELAY-MA]... [--holepunch observed|stock]   (behind a NAT: relay slot + DCUtR; punch.go)
//	              [--policy FILE]   (the network policy, §17: text form p2pvpn-policy1:..., re-read when it changes)
//	              [--traffic-to ADDR [--traffic-pings 5] [--traffic-bytes 262144] [--traffic-port 7] [--traffic-path udp]]
//	go-peer probe --addr MA/p2p/ID [--protocol P]... [--listen MA]... [--timeout 10s]
//	go-peer record seal|check|select ...   (see tools.go)
//	go-peer frame decode                  (see tools.go)
//	go-peer membership id|network|issue|revoke|verify ...   (see memtool.go)
//	go-peer policy check|filter           (see policytool.go)
//
// Every long-running mode prints {"event":"ready",...} with its peer ID and
// multiaddrs on stdout when it is ready, then one JSON event per line; SIGUSR1
// prints {"event":"stats"}; SIGINT/SIGTERM stop it. Written from
// docs/protocol.md: see interop/README.md.
package main

import (
	"context"
	"flag"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

func main() {
	if len(os.Args) < 2 {
		fatal("usage: go-peer dht|relay|vpn|probe|record|frame [flags]")
	}
	mode, args := os.Args[1], os.Args[2:]
	switch mode {
	case "record":
		runRecordTool(args)
		return
	case "frame":
		runFrameTool(args)
		return
	case "membership":
		runMembershipTool(args)
		return
	case "policy":
		runPolicyTool(args)
		return
	case "dht", "relay", "vpn", "probe":
	default:
		fatal("unknown mode %q", mode)
	}

	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	var listen, bootstrap, peers, allow, protocols, reserve, trafficTo listFlag
	fs.Var(&listen, "listen", "multiaddr to listen on (repeatable)")
	fs.Var(&bootstrap, "bootstrap", "DHT bootstrap peer multiaddr with /p2p (repeatable)")
	fs.Var(&peers, "peer", "vpn: peer to keep a tunnel to, multiaddr with /p2p (repeatable)")
	fs.Var(&allow, "allow", "vpn: accept tunnels only from these peer IDs (default: any peer of the network)")
	fs.Var(&protocols, "protocol", "probe: protocol to open a stream for (repeatable)")
	fs.Var(&reserve, "reserve", "vpn: relay to hold a slot on, multiaddr with /p2p (repeatable); turns on DCUtR hole punching")
	seed := fs.String("seed", "", "Ed25519 seed, 64 hex digits (default: a fresh key)")
	holepunchMode := fs.String("holepunch", "observed", "vpn --reserve: observed (our service, offers observed addresses) or stock (libp2p.EnableHolePunching)")
	network := fs.String("network", "default", "p2pvpn network name")
	mtu := fs.Uint("mtu", 1400, "vpn: MTU announced in Hello")
	keepalive := fs.Duration("keepalive", 5*time.Second, "vpn: keepalive interval (timeout: 4x)")
	udpPort := fs.Uint("udp-echo-port", 7, "vpn: UDP port answered with an echo")
	ttl := fs.Duration("record-ttl", defaultTTL*time.Second, "vpn: lifetime of our published record")
	dhtMode := fs.String("dht", "server", "vpn: DHT mode, server or client")
	udp := fs.Bool("udp", true, "vpn: announce udp/1 and use the datagram path (§16)")
	fs.Var(&trafficTo, "traffic-to", "vpn: overlay address to send our own traffic to (pings, then a UDP echo transfer; repeatable)")
	trafficPings := fs.Int("traffic-pings", 5, "vpn: echo requests --traffic-to sends")
	trafficBytes := fs.Int("traffic-bytes", 256*1024, "vpn: bytes --traffic-to transfers through a UDP echo server")
	trafficPort := fs.Uint("traffic-port", 7, "vpn: the UDP echo port at --traffic-to")
	trafficPath := fs.String("traffic-path", pathUDP, "vpn: start --traffic-to once the path is udp, or any")
	trafficOnSignal := fs.Bool("traffic-on-usr2", false, "vpn: send --traffic-to's traffic on each SIGUSR2 instead of once at start")
	rekeyAfter := fs.Duration("rekey-after", rekeyAfterTime, "vpn: as tunnel initiator, start a new datagram key epoch this often")
	addr := fs.String("addr", "", "probe: peer to dial, multiaddr with /p2p")
	certText := fs.String("cert", "", "vpn: our membership certificate, p2pvpn-cert1:... (--network is then the network ID)")
	onDemand := fs.Bool("on-demand", false, "vpn: find --traffic-to's member by its address record in the DHT and dial it (§18)")
	offerRelay := fs.Bool("relay", false, "vpn: serve circuit relay v2 and offer the relay role in our record (§13.2); with --cert only if it grants relay")
	idleTimeout := fs.Duration("idle-timeout", defaultIdleTimeout, "vpn --on-demand: close a tunnel we opened after this long without traffic (§18.4)")
	owned := fs.Bool("owned", false, "dht: the network has an owner (--network is its ID): records need certificates (§15.9.4)")
	policyFile := fs.String("policy", "", "vpn --cert: the policy file (§17.4): read when it changes, better policies saved there")
	revFile := fs.String("revocations", "", "vpn: file of base64url revocation lists, one a line, re-read when it changes")
	timeout := fs.Duration("timeout", 10*time.Second, "probe: give up after this long")
	_ = fs.Parse(args)
	if len(listen) == 0 && mode != "probe" {
		listen = listFlag{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	}

	key, err := identity(*seed)
	if err != nil {
		fatal("%v", err)
	}
	var extra []libp2p.Option
	if mode == "probe" { // the probe may be given a /p2p-circuit address: it needs the relay client transport
		extra = append(extra, libp2p.EnableRelay())
	}
	if len(reserve) > 0 {
		if *holepunchMode != "observed" && *holepunchMode != "stock" {
			fatal("--holepunch must be observed or stock")
		}
		extra = append(extra, punchHostOptions(*holepunchMode == "stock")...)
	}
	h, err := newHost(key, listen, extra...)
	if err != nil {
		fatal("starting host: %v", err)
	}
	defer h.Close()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	if mode == "probe" {
		if !runProbe(ctx, h, *addr, protocols, *timeout) {
			os.Exit(1)
		}
		return
	}

	bootInfos, err := parsePeerAddrs(bootstrap)
	if err != nil {
		fatal("--bootstrap: %v", err)
	}
	ready := map[string]any{"mode": mode, "peer_id": h.ID().String(), "addrs": fullAddrs(h)}
	var statsFn func() map[string]any
	var traffic []*trafficGen

	switch mode {
	case "relay":
		if _, err := startRelay(h); err != nil {
			fatal("relay: %v", err)
		}
	case "dht":
		var revoked func() map[string]uint64
		if *owned { // a bare DHT server knows no revocation list: its set R is empty
			if !networkIDRe.MatchString(*network) {
				fatal("--owned needs --network to be the network ID (32 characters a-z2-7)")
			}
			revoked = func() map[string]uint64 { return map[string]uint64{} }
		}
		d, err := newDHT(h, *network, true, revoked)
		if err != nil {
			fatal("dht: %v", err)
		}
		defer d.Close()
		bootstrapDHT(ctx, h, d, bootInfos)
		ready["network"] = *network
		statsFn = func() map[string]any { return map[string]any{"routing_table": d.RoutingTable().Size()} }
	case "vpn":
		if *mtu < minMTU || *mtu > maxMTU {
			fatal("--mtu must be within %d..%d", minMTU, maxMTU)
		}
		if !networkRe.MatchString(*network) {
			fatal("--network must be [A-Za-z0-9._-]{1,64}")
		}
		self, err := deriveOverlay([]byte(h.ID()), *network, 0)
		if err != nil {
			fatal("%v", err)
		}
		v := &VPN{
			h: h, network: *network, self: self, mtu: uint32(*mtu), keepalive: *keepalive,
			allowAny: len(allow) == 0, allow: map[peer.ID]bool{},
			resp:  &Responder{self: self, udpPort: uint16(*udpPort)},
			peers: map[peer.ID]*vpnPeer{}, counters: map[string]uint64{}, static: map[peer.ID]bool{},
		}
		for _, a := range allow {
			id, err := peer.Decode(a)
			if err != nil {
				fatal("--allow %q: %v", a, err)
			}
			v.allow[id] = true
		}
		if *certText != "" { // §15: the certificate decides our addresses
			if v.member, err = newMember(v, *network, *certText, *revFile); err != nil {
				fatal("--cert: %v", err)
			}
			v.self = v.member.overlay()
			v.resp.self = v.self
			go v.member.run(ctx)
		}
		if *offerRelay {
			var own *Certificate
			if v.member != nil {
				own = v.member.own
			}
			if err := checkOwnRoles(own, true); err != nil {
				fatal("--relay: %v", err)
			}
			if _, err := startRelay(h); err != nil {
				fatal("relay: %v", err)
			}
			v.relay = relayRole()
			ready["relay"] = v.relay
		}
		if *udp {
			if v.dg, err = listenUDP(v, *rekeyAfter); err != nil {
				fatal("udp: %v", err)
			}
			defer v.dg.conn.Close()
			ready["udp_port"] = v.dg.port
		}
		if v.member != nil { // §17: the network policy, from pushes, the DHT and --policy
			v.policy = newPolicyService(v, v.member, *policyFile)
			go v.policy.run(ctx)
		} else if *policyFile != "" {
			fatal("--policy needs --cert (a policy belongs to a network with an owner)")
		}
		for _, to := range trafficTo {
			dst, err := netip.ParseAddr(to)
			if err != nil || *trafficPort < 1 || *trafficPort > 65535 || (*trafficPath != pathUDP && *trafficPath != "any") {
				fatal("--traffic-to needs an IP address, --traffic-port 1..65535, --traffic-path udp|any")
			}
			g := newTrafficGen(v, dst, *trafficPings, *trafficBytes, uint16(*trafficPort), *trafficPath)
			v.traffic = append(v.traffic, g)
			if !*trafficOnSignal {
				go g.run(ctx) // it waits for the tunnel
			}
		}
		h.SetStreamHandler(tunnelProtocol, v.handleStream)
		peerInfos, err := parsePeerAddrs(peers)
		if err != nil {
			fatal("--peer: %v", err)
		}
		for _, info := range peerInfos {
			v.static[info.ID] = true
			go v.dialLoop(ctx, info)
		}
		ready["network"], ready["ipv4"], ready["ipv6"] = *network, v.self.IPv4.String(), v.self.IPv6.String()
		statsFn, traffic = v.stats, v.traffic
		if len(reserve) > 0 {
			relays, err := parsePeerAddrs(reserve)
			if err != nil {
				fatal("--reserve: %v", err)
			}
			p, err := startPunch(ctx, h, v, relays, *holepunchMode == "stock")
			if err != nil {
				fatal("hole punching: %v", err)
			}
			statsFn = func() map[string]any { st := v.stats(); st["punch"] = p.describe(); return st }
		}
		if *onDemand && *dhtMode == "off" {
			fatal("--on-demand needs the DHT")
		}
		if *dhtMode != "off" {
			var revoked func() map[string]uint64
			if v.member != nil {
				revoked = v.member.revoked
			}
			d, err := newDHT(h, *network, *dhtMode == "server", revoked)
			if err != nil {
				fatal("dht: %v", err)
			}
			defer d.Close()
			bootstrapDHT(ctx, h, d, bootInfos)
			go publishLoop(ctx, h, d, key, v, *ttl, *onDemand)
			if *onDemand {
				v.demand.Store(&demand{v: v, d: d, cache: map[netip.Addr][]byte{}})
				tr, err := newIdleTracker[*tunnel](*idleTimeout)
				if err != nil {
					fatal("--idle-timeout: %v", err)
				}
				go v.idleLoop(ctx, tr)
				ready["idle_timeout"] = idleTimeout.Seconds()
			}
			if v.member != nil {
				go v.member.dhtLoop(ctx, d)
				go v.policy.dhtLoop(ctx, d)
			}
		}
	}

	emit("ready", ready)
	usr1, usr2 := make(chan os.Signal, 1), make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	signal.Notify(usr2, syscall.SIGUSR2)
	for {
		select {
		case <-ctx.Done():
			if statsFn != nil {
				emit("stats", statsFn())
			}
			emit("stopped", nil)
			return
		case <-usr2: // one more round of --traffic-to (runs one at a time)
			for _, g := range traffic {
				go g.run(ctx)
			}
		case <-usr1:
			st := map[string]any{}
			if statsFn != nil {
				st = statsFn()
			}
			emit("stats", st)
		}
	}
}
