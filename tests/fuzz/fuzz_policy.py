"""Fuzz target: the exit-policy grammar, ``parse_policy_entry`` and ``ExitPolicy``.

Input: UTF-8 text (invalid bytes replaced, as TOML and protobuf strings
can hold no lone surrogates), one entry per line; a line starting with
``!`` is a ``deny`` entry, any other an ``allow`` entry.
Contract: ``parse_policy_entry`` returns a ``PolicyEntry`` or raises
``RecordError``; ``ExitPolicy.build`` returns a policy or raises
``ConfigError``; nothing else escapes. Properties: an entry that parses
prints back (canonical form) to the same entry; the summary an exit
publishes parses and fits the record's limits; and for destinations that
are not the overlay, ``ExitPolicy.check`` of a TCP packet agrees with what
the published summary says (``PolicyEntry.matches``, deny wins), probed
just inside and outside the first entries' edges.
"""

from __future__ import annotations

import ipaddress

from p2pvpn.discovery.record import MAX_POLICY_ENTRIES, PolicyEntry, RecordError, parse_policy_entry
from p2pvpn.errors import ConfigError
from p2pvpn.exit.policy import DEFAULT_ALLOW, DEFAULT_DENY, TCP, ExitPolicy, Verdict

EXPECTED = (RecordError, ConfigError)
MAX_LEN = 1024  # room for more than 2 x MAX_POLICY_ENTRIES short entries
_NETWORK = "default"
_FIXED_PROBES = (ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("100.64.0.1"))


def seeds() -> list[bytes]:
    defaults = "\n".join((*DEFAULT_ALLOW, *(f"!{entry}" for entry in DEFAULT_DENY)))
    examples = "0.0.0.0/0:80,443,8000-8999\n[2000::/3]:443\n!203.0.113.0/24:8080\n!203.0.113.99/32\n[::/0]:*"
    return [defaults.encode(), examples.encode(), b"10.0.0.0/8", b"[fe80::/10]:1-65535"]


def _text(entry: PolicyEntry) -> str:
    prefix = str(entry.network) if entry.network.version == 4 else f"[{entry.network}]"
    if not entry.ports:
        return prefix
    return prefix + ":" + ",".join(str(low) if low == high else f"{low}-{high}" for low, high in entry.ports)


def _parse(entry: str) -> PolicyEntry | None:
    try:
        parsed = parse_policy_entry(entry)
    except RecordError:
        return None
    assert parse_policy_entry(_text(parsed)) == parsed, f"{entry!r} does not print back as itself"
    return parsed


def _probes(entries: list[PolicyEntry]) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(destination, port) pairs just inside and outside the first two entries, plus a few fixed ones."""
    probes = [(address, 443) for address in _FIXED_PROBES]
    for entry in entries[:2]:
        net = entry.network
        top = (1 << net.max_prefixlen) - 1
        low, high = entry.ports[-1] if entry.ports else (443, 443)
        ports = (max(low - 1, 1), low, high, min(high + 1, 65535))
        edges = (int(net.network_address) - 1, int(net.network_address), int(net.broadcast_address) + 1)
        for index, value in enumerate(edges):
            if 0 <= value <= top:
                address = ipaddress.IPv4Address(value) if net.version == 4 else ipaddress.IPv6Address(value)
                probes += [(address, ports[index]), (address, ports[index + 1])]
    return probes


def one_input(data: bytes) -> None:
    lines = data.decode("utf-8", "replace").split("\n")
    allow = [line for line in lines if not line.startswith("!")]
    deny = [line[1:] for line in lines if line.startswith("!")]
    parsed = [entry for entry in map(_parse, allow + deny) if entry is not None]
    try:
        policy = ExitPolicy.build(allow, deny, _NETWORK)
    except ConfigError:
        return
    published_allow, published_deny = policy.summary()
    assert len(published_allow) <= MAX_POLICY_ENTRIES and len(published_deny) <= MAX_POLICY_ENTRIES
    allow_entries = [parse_policy_entry(entry) for entry in published_allow]  # a RecordError here is a crash
    deny_entries = [parse_policy_entry(entry) for entry in published_deny]
    for destination, port in _probes(parsed):
        verdict = policy.check(destination, TCP, port)
        if verdict == Verdict.OVERLAY:
            continue
        published = not any(e.matches(destination, port) for e in deny_entries) and any(
            e.matches(destination, port) for e in allow_entries
        )
        assert (verdict == Verdict.ALLOW) == published, (str(destination), port, verdict)
    policy.check(_FIXED_PROBES[0], 1, None)  # ICMP: no port
