"""The policy's text form for ``p2pvpn policy set FILE`` and ``policy show`` (TOML), parsed strictly.

    default = "allow"            # or "deny": for flows no rule matches

    [[rule]]                     # rules are tried in order; the first match decides
    action = "deny"              # allow | deny
    from = "group:dev"           # group:NAME | peer:PEER_ID | "*" (any peer); default "*"
    to = "group:db"              # the receiving node; same forms; default "*"
    proto = "tcp"                # tcp | udp | icmp | any; default any
    ports = "22"                 # "22", "8000-8100", ["22", "80"], "any" (tcp/udp only); default any

Every mistake is one line naming the line and field (``policy.toml:7: rule 1: ports: ...``).
A rule with several port ranges becomes one signed rule per range.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from libp2p.peer.id import ID

from p2pvpn.membership.network import is_group, public_key_of
from p2pvpn.policy.model import Action, PolicyError, Proto, Rule, Selector

_RULE_KEYS = ("action", "from", "to", "proto", "ports")
_PORTS_RE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")
_PROTO_NAMES = {"any": Proto.ANY, "icmp": Proto.ICMP, "tcp": Proto.TCP, "udp": Proto.UDP}


def parse(text: str, source: str = "policy") -> tuple[Action, list[Rule]]:
    """(default action, rules) from the TOML text; PolicyError with ``source:line:`` on any mistake."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    lines = text.splitlines()
    for key in doc:
        if key not in ("default", "rule"):
            raise PolicyError(f"{source}:{_line(lines, key)}: unknown key {key!r} (known: default, rule)")
    default_text = doc.get("default", "allow")
    if default_text not in ("allow", "deny"):
        raise PolicyError(f"{source}:{_line(lines, 'default')}: default must be \"allow\" or \"deny\"")
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        raise PolicyError(f"{source}:{_line(lines, 'rule')}: rules are written as [[rule]] tables")
    starts = [i + 1 for i, line in enumerate(lines) if re.match(r"\s*\[\[\s*rule\s*\]\]", line)]
    rules: list[Rule] = []
    for index, raw in enumerate(raw_rules):
        start = starts[index] if index < len(starts) else 0
        end = starts[index + 1] if index + 1 < len(starts) else len(lines) + 1

        def where(field: str) -> str:
            line = _line(lines[start:end - 1], field)
            return f"{source}:{start + line if line else start}: rule {index + 1}: {field}"

        rules += _rule(raw, where)
    return (Action.ALLOW if default_text == "allow" else Action.DENY), rules


def parse_file(path: Path) -> tuple[Action, list[Rule]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    return parse(text, str(path))


def _line(lines: list[str], key: str) -> int:
    """1-based line of ``key = ...`` (or ``[[key]]``) in ``lines``; 0 when not found."""
    pattern = re.compile(rf"\s*(?:{re.escape(key)}\s*=|\[\[\s*{re.escape(key)}\s*\]\])")
    return next((i + 1 for i, line in enumerate(lines) if pattern.match(line)), 0)


def _rule(raw: dict[str, Any], where: Any) -> list[Rule]:
    for key in raw:
        if key not in _RULE_KEYS:
            raise PolicyError(f"{where(key)}: unknown field (known: {', '.join(_RULE_KEYS)})")
    if "action" not in raw:
        raise PolicyError(f"{where('action')}: missing (allow or deny)")
    if raw["action"] not in ("allow", "deny"):
        raise PolicyError(f"{where('action')}: must be \"allow\" or \"deny\"")
    action = Action.ALLOW if raw["action"] == "allow" else Action.DENY
    src = _selector(raw.get("from", "*"), where, "from")
    dst = _selector(raw.get("to", "*"), where, "to")
    proto_text = raw.get("proto", "any")
    if proto_text not in _PROTO_NAMES:
        raise PolicyError(f"{where('proto')}: must be one of tcp, udp, icmp, any")
    proto = _PROTO_NAMES[proto_text]
    ports_raw = raw.get("ports", "any")
    items = ports_raw if isinstance(ports_raw, list) else [ports_raw]
    if not items:
        raise PolicyError(f"{where('ports')}: an empty list matches nothing; write \"any\" or some ports")
    ranges: list[tuple[int, int] | None] = []
    for item in items:
        ranges.append(_ports(item, where))
    if any(r is not None for r in ranges):
        if proto not in (Proto.TCP, Proto.UDP):
            raise PolicyError(f"{where('ports')}: ports need proto \"tcp\" or \"udp\"")
        if None in ranges:
            ranges = [None]
    return [Rule(action, src, dst, proto, r) for r in dict.fromkeys(ranges)]


def _ports(item: Any, where: Any) -> tuple[int, int] | None:
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise PolicyError(f"{where('ports')}: write a port, a range \"A-B\", \"any\", or a list of those")
    text = str(item).strip()
    if text == "any":
        return None
    m = _PORTS_RE.fullmatch(text)
    if not m:
        raise PolicyError(f"{where('ports')}: {text!r} is not a port, a range \"A-B\" or \"any\"")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else first
    if not 1 <= first <= last <= 65535:
        raise PolicyError(f"{where('ports')}: {text!r}: ports are 1..65535, the range's start first")
    return (first, last)


def _selector(value: Any, where: Any, field: str) -> Selector:
    if not isinstance(value, str):
        raise PolicyError(f"{where(field)}: write \"group:NAME\", \"peer:PEER_ID\" or \"*\"")
    if value in ("*", "any"):
        return Selector()
    kind, _, name = value.partition(":")
    if kind == "group":
        if not is_group(name):
            raise PolicyError(f"{where(field)}: {name!r} is not a group name ([A-Za-z0-9._-], 1-32 characters)")
        return Selector(group=name)
    if kind == "peer":
        try:
            raw = ID.from_base58(name).to_bytes()
        except Exception:  # noqa: BLE001 - base58 and multihash decoders raise assorted types
            raw = b""
        if public_key_of(raw) is None:
            raise PolicyError(f"{where(field)}: {name!r} is not an Ed25519 peer ID (12D3KooW...)")
        return Selector(peer=raw)
    raise PolicyError(f"{where(field)}: {value!r}: write \"group:NAME\", \"peer:PEER_ID\" or \"*\"")


def selector_text(s: Selector) -> str:
    if s.group:
        return f"group:{s.group}"
    if s.peer:
        return f"peer:{ID(s.peer).to_base58()}"
    return "*"


def rule_dict(rule: Rule) -> dict[str, Any]:
    ports = "any" if rule.ports is None else (str(rule.ports[0]) if rule.ports[0] == rule.ports[1]
                                               else f"{rule.ports[0]}-{rule.ports[1]}")
    proto = next(name for name, p in _PROTO_NAMES.items() if p is rule.proto)
    return {"action": rule.action.name.lower(), "from": selector_text(rule.src), "to": selector_text(rule.dst),
            "proto": proto, "ports": ports}


def format_policy(default: Action, rules: tuple[Rule, ...] | list[Rule]) -> str:
    """The text form; ``parse`` of it gives the same default and rules back."""
    out = [f'default = "{default.name.lower()}"']
    for rule in rules:
        out.append("")
        out.append("[[rule]]")
        out += [f'{key} = "{value}"' for key, value in rule_dict(rule).items()]
    return "\n".join(out) + "\n"
