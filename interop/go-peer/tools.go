package main

// Offline tools for tests: the same record and frame code the peer runs,
// driven by JSON lines on stdin, so the Python tests can check Go against the
// document's test vectors and against Python, case by case, in one process.
//
//   record seal  --seed HEX --network N --seq S --expires E [...]   one sealed record
//   record check --network N --now T      stdin {"key","value"(hex)}  -> {"ok","error","record"}
//   record select --network N --now T     stdin {"key","values"[hex]} -> {"index"}   (-1: none valid)
//     (a node key /node/ or an address key /addr/ of §18.2: each gets its own validator;
//      --owned: a network with an owner, records need their certificate, §15.9.4)
//   frame decode                          stdin {"hex"}                -> {"ok","error","frame"}
//   frame encode                          stdin a frame as JSON        -> {"hex"}

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func recordJSON(r *NodeRecord) map[string]any {
	var addrs, relays []string
	for _, a := range r.Addrs {
		addrs = append(addrs, maString(a))
	}
	for _, a := range r.RelayAddrs {
		relays = append(relays, maString(a))
	}
	id, _ := peer.IDFromBytes(r.PeerID)
	return map[string]any{
		"peer_id": id.String(), "network": r.Network, "seq": r.Seq, "expires_unix": r.ExpiresUnix,
		"ipv4": netip.AddrFrom4([4]byte(r.IPv4)).String(), "ipv6": netip.AddrFrom16([16]byte(r.IPv6)).String(),
		"address_index": r.AddressIndex, "addrs": addrs, "relay_addrs": relays, "relay": r.Relay, "exit": r.Exit,
	}
}

func maString(b []byte) string {
	a, err := ma.NewMultiaddrBytes(b)
	if err != nil {
		return "0x" + hex.EncodeToString(b)
	}
	return a.String()
}

func eachLine(fn func(line []byte) any) {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 8<<20)
	enc := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		_ = enc.Encode(fn(sc.Bytes()))
	}
}

func errJSON(err error) map[string]any { return map[string]any{"ok": false, "error": err.Error()} }

// noRevocations is a reader's empty revocation set in a network with an owner, nil without one.
func noRevocations(owned bool) func() map[string]uint64 {
	if !owned {
		return nil
	}
	return func() map[string]uint64 { return map[string]uint64{} }
}

func runRecordTool(args []string) {
	if len(args) == 0 {
		fatal("record: seal, check or select")
	}
	fs := flag.NewFlagSet("record "+args[0], flag.ExitOnError)
	network := fs.String("network", "default", "network name")
	now := fs.Int64("now", 0, "reader's Unix time")
	owned := fs.Bool("owned", false, "check/select: the network has an owner (records need certificates; no revocations)")
	seed := fs.String("seed", "", "signer's Ed25519 seed, 64 hex digits")
	seq := fs.Uint64("seq", 1, "seq")
	expires := fs.Uint64("expires", 0, "expires_unix")
	index := fs.Uint("index", 0, "first IPv4 candidate to try")
	var addrs, relayAddrs, allow, deny listFlag
	fs.Var(&addrs, "addr", "listen multiaddr (repeatable)")
	fs.Var(&relayAddrs, "relay-addr", "relayed multiaddr (repeatable)")
	relay := fs.String("relay", "", "relay role MAX_RESERVATIONS:MAX_CIRCUITS")
	exit := fs.Bool("exit", false, "exit role on")
	fs.Var(&allow, "exit-allow", "exit allow entry (repeatable)")
	fs.Var(&deny, "exit-deny", "exit deny entry (repeatable)")
	capacity := fs.Uint("exit-capacity", 0, "exit capacity_mbit")
	load := fs.Uint("exit-load", 0, "exit load_permille")
	_ = fs.Parse(args[1:])
	switch args[0] {
	case "seal":
		key, err := identity(*seed)
		if err != nil {
			fatal("%v", err)
		}
		id, _ := peer.IDFromPrivateKey(key)
		ov, err := deriveOverlay([]byte(id), *network, uint32(*index))
		if err != nil {
			fatal("%v", err)
		}
		r := &NodeRecord{PeerID: []byte(id), Network: *network, Seq: *seq, ExpiresUnix: *expires,
			IPv4: ov.IPv4.AsSlice(), IPv6: ov.IPv6.AsSlice(), AddressIndex: ov.Index}
		for _, list := range []struct {
			in  []string
			out *[][]byte
		}{{addrs, &r.Addrs}, {relayAddrs, &r.RelayAddrs}} {
			for _, s := range list.in {
				a, err := ma.NewMultiaddr(s)
				if err != nil {
					fatal("%q: %v", s, err)
				}
				*list.out = append(*list.out, a.Bytes())
			}
		}
		if *relay != "" {
			a, b, _ := strings.Cut(*relay, ":")
			x, _ := strconv.ParseUint(a, 10, 32)
			y, _ := strconv.ParseUint(b, 10, 32)
			r.Relay = &RelayRole{uint32(x), uint32(y)}
		}
		if *exit || len(allow)+len(deny) > 0 {
			r.Exit = &ExitRole{Allow: allow, Deny: deny, CapacityMbit: uint32(*capacity), LoadPermille: uint32(*load)}
		}
		if err := r.checkFields(); err != nil {
			fatal("record: %v", err)
		}
		sealed, err := sealRecord(r, key)
		if err != nil {
			fatal("seal: %v", err)
		}
		_ = json.NewEncoder(os.Stdout).Encode(map[string]any{
			"key": recordKey(*network, id), "value": hex.EncodeToString(sealed), "payload": hex.EncodeToString(r.marshal()),
		})
	case "check":
		v := NodeRecordValidator{Network: *network, Now: func() int64 { return *now }, Revoked: noRevocations(*owned)}
		eachLine(func(line []byte) any {
			var in struct{ Key, Value string }
			if err := json.Unmarshal(line, &in); err != nil {
				return errJSON(err)
			}
			value, err := hex.DecodeString(in.Value)
			if err != nil {
				return errJSON(err)
			}
			open := v.open
			if isAddressKey(in.Key) {
				open = AddressRecordValidator{Records: v}.open
			}
			r, err := open(in.Key, value)
			if err != nil {
				return errJSON(err)
			}
			return map[string]any{"ok": true, "record": recordJSON(r)}
		})
	case "select":
		v := NodeRecordValidator{Network: *network, Now: func() int64 { return *now }, Revoked: noRevocations(*owned)}
		eachLine(func(line []byte) any {
			var in struct {
				Key    string
				Values []string
			}
			if err := json.Unmarshal(line, &in); err != nil {
				return errJSON(err)
			}
			var values [][]byte
			for _, h := range in.Values {
				b, err := hex.DecodeString(h)
				if err != nil {
					return errJSON(err)
				}
				values = append(values, b)
			}
			sel := v.Select
			if isAddressKey(in.Key) {
				sel = AddressRecordValidator{Records: v}.Select
			}
			i, err := sel(in.Key, values)
			if err != nil {
				return map[string]any{"index": -1, "error": err.Error()}
			}
			return map[string]any{"index": i}
		})
	default:
		fatal("record: unknown command %q", args[0])
	}
}

func frameJSON(f Frame) map[string]any {
	switch m := f.(type) {
	case *Hello:
		return map[string]any{"type": "hello", "version": m.Version, "network": m.Network, "ipv4": m.IPv4.String(),
			"ipv6": m.IPv6.String(), "mtu": m.MTU, "capabilities": m.Capabilities, "address_index": m.AddressIndex}
	case *Data:
		var p []string
		for _, x := range m.Packets {
			p = append(p, hex.EncodeToString(x))
		}
		return map[string]any{"type": "data", "packets": p}
	case *Keepalive:
		return map[string]any{"type": "keepalive", "seq": m.Seq, "reply": m.Reply}
	case *Close:
		return map[string]any{"type": "close", "code": m.Code, "reason": m.Reason}
	case *DatagramOffer:
		var eps []string
		for _, e := range m.Endpoints {
			eps = append(eps, offerEndpoint(e).String())
		}
		return map[string]any{"type": "datagram_offer", "epoch": m.Epoch, "public_key": hex.EncodeToString(m.PublicKey),
			"receiver_index": m.ReceiverIndex, "port": m.Port, "endpoints": eps}
	}
	return nil
}

// decodeStream decodes a whole byte string as a frame sequence, like the tunnel reader does.
func decodeStream(b []byte) ([]Frame, error) {
	var out []Frame
	for len(b) > 0 {
		n, m, err := minimalUvarint(b[:min(len(b), 3)])
		if err != nil {
			if len(b) < 3 && b[len(b)-1] >= 0x80 {
				return out, fmt.Errorf("truncated length prefix")
			}
			return out, perr("bad frame length prefix: %v", err)
		}
		if n > maxFrameLen {
			return out, perr("frame length %d over %d", n, maxFrameLen)
		}
		b = b[m:]
		if uint64(len(b)) < n {
			return out, fmt.Errorf("truncated frame")
		}
		f, err := decodeBody(b[:n])
		if err != nil {
			return out, err
		}
		out = append(out, f)
		b = b[n:]
	}
	return out, nil
}

func runFrameTool(args []string) {
	if len(args) == 0 || args[0] != "decode" {
		fatal("frame: decode")
	}
	eachLine(func(line []byte) any {
		var in struct{ Hex string }
		if err := json.Unmarshal(line, &in); err != nil {
			return errJSON(err)
		}
		b, err := hex.DecodeString(in.Hex)
		if err != nil {
			return errJSON(err)
		}
		frames, err := decodeStream(b)
		var list []any
		for _, f := range frames {
			list = append(list, frameJSON(f))
		}
		res := map[string]any{"ok": err == nil, "frames": list}
		if err != nil {
			res["error"] = err.Error()
			if _, proto := err.(*protocolError); !proto {
				res["incomplete"] = true
			}
		}
		return res
	})
}
