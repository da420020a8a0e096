package main

// One push of a signed object (revocation list §15.9.3, policy §17.4) on its
// own stream: write one uvarint-framed message, read one framed answer
// (status = field 1, message = field 2). Shared by Member and PolicyService.

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
	"google.golang.org/protobuf/encoding/protowire"
)

// pushSigned sends msg (already framed by the caller's writeMsg rules) to
// peer `to` on protocol proto and returns the answer's status and message;
// the whole exchange is bounded by pushTimeout.
func pushSigned(ctx context.Context, h host.Host, to peer.ID, proto protocol.ID, msg []byte, maxAnswer int) (uint64, string, error) {
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	s, err := h.NewStream(ctx, to, proto)
	if err != nil {
		return 0, "", err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(pushTimeout))
	if err := writeMsg(s, msg); err != nil {
		return 0, "", err
	}
	answer, err := msgio.NewVarintReaderSize(s, maxAnswer).ReadMsg()
	if err != nil {
		return 0, "", err
	}
	var status uint64
	var text string
	err = pbWalk(answer, func(f pbField) error {
		if f.num == 1 && f.typ == protowire.VarintType {
			status = f.varint
		}
		if f.num == 2 && f.typ == protowire.BytesType {
			text = string(f.bytes)
		}
		return nil
	})
	return status, text, err
}
