package main

// The tunnel stream's byte format, docs/protocol.md §4-§5: frames are
// uvarint(len) || protobuf Frame, with the limits of §4.1. Sans-IO: bytes in,
// typed frames or a *protocolError out.

import (
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/encoding/protowire"
)

const (
	tunnelProtocol     = "/p2pvpn/tunnel/1.0.0"
	protocolVersion    = 1
	maxFrameLen        = 262144
	maxPacketsPerFrame = 1024
	maxPacketLen       = 65535
	maxNetworkLen      = 64
	maxCapabilities    = 32
	maxCapabilityLen   = 64
	maxReasonLen       = 256
	maxCertificateLen  = 4096 // Hello.certificate (§5.2, §15.9.1)
	minMTU             = 1280
	maxMTU             = 65535
)

// Close codes, §8.
const (
	closeNormal          = 0
	closeProtocolError   = 1
	closeVersionMismatch = 2
	closeWrongNetwork    = 3
	closeAddressMismatch = 4
	closeDuplicate       = 5
	closeNotAuthorized   = 6
	closeTimeout         = 7
	closeHelloTimeout    = 8
	closeIdle            = 9 // an on-demand tunnel carried no traffic for the idle timeout (§18.4)
)

var closeNames = map[uint32]string{
	closeNormal: "NORMAL", closeProtocolError: "PROTOCOL_ERROR", closeVersionMismatch: "VERSION_MISMATCH",
	closeWrongNetwork: "WRONG_NETWORK", closeAddressMismatch: "ADDRESS_MISMATCH", closeDuplicate: "DUPLICATE",
	closeNotAuthorized: "NOT_AUTHORIZED", closeTimeout: "TIMEOUT",
	closeHelloTimeout: "HELLO_TIMEOUT", closeIdle: "IDLE",
}

func closeName(code uint32) string {
	if n, ok := closeNames[code]; ok {
		return n
	}
	return fmt.Sprintf("code-%d", code)
}

// protocolError is a frame that breaks §4/§5; the tunnel sends Close(code) and resets.
type protocolError struct {
	code uint32
	msg  string
}

func (e *protocolError) Error() string { return e.msg }

func perr(format string, args ...any) error {
	return &protocolError{code: closeProtocolError, msg: fmt.Sprintf(format, args...)}
}

type Hello struct {
	Version      uint32
	Network      string
	IPv4         netip.Addr
	IPv6         netip.Addr
	MTU          uint32
	Capabilities []string
	AddressIndex uint32
	Certificate  []byte // a SignedCertificate, with capability membership/1 (§15.9.1)
}

type Data struct{ Packets [][]byte }

type Keepalive struct {
	Seq   uint64
	Reply bool
}

type Close struct {
	Code   uint32
	Reason string
}

// Frame is exactly one of *Hello, *Data, *Keepalive, *Close, *DatagramOffer.
type Frame any

const (
	frameHello     = 1
	frameData      = 2
	frameKeepalive = 3
	frameClose     = 4
)

// encodeFrame returns uvarint(len(body)) || body for one frame, fields in number order.
func encodeFrame(f Frame) []byte {
	var inner pbWriter
	var member protowire.Number
	switch m := f.(type) {
	case *Hello:
		member = frameHello
		inner.varint(1, uint64(m.Version))
		inner.bytes(2, []byte(m.Network))
		inner.bytes(3, m.IPv4.AsSlice())
		inner.bytes(4, m.IPv6.AsSlice())
		inner.varint(5, uint64(m.MTU))
		for _, c := range m.Capabilities {
			inner.repeated(6, []byte(c))
		}
		inner.varint(7, uint64(m.AddressIndex))
		inner.bytes(8, m.Certificate)
	case *Data:
		member = frameData
		for _, p := range m.Packets {
			inner.repeated(1, p)
		}
	case *Keepalive:
		member = frameKeepalive
		inner.varint(1, m.Seq)
		inner.bool(2, m.Reply)
	case *Close:
		member = frameClose
		inner.varint(1, uint64(m.Code))
		inner.bytes(2, []byte(m.Reason))
	case *DatagramOffer:
		member = frameDatagramOffer
		encodeDatagramOffer(&inner, m)
	default:
		panic(fmt.Sprintf("encodeFrame: %T", f))
	}
	var body pbWriter
	body.repeated(member, inner.b) // a oneof member is on the wire even when empty (§5.1)
	out := protowire.AppendVarint(nil, uint64(len(body.b)))
	return append(out, body.b...)
}

// decodeBody parses one Frame body (without its length prefix) and checks §4.1.
func decodeBody(body []byte) (Frame, error) {
	var member protowire.Number
	var inner []byte
	err := pbWalk(body, func(f pbField) error {
		if f.typ != protowire.BytesType || f.num < frameHello || f.num > frameDatagramOffer {
			return nil // unknown field, or a known number with another wire type
		}
		if f.num != member { // a later oneof member replaces an earlier one
			member, inner = f.num, nil
		}
		inner = append(inner, f.bytes...) // repeated occurrences of one member merge
		return nil
	})
	if err != nil {
		return nil, perr("%d-byte frame is not a valid protobuf Frame", len(body))
	}
	switch member {
	case frameHello:
		return decodeHello(inner)
	case frameData:
		return decodeData(inner)
	case frameKeepalive:
		k := &Keepalive{}
		err := pbWalk(inner, func(f pbField) error {
			if f.typ == protowire.VarintType {
				switch f.num {
				case 1:
					k.Seq = f.varint
				case 2:
					k.Reply = f.varint != 0
				}
			}
			return nil
		})
		if err != nil {
			return nil, perr("Keepalive is not valid protobuf")
		}
		return k, nil
	case frameClose:
		c := &Close{}
		err := pbWalk(inner, func(f pbField) error {
			switch {
			case f.num == 1 && f.typ == protowire.VarintType:
				c.Code = uint32(f.varint)
			case f.num == 2 && f.typ == protowire.BytesType:
				s, err := pbString("Close.reason", f.bytes)
				if err != nil {
					return err
				}
				c.Reason = s
			}
			return nil
		})
		if err != nil {
			return nil, perr("Close is not valid: %v", err)
		}
		if len(c.Reason) > maxReasonLen {
			return nil, perr("Close reason is %d bytes, over %d", len(c.Reason), maxReasonLen)
		}
		return c, nil
	case frameDatagramOffer: // §16; the tunnel refuses it unless we announced udp/1
		return decodeDatagramOffer(inner)
	}
	return nil, perr("frame carries no known message (Hello, Data, Keepalive or Close)")
}

func decodeHello(b []byte) (*Hello, error) {
	h := &Hello{}
	var v4, v6 []byte
	err := pbWalk(b, func(f pbField) error {
		if f.typ == protowire.VarintType {
			switch f.num {
			case 1:
				h.Version = uint32(f.varint)
			case 5:
				h.MTU = uint32(f.varint)
			case 7:
				h.AddressIndex = uint32(f.varint)
			}
			return nil
		}
		if f.typ != protowire.BytesType {
			return nil
		}
		switch f.num {
		case 2:
			s, err := pbString("Hello.network", f.bytes)
			if err != nil {
				return err
			}
			h.Network = s
		case 3:
			v4 = f.bytes
		case 4:
			v6 = f.bytes
		case 6:
			s, err := pbString("Hello.capabilities", f.bytes)
			if err != nil {
				return err
			}
			h.Capabilities = append(h.Capabilities, s)
		case 8:
			h.Certificate = f.bytes
		}
		return nil
	})
	if err != nil {
		return nil, perr("Hello is not valid: %v", err)
	}
	if len(v4) != 4 {
		return nil, perr("Hello ipv4 is %d bytes, expected 4", len(v4))
	}
	if len(v6) != 16 {
		return nil, perr("Hello ipv6 is %d bytes, expected 16", len(v6))
	}
	h.IPv4 = netip.AddrFrom4([4]byte(v4))
	h.IPv6 = netip.AddrFrom16([16]byte(v6))
	if len(h.Network) > maxNetworkLen {
		return nil, perr("Hello network is %d bytes, over %d", len(h.Network), maxNetworkLen)
	}
	if len(h.Certificate) > maxCertificateLen {
		return nil, perr("Hello certificate is %d bytes, over %d", len(h.Certificate), maxCertificateLen)
	}
	if len(h.Capabilities) > maxCapabilities {
		return nil, perr("Hello has %d capabilities, over %d", len(h.Capabilities), maxCapabilities)
	}
	for _, c := range h.Capabilities {
		if len(c) > maxCapabilityLen {
			return nil, perr("Hello capability is %d bytes, over %d", len(c), maxCapabilityLen)
		}
	}
	return h, nil
}

func decodeData(b []byte) (*Data, error) {
	d := &Data{}
	err := pbWalk(b, func(f pbField) error {
		if f.num == 1 && f.typ == protowire.BytesType {
			if len(d.Packets) == maxPacketsPerFrame {
				return fmt.Errorf("more than %d packets", maxPacketsPerFrame)
			}
			d.Packets = append(d.Packets, f.bytes)
		}
		return nil
	})
	if err != nil {
		return nil, perr("Data is not valid: %v", err)
	}
	if len(d.Packets) == 0 {
		return nil, perr("Data frame has no packets")
	}
	for _, p := range d.Packets {
		if len(p) == 0 || len(p) > maxPacketLen {
			return nil, perr("Data packet of %d bytes, must be 1..%d", len(p), maxPacketLen)
		}
	}
	return d, nil
}
