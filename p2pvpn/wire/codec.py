"""Tunnel frames: typed messages in, bytes out; bytes in, typed messages out.

This module is the whole wire format of the ``/p2pvpn/tunnel/1.0.0`` stream
(docs/protocol.md, "Framing" and "Messages"). It is sans-IO in the h11 sense:
it never touches a socket, a trio object or libp2p, so the session code and
the tests drive it with plain bytes.

Theory of operation
-------------------
On the stream, every message is a protobuf ``Frame`` (proto/tunnel.proto)
preceded by its length as a minimally encoded unsigned varint. Outbound,
:func:`encode` turns one of the frozen dataclasses :class:`Hello`,
:class:`Data`, :class:`Keepalive`, :class:`Close` into those bytes, refusing
frames that break a wire-format limit. :func:`encode_data` and
:func:`encode_offload_data` are the hot-path twins for ``Data``: they write
the same bytes by hand, without building protobuf objects and without
checking limits.

Inbound, a :class:`FrameDecoder` is fed whatever the stream read returned and
hands back complete frames one at a time. Unconsumed input is one buffer plus
a read offset, so a read holding many frames is never re-copied per frame.
While frames arrive whole, the buffer is the caller's own ``bytes`` (no
copy); when a frame straddles reads, the tail moves to a private
``bytearray`` whose consumed prefix is dropped once per ``feed`` (O(1) in
CPython). The length prefix is judged before the body arrives, so a drained
decoder never holds more than ``MAX_FRAME_LEN + 3`` bytes. Bodies are parsed
by the protobuf runtime (upb, in C): it measured faster than a hand-written
Python parser for ``Data`` (tests/wire/bench_codec.py) and is strict by
construction; the limits are checked on the result.

Any malformed input raises :class:`ProtocolError`, and only that. Like h11's
``ERROR`` state, a decoder that raised once stays failed: every later call
raises again, because the stream position is lost and nothing after the bad
frame can be trusted.

Session rules (which Hello values are acceptable, what to do with a spoofed
packet) live in ``p2pvpn.session``; this module only checks what every frame
must satisfy whoever receives it. The generated ``tunnel_pb2`` types never
leave this module.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from google.protobuf.message import DecodeError

from p2pvpn.errors import P2pvpnError
from p2pvpn.wire import tunnel_pb2 as _pb

__all__ = [
    "MAX_CAPABILITIES",
    "MAX_CAPABILITY_LEN",
    "MAX_FRAME_LEN",
    "MAX_NETWORK_LEN",
    "MAX_OFFLOAD_PACKET_LEN",
    "MAX_PACKETS_PER_FRAME",
    "MAX_PACKET_LEN",
    "MAX_REASON_LEN",
    "OFFLOAD_CAPABILITY",
    "OFFLOAD_HEADER_LEN",
    "PROTOCOL_ID",
    "PROTOCOL_VERSION",
    "Close",
    "CloseCode",
    "Data",
    "DATAGRAM_CAPABILITY",
    "DatagramOffer",
    "Frame",
    "FrameDecoder",
    "Hello",
    "Keepalive",
    "ProtocolError",
    "encode",
    "encode_data",
    "encode_offload_data",
    "fit_reason",
]

PROTOCOL_ID = "/p2pvpn/tunnel/1.0.0"
PROTOCOL_VERSION = 1

MAX_FRAME_LEN = 256 * 1024
"""Bytes of one serialized ``Frame``, excluding its length prefix."""
MAX_PACKETS_PER_FRAME = 1024
MAX_PACKET_LEN = 65535
"""Largest IP packet carried; also the largest TUN MTU a Hello may announce."""
OFFLOAD_HEADER_LEN = 10
"""Bytes of the virtio-net header that starts each ``Data.offload_packets`` entry."""
MAX_OFFLOAD_PACKET_LEN = OFFLOAD_HEADER_LEN + MAX_PACKET_LEN
"""Largest ``Data.offload_packets`` entry: header + an IP packet of up to 65535 bytes."""
OFFLOAD_CAPABILITY = "gso/1"
"""Hello capability: "send me offload_packets" (docs/protocol.md §5.3.1)."""
MAX_NETWORK_LEN = 64
"""UTF-8 bytes of ``Hello.network``."""
MAX_CAPABILITIES = 32
MAX_CAPABILITY_LEN = 64
"""UTF-8 bytes of one capability string."""
MAX_REASON_LEN = 256
"""UTF-8 bytes of ``Close.reason``."""
MAX_CERTIFICATE_LEN = 4096
"""Bytes of ``Hello.certificate`` (a membership certificate, docs/protocol.md §15)."""
DATAGRAM_CAPABILITY = "udp/1"
"""Hello capability: "I speak the datagram path; send me DatagramOffer frames" (docs/protocol.md §16)."""
MAX_OFFER_ENDPOINTS = 8
"""Entries of ``DatagramOffer.endpoints``, each 6 (IPv4 + port) or 18 (IPv6 + port) bytes."""

_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1
# A minimal uvarint of a value <= MAX_FRAME_LEN needs at most this many bytes;
# a longer prefix is either not minimal or announces an oversized frame.
_MAX_PREFIX_LEN = (MAX_FRAME_LEN.bit_length() + 6) // 7


class CloseCode(enum.IntEnum):
    """Why a side closes the tunnel (``Close.code``; docs/protocol.md, "Close codes")."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    VERSION_MISMATCH = 2
    WRONG_NETWORK = 3
    ADDRESS_MISMATCH = 4
    DUPLICATE = 5
    NOT_AUTHORIZED = 6
    TIMEOUT = 7
    HELLO_TIMEOUT = 8  # no Hello within the handshake timeout (docs/protocol.md §7.1)
    IDLE = 9  # no traffic for the idle timeout of an on-demand tunnel (docs/protocol.md §18.4)


_CLOSE_CODES: dict[int, CloseCode] = {code.value: code for code in CloseCode}


class ProtocolError(P2pvpnError):
    """The peer (or our own caller) broke the tunnel protocol.

    ``code`` is the :class:`CloseCode` to send before closing the stream; the
    codec always uses ``PROTOCOL_ERROR``, the session layer may pass a more
    specific one (e.g. ``WRONG_NETWORK``) when it rejects a Hello.
    """

    def __init__(self, message: str, code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- #
# Frames as callers see them.


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame on the stream from each side: who I am and how I talk.

    ``ipv4``/``ipv6`` are the sender's overlay addresses, ``address_index`` the
    IPv4 derivation candidate they came from (p2pvpn.addressing). Version,
    network, addresses and MTU are judged by the session layer, not here.
    """

    version: int
    network: str
    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address
    mtu: int
    capabilities: tuple[str, ...] = ()
    address_index: int = 0
    certificate: bytes = b""


@dataclass(frozen=True, slots=True)
class Data:
    """A batch of 1..MAX_PACKETS_PER_FRAME whole IP packets, in exactly one of the two fields.

    ``offload_packets`` entries are a 10-byte virtio-net header followed by
    the packet; only peers that both announced OFFLOAD_CAPABILITY use them.
    The codec checks their lengths; the header rules are the data path's
    (p2pvpn.dataplane.offload). Callers may pass lists to avoid a copy; the
    decoder always returns tuples.
    """

    packets: tuple[bytes, ...] | list[bytes] = ()
    offload_packets: tuple[bytes, ...] | list[bytes] = ()


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Liveness probe (``reply=False``) or its echo (``reply=True``, same ``seq``)."""

    seq: int
    reply: bool = False


@dataclass(frozen=True, slots=True)
class Close:
    """Sent just before a side closes the stream on purpose.

    Decoded codes known to this version come back as :class:`CloseCode`;
    unknown ones stay plain ints, so a newer peer's code still shows in logs.
    """

    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DatagramOffer:
    """One side's datagram-path key material for one epoch (docs/protocol.md §16.2).

    ``public_key``: a fresh X25519 public key; ``receiver_index``: what the
    peer's datagrams of this epoch must carry; ``port``: the sender's UDP
    port; ``endpoints``: extra candidates, IP address bytes + big-endian port.
    """

    epoch: int
    public_key: bytes
    receiver_index: int
    port: int
    endpoints: tuple[bytes, ...] = ()


Frame: TypeAlias = Hello | Data | Keepalive | Close | DatagramOffer


def check_datagram_offer(offer: DatagramOffer) -> None:
    """The limits of docs/protocol.md §16.2; raises ProtocolError (both encode and decode apply them)."""
    if not 1 <= offer.epoch <= _UINT32_MAX:
        raise ProtocolError(f"DatagramOffer epoch must be 1..{_UINT32_MAX}, got {offer.epoch!r}")
    if len(offer.public_key) != 32:
        raise ProtocolError(f"DatagramOffer public key is {len(offer.public_key)} bytes, expected 32")
    if not 1 <= offer.receiver_index <= _UINT32_MAX:
        raise ProtocolError(f"DatagramOffer receiver_index must be 1..{_UINT32_MAX}, got {offer.receiver_index!r}")
    if not 1 <= offer.port <= 65535:
        raise ProtocolError(f"DatagramOffer port must be 1..65535, got {offer.port!r}")
    if len(offer.endpoints) > MAX_OFFER_ENDPOINTS:
        raise ProtocolError(
            f"DatagramOffer has {len(offer.endpoints)} endpoints, over the limit of {MAX_OFFER_ENDPOINTS}"
        )
    for endpoint in offer.endpoints:
        if len(endpoint) not in (6, 18):
            raise ProtocolError(f"DatagramOffer endpoint is {len(endpoint)} bytes, expected 6 or 18")


def fit_reason(reason: str) -> str:
    """``reason`` cut to at most MAX_REASON_LEN UTF-8 bytes at a character boundary.

    For building a Close from arbitrary error text (which may quote peer
    input): ``encode`` refuses an overlong reason rather than guess, and
    slicing by characters is not enough, one character being up to 4 bytes.
    Unencodable characters (lone surrogates) become ``?``.
    """
    encoded = reason.encode("utf-8", "replace")
    return encoded[:MAX_REASON_LEN].decode("utf-8", "ignore")


# --------------------------------------------------------------------------- #
# Encoding.


def _uvarint(value: int) -> bytes:
    """Minimal unsigned LEB128, as protobuf and libp2p length prefixes use."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, (value >> 7) & 0x7F | 0x80, value >> 14))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _PacketHeaders(dict[int, bytes]):
    """Cache of the per-packet ``Data.packets`` tag+length bytes, keyed by length.

    Packets of a flow tend to share a few sizes (MTU-sized, ACK-sized), so the
    cache stays small, and it never holds more than one entry per valid length.
    """

    def __missing__(self, length: int) -> bytes:
        header = b"\x0a" + _uvarint(length)  # field 1, wire type LEN
        if length <= MAX_PACKET_LEN:
            self[length] = header
        return header


class _OffloadHeaders(dict[int, bytes]):
    """The same cache for ``Data.offload_packets`` (field 2, tag ``0x12``)."""

    def __missing__(self, length: int) -> bytes:
        header = b"\x12" + _uvarint(length)
        if length <= MAX_OFFLOAD_PACKET_LEN:
            self[length] = header
        return header


_packet_header: Callable[[int], bytes] = _PacketHeaders().__getitem__
_offload_header: Callable[[int], bytes] = _OffloadHeaders().__getitem__


def encode_data(packets: Sequence[bytes]) -> bytes:
    """Encode ``Data(packets)`` for the wire, fast: the egress hot path.

    Produces exactly the bytes of ``encode(Data(packets))`` (a test checks it)
    but builds them by hand: ``uvarint(len(frame))``, then the Frame's field 2
    (tag ``0x12``) holding the Data message, whose field 1 (tag ``0x0a``) is
    repeated once per packet. It does NOT check the limits: the caller (the
    per-peer batcher) must pass 1..MAX_PACKETS_PER_FRAME packets of
    1..MAX_PACKET_LEN bytes each, totalling at most MAX_FRAME_LEN encoded;
    otherwise the peer will reject the frame and drop the tunnel.
    """
    if len(packets) == 1:
        # One packet per frame is the common case for interactive traffic.
        packet = packets[0]
        header = _packet_header(len(packet))
        data_len = len(header) + len(packet)
        data_len_bytes = _uvarint(data_len)
        return b"".join(
            (_uvarint(1 + len(data_len_bytes) + data_len), b"\x12", data_len_bytes, header, packet)
        )
    return _encode_repeated(packets, _packet_header)


def encode_offload_data(records: Sequence[bytes]) -> bytes:
    """Encode ``Data(offload_packets=records)`` for the wire, fast, like :func:`encode_data`.

    Same bytes as ``encode(Data(offload_packets=records))``; the caller must
    pass 1..MAX_PACKETS_PER_FRAME entries of OFFLOAD_HEADER_LEN+1 ..
    MAX_OFFLOAD_PACKET_LEN bytes, totalling at most MAX_FRAME_LEN encoded.
    """
    return _encode_repeated(records, _offload_header)


def _encode_repeated(items: Sequence[bytes], item_header: Callable[[int], bytes]) -> bytes:
    """Frame prefix, Frame.data tag and length, then each item with its tag+length."""
    lengths = list(map(len, items))
    headers = list(map(item_header, lengths))
    data_len = sum(lengths) + sum(map(len, headers))
    data_len_bytes = _uvarint(data_len)
    parts: list[bytes] = [b""] * (2 * len(lengths) + 1)
    parts[0] = _uvarint(1 + len(data_len_bytes) + data_len) + b"\x12" + data_len_bytes
    parts[1::2] = headers
    parts[2::2] = items
    return b"".join(parts)


def encode(frame: Frame) -> bytes:
    """Encode any frame for the wire: uvarint length prefix + serialized ``Frame``.

    Raises :class:`ProtocolError` if the frame breaks a wire-format limit the
    receiver's decoder enforces (sizes, counts, integer ranges), so we fail
    here with a clear message instead of the peer dropping the tunnel; raises
    ``TypeError`` for something that is not a frame. Session rules (version,
    MTU range, addresses) are not checked here.
    """
    if isinstance(frame, Data):
        message = _data_to_pb(frame)
    elif isinstance(frame, Keepalive):
        message = _keepalive_to_pb(frame)
    elif isinstance(frame, Hello):
        message = _hello_to_pb(frame)
    elif isinstance(frame, Close):
        message = _close_to_pb(frame)
    elif isinstance(frame, DatagramOffer):
        message = _offer_to_pb(frame)
    else:
        raise TypeError(f"not a tunnel frame: {frame!r}")
    body = message.SerializeToString()
    if len(body) > MAX_FRAME_LEN:
        raise ProtocolError(f"{type(frame).__name__} frame is {len(body)} bytes, over the {MAX_FRAME_LEN}-byte limit")
    return _uvarint(len(body)) + body


def _check_uint(what: str, value: int, maximum: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= maximum:
        raise ProtocolError(f"{what} must be an integer in 0..{maximum}, got {value!r}")


def _check_utf8(what: str, value: str, limit: int) -> None:
    """Encode a string field and check its byte length (the limit is in bytes)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    try:
        encoded = value.encode()
    except UnicodeEncodeError:
        raise ProtocolError(f"{what} is not encodable as UTF-8") from None
    if len(encoded) > limit:
        raise ProtocolError(f"{what} is {len(encoded)} bytes of UTF-8, over the {limit}-byte limit")


def _hello_to_pb(hello: Hello) -> _pb.Frame:
    _check_uint("Hello.version", hello.version, _UINT32_MAX)
    _check_uint("Hello.mtu", hello.mtu, _UINT32_MAX)
    _check_uint("Hello.address_index", hello.address_index, _UINT32_MAX)
    _check_utf8("Hello.network", hello.network, MAX_NETWORK_LEN)
    if not isinstance(hello.ipv4, ipaddress.IPv4Address):
        raise TypeError(f"Hello.ipv4 must be an IPv4Address, got {hello.ipv4!r}")
    if not isinstance(hello.ipv6, ipaddress.IPv6Address):
        raise TypeError(f"Hello.ipv6 must be an IPv6Address, got {hello.ipv6!r}")
    if len(hello.capabilities) > MAX_CAPABILITIES:
        raise ProtocolError(
            f"Hello has {len(hello.capabilities)} capabilities, over the limit of {MAX_CAPABILITIES}"
        )
    for capability in hello.capabilities:
        _check_utf8("Hello capability", capability, MAX_CAPABILITY_LEN)
    message = _pb.Frame()
    body = message.hello  # filling the submessage in place is much faster than Frame(hello=...)
    body.version = hello.version
    body.network = hello.network
    body.ipv4 = hello.ipv4.packed
    body.ipv6 = hello.ipv6.packed
    body.mtu = hello.mtu
    body.capabilities.extend(hello.capabilities)
    body.address_index = hello.address_index
    if len(hello.certificate) > MAX_CERTIFICATE_LEN:
        raise ProtocolError(f"Hello certificate is over the {MAX_CERTIFICATE_LEN}-byte limit")
    body.certificate = hello.certificate
    body.SetInParent()
    return message


def _data_to_pb(data: Data) -> _pb.Frame:
    packets, records = data.packets, data.offload_packets
    if packets and records:
        raise ProtocolError("Data frame must carry packets or offload_packets, not both")
    items = packets or records
    if not 0 < len(items) <= MAX_PACKETS_PER_FRAME:
        raise ProtocolError(f"Data frame has {len(items)} packets, must have 1..{MAX_PACKETS_PER_FRAME}")
    if packets:
        for packet in packets:
            if not 0 < len(packet) <= MAX_PACKET_LEN:
                raise ProtocolError(f"Data packet is {len(packet)} bytes, must be 1..{MAX_PACKET_LEN}")
    else:
        for record in records:
            if not OFFLOAD_HEADER_LEN < len(record) <= MAX_OFFLOAD_PACKET_LEN:
                raise ProtocolError(
                    f"Data offload packet is {len(record)} bytes, must be "
                    f"{OFFLOAD_HEADER_LEN + 1}..{MAX_OFFLOAD_PACKET_LEN}"
                )
    message = _pb.Frame()
    # The protobuf runtime takes only bytes; accept any bytes-like from callers.
    field = message.data.packets if packets else message.data.offload_packets
    field.extend([p if type(p) is bytes else bytes(p) for p in items])
    return message


def _keepalive_to_pb(keepalive: Keepalive) -> _pb.Frame:
    _check_uint("Keepalive.seq", keepalive.seq, _UINT64_MAX)
    message = _pb.Frame()
    message.keepalive.seq = keepalive.seq
    message.keepalive.reply = bool(keepalive.reply)
    message.keepalive.SetInParent()  # seq=0, reply=false must still select the oneof
    return message


def _close_to_pb(close: Close) -> _pb.Frame:
    _check_uint("Close.code", close.code, _UINT32_MAX)
    _check_utf8("Close.reason", close.reason, MAX_REASON_LEN)
    message = _pb.Frame()
    message.close.code = int(close.code)
    message.close.reason = close.reason
    message.close.SetInParent()  # Close(NORMAL, "") has no fields set but must still be sent
    return message


def _offer_to_pb(offer: DatagramOffer) -> _pb.Frame:
    check_datagram_offer(offer)
    message = _pb.Frame()
    body = message.datagram_offer
    body.epoch = offer.epoch
    body.public_key = bytes(offer.public_key)
    body.receiver_index = offer.receiver_index
    body.port = offer.port
    body.endpoints.extend(bytes(e) for e in offer.endpoints)
    return message


# --------------------------------------------------------------------------- #
# Decoding.


# upb parses any buffer, though the stubs say bytes: a bytearray slice is fine.
_parse_frame: Callable[[bytes | bytearray], _pb.Frame] = _pb.Frame.FromString  # type: ignore[assignment]


def _decode_body(body: bytes | bytearray) -> Frame:
    """Parse one ``Frame`` body and check the limits every receiver enforces."""
    try:
        message = _parse_frame(body)
    except DecodeError:
        raise ProtocolError(f"{len(body)}-byte frame is not a valid protobuf Frame") from None
    kind = message.WhichOneof("body")
    if kind == "data":
        data = message.data
        packets = tuple(data.packets)
        if data.offload_packets:
            if packets:
                raise ProtocolError("Data frame carries both packets and offload_packets")
            return _offload_data(tuple(data.offload_packets))
        count = len(packets)
        if not 0 < count <= MAX_PACKETS_PER_FRAME:
            raise ProtocolError(f"Data frame has {count} packets, must have 1..{MAX_PACKETS_PER_FRAME}")
        if b"" in packets:
            raise ProtocolError("Data frame carries an empty packet")
        # Only a body longer than MAX_PACKET_LEN can hold a packet that is;
        # senders batch up to 64 KiB, so the usual frame skips this scan.
        if len(body) > MAX_PACKET_LEN:
            longest = max(map(len, packets))
            if longest > MAX_PACKET_LEN:
                raise ProtocolError(f"Data packet is {longest} bytes, over the {MAX_PACKET_LEN}-byte limit")
        return Data(packets)
    if kind == "keepalive":
        keepalive = message.keepalive
        return Keepalive(keepalive.seq, keepalive.reply)
    if kind == "hello":
        return _hello_from_pb(message.hello)
    if kind == "close":
        close = message.close
        if len(close.reason.encode()) > MAX_REASON_LEN:
            raise ProtocolError(f"Close reason is over the {MAX_REASON_LEN}-byte limit")
        return Close(_CLOSE_CODES.get(close.code, close.code), close.reason)
    if kind == "datagram_offer":
        body = message.datagram_offer
        offer = DatagramOffer(body.epoch, body.public_key, body.receiver_index, body.port, tuple(body.endpoints))
        check_datagram_offer(offer)
        return offer
    # An empty body, or only fields this version does not know.
    raise ProtocolError("frame carries no known message (Hello, Data, Keepalive, Close or DatagramOffer)")


def _offload_data(records: tuple[bytes, ...]) -> Data:
    """Check the entry count and lengths of ``Data.offload_packets`` (not the headers' values)."""
    if len(records) > MAX_PACKETS_PER_FRAME:
        raise ProtocolError(f"Data frame has {len(records)} packets, must have 1..{MAX_PACKETS_PER_FRAME}")
    lengths = list(map(len, records))
    if min(lengths) <= OFFLOAD_HEADER_LEN:
        raise ProtocolError(f"Data offload packet of {min(lengths)} bytes has no IP packet after its header")
    if max(lengths) > MAX_OFFLOAD_PACKET_LEN:
        raise ProtocolError(
            f"Data offload packet is {max(lengths)} bytes, over the {MAX_OFFLOAD_PACKET_LEN}-byte limit"
        )
    return Data(offload_packets=records)


def _hello_from_pb(hello: _pb.Hello) -> Hello:
    if len(hello.ipv4) != 4:
        raise ProtocolError(f"Hello ipv4 is {len(hello.ipv4)} bytes, expected 4")
    if len(hello.ipv6) != 16:
        raise ProtocolError(f"Hello ipv6 is {len(hello.ipv6)} bytes, expected 16")
    if len(hello.network.encode()) > MAX_NETWORK_LEN:
        raise ProtocolError(f"Hello network name is over the {MAX_NETWORK_LEN}-byte limit")
    if len(hello.certificate) > MAX_CERTIFICATE_LEN:
        raise ProtocolError(f"Hello certificate is over the {MAX_CERTIFICATE_LEN}-byte limit")
    capabilities = tuple(hello.capabilities)
    if len(capabilities) > MAX_CAPABILITIES:
        raise ProtocolError(f"Hello has {len(capabilities)} capabilities, over the limit of {MAX_CAPABILITIES}")
    for capability in capabilities:
        if len(capability.encode()) > MAX_CAPABILITY_LEN:
            raise ProtocolError(f"Hello capability is over the {MAX_CAPABILITY_LEN}-byte limit")
    return Hello(
        version=hello.version,
        network=hello.network,
        ipv4=ipaddress.IPv4Address(hello.ipv4),
        ipv6=ipaddress.IPv6Address(hello.ipv6),
        mtu=hello.mtu,
        capabilities=capabilities,
        address_index=hello.address_index,
        certificate=hello.certificate,
    )


class FrameDecoder:
    """Turns the byte stream from the peer into frames, whatever the read sizes.

    Call :meth:`feed` with each read, then drain with :meth:`next_frame` (or
    iterate) until it returns ``None``. Drained, the decoder holds at most
    one incomplete frame: ``buffered <= MAX_FRAME_LEN + 3``.
    """

    __slots__ = ("_buf", "_pos", "_error")

    def __init__(self) -> None:
        # Unconsumed input is _buf[_pos:]. _buf is the caller's own bytes
        # object while frames arrive whole, a private bytearray while a frame
        # is split across reads.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the stream."""
        if self._error is not None:
            self._raise_failed()
        buf = self._buf
        if self._pos >= len(buf):
            # Nothing pending (the usual case after a drain): parse straight
            # from the caller's bytes, which are immutable, saving a copy.
            self._buf = data if type(data) is bytes else bytes(data)
        elif isinstance(buf, bytes):
            # A frame straddles two reads: from now on accumulate in place.
            self._buf = bytearray(memoryview(buf)[self._pos :])
            self._buf += data
        else:
            # Drop consumed frames once per feed, not per frame; CPython
            # deletes a bytearray's prefix in O(1) by moving its start.
            del buf[: self._pos]
            buf += data
        self._pos = 0

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or ``None`` until more bytes are fed."""
        if self._error is not None:
            self._raise_failed()
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if pos >= end:
            return None
        try:
            # Length prefix: minimal uvarint, at most _MAX_PREFIX_LEN bytes. It
            # is judged byte by byte, so an oversized frame is refused before
            # its body is buffered.
            length = buf[pos]
            start = pos + 1
            if length >= 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    if start == end:
                        return None
                    byte = buf[start]
                    start += 1
                    length |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        if byte == 0:
                            raise ProtocolError("frame length prefix is not a minimally encoded uvarint")
                        break
                    shift += 7
                    if start - pos >= _MAX_PREFIX_LEN:
                        raise ProtocolError(f"frame length prefix announces more than {MAX_FRAME_LEN} bytes")
                if length > MAX_FRAME_LEN:
                    raise ProtocolError(f"frame length {length} is over the {MAX_FRAME_LEN}-byte limit")
            stop = start + length
            if stop > end:
                return None
            frame = _decode_body(buf[start:stop])
        except ProtocolError as error:
            self._error = error
            self._buf = b""
            self._pos = 0
            raise
        self._pos = stop
        return frame

    def frames(self) -> Iterator[Frame]:
        """Yield every complete frame buffered so far."""
        while (frame := self.next_frame()) is not None:
            yield frame

    __iter__ = frames

    def _raise_failed(self) -> None:
        assert self._error is not None
        raise ProtocolError(f"tunnel stream already failed: {self._error}") from self._error
