"""The join protocol's I/O edge (/p2pvpn/join/1.0.0, docs/protocol.md §15.7).

The inviter side, ``JoinService``, answers on a running node: it reads the
pending invite from the node directory on every request, so invites made by
``p2pvpn invite`` while the node runs are honoured without telling the node.
The decisions are in ``invite.Pending`` and ``authority.admit``; this module
only moves bytes and files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import multiaddr
import trio
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pvpn.host import STREAM_ERRORS, Host, close_quietly, remote_peer, reset_quietly
from p2pvpn.membership import authority, cert, invite
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.invite import JoinAnswer, JoinStatus
from p2pvpn.membership.store import Store

log = logging.getLogger(__name__)

EXCHANGE_TIMEOUT = 10.0
RENEW_GRACE = 30 * 86400


def uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


async def _read_exactly(stream: object, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))  # type: ignore[attr-defined]
        if not chunk:
            raise MembershipError("the other side closed the join stream early")
        buf += chunk
    return bytes(buf)


async def read_message(stream: object, limit: int) -> bytes:
    """One ``uvarint(len) || message``; the length must be minimal and within ``limit``."""
    length, shift, raw = 0, 0, bytearray()
    while True:
        byte = (await _read_exactly(stream, 1))[0]
        raw.append(byte)
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
        if len(raw) >= 4:
            raise MembershipError("join message length prefix too long")
    if uvarint(length) != bytes(raw) or length > limit:
        raise MembershipError(f"join message length {length} is invalid (at most {limit}, minimal varint)")
    return await _read_exactly(stream, length)


class JoinService:
    """Answers join and renew requests for the network of ``store`` with this node's signing right."""

    def __init__(self, store: Store, node_key: KeyPair, bootstrap: Callable[[], Sequence[str]],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.node_key = node_key
        self.bootstrap = bootstrap
        self.clock = clock
        self.answered: dict[str, int] = {}
        """Answers given, by status name (for status output and tests)."""

    async def handle(self, stream: object) -> None:
        joiner = remote_peer(stream)  # type: ignore[arg-type]
        try:
            with trio.fail_after(EXCHANGE_TIMEOUT):
                try:
                    request = invite.parse_request(await read_message(stream, invite.MAX_REQUEST_SIZE))
                    answer = await trio.to_thread.run_sync(self.answer, joiner, request)  # files, fsync
                except MembershipError as exc:
                    answer = JoinAnswer(JoinStatus.BAD_REQUEST, str(exc))
                self.answered[answer.status.name] = self.answered.get(answer.status.name, 0) + 1
                log.info("join request from %s: %s %s", joiner, answer.status.name, answer.message)
                data = invite.encode_response(answer)
                await stream.write(uvarint(len(data)) + data)  # type: ignore[attr-defined]
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            log.info("join request from %s failed: %s", joiner, type(exc).__name__)
            await reset_quietly(stream)  # type: ignore[arg-type]
            return
        await close_quietly(stream)  # type: ignore[arg-type]

    def answer(self, joiner: ID, request: object) -> JoinAnswer:
        """Decide and, on success, record the new certificate (files, under the store lock)."""
        now = self.clock()
        network, name = self.store.network()
        with self.store.lock():
            try:
                signer = self.store.signer(self.node_key, now)
            except MembershipError as exc:
                return JoinAnswer(JoinStatus.UNAVAILABLE, str(exc))
            revoked = self.store.revocations()
            if request.HasField("renew"):  # type: ignore[attr-defined]
                status, message, data = self._renew(joiner, request, network, signer, revoked.entries, now)
            else:
                status, message, data = self._redeem(joiner, request, network, signer, revoked.entries, now)
            if status is not JoinStatus.OK:
                return JoinAnswer(status, message)
        own = [a for a in self.bootstrap() if "/p2p/" in a]
        return JoinAnswer(
            JoinStatus.OK, message, data, name,
            tuple(multiaddr.Multiaddr(a).to_bytes() for a in own[: invite.MAX_INVITE_ADDRS]),
            revoked.best.raw if revoked.best else b"",
        )

    def _redeem(self, joiner: ID, request: object, network: str, signer: object, revoked: dict[bytes, int],
                now: float) -> tuple[JoinStatus, str, bytes]:
        iid = request.invite_id  # type: ignore[attr-defined]
        pending = self.store.invite(iid)
        if pending is None:
            return JoinStatus.UNKNOWN_INVITE, "no such invite (wrong node, or it was withdrawn)", b""
        joiner_text = joiner.to_base58()
        status = pending.judge(network, joiner.to_bytes(), joiner_text, request.proof, now)  # type: ignore[attr-defined]
        if status is not JoinStatus.OK:
            return status, {JoinStatus.BAD_PROOF: "the proof does not match the invite",
                            JoinStatus.EXPIRED: f"the invite expired at {pending.expires}",
                            JoinStatus.USED_UP: "every use of the invite is spent"}.get(status, ""), b""
        if joiner_text in pending.redeemed:
            return JoinStatus.OK, "already redeemed by this peer", cert.from_text(pending.redeemed[joiner_text])
        admission = authority.admit(
            signer, network, joiner.to_bytes(), issued=self.store.issued(), revoked=revoked, now=now,  # type: ignore[arg-type]
            name=pending.name, roles=pending.roles, groups=pending.groups, unique=True,
        )
        self.store.save_issued(admission.certificate)
        pending.redeem(joiner_text, cert.to_text(admission.certificate))
        self.store.save_invite(iid, pending)
        return JoinStatus.OK, "welcome", admission.certificate

    def _renew(self, joiner: ID, request: object, network: str, signer: object, revoked: dict[bytes, int],
               now: float) -> tuple[JoinStatus, str, bytes]:
        try:
            current = cert.open_certificate(request.renew.SerializeToString(deterministic=True), network)  # type: ignore[attr-defined]
        except MembershipError as exc:
            return JoinStatus.BAD_REQUEST, str(exc), b""
        if current.peer_id != joiner.to_bytes():
            return JoinStatus.BAD_REQUEST, "that certificate belongs to another peer", b""
        if cert.is_revoked(current, revoked) or now >= current.not_after + RENEW_GRACE:
            return JoinStatus.UNAVAILABLE, "the certificate is revoked or expired too long ago", b""
        issued = [c for c in self.store.issued() if c.peer_id != current.peer_id] + [current]
        admission = authority.admit(signer, network, current.peer_id, issued=issued, revoked=revoked, now=now,  # type: ignore[arg-type]
                                    lifetime=current.not_after - current.not_before)  # as long as before
        self.store.save_issued(admission.certificate)
        return JoinStatus.OK, "renewed", admission.certificate


async def exchange(host: Host, peer: ID, addrs: Sequence[multiaddr.Multiaddr], request: bytes) -> JoinAnswer:
    """Dial ``peer``, send one request, read one answer, bounded in time."""
    with trio.fail_after(EXCHANGE_TIMEOUT + 5):
        stream = await host.open_stream(peer, addrs, invite.PROTOCOL_ID)
        try:
            await stream.write(uvarint(len(request)) + request)
            return invite.parse_response(await read_message(stream, invite.MAX_RESPONSE_SIZE))
        finally:
            await close_quietly(stream)


async def redeem(host: Host, token: invite.Invite, joiner: ID) -> JoinAnswer:
    """The joiner side of an invite."""
    addrs = [multiaddr.Multiaddr(a) for a in token.addrs]
    return await exchange(host, ID(token.inviter), addrs, invite.make_request(token, joiner.to_bytes()))


async def renew(host: Host, admin: ID, addrs: Sequence[multiaddr.Multiaddr], current: bytes) -> JoinAnswer:
    """Ask an admin for a fresh copy of ``current`` (same name, addresses, roles, groups)."""
    from p2pvpn.membership import membership_pb2 as pb

    msg = pb.JoinRequest()
    msg.renew.ParseFromString(current)
    return await exchange(host, admin, addrs, msg.SerializeToString(deterministic=True))
