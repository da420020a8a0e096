"""Build TUN offload records the way the Linux kernel hands them to an ``IFF_VNET_HDR`` TUN.

A record is a 10-byte virtio-net header plus one IP packet. Super-packets
have the full length in their IP header, a valid IPv4 header checksum and,
as for any ``NEEDS_CSUM`` packet, only the pseudo-header sum in the TCP/UDP
checksum field (what ``tcp_v4_send_check`` leaves for the device).

Independent of p2pvpn.dataplane.offload on purpose (a plain 16-bit word
loop), so tests can check one against the other.
"""

from __future__ import annotations

import ipaddress
import struct

F_NEEDS_CSUM = 1
GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, GSO_ECN = 1, 4, 5, 0x80
TCP_ACK, TCP_PSH, TCP_FIN, TCP_CWR = 0x10, 0x08, 0x01, 0x80


def ones_sum(data: bytes) -> int:
    """RFC 1071 one's-complement sum with end-around carry, word by word."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header(src: bytes, dst: bytes, protocol: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, protocol, length)
    return src + dst + struct.pack("!I3xB", length, protocol)


def checksum_ok(packet: bytes) -> bool:
    """Whether the IPv4 header checksum (if any) and the TCP/UDP checksum verify."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        if ones_sum(packet[:ihl]) != 0xFFFF:
            return False
        src, dst, protocol, l4 = packet[12:16], packet[16:20], packet[9], ihl
    else:
        src, dst, protocol, l4 = packet[8:24], packet[24:40], packet[6], 40
    segment = packet[l4:]
    if protocol == 17 and segment[6:8] == b"\0\0":
        return False  # we always compute UDP checksums
    return ones_sum(pseudo_header(src, dst, protocol, len(segment)) + segment) == 0xFFFF


def _addresses(src: str, dst: str) -> tuple[int, bytes, bytes]:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    return s.version, s.packed, d.packed


def _ip_header(version: int, src: bytes, dst: bytes, protocol: int, l4_size: int, ip_id: int, options: bytes) -> bytes:
    if version == 4:
        ihl = 20 + len(options)
        header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ihl + l4_size, ip_id, 0x4000, 64, protocol, 0, src, dst)
        header += options
        check = ~ones_sum(header) & 0xFFFF
        return header[:10] + struct.pack("!H", check) + header[12:]
    return struct.pack("!IHBB16s16s", 6 << 28, l4_size, protocol, 64, src, dst)


def tcp_record(
    src: str,
    dst: str,
    payload: bytes,
    gso_size: int = 0,
    *,
    seq: int = 1000,
    ack: int = 1,
    flags: int = TCP_ACK | TCP_PSH,
    tcp_options: bytes = b"",
    ip_options: bytes = b"",
    ip_id: int = 7,
    ecn: bool = False,
) -> bytes:
    """A TCP record: a super-packet if ``gso_size`` (and payload is there), else a NEEDS_CSUM packet."""
    version, s, d = _addresses(src, dst)
    thl = 20 + len(tcp_options)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq & 0xFFFFFFFF, ack, (thl // 4) << 4, flags, 65535, 0, 0)
    tcp += tcp_options
    l4_size = thl + len(payload)
    partial = ones_sum(pseudo_header(s, d, 6, l4_size))  # not complemented: what the kernel leaves
    tcp = tcp[:16] + struct.pack("!H", partial) + tcp[18:]
    ip = _ip_header(version, s, d, 6, l4_size, ip_id, ip_options if version == 4 else b"")
    gso_type = 0
    if gso_size:
        gso_type = (GSO_TCPV4 if version == 4 else GSO_TCPV6) | (GSO_ECN if ecn else 0)
    hdr_len = len(ip) + thl if gso_size else 0
    vnet = struct.pack("<BBHHHH", F_NEEDS_CSUM, gso_type, hdr_len, gso_size, len(ip), 16)
    return vnet + ip + tcp + payload


def udp_record(src: str, dst: str, payload: bytes, gso_size: int = 0, *, ip_id: int = 7) -> bytes:
    """A UDP record: a USO super-packet if ``gso_size``, else a NEEDS_CSUM datagram."""
    version, s, d = _addresses(src, dst)
    l4_size = 8 + len(payload)
    partial = ones_sum(pseudo_header(s, d, 17, l4_size))
    udp = struct.pack("!HHHH", 4000, 5000, l4_size, partial)
    ip = _ip_header(version, s, d, 17, l4_size, ip_id, b"")
    gso_type = GSO_UDP_L4 if gso_size else 0
    hdr_len = len(ip) + 8 if gso_size else 0
    vnet = struct.pack("<BBHHHH", F_NEEDS_CSUM, gso_type, hdr_len, gso_size, len(ip), 6)
    return vnet + ip + udp + payload
