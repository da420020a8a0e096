"""The node's policy service without a network: which policy wins, the file `policy set` writes, stored state."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from p2pvpn import addressing
from p2pvpn.membership import cert
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.revocation import RevocationSet
from p2pvpn.membership.view import MembershipView
from p2pvpn.policy import store
from p2pvpn.policy.model import Action, Proto, Rule, Selector, sign_policy
from p2pvpn.policy.service import PolicyService, make_firewall
from policy.conftest import Keys

DENY_SSH = [Rule(Action.DENY, Selector(group="A"), Selector(group="B"), Proto.TCP, (22, 22))]


def service(keys: Keys, directory: Path) -> PolicyService:
    a = addressing.derive(keys.pid[2], keys.nid)
    now = int(time.time())
    own = cert.open_certificate(cert.issue(keys.owner, network=keys.nid, peer_id=keys.pid[2], name="bravo",
                                           ipv4=a.ipv4, ipv6=a.ipv6, roles=0, groups=("B",), not_before=now,
                                           not_after=now + 86400), keys.nid)
    view = MembershipView(keys.nid, own, RevocationSet(keys.nid))
    firewall = make_firewall(directory, view, keys.pid[2])
    return PolicyService(directory, view, None, None, firewall)  # type: ignore[arg-type]  # no I/O here


def test_without_a_policy_the_firewall_is_inactive(keys: Keys, tmp_path: Path) -> None:
    svc = service(keys, tmp_path)
    assert svc.policy.seq == 0 and not svc.firewall.active


def test_higher_seq_replaces_lower_and_equal_or_lower_does_not(keys: Keys, tmp_path: Path) -> None:
    svc = service(keys, tmp_path)
    two = sign_policy(keys.owner, keys.nid, 2, Action.ALLOW, DENY_SSH)
    assert svc.accept(two) and svc.firewall.active and svc.firewall.rules == tuple(DENY_SSH)
    assert not svc.accept(two)
    assert not svc.accept(sign_policy(keys.owner, keys.nid, 1, Action.DENY, []))
    assert svc.policy.seq == 2
    assert svc.accept(sign_policy(keys.owner, keys.nid, 3, Action.ALLOW, []))
    assert not svc.firewall.active  # allow-all again
    with pytest.raises(MembershipError):
        svc.accept(two[:-1] + bytes([two[-1] ^ 1]))


def test_the_file_policy_set_writes_is_picked_up_and_a_bad_one_is_counted(keys: Keys, tmp_path: Path) -> None:
    svc = service(keys, tmp_path)
    store.save(tmp_path, sign_policy(keys.owner, keys.nid, 5, Action.DENY, []))
    svc._reload()
    assert svc.policy.seq == 5 and svc.firewall.active
    store.path_of(tmp_path).write_text("p2pvpn-policy1:AAAA\n")
    svc._reload()
    assert svc.counters["file_refused"] == 1 and svc.policy.seq == 5


def test_a_restarted_node_starts_with_the_stored_policy(keys: Keys, tmp_path: Path) -> None:
    store.save(tmp_path, sign_policy(keys.owner, keys.nid, 7, Action.ALLOW, DENY_SSH))
    assert service(keys, tmp_path).policy.seq == 7
    assert store.load(tmp_path, keys.nid).seq == 7  # type: ignore[union-attr]


def test_a_policy_set_locally_goes_to_the_dht_at_once(keys: Keys, tmp_path: Path) -> None:
    """§17.4: a member stores its policy in the DHT at once after learning a new one, from the file too."""
    svc = service(keys, tmp_path)
    svc._next_dht = 1e9  # the next periodic sync is far away
    store.save(tmp_path, sign_policy(keys.owner, keys.nid, 6, Action.DENY, []))
    svc._reload()
    assert svc.policy.seq == 6 and svc._next_dht == 0.0
