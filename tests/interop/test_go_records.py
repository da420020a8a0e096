"""Node records across implementations: the Go peer (written from docs/protocol.md §12) vs p2pvpn.

* Go seals the document's test vectors byte for byte (as p2pvpn does, and
  tests/discovery/test_record_doc.py ties p2pvpn's bytes to the document);
* Python accepts a Go-sealed record and rejects it tampered, and vice versa;
* on a corpus of hand-made edge cases (re-signed, so only the rule under test
  can fail) both validators give the same verdict: where they differ, either
  the document is ambiguous or one side is wrong, and the failure names the case.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

from gopeer import run_tool
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.peer.id import ID

from p2pvpn import addressing
from p2pvpn.discovery import record as rec
from p2pvpn.discovery import records_pb2 as pb
from p2pvpn.discovery.record import ExitRole, RelayRole, make_record, seal

EXPIRES = 1767225600  # the document's vectors expire at 2026-01-01T00:00:00Z
SEED = {n: bytes([n]) * 32 for n in (1, 2, 3)}
KEYS = {n: Ed25519PrivateKey.new(seed) for n, seed in SEED.items()}
PEERS = {n: ID.from_pubkey(key.get_public_key()) for n, key in KEYS.items()}


def go_seal(binary: Path, seed: int, *args: str) -> dict[str, str]:
    [out] = run_tool(binary, ["record", "seal", "--seed", SEED[seed].hex(), *args])
    return out  # type: ignore[no-any-return]


def go_check(binary: Path, network: str, now: int, cases: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    lines = [{"key": key, "value": value.hex()} for key, value in cases]
    return run_tool(binary, ["record", "check", "--network", network, "--now", str(now)], lines)


def py_verdict(key: str, value: bytes, network: str, now: int) -> str | None:
    """None if p2pvpn accepts the record, else its error."""
    try:
        rec.RecordValidator(network, clock=lambda: now).validate(key, value)
    except rec.RecordError as exc:
        return str(exc)
    return None


# -- the document's vectors ----------------------------------------------------


def test_go_seals_the_document_vectors_byte_for_byte(go_peer_bin: Path) -> None:
    record1 = make_record(
        PEERS[1], "default", seq=1, now=EXPIRES - rec.DEFAULT_TTL,
        addrs=("/ip4/192.0.2.1/tcp/4001", "/ip6/2001:db8::1/udp/4001/quic-v1"),
        relay_addrs=(f"/ip4/198.51.100.7/tcp/4001/p2p/{PEERS[2]}/p2p-circuit",),
        relay=RelayRole(max_reservations=128, max_circuits=16),
        exit=ExitRole(allow=("0.0.0.0/0", "[::/0]:80,443"), deny=("10.0.0.0/8",), capacity_mbit=100,
                      load_permille=250),
    )
    go1 = go_seal(
        go_peer_bin, 1, "--network", "default", "--seq", "1", "--expires", str(EXPIRES),
        "--addr", "/ip4/192.0.2.1/tcp/4001", "--addr", "/ip6/2001:db8::1/udp/4001/quic-v1",
        "--relay-addr", f"/ip4/198.51.100.7/tcp/4001/p2p/{PEERS[2]}/p2p-circuit", "--relay", "128:16",
        "--exit-allow", "0.0.0.0/0", "--exit-allow", "[::/0]:80,443", "--exit-deny", "10.0.0.0/8",
        "--exit-capacity", "100", "--exit-load", "250",
    )
    assert go1["key"] == rec.record_key("default", PEERS[1])
    assert bytes.fromhex(go1["value"]) == seal(record1, KEYS[1])

    record2 = make_record(PEERS[2], "lab", seq=7, now=EXPIRES - rec.DEFAULT_TTL, address_index=1)
    go2 = go_seal(go_peer_bin, 2, "--network", "lab", "--seq", "7", "--expires", str(EXPIRES), "--index", "1")
    assert go2["key"] == rec.record_key("lab", PEERS[2])
    assert bytes.fromhex(go2["value"]) == seal(record2, KEYS[2])


def test_go_applies_the_expiry_window_of_the_document(go_peer_bin: Path) -> None:
    sealed = seal(make_record(PEERS[2], "lab", seq=7, now=EXPIRES - rec.DEFAULT_TTL, address_index=1), KEYS[2])
    key = rec.record_key("lab", PEERS[2])
    verdicts = {now: go_check(go_peer_bin, "lab", now, [(key, sealed)])[0]["ok"]
                for now in (EXPIRES - 86401, EXPIRES - 86400, EXPIRES - 1, EXPIRES)}
    assert verdicts == {EXPIRES - 86401: False, EXPIRES - 86400: True, EXPIRES - 1: True, EXPIRES: False}
    assert go_check(go_peer_bin, "default", EXPIRES - 1, [(key, sealed)])[0]["ok"] is False  # other network


# -- records signed by one side, read by the other -----------------------------


def tampered(value: bytes) -> list[bytes]:
    """Every single-bit flip of every 7th byte, a truncation and an extension."""
    out = [value[:i] + bytes([value[i] ^ (1 << (i % 8))]) + value[i + 1:] for i in range(0, len(value), 7)]
    return [*out, value[:-1], value + b"\x00"]


def test_python_accepts_a_go_sealed_record_and_rejects_it_tampered(go_peer_bin: Path) -> None:
    now = int(time.time())
    go = go_seal(go_peer_bin, 3, "--network", "default", "--seq", "42", "--expires", str(now + 300),
                 "--addr", "/ip4/127.0.0.1/tcp/4001", "--addr", "/ip4/127.0.0.1/udp/4001/quic-v1", "--exit",
                 "--exit-allow", "[::/0]:443", "--relay", "4:2")
    value = bytes.fromhex(go["value"])
    opened = rec.open_sealed(value)
    rec.check(opened, network="default", now=now, key_peer=PEERS[3])
    assert opened.seq == 42 and opened.relay == RelayRole(4, 2) and opened.exit == ExitRole(allow=("[::/0]:443",))
    assert [str(a) for a in opened.addrs] == ["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"]
    assert py_verdict(go["key"], value, "default", now) is None
    for bad in tampered(value):
        assert py_verdict(go["key"], bad, "default", now) is not None, bad.hex()


def test_go_accepts_a_python_sealed_record_and_rejects_it_tampered(go_peer_bin: Path) -> None:
    now = int(time.time())
    record = make_record(PEERS[1], "lab", seq=5, now=now, address_index=3,
                         addrs=("/ip4/127.0.0.1/tcp/4001", "/dns4/node.example/udp/4001/quic-v1"),
                         relay_addrs=(f"/ip4/127.0.0.1/tcp/4002/p2p/{PEERS[2]}/p2p-circuit",))
    value = seal(record, KEYS[1])
    key = rec.record_key("lab", PEERS[1])
    [good] = go_check(go_peer_bin, "lab", now, [(key, value)])
    assert good["ok"], good
    assert good["record"]["ipv4"] == str(record.ipv4) and good["record"]["address_index"] == record.address_index
    assert good["record"]["relay_addrs"] == [f"/ip4/127.0.0.1/tcp/4002/p2p/{PEERS[2]}/p2p-circuit"]
    bad = tampered(value)
    for case, verdict in zip(bad, go_check(go_peer_bin, "lab", now, [(key, b) for b in bad]), strict=True):
        assert not verdict["ok"], case.hex()
    # A valid record under another peer's key, and under a non-canonical or foreign key.
    other = [rec.record_key("lab", PEERS[2]), key.replace("/lab/", "/default/"), key + "x", "/pk/" + key[8:]]
    assert not any(v["ok"] for v in go_check(go_peer_bin, "lab", now, [(k, value) for k in other]))


# -- differential: one rule at a time, re-signed --------------------------------

NOW = 1767225600 - 3600


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ma(*parts: tuple[int, bytes]) -> bytes:
    """A binary multiaddr from (code, value-with-its-length-prefix-if-any) parts."""
    return b"".join(_uvarint(code) + value for code, value in parts)


def _lp(b: bytes) -> bytes:
    return _uvarint(len(b)) + b


IP4 = (4, bytes([192, 0, 2, 1]))
TCP = (6, struct.pack("!H", 4001))
UDP = (273, struct.pack("!H", 4001))
QUIC = (461, b"")
CIRCUIT = (290, b"")


def dns(name: str, code: int = 54) -> tuple[int, bytes]:
    return (code, _lp(name.encode()))


def p2p(multihash: bytes) -> tuple[int, bytes]:
    return (421, _lp(multihash))


ADDR_CASES: dict[str, bytes] = {
    "ip4 tcp": _ma(IP4, TCP),
    "ip6 quic": _ma((41, bytes(15) + b"\x01"), UDP, QUIC),
    "ip4 0.0.0.0": _ma((4, bytes(4)), TCP),
    "ip6 ::": _ma((41, bytes(16)), TCP),
    "tcp port 0": _ma(IP4, (6, b"\x00\x00")),
    "udp without quic": _ma(IP4, UDP),
    "tcp + quic-v1": _ma(IP4, TCP, QUIC),
    "no transport": _ma(IP4),
    "p2p suffix in addrs": _ma(IP4, TCP, p2p(PEERS[2].to_bytes())),
    "ws": _ma(IP4, TCP, (477, b"")),
    "non-minimal code varint": b"\x84\x00" + bytes([192, 0, 2, 1]) + _ma(TCP),
    "truncated": _ma(IP4, TCP)[:-1],
    "dns4 plain": _ma(dns("node.example"), TCP),
    "dns plain": _ma(dns("node.example", 53), TCP),
    "dns6 plain": _ma(dns("node.example", 55), TCP),
    "dns upper case": _ma(dns("Node.EXAMPLE"), TCP),
    "dns all digits": _ma(dns("1.2.3.4"), TCP),
    "dns label 63": _ma(dns("a" * 63 + ".example"), TCP),
    "dns label 64": _ma(dns("a" * 64 + ".example"), TCP),
    "dns 253 bytes": _ma(dns(".".join(["a" * 63] * 3 + ["a" * 61])), TCP),
    "dns 255 bytes": _ma(dns(".".join(["a" * 63] * 4)), TCP),
    "dns leading hyphen": _ma(dns("-a.example"), TCP),
    "dns trailing hyphen": _ma(dns("a-.example"), TCP),
    "dns xn--": _ma(dns("xn--bcher-kva.example"), TCP),
    "dns ab--c": _ma(dns("ab--c.example"), TCP),
    "dns a--b (hyphens at 2-3)": _ma(dns("a--b.example"), TCP),
    "dns underscore": _ma(dns("_srv.example"), TCP),
    "dns empty label": _ma(dns("a..example"), TCP),
    "dns trailing dot": _ma(dns("node.example."), TCP),
    "dns empty": _ma(dns(""), TCP),
    "dns non-ascii": _ma((54, _lp("nöde.example".encode())), TCP),
    "dns non-minimal length": _ma((54, b"\x84\x00node"), TCP),
}

RELAY_CASES: dict[str, bytes] = {
    "relay ed25519": _ma(IP4, TCP, p2p(PEERS[2].to_bytes()), CIRCUIT),
    "relay sha256": _ma(IP4, TCP, p2p(b"\x12\x20" + bytes(range(32))), CIRCUIT),
    "relay identity 1 byte": _ma(IP4, TCP, p2p(b"\x00\x01\x07"), CIRCUIT),
    "relay identity 42 bytes": _ma(IP4, TCP, p2p(b"\x00\x2a" + bytes(42)), CIRCUIT),
    "relay identity 43 bytes": _ma(IP4, TCP, p2p(b"\x00\x2b" + bytes(43)), CIRCUIT),
    "relay identity 0 bytes": _ma(IP4, TCP, p2p(b"\x00\x00"), CIRCUIT),
    "relay sha256 short": _ma(IP4, TCP, p2p(b"\x12\x20" + bytes(31)), CIRCUIT),
    "relay no circuit": _ma(IP4, TCP, p2p(PEERS[2].to_bytes())),
    "relay circuit then p2p": _ma(IP4, TCP, p2p(PEERS[2].to_bytes()), CIRCUIT, p2p(PEERS[3].to_bytes())),
    "relay without p2p": _ma(IP4, TCP, CIRCUIT),
    "relay over quic": _ma(IP4, UDP, QUIC, p2p(PEERS[2].to_bytes()), CIRCUIT),
}

POLICY_CASES = [
    "0.0.0.0/0", "10.0.0.0/8:*", "[::/0]:80,443", "0.0.0.0/0:1-1023,8080", "1.2.3.4/32:443",
    "[2001:db8::/32]:53", "[FE80::/10]", "[2001:0db8::/32]", "[::ffff:10.0.0.0/104]", "[::1.2.3.4/128]",
    "[1:2:3:4:5:6:7:8/128]", "10.0.0.0/8:1-65535",
    "10.0.0.1/8", "10.0.0.0/08", "010.0.0.0/8", "10.0.0.0/33", "10.0.0.0", "10.0.0.0/8:", "10.0.0.0/8:0",
    "10.0.0.0/8:65536", "10.0.0.0/8:80-79", "10.0.0.0/8:080", "10.0.0.0/8:*,80", "10.0.0.0/8:80,",
    "::/0", "[10.0.0.0/8]", "[fe80::%eth0/64]", "[::/00]", "[::/129]", "[1::2::3/64]", " 10.0.0.0/8",
    "10.0.0.0/8 ", "10.0.0.0/8:80-", "10.0.0.0/8:-80", "10.0.0.0/8:80-90-100", "[::/0]80", "[::/0]:",
    "1.2.3/24", "256.0.0.0/8", "[::/0]:*", "0.0.0.0/0:65535", "0.0.0.0/0:1",
]


def _payload(peer: int, network: str = "lab", **fields: Any) -> pb.NodeRecord:
    derived = addressing.derive(PEERS[peer].to_bytes(), network)
    message = pb.NodeRecord(peer_id=PEERS[peer].to_bytes(), network=network, seq=1, expires_unix=NOW + 300,
                            ipv4=derived.ipv4.packed, ipv6=derived.ipv6.packed)
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def _cases() -> dict[str, tuple[str, bytes]]:
    """name -> (key, sealed envelope), each breaking (or not) one rule."""
    key = rec.record_key("lab", PEERS[1])
    raw: dict[str, bytes] = {}
    for name, addr in ADDR_CASES.items():
        raw[f"addrs: {name}"] = _payload(1, addrs=[addr]).SerializeToString()
    for name, addr in RELAY_CASES.items():
        raw[f"relay_addrs: {name}"] = _payload(1, relay_addrs=[addr]).SerializeToString()
    for entry in POLICY_CASES:
        message = _payload(1)
        message.exit.allow.append(entry)
        raw[f"exit.allow: {entry!r}"] = message.SerializeToString()
    base = _payload(1).SerializeToString()
    derived3 = addressing.derive(PEERS[1].to_bytes(), "lab", 3)
    raw.update({
        "valid": base,
        "17 addrs": _payload(1, addrs=[ADDR_CASES["ip4 tcp"]] * 17).SerializeToString(),
        "16 addrs": _payload(1, addrs=[ADDR_CASES["ip4 tcp"]] * 16).SerializeToString(),
        "address_index 3": _payload(1, ipv4=derived3.ipv4.packed, address_index=3).SerializeToString(),
        "address_index 1025": _payload(1, address_index=1025).SerializeToString(),
        "address_index 2^32 (uint32 wraps to 0)": base + b"\x38" + _uvarint(1 << 32),
        "ipv4 of index 0, claims index 1": _payload(1, address_index=1).SerializeToString(),
        "ipv4 5 bytes": _payload(1, ipv4=b"\x64" * 5).SerializeToString(),
        "ipv6 of another network": _payload(1, ipv6=addressing.derive(PEERS[1].to_bytes(), "x").ipv6.packed)
        .SerializeToString(),
        "network of record differs": _payload(1, network="lab2").SerializeToString(),
        "network bad chars": _payload(1, network="lab!").SerializeToString(),
        "peer_id of another peer": _payload(2).SerializeToString(),
        "expires now": _payload(1, expires_unix=NOW).SerializeToString(),
        "expires now+86400": _payload(1, expires_unix=NOW + 86400).SerializeToString(),
        "expires now+86401": _payload(1, expires_unix=NOW + 86401).SerializeToString(),
        "unknown field 12": base + b"\x60\x01",
        "unknown field 99 (LEN)": base + b"\x9a\x06\x02hi",
        "known field, wrong wire type (seq as LEN)": base + b"\x1a\x01\x00",
        "duplicate network (last wins)": _payload(1, network="nope").SerializeToString() + b"\x12\x03lab",
        "relay role empty": base + b"\x52\x00",
        "exit role empty": base + b"\x5a\x00",
        "exit load 1000": base + b"\x5a\x03\x20\xe8\x07",
        "exit load 1001": base + b"\x5a\x03\x20\xe9\x07",
        "exit 17 allow entries": base + b"\x5a" + _lp(b"".join(b"\x0a" + _lp(b"0.0.0.0/0") for _ in range(17))),
        "exit entry 65 bytes": base + b"\x5a" + _lp(b"\x0a" + _lp(b"[::/0]:" + b"1," * 28 + b"1000")),
        "invalid utf-8 network": base + b"\x12\x03l\xffb",
        "group (wire type 3) as unknown": base + b"\x63\x08\x01\x64",
        "truncated payload": base[:-1],
    })
    cases = {name: (key, rec._seal_payload(payload, KEYS[1])) for name, payload in raw.items()}
    valid = cases["valid"][1]
    cases.update({
        "key of another network": (rec.record_key("lab2", PEERS[1]), valid),
        "key with leading 1": (key.replace("/12D3", "/112D3"), valid),
        "envelope over 4096 bytes": (key, rec._seal_payload(base + b"\x9a\x06" + _lp(bytes(4000)), KEYS[1])),
        "envelope unknown field": (key, valid + b"\x20\x01"),
        "envelope signature 65 bytes": (key, valid[:-66] + b"\x2a\x41" + valid[-64:] + b"\x00"),
        "envelope signed by another key": (key, rec._seal_payload(base, KEYS[2])),
    })
    return cases


def test_go_and_python_agree_case_by_case(go_peer_bin: Path) -> None:
    cases = _cases()
    names = list(cases)
    go = go_check(go_peer_bin, "lab", NOW, [cases[n] for n in names])
    disagree = []
    for name, verdict in zip(names, go, strict=True):
        py = py_verdict(*cases[name], "lab", NOW)
        if verdict["ok"] != (py is None):
            disagree.append(f"{name}: go {'accepts' if verdict['ok'] else 'rejects: ' + verdict['error']}; "
                            f"python {'accepts' if py is None else 'rejects: ' + py}")
    assert not disagree, "Go and Python validators disagree:\n" + "\n".join(disagree)
    assert go[names.index("valid")]["ok"]


def test_go_select_follows_the_document(go_peer_bin: Path) -> None:
    key = rec.record_key("lab", PEERS[1])

    def sealed(seq: int, expires: int, **extra: Any) -> bytes:
        return rec._seal_payload(_payload(1, seq=seq, expires_unix=expires, **extra).SerializeToString(), KEYS[1])

    low, high = sealed(1, NOW + 100), sealed(2, NOW + 50)
    later = sealed(2, NOW + 60)
    tie_a, tie_b = sealed(3, NOW + 70), sealed(3, NOW + 70, addrs=[ADDR_CASES["ip4 tcp"]])
    invalid = sealed(9, NOW)  # highest seq, but expired
    cases = [[low, high], [high, low], [high, later], [tie_a, tie_b], [tie_b, tie_a], [tie_a, tie_a],
             [invalid, low], [invalid]]
    go = run_tool(go_peer_bin, ["record", "select", "--network", "lab", "--now", str(NOW)],
                  [{"key": key, "values": [v.hex() for v in values]} for values in cases])
    validator = rec.RecordValidator("lab", clock=lambda: NOW)
    for values, answer in zip(cases, go, strict=True):
        try:
            expected = validator.select(key, values)
        except rec.RecordError:
            expected = -1
        assert answer["index"] == expected, (values, answer)
