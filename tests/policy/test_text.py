"""The policy's text form: strict parsing with line numbers, and a round trip through ``format_policy``."""

from __future__ import annotations

import pytest

from p2pvpn.policy.model import Action, PolicyError, Proto, Rule, Selector
from p2pvpn.policy.text import format_policy, parse

PEER = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"  # peer 1 of §3.4


def test_full_example() -> None:
    default, rules = parse(f'''
default = "deny"

[[rule]]
action = "deny"
from = "group:A"
to = "group:B"
proto = "tcp"
ports = "22"

[[rule]]
action = "allow"
from = "peer:{PEER}"
proto = "udp"
ports = ["53", "5000-5010", 7]

[[rule]]
action = "allow"
proto = "icmp"
''')
    assert default is Action.DENY
    assert rules[0] == Rule(Action.DENY, Selector(group="A"), Selector(group="B"), Proto.TCP, (22, 22))
    assert [r.ports for r in rules[1:4]] == [(53, 53), (5000, 5010), (7, 7)]
    assert rules[1].src.peer.hex().startswith("002408011220") and rules[1].dst.any
    assert rules[4] == Rule(Action.ALLOW, Selector(), Selector(), Proto.ICMP, None)
    assert parse(format_policy(default, rules)) == (default, rules)


def test_defaults() -> None:
    assert parse("") == (Action.ALLOW, [])
    assert parse('[[rule]]\naction = "allow"\n')[1] == [Rule(Action.ALLOW, Selector(), Selector())]
    assert parse('[[rule]]\naction = "allow"\nproto = "tcp"\nports = ["22", "any"]\n')[1][0].ports is None


@pytest.mark.parametrize("text,message", [
    ('default = "maybe"\n', "policy:1: default must be"),
    ('colour = 1\n', "policy:1: unknown key 'colour'"),
    ('\n[[rule]]\nproto = "tcp"\n', "policy:2: rule 1: action: missing"),
    ('[[rule]]\naction = "allow"\n\n[[rule]]\naction = "alow"\n', "policy:5: rule 2: action: must be"),
    ('[[rule]]\naction = "allow"\nport = "22"\n', "policy:3: rule 1: port: unknown field"),
    ('[[rule]]\naction = "allow"\nproto = "sctp"\n', "policy:3: rule 1: proto: must be one of"),
    ('[[rule]]\naction = "allow"\nproto = "icmp"\nports = "22"\n', "policy:4: rule 1: ports: ports need"),
    ('[[rule]]\naction = "allow"\nproto = "tcp"\nports = "0"\n', "ports are 1..65535"),
    ('[[rule]]\naction = "allow"\nproto = "tcp"\nports = "30-20"\n', "ports are 1..65535"),
    ('[[rule]]\naction = "allow"\nproto = "tcp"\nports = "22,23"\n', "is not a port"),
    ('[[rule]]\naction = "allow"\nproto = "tcp"\nports = []\n', "an empty list"),
    ('[[rule]]\naction = "allow"\nproto = "tcp"\nports = true\n', "write a port"),
    ('[[rule]]\naction = "allow"\nfrom = "group:a b"\n', "policy:3: rule 1: from: 'a b' is not a group"),
    ('[[rule]]\naction = "allow"\nto = "peer:nope"\n', "policy:3: rule 1: to: 'nope' is not an Ed25519"),
    ('[[rule]]\naction = "allow"\nto = "dev"\n', "rule 1: to: 'dev': write"),
    ('[[rule]]\naction = "allow"\nfrom = 3\n', "rule 1: from: write"),
    ('rule = 3\n', "policy:1: rules are written as [[rule]] tables"),
    ('x = [\n', "policy: "),
])
def test_mistakes_are_one_line_with_line_and_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse(text)
    assert message in str(info.value) and "\n" not in str(info.value)
