"""The network policy end to end (issue 15, ACLs): real ``p2pvpn up`` members in an owned network.

Topology (tests/e2e/test_membership_netns.py's flat lab)::

    owner 198.18.1.1 ── switch lan 198.18.1.0/24 ── a (group A) .2, b (group B) .3

The owner signs a policy with ``p2pvpn policy set`` that denies tcp/22
from group A to group B; b, the receiving node, enforces it. Small Python
TCP listeners on ports 22 and 80 inside a's and b's namespaces stand in
for sshd and a web server.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2pvpn.lab.demo import LabNode, wait_for
from e2e.test_membership_netns import FAST, MemberLab, cli, member_lab, status, wait_tunnels  # noqa: F401

pytestmark = pytest.mark.netns

APPLIED_WITHIN = 10.0  # s from `policy set` to the new policy enforced on another node (issue 15)

LISTENER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b"hello %d\\n" % port); c.close()
for port in map(int, sys.argv[1:]):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
threading.Event().wait(600)
"""

CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
        print(c.recv(64).decode().strip())
except OSError as exc:
    print("failed:", exc)
"""


def listen(node: LabNode, *ports: int) -> None:
    node.host.popen(sys.executable, "-I", "-c", LISTENER, *map(str, ports))  # stopped by the lab's teardown
    for port in ports:
        node.host.wait_listening(port, timeout=30)


def connects(src: LabNode, dst: LabNode, port: int, timeout: float = 3.0) -> bool:
    """A new TCP connection from ``src`` to ``dst``'s overlay IPv4 gets the listener's greeting."""
    out = src.host.run(sys.executable, "-I", "-c", CLIENT, dst.ipv4, str(port), str(timeout), check=False,
                       timeout=timeout + 30).stdout
    return out.strip() == f"hello {port}"


def policy(node: LabNode) -> dict[str, Any]:
    return status(node).get("policy") or {}


def write_policy(path: Path, ports: str) -> Path:
    path.write_text(f'default = "allow"\n\n[[rule]]\naction = "deny"\nfrom = "group:A"\nto = "group:B"\n'
                    f'proto = "tcp"\nports = {ports}\n')
    return path


def test_a_policy_denying_tcp_22_from_group_a_to_group_b_is_enforced_by_b_and_updates_within_10_s(
    member_lab: Callable[..., MemberLab],
) -> None:
    lab = member_lab(["a", "b"])
    lab.admit("a", "--groups", "A")
    lab.admit("b", "--groups", "B")
    owner, a, b = lab["owner"], lab["a"], lab["b"]
    owner.start([a, b], *FAST)
    a.start([owner, b], *FAST)
    b.start([owner, a], *FAST)
    wait_tunnels([(x, y) for x in (owner, a, b) for y in (owner, a, b) if x is not y])
    listen(a, 22, 80)
    listen(b, 22, 80)
    assert connects(a, b, 22), "without a policy a reaches b:22"

    cli("policy", "set", str(write_policy(lab.workdir / "deny-ssh.toml", '"22"')), "--dir", str(owner.directory))
    assert wait_for(lambda: policy(a).get("seq") == 1 and policy(b).get("seq") == 1, 30, poll=0.3), \
        f"policy 1 not everywhere: a {policy(a)}, b {policy(b)}"
    assert policy(b)["active"] and not policy(a)["rules_here"]  # the rule is about b only

    denied_before = policy(b)["denied"]
    assert not connects(a, b, 22), "a opened a new connection to b:22 under the policy"
    assert policy(b)["denied"] > denied_before
    assert policy(b)["denied_by_reason"].get("rule", 0) >= 1
    assert connects(a, b, 80), "a -> b:80 must still work"
    assert connects(b, a, 22), "b -> a:22 (and its replies through b) must work"
    assert policy(b)["flows"] >= 1

    # An update from the owner: port 80 is denied too, on b, within 10 s.
    cli("policy", "set", str(write_policy(lab.workdir / "deny-more.toml", '["22", "80"]')),
        "--dir", str(owner.directory))
    started = time.monotonic()
    denied = wait_for(lambda: not connects(a, b, 80, timeout=1.0), APPLIED_WITHIN + 20, poll=0.2)
    took = time.monotonic() - started
    assert denied, "a still reaches b:80 after the update"
    print(f"policy update: a -> b:80 refused {took:.1f} s after `policy set` returned; b: {policy(b)}")
    assert took <= APPLIED_WITHIN
    assert policy(b)["seq"] == 2
    assert connects(b, a, 80), "b -> a:80 is not affected"
