package main

// go-peer policy ...: Go's verdicts on policies (§17.3) and packets (§17.5), one JSON line in,
// one out, so that tests compare them with the reference's case by case.
//
//	go-peer policy check  stdin {"network","now","policy" (hex),"revoked"?: {peer ID hex: T}} -> {"ok","error","seq"}
//	go-peer policy filter stdin {"network","self" (peer ID hex),"groups","peer_groups": {hex: [..]},"max_flows"?,
//	                             "steps": [{"policy": hex} | {"in": packet hex, "peer": hex, "t": s} |
//	                                       {"out": packet hex, "t": s}]} -> {"verdicts": ["" | reason, ...], "status"}

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func runPolicyTool(args []string) {
	if len(args) != 1 || (args[0] != "check" && args[0] != "filter") {
		fatal("usage: go-peer policy check|filter < JSON lines")
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var answer any
		if args[0] == "check" {
			answer = policyCheckLine(in.Bytes())
		} else {
			answer = policyFilterLine(in.Bytes())
		}
		if err := out.Encode(answer); err != nil {
			fatal("writing: %v", err)
		}
	}
	if err := in.Err(); err != nil {
		fatal("reading: %v", err)
	}
}

func hexKeys(m map[string]uint64) (map[string]uint64, error) {
	out := map[string]uint64{}
	for k, v := range m {
		b, err := hex.DecodeString(k)
		if err != nil {
			return nil, err
		}
		out[string(b)] = v
	}
	return out, nil
}

func policyCheckLine(line []byte) any {
	var in struct {
		Network string            `json:"network"`
		Now     uint64            `json:"now"`
		Policy  string            `json:"policy"`
		Revoked map[string]uint64 `json:"revoked"`
	}
	if err := json.Unmarshal(line, &in); err != nil {
		return map[string]any{"ok": false, "error": "bad input line: " + err.Error()}
	}
	data, err := hex.DecodeString(in.Policy)
	if err != nil {
		return map[string]any{"ok": false, "error": "policy is not hex"}
	}
	r, err := hexKeys(in.Revoked)
	if err != nil {
		return map[string]any{"ok": false, "error": "revoked: keys are not hex"}
	}
	p, err := openPolicy(data, in.Network, in.Now, r)
	if err != nil {
		return map[string]any{"ok": false, "error": err.Error()}
	}
	return map[string]any{"ok": true, "seq": p.Seq, "rules": len(p.Rules)}
}

func policyFilterLine(line []byte) any {
	var in struct {
		Network    string              `json:"network"`
		Self       string              `json:"self"`
		Groups     []string            `json:"groups"`
		PeerGroups map[string][]string `json:"peer_groups"`
		MaxFlows   int                 `json:"max_flows"`
		Steps      []struct {
			Policy string  `json:"policy"`
			In     string  `json:"in"`
			Out    string  `json:"out"`
			Peer   string  `json:"peer"`
			T      float64 `json:"t"`
		} `json:"steps"`
	}
	if err := json.Unmarshal(line, &in); err != nil {
		return map[string]any{"error": "bad input line: " + err.Error()}
	}
	self, _ := hex.DecodeString(in.Self)
	groups := map[peer.ID][]string{}
	for k, g := range in.PeerGroups {
		id, _ := hex.DecodeString(k)
		groups[peer.ID(id)] = g
	}
	fw := newFirewall(peer.ID(self), in.Groups, func(id peer.ID) []string { return groups[id] })
	if in.MaxFlows > 0 {
		fw.max = in.MaxFlows
	}
	t0 := time.Unix(1767225600, 0)
	verdicts := []any{}
	for _, st := range in.Steps {
		now := t0.Add(time.Duration(st.T * float64(time.Second)))
		switch {
		case st.Policy != "":
			data, _ := hex.DecodeString(st.Policy)
			p, err := openPolicyBytes(data, in.Network)
			if err != nil {
				return map[string]any{"error": "policy step: " + err.Error()}
			}
			fw.setPolicy(p)
			verdicts = append(verdicts, nil)
		case st.In != "":
			pkt, _ := hex.DecodeString(st.In)
			from, _ := hex.DecodeString(st.Peer)
			verdicts = append(verdicts, fw.inbound(peer.ID(from), pkt, now))
		default:
			pkt, _ := hex.DecodeString(st.Out)
			fw.outbound(pkt, now)
			verdicts = append(verdicts, nil)
		}
	}
	return map[string]any{"verdicts": verdicts, "status": fw.status()}
}
