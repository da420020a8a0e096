"""The running node's membership duties (docs/protocol.md §15.9.2-§15.9.3): revocations in, tunnels out.

1. Every CHECK_INTERVAL the node re-reads ``membership/revocations.json``
   when it changed (that is how ``p2pvpn revoke`` reaches a running node),
   and re-checks every certificate presented on a live tunnel (revocation
   and expiry); a tunnel whose certificate is void is closed with
   NOT_AUTHORIZED and the peer forgotten.
2. A revocation list that changed what we know is pushed to every member
   we have a tunnel to, on its own stream (/p2pvpn/membership/1.0.0);
   receivers merge, enforce, store and forward only what was new to them,
   so the flood ends.
3. Before reserving a slot on a relay, a member pushes its certificate
   there (``present``); a relay counts a peer as a member from the
   certificate it presented (push or Hello), never from a DHT lookup.
4. The best list also lives in the DHT (``attach_dht``): fetched at start
   and every DHT_INTERVAL, stored whenever ours is better than what the
   DHT holds, so a member that was offline during a push learns it
   (p2pvpn.spread does the pushing and the DHT reads and writes).
5. When less than half of our certificate's lifetime is left, we renew it:
   with the owner key if it is here, else from an admin we have a tunnel
   with (/p2pvpn/join/1.0.0, ``renew``), then push the new certificate on
   every tunnel, so peers' re-checks see the new expiry and no tunnel
   drops.
"""

from __future__ import annotations

import logging
from collections import Counter

import trio
from libp2p.peer.id import ID

from p2pvpn.discovery.dht import Dht
from p2pvpn.host import STREAM_ERRORS, Host
from p2pvpn.membership import authority, canonical, cert, invite
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.invite import JoinAnswer, JoinStatus
from p2pvpn.membership.cert import Certificate
from p2pvpn.membership.join import renew
from p2pvpn.membership.network import ROLE_ADMIN
from p2pvpn.membership.dhtlist import RevocationListValidator, revocations_key
from p2pvpn.membership.revocation import MAX_LIST_SIZE, RevocationList, open_list
from p2pvpn.membership.store import Store
from p2pvpn.membership.view import MembershipView
from p2pvpn.session.manager import SessionManager
from p2pvpn.spread.rules import Rank
from p2pvpn.spread.spreader import Kind, Spreader
from p2pvpn.wire.codec import CloseCode

log = logging.getLogger(__name__)

PUSH_PROTOCOL_ID = "/p2pvpn/membership/1.0.0"
CHECK_INTERVAL = 1.0
MAX_PUSH_SIZE = MAX_LIST_SIZE + 8192


def _encode_answer(ok: bool, message: str) -> bytes:
    """Only ``status`` (and a refusal's message): an OK answer is the single byte 00 on the wire."""
    return invite.encode_response(JoinAnswer(JoinStatus.OK, message) if ok else
                                  JoinAnswer(JoinStatus.BAD_REQUEST, message))


def _decode_answer(data: bytes) -> tuple[bool, str]:
    answer = invite.parse_response(data)
    return answer.status is JoinStatus.OK, answer.message


KIND = Kind("membership", PUSH_PROTOCOL_ID, MAX_PUSH_SIZE, invite.MAX_RESPONSE_SIZE, _encode_answer, _decode_answer)


class MembershipService:
    def __init__(self, store: Store, view: MembershipView, manager: SessionManager, host: Host) -> None:
        self.store = store
        self.view = view
        self.manager = manager
        self.host = host
        self.counters: Counter[str] = Counter()
        self.spreader: Spreader[RevocationList] = Spreader(KIND, host, self.counters)
        self._mtime: int | None = None
        self._nursery: trio.Nursery | None = None
        self.renew_enabled = True
        self._renewing = False
        self._next_renewal = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_handler(PUSH_PROTOCOL_ID, self._on_push)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                if self._reload():
                    self._spread(exclude=None)
                    self.spreader.schedule.soon()  # and into the DHT
                self.enforce()
                self.spreader.start_sync_if_due(nursery, self._dht_sync)
                if self.renew_enabled and not self._renewing and self._renewal_due():
                    self._renewing = True
                    nursery.start_soon(self._renew)
                await trio.sleep(CHECK_INTERVAL)

    def _reload(self) -> bool:
        """Merge the stored list when the file changed; True when that taught us something."""
        path = self.store.root / "revocations.json"
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            stored = self.store.revocations()
        except MembershipError as exc:
            log.warning("revocations not reloaded: %s", exc)
            return False
        rset = self.view.revocations
        changed = False
        for peer, not_before in stored.entries.items():
            if not_before > rset.entries.get(peer, 0):
                rset.entries[peer] = not_before
                changed = True
        if stored.best is not None and (rset.best is None or (stored.best.seq, stored.best.raw) > (rset.best.seq,
                                                                                                   rset.best.raw)):
            rset.best = stored.best
            changed = True
        return changed

    def enforce(self) -> None:
        """Close every tunnel whose peer's certificate is void now (revoked or expired)."""
        live = {p.peer_id.to_bytes(): p for p in self.manager.peers.values() if p.tunnel is not None}
        for raw, reason in self.view.invalid_peers(live).items():
            peer = live[raw]
            self.counters["tunnels_closed"] += 1
            log.info("closing tunnel with %s: %s", peer.peer_id, reason)
            if peer.tunnel is not None:
                peer.tunnel.close(CloseCode.NOT_AUTHORIZED, reason)
            self.manager.forget(peer.peer_id)
            self.view.presented.pop(raw, None)

    def attach_dht(self, dht: Dht) -> None:
        """Validate, fetch and publish the revocation list in ``dht`` from now on."""
        self.spreader.attach_dht(dht, revocations_key(self.view.network_id), RevocationListValidator(
            self.view.network_id, lambda: self.view.revocations.entries, self.view.clock))

    async def _dht_sync(self) -> None:
        """Take in the DHT's list; put ours there when it is better (or the DHT has none)."""
        async def take(theirs: RevocationList) -> None:
            if self.view.revocations.merge(theirs):
                self.enforce()
                await trio.to_thread.run_sync(self._save)
                self._spread(exclude=None)

        def ours() -> Rank | None:
            best = self.view.revocations.best
            return None if best is None else (best.seq, best.raw)

        await self.spreader.sync_dht(
            lambda value: open_list(value, self.view.network_id, self.view.clock(), self.view.revocations.entries),
            lambda theirs: (theirs.seq, theirs.raw), take, ours)

    def _renewal_due(self) -> bool:
        own, now = self.view.own, self.view.clock()
        return now >= self._next_renewal and now >= own.not_before + (own.not_after - own.not_before) / 2

    async def _renew(self) -> None:
        """One renewal attempt; on failure the next one waits a tenth of the lifetime (1..60 s)."""
        own = self.view.own
        try:
            fresh = await self._fresh_certificate()
        finally:
            self._renewing = False
        if fresh is None:
            self._next_renewal = self.view.clock() + min(60.0, max(1.0, (own.not_after - own.not_before) / 10))
            self.counters["renewal_failed"] += 1
            return
        self.view.own = fresh
        self.manager.renew_certificate(fresh.raw)
        await trio.to_thread.run_sync(self.store.save_certificate, fresh.raw)
        self.counters["renewed"] += 1
        log.info("certificate renewed until %d", fresh.not_after)
        message = canonical.encode(pb.Membership(certificate=pb.SignedCertificate.FromString(fresh.raw)))
        for raw in list(self.view.presented):
            if self._nursery is not None and ID(raw) in self.manager.peers:
                self._nursery.start_soon(self._push_one, ID(raw), message)

    async def _fresh_certificate(self) -> Certificate | None:
        own, now = self.view.own, self.view.clock()
        me = self.host.peer_id.to_bytes()
        if self.store.owner_key() is not None:  # the owner's node renews itself
            def local() -> bytes:
                with self.store.lock():
                    return authority.admit(self.store.signer_from_owner(), self.view.network_id, me,
                                           issued=[own], revoked=self.view.revocations.entries, now=now,
                                           lifetime=own.not_after - own.not_before).certificate
            return self._accept(await trio.to_thread.run_sync(local))
        admins = [ID(raw) for raw, c in self.view.presented.items() if c.has_role(ROLE_ADMIN)
                  and self.view.reason_invalid(c) is None and (p := self.manager.peers.get(ID(raw))) is not None
                  and p.tunnel is not None]
        for admin in admins:
            try:
                answer = await renew(self.host, admin, [], own.raw)
            except (trio.TooSlowError, MembershipError, OSError, *STREAM_ERRORS) as exc:
                log.info("renewal at %s failed: %r", admin, exc)
                continue
            except Exception as exc:  # py-libp2p's dial and negotiation errors have no common base
                log.info("renewal at %s failed: %r", admin, exc)
                continue
            if answer.status is JoinStatus.OK and (fresh := self._accept(answer.certificate)) is not None:
                return fresh
            log.info("renewal at %s refused: %s %s", admin, answer.status.name, answer.message)
        return None

    def _accept(self, data: bytes) -> Certificate | None:
        """A renewed certificate must be valid now and keep our addresses (else peers would refuse it)."""
        try:
            fresh = cert.verify(data, self.view.network_id, self.view.clock(), self.view.revocations.entries,
                                self.host.peer_id.to_bytes())
        except MembershipError as exc:
            log.warning("renewed certificate refused: %s", exc)
            return None
        own = self.view.own
        if (fresh.ipv4, fresh.ipv6) != (own.ipv4, own.ipv6) or fresh.not_after <= own.not_after:
            log.warning("renewed certificate refused: other addresses or no later expiry")
            return None
        return fresh

    def _spread(self, exclude: ID | None) -> None:
        best = self.view.revocations.best
        if best is None or self._nursery is None:
            return
        message = canonical.encode(pb.Membership(revocations=pb.SignedRevocationList.FromString(best.raw)))
        for raw in list(self.view.presented):
            peer = ID(raw)
            if peer != exclude and peer in self.manager.peers:
                self._nursery.start_soon(self._push_one, peer, message)

    async def present(self, peer: ID) -> None:
        """Show ``peer`` (a relay) our certificate; best effort, bounded, before a reservation."""
        message = canonical.encode(pb.Membership(certificate=pb.SignedCertificate.FromString(self.view.own.raw)))
        await self.spreader.push(peer, message, attempts=1)  # one try: the reservation waits for it

    def is_member(self, peer: ID) -> bool:
        """A peer that presented a certificate which is still valid now."""
        c = self.view.presented.get(peer.to_bytes())
        return c is not None and self.view.reason_invalid(c) is None

    async def _push_one(self, peer: ID, message: bytes) -> None:
        await self.spreader.push(peer, message)

    async def _on_push(self, stream: object) -> None:
        def take(sender: ID, data: bytes) -> set[bytes]:
            message = canonical.parse(pb.Membership, data, "membership push")
            changed: set[bytes] = set()
            if message.HasField("certificate"):  # a member introducing itself (to a relay)
                peer = self.manager.peers.get(sender)
                tunnel = (peer.addresses.ipv4, peer.addresses.ipv6) if peer is not None and peer.tunnel is not None else None
                self.view.verify(canonical.encode(message.certificate), sender.to_bytes(), tunnel)
                self.counters["certificates"] += 1
            if message.HasField("revocations"):
                changed = self.view.revocations.merge_bytes(canonical.encode(message.revocations), self.view.clock())
            return changed

        served = await self.spreader.serve(stream, take)
        if served is None:
            return
        sender, changed = served
        if changed:
            log.info("revocation list %d from %s: %d peers revoked or moved", self.view.revocations.seq, sender,
                     len(changed))
            self.enforce()
            await trio.to_thread.run_sync(self._save)
            self._spread(exclude=sender)
            self.spreader.schedule.soon()

    def _save(self) -> None:
        with self.store.lock():
            stored = self.store.revocations()
            if self.view.revocations.best is not None:
                stored.merge(self.view.revocations.best)
            for peer, not_before in self.view.revocations.entries.items():
                stored.entries[peer] = max(not_before, stored.entries.get(peer, 0))
            self.store.save_revocations(stored)
            self._mtime = (self.store.root / "revocations.json").stat().st_mtime_ns
