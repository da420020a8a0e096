package main

// AF_PACKET sockets, one per bridged interface, read and written in batches
// with recvmmsg/sendmmsg: per-frame syscalls, not bytes, are what would limit
// a userspace bridge at ~83k frames/s (1 Gbit/s of 1500-byte frames).

import (
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

const rcvBuf = 8 << 20 // bytes; absorbs bursts while a direction is busy sending

type packetSock struct {
	fd      int
	ifname  string
	ifindex int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPacketSock binds a raw socket to ifname: all protocols, promiscuous
// (the frames are addressed to the far end, not to us), our own transmissions
// ignored (PACKET_IGNORE_OUTGOING), so the bridge never loops.
func openPacketSock(ifname string) (*packetSock, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket: %w (needs root or CAP_NET_RAW)", err)
	}
	s := &packetSock{fd: fd, ifname: ifname, ifindex: ifc.Index}
	steps := []struct {
		what string
		do   func() error
	}{
		{"bind", func() error {
			return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index})
		}},
		{"promiscuous", func() error {
			mreq := unix.PacketMreq{Ifindex: int32(ifc.Index), Type: unix.PACKET_MR_PROMISC}
			return unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq)
		}},
		{"PACKET_IGNORE_OUTGOING", func() error {
			return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
		}},
		{"SO_RCVBUFFORCE", func() error {
			return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf)
		}},
		{"SO_SNDBUFFORCE", func() error {
			return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, rcvBuf)
		}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("%s on %s: %w", st.what, ifname, err)
		}
	}
	return s, nil
}

func (s *packetSock) close() { unix.Close(s.fd) }

// kernelDrops is how many frames the kernel dropped because our receive
// buffer was full (PACKET_STATISTICS; reading it resets it).
func (s *packetSock) kernelDrops() uint64 {
	st, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0
	}
	return uint64(st.Drops)
}

// batch is the scatter list of one recvmmsg/sendmmsg call.
type batch struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

func newBatch(n int) *batch {
	b := &batch{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n)}
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.SetIovlen(1)
	}
	return b
}

func (b *batch) set(i int, buf []byte) {
	b.iovs[i].Base = &buf[0]
	b.iovs[i].SetLen(len(buf))
	b.hdrs[i].Hdr.Flags = 0
	b.hdrs[i].Len = 0
}

// recv fills up to n slots without blocking; returns how many (0 if none waits).
// Each slot's length is the frame's real length (MSG_TRUNC), so a frame longer
// than its buffer is recognisable (hdrs[i].Len > buffer).
func (s *packetSock) recv(b *batch, n int) (int, error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&b.hdrs[0])),
			uintptr(n), unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		default:
			return 0, fmt.Errorf("recvmmsg on %s: %w", s.ifname, e)
		}
	}
}

// send transmits the first n slots; returns how many the kernel took before
// an error (the caller counts the first refused one as a send error and
// carries on after it).
func (s *packetSock) send(b *batch, off, n int) (int, error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&b.hdrs[off])),
			uintptr(n), 0, 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		default:
			return 0, e
		}
	}
}
