"""The running node's policy duties (docs/protocol.md §17.4): learn the best policy, pass it on, enforce it.

1. Every CHECK_INTERVAL: re-read ``membership/policy`` when it changed
   (that is how ``p2pvpn policy set`` reaches a running node), and push
   the current policy to every member with a live tunnel that has not had
   it on that tunnel yet (``/p2pvpn/policy/1.0.0``): a new policy reaches
   every connected member within about a second per hop, a member that
   connects later within a second of its tunnel coming up.
2. A pushed policy is validated; a better one (higher seq, then larger
   bytes) replaces ours at once (the firewall applies it to the next
   packet), is saved, and goes on to every other member by step 1. A worse
   one is answered OK, and the sender gets ours back.
3. The best policy also lives in the DHT (``attach_dht``), read at start
   and every DHT_INTERVAL, stored whenever ours is better (p2pvpn.spread
   does the pushing and the DHT reads and writes for both this and the
   revocation list).
4. Every SWEEP_INTERVAL the conntrack table drops its expired flows.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import trio
from libp2p.peer.id import ID

from p2pvpn.discovery.dht import Dht
from p2pvpn.host import Host
from p2pvpn.membership import canonical
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.view import MembershipView
from p2pvpn.policy import policy_pb2 as pb
from p2pvpn.policy import store
from p2pvpn.policy.dhtkey import PolicyValidator, policy_key
from p2pvpn.policy.firewall import Firewall
from p2pvpn.policy.model import MAX_POLICY_SIZE, Policy, allow_all, open_policy
from p2pvpn.session.manager import SessionManager
from p2pvpn.spread.rules import Rank
from p2pvpn.spread.spreader import Kind, Spreader

log = logging.getLogger(__name__)

PROTOCOL_ID = "/p2pvpn/policy/1.0.0"
CHECK_INTERVAL = 1.0
SWEEP_INTERVAL = 10.0
STATUS_OK, STATUS_BAD_REQUEST = 0, 5
MAX_ANSWER_SIZE = 1024


def _encode_answer(ok: bool, message: str) -> bytes:
    return canonical.encode(pb.PolicyAnswer(status=STATUS_OK if ok else STATUS_BAD_REQUEST, message=message[:200]))


def _decode_answer(data: bytes) -> tuple[bool, str]:
    answer = canonical.parse(pb.PolicyAnswer, data, "policy answer")
    return answer.status == STATUS_OK, answer.message


KIND = Kind("policy", PROTOCOL_ID, MAX_POLICY_SIZE, MAX_ANSWER_SIZE, _encode_answer, _decode_answer)


def make_firewall(directory: Path, view: MembershipView, local_peer: bytes) -> Firewall:
    """The node's firewall, with the stored policy if it is still valid (allow-all otherwise)."""
    policy = allow_all(view.network_id)
    try:
        stored = store.load(directory, view.network_id)
        if stored is not None:
            policy = open_policy(stored.raw, view.network_id, view.clock(), view.revocations.entries)
    except MembershipError as exc:
        log.warning("stored policy not used: %s", exc)

    def groups_of(peer: bytes) -> tuple[str, ...]:
        c = view.presented.get(peer)
        return c.groups if c is not None else ()

    return Firewall(policy, local_peer, view.own.groups, groups_of)


class PolicyService:
    def __init__(self, directory: Path, view: MembershipView, manager: SessionManager, host: Host,
                 firewall: Firewall) -> None:
        self.directory = directory
        self.view = view
        self.manager = manager
        self.host = host
        self.firewall = firewall
        self.counters: Counter[str] = Counter()
        self.spreader: Spreader[Policy] = Spreader(KIND, host, self.counters)
        self._mtime: int | None = None
        self._sent: dict[bytes, tuple[int, int]] = {}  # peer -> (seq, id(tunnel)) it has had from us or sent us
        self._nursery: trio.Nursery | None = None
        self._next_sweep = 0.0

    @property
    def policy(self) -> Policy:
        return self.firewall.policy

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_handler(PROTOCOL_ID, self._on_push)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                self._reload()
                if self.view.own.groups != self.firewall.local_groups:  # a renewal may carry other groups
                    self.firewall.set_local_groups(self.view.own.groups)
                self._spread()
                now = time.monotonic()
                if now >= self._next_sweep:
                    self.firewall.sweep(now)
                    self._next_sweep = now + SWEEP_INTERVAL
                self.spreader.start_sync_if_due(nursery, self._dht_sync)
                await trio.sleep(CHECK_INTERVAL)

    def accept(self, data: bytes) -> bool:
        """Take a policy in if it is valid and better than ours; True when it replaced ours. Raises MembershipError."""
        return self._apply(open_policy(data, self.view.network_id, self.view.clock(), self.view.revocations.entries))

    def _apply(self, policy: Policy) -> bool:
        if policy.rank() <= self.policy.rank():
            return False
        self.firewall.set_policy(policy)
        self.counters["applied"] += 1
        log.info("policy %d applied: default %s, %d rules (%d for this node)", policy.seq,
                 policy.default.name.lower(), len(policy.rules), len(self.firewall.rules))
        return True

    def reload(self) -> None:
        """Re-read the policy file if it changed (SIGHUP, `p2pvpn reload`, and the service's 1 s poll)."""
        self._reload()

    def _reload(self) -> None:
        path = store.path_of(self.directory)
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            stored = store.load(self.directory, self.view.network_id)
            if stored is not None and self.accept(stored.raw):
                self._next_dht = 0.0  # §17.4: a new policy goes to the DHT at once, as a pushed one does
        except MembershipError as exc:
            self.counters["file_refused"] += 1
            log.warning("policy file not applied: %s", exc)

    def _save(self) -> None:
        store.save(self.directory, self.policy.raw)
        self._mtime = store.path_of(self.directory).stat().st_mtime_ns

    def _spread(self) -> None:
        """Push the current policy on every member tunnel that has not had it yet."""
        policy = self.policy
        if not policy.raw or self._nursery is None:
            return
        for raw in list(self.view.presented):
            peer = self.manager.peers.get(ID(raw))
            if peer is None or peer.tunnel is None:
                continue
            mark = (policy.seq, id(peer.tunnel))
            if self._sent.get(raw, (0, 0)) != mark and self._sent.get(raw, (0, 0))[0] <= policy.seq:
                self._sent[raw] = mark  # one attempt per policy and tunnel; the DHT covers a failed one
                self._nursery.start_soon(self._push_one, peer.peer_id, policy.raw)

    async def _push_one(self, peer: ID, data: bytes) -> None:
        await self.spreader.push(peer, data)

    async def _on_push(self, stream: object) -> None:
        def take(sender: ID, data: bytes) -> tuple[Policy, bool]:
            theirs = open_policy(data, self.view.network_id, self.view.clock(), self.view.revocations.entries)
            return theirs, self._apply(theirs)

        served = await self.spreader.serve(stream, take)
        if served is None:
            return
        sender, (theirs, changed) = served
        peer = self.manager.peers.get(sender)
        if peer is not None and peer.tunnel is not None and theirs.rank() >= self.policy.rank():
            self._sent[sender.to_bytes()] = (self.policy.seq, id(peer.tunnel))  # no need to send it back
        else:
            self._sent.pop(sender.to_bytes(), None)  # theirs is older: ours goes back at the next check
        if changed:
            await trio.to_thread.run_sync(self._save)
            self._spread()
            self.spreader.schedule.soon()

    def attach_dht(self, dht: Dht) -> None:
        self.spreader.attach_dht(dht, policy_key(self.view.network_id), PolicyValidator(
            self.view.network_id, lambda: self.view.revocations.entries, self.view.clock))

    async def _dht_sync(self) -> None:
        async def take(theirs: Policy) -> None:
            if self._apply(theirs):
                await trio.to_thread.run_sync(self._save)

        def ours() -> Rank | None:
            return self.policy.rank() if self.policy.raw else None

        await self.spreader.sync_dht(
            lambda value: open_policy(value, self.view.network_id, self.view.clock(), self.view.revocations.entries),
            Policy.rank, take, ours)

    def status(self) -> dict[str, object]:
        return {**self.firewall.status(), "counters": dict(self.counters)}
