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
   DHT holds, so a member that was offline during a push learns it.
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
from p2pvpn.host import STREAM_ERRORS, Host, close_quietly, remote_peer, reset_quietly
from p2pvpn.membership import authority, canonical, cert, invite
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.invite import JoinAnswer, JoinStatus
from p2pvpn.membership.cert import Certificate
from p2pvpn.membership.join import read_message, renew, uvarint
from p2pvpn.membership.network import ROLE_ADMIN
from p2pvpn.membership.dhtlist import RevocationListValidator, revocations_key
from p2pvpn.membership.revocation import MAX_LIST_SIZE, open_list
from p2pvpn.membership.store import Store
from p2pvpn.membership.view import MembershipView
from p2pvpn.session.manager import SessionManager
from p2pvpn.wire.codec import CloseCode

log = logging.getLogger(__name__)

PUSH_PROTOCOL_ID = "/p2pvpn/membership/1.0.0"
CHECK_INTERVAL = 1.0
PUSH_TIMEOUT = 5.0
DHT_INTERVAL = 30.0
DHT_EARLY_RETRY = 2.0    # while the DHT has given us nothing yet (e.g. just after start, before bootstrap)
DHT_EARLY_TRIES = 10
DHT_TIMEOUT = 20.0
MAX_PUSH_SIZE = MAX_LIST_SIZE + 8192


class MembershipService:
    def __init__(self, store: Store, view: MembershipView, manager: SessionManager, host: Host) -> None:
        self.store = store
        self.view = view
        self.manager = manager
        self.host = host
        self.counters: Counter[str] = Counter()
        self._mtime: int | None = None
        self._nursery: trio.Nursery | None = None
        self.renew_enabled = True
        self.dht: Dht | None = None
        self._next_dht = 0.0
        self._dht_syncing = False
        self._dht_misses = 0
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
                    self._next_dht = 0.0  # and into the DHT
                self.enforce()
                if self.dht is not None and not self._dht_syncing and trio.current_time() >= self._next_dht:
                    self._dht_syncing = True
                    nursery.start_soon(self._dht_sync)
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
        dht.extra_validators[revocations_key(self.view.network_id)] = RevocationListValidator(
            self.view.network_id, lambda: self.view.revocations.entries, self.view.clock)
        self.dht = dht
        self._next_dht = 0.0

    async def _dht_sync(self) -> None:
        """Take in the DHT's list; put ours there when it is better (or the DHT has none)."""
        assert self.dht is not None
        key = revocations_key(self.view.network_id)
        try:
            with trio.move_on_after(DHT_TIMEOUT):
                value = await self.dht.get(key)
                theirs = None
                if value is not None:
                    try:
                        theirs = open_list(value, self.view.network_id, self.view.clock(),
                                           self.view.revocations.entries)
                    except MembershipError as exc:
                        self.counters["dht_refused"] += 1
                        log.info("revocation list in the DHT refused: %s", exc)
                if theirs is None:
                    self._dht_misses += 1
                else:
                    self._dht_misses = DHT_EARLY_TRIES
                    self.counters["dht_fetched"] += 1
                    if self.view.revocations.merge(theirs):
                        self.enforce()
                        await trio.to_thread.run_sync(self._save)
                        self._spread(exclude=None)
                best = self.view.revocations.best
                if best is not None and (theirs is None or (best.seq, best.raw) > (theirs.seq, theirs.raw)):
                    await self.dht.put(key, best.raw)
                    self.counters["dht_published"] += 1
        except (OSError, *STREAM_ERRORS) as exc:
            log.info("revocation list DHT sync failed: %r", exc)
        except Exception as exc:  # py-libp2p's KadDHT raises assorted types on lookups and stores
            log.info("revocation list DHT sync failed: %r", exc)
        finally:
            self._dht_syncing = False
            early = self._dht_misses < DHT_EARLY_TRIES and self.view.revocations.best is None
            self._next_dht = trio.current_time() + (DHT_EARLY_RETRY if early else DHT_INTERVAL)

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
        await self._push_one(peer, message)

    def is_member(self, peer: ID) -> bool:
        """A peer that presented a certificate which is still valid now."""
        c = self.view.presented.get(peer.to_bytes())
        return c is not None and self.view.reason_invalid(c) is None

    async def _push_one(self, peer: ID, message: bytes) -> None:
        try:
            with trio.fail_after(PUSH_TIMEOUT):
                stream = await self.host.open_stream(peer, [], PUSH_PROTOCOL_ID)
                try:
                    await stream.write(uvarint(len(message)) + message)
                    answer = invite.parse_response(await read_message(stream, invite.MAX_RESPONSE_SIZE))
                finally:
                    await close_quietly(stream)
            if answer.status is not JoinStatus.OK:
                self.counters["push_refused_by_peer"] += 1
                log.info("%s refused our membership push: %s", peer, answer.message)
                return
            self.counters["pushed"] += 1
        except (trio.TooSlowError, OSError, *STREAM_ERRORS) as exc:
            self.counters["push_failed"] += 1
            log.debug("revocation push to %s failed: %r", peer, exc)
        except Exception as exc:  # py-libp2p's dial and negotiation errors have no common base
            self.counters["push_failed"] += 1
            log.debug("revocation push to %s failed: %r", peer, exc)

    async def _on_push(self, stream: object) -> None:
        sender = remote_peer(stream)  # type: ignore[arg-type]
        try:
            with trio.fail_after(PUSH_TIMEOUT):
                data = await read_message(stream, MAX_PUSH_SIZE)
            message = canonical.parse(pb.Membership, data, "membership push")
            changed = set()
            if message.HasField("certificate"):  # a member introducing itself (to a relay)
                peer = self.manager.peers.get(sender)
                tunnel = (peer.addresses.ipv4, peer.addresses.ipv6) if peer is not None and peer.tunnel is not None else None
                self.view.verify(canonical.encode(message.certificate), sender.to_bytes(), tunnel)
                self.counters["certificates"] += 1
            if message.HasField("revocations"):
                changed = self.view.revocations.merge_bytes(canonical.encode(message.revocations), self.view.clock())
        except MembershipError as exc:
            self.counters["push_refused"] += 1
            log.info("membership push from %s refused: %s", sender, exc)
            await self._answer(stream, JoinAnswer(JoinStatus.BAD_REQUEST, str(exc)))
            return
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            self.counters["push_refused"] += 1
            log.info("membership push from %s failed: %r", sender, exc)
            await reset_quietly(stream)  # type: ignore[arg-type]
            return
        await self._answer(stream, JoinAnswer(JoinStatus.OK))  # the sender may now rely on what it pushed
        self.counters["received"] += 1
        if changed:
            log.info("revocation list %d from %s: %d peers revoked or moved", self.view.revocations.seq, sender,
                     len(changed))
            self.enforce()
            await trio.to_thread.run_sync(self._save)
            self._spread(exclude=sender)
            self._next_dht = 0.0

    async def _answer(self, stream: object, answer: JoinAnswer) -> None:
        data = invite.encode_response(answer)
        try:
            with trio.fail_after(PUSH_TIMEOUT):
                await stream.write(uvarint(len(data)) + data)  # type: ignore[attr-defined]
        except (trio.TooSlowError, *STREAM_ERRORS):
            await reset_quietly(stream)  # type: ignore[arg-type]
            return
        await close_quietly(stream)  # type: ignore[arg-type]

    def _save(self) -> None:
        with self.store.lock():
            stored = self.store.revocations()
            if self.view.revocations.best is not None:
                stored.merge(self.view.revocations.best)
            for peer, not_before in self.view.revocations.entries.items():
                stored.entries[peer] = max(not_before, stored.entries.get(peer, 0))
            self.store.save_revocations(stored)
            self._mtime = (self.store.root / "revocations.json").stat().st_mtime_ns
