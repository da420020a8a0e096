package main

// The probe mode: dial one peer, report what was negotiated (transport,
// security, muxer), which protocols it announces via identify, and whether
// streams for the requested protocols could be opened.

import (
	"context"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
)

func runProbe(ctx context.Context, h host.Host, target string, protocols []string, timeout time.Duration) bool {
	infos, err := parsePeerAddrs([]string{target})
	if err != nil {
		emit("probe", map[string]any{"ok": false, "error": err.Error()})
		return false
	}
	info := infos[0]
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := h.Connect(ctx, info); err != nil {
		emit("probe", map[string]any{"ok": false, "peer": info.ID.String(), "error": err.Error()})
		return false
	}
	conns := h.Network().ConnsToPeer(info.ID)
	if len(conns) == 0 {
		emit("probe", map[string]any{"ok": false, "peer": info.ID.String(), "error": "no connection after dial"})
		return false
	}
	conn := conns[0]
	result := connInfo(conn)
	if ids, ok := h.(interface{ IDService() identify.IDService }); ok {
		select {
		case <-ids.IDService().IdentifyWait(conn):
		case <-ctx.Done():
		}
	}
	announced, _ := h.Peerstore().GetProtocols(info.ID)
	result["protocols"] = announced
	agent, _ := h.Peerstore().Get(info.ID, "AgentVersion")
	result["agent"] = agent
	streams := map[string]any{}
	ok := true
	for _, p := range protocols {
		// A relayed connection may be limited (the relay set a time/byte limit): allow streams on it anyway.
		s, err := h.NewStream(network.WithAllowLimitedConn(ctx, "probe"), info.ID, protocol.ID(p))
		if err != nil {
			streams[p] = map[string]any{"ok": false, "error": err.Error()}
			ok = false
			continue
		}
		streams[p] = map[string]any{"ok": true, "negotiated": string(s.Protocol())}
		_ = s.Reset()
	}
	result["streams"] = streams
	result["ok"] = ok
	result["relayed"] = conn.Stat().Limited || isCircuit(conn.RemoteMultiaddr().String())
	emit("probe", result)
	return ok
}

func isCircuit(addr string) bool {
	return strings.Contains(addr, "/p2p-circuit")
}
