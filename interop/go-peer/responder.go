package main

// A userspace responder standing in for a TUN and a kernel: it answers ICMP
// echo, ICMPv6 echo and UDP echo (one port) sent to our own overlay
// addresses. Sans-IO: a packet in, a reply packet (or nil) and a verdict out.
// Every packet is checked the way a kernel would (lengths, header and
// transport checksums), so a peer that sends broken packets is caught here.

import (
	"encoding/binary"
	"net/netip"
)

const (
	protoICMP   = 1
	protoUDP    = 17
	protoICMPv6 = 58
	replyTTL    = 64
)

// Verdicts (counters) for a delivered packet.
const (
	vEchoICMP4   = "echo_icmp4"
	vEchoICMP6   = "echo_icmp6"
	vEchoUDP4    = "echo_udp4"
	vEchoUDP6    = "echo_udp6"
	vNotForUs    = "not_for_us"
	vBadChecksum = "bad_checksum"
	vBadLength   = "bad_length"
	vFragment    = "fragment"
	vUnhandled   = "unhandled"
)

type Responder struct {
	self    Overlay
	udpPort uint16
}

// checksum is the Internet checksum (RFC 1071) of data, starting from sum.
func checksum(sum uint32, data []byte) uint16 {
	for len(data) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(data))
		data = data[2:]
	}
	if len(data) == 1 {
		sum += uint32(data[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// pseudoSum is the partial sum of an IPv4 or IPv6 pseudo header.
func pseudoSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	sum += uint32(proto)
	sum += uint32(length) >> 16
	sum += uint32(length) & 0xffff
	return sum
}

// Handle answers one packet that passed the tunnel's checks (§7.3).
func (r *Responder) Handle(pkt []byte) ([]byte, string) {
	switch pkt[0] >> 4 {
	case 4:
		return r.handle4(pkt)
	case 6:
		return r.handle6(pkt)
	}
	return nil, vUnhandled
}

func (r *Responder) handle4(pkt []byte) ([]byte, string) {
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if ihl < 20 || total < ihl || total > len(pkt) {
		return nil, vBadLength
	}
	pkt = pkt[:total]
	if checksum(0, pkt[:ihl]) != 0 {
		return nil, vBadChecksum
	}
	src := netip.AddrFrom4([4]byte(pkt[12:16]))
	dst := netip.AddrFrom4([4]byte(pkt[16:20]))
	if dst != r.self.IPv4 {
		return nil, vNotForUs
	}
	if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // MF or a fragment offset
		return nil, vFragment
	}
	body := pkt[ihl:]
	switch pkt[9] {
	case protoICMP:
		if len(body) < 8 {
			return nil, vBadLength
		}
		if checksum(0, body) != 0 {
			return nil, vBadChecksum
		}
		if body[0] != 8 || body[1] != 0 { // echo request
			return nil, vUnhandled
		}
		reply := append([]byte{0, 0, 0, 0}, body[4:]...)
		binary.BigEndian.PutUint16(reply[2:], checksum(0, reply))
		return ipv4Packet(dst, src, protoICMP, reply), vEchoICMP4
	case protoUDP:
		payload, ok, verdict := r.udpEcho(src, dst, body)
		if !ok {
			return nil, verdict
		}
		return ipv4Packet(dst, src, protoUDP, payload), vEchoUDP4
	}
	return nil, vUnhandled
}

func (r *Responder) handle6(pkt []byte) ([]byte, string) {
	plen := int(binary.BigEndian.Uint16(pkt[4:6]))
	if 40+plen > len(pkt) {
		return nil, vBadLength
	}
	pkt = pkt[:40+plen]
	src := netip.AddrFrom16([16]byte(pkt[8:24]))
	dst := netip.AddrFrom16([16]byte(pkt[24:40]))
	if dst != r.self.IPv6 {
		return nil, vNotForUs
	}
	body := pkt[40:]
	switch pkt[6] { // no extension headers: echo traffic does not use them
	case protoICMPv6:
		if len(body) < 8 {
			return nil, vBadLength
		}
		if checksum(pseudoSum(src, dst, protoICMPv6, len(body)), body) != 0 {
			return nil, vBadChecksum
		}
		if body[0] != 128 || body[1] != 0 { // echo request
			return nil, vUnhandled
		}
		reply := append([]byte{129, 0, 0, 0}, body[4:]...)
		binary.BigEndian.PutUint16(reply[2:], checksum(pseudoSum(dst, src, protoICMPv6, len(reply)), reply))
		return ipv6Packet(dst, src, protoICMPv6, reply), vEchoICMP6
	case protoUDP:
		payload, ok, verdict := r.udpEcho(src, dst, body)
		if !ok {
			return nil, verdict
		}
		return ipv6Packet(dst, src, protoUDP, payload), vEchoUDP6
	}
	return nil, vUnhandled
}

// udpEcho returns the UDP datagram answering body (a datagram to our echo port).
func (r *Responder) udpEcho(src, dst netip.Addr, body []byte) ([]byte, bool, string) {
	if len(body) < 8 || int(binary.BigEndian.Uint16(body[4:6])) != len(body) {
		return nil, false, vBadLength
	}
	sum := binary.BigEndian.Uint16(body[6:8])
	if (sum != 0 || dst.Is6()) && checksum(pseudoSum(src, dst, protoUDP, len(body)), body) != 0 {
		return nil, false, vBadChecksum // (a zero checksum means "none" over IPv4 only)
	}
	if binary.BigEndian.Uint16(body[2:4]) != r.udpPort {
		return nil, false, vUnhandled
	}
	reply := make([]byte, len(body))
	copy(reply, body)
	copy(reply[0:2], body[2:4])
	copy(reply[2:4], body[0:2])
	reply[6], reply[7] = 0, 0
	c := checksum(pseudoSum(dst, src, protoUDP, len(reply)), reply)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(reply[6:], c)
	return reply, true, ""
}

func ipv4Packet(src, dst netip.Addr, proto uint8, body []byte) []byte {
	p := make([]byte, 20+len(body))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[6:], 0x4000) // DF
	p[8] = replyTTL
	p[9] = proto
	copy(p[12:16], src.AsSlice())
	copy(p[16:20], dst.AsSlice())
	binary.BigEndian.PutUint16(p[10:], checksum(0, p[:20]))
	copy(p[20:], body)
	return p
}

func ipv6Packet(src, dst netip.Addr, proto uint8, body []byte) []byte {
	p := make([]byte, 40+len(body))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(len(body)))
	p[6] = proto
	p[7] = replyTTL
	copy(p[8:24], src.AsSlice())
	copy(p[24:40], dst.AsSlice())
	copy(p[40:], body)
	return p
}
