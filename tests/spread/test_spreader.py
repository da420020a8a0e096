"""Pushes between two real libp2p hosts on loopback, and the DHT sync against an in-memory store.

Both kinds in use (policy, membership) are exercised through the one
Spreader; the answer bytes are the ones docs/protocol.md §15.9.2 and §17.4
name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn.host import Host
from p2pvpn.membership import service as membership_service
from p2pvpn.membership.errors import MembershipError
from p2pvpn.policy import service as policy_service
from p2pvpn.spread.rules import Rank
from p2pvpn.spread.spreader import Kind, Spreader
from p2pvpn.testing.cluster import free_port

KINDS = [policy_service.KIND, membership_service.KIND]


def new_host() -> Host:
    return Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"])


@asynccontextmanager
async def connected(a: Host, b: Host, protocol_id: str | None = None,
                    handler: Callable[[object], Awaitable[None]] | None = None) -> AsyncIterator[None]:
    """Both hosts running, ``a`` connected to ``b``, ``b`` serving ``handler`` (if given)."""
    async with AsyncExitStack() as stack:
        for host in (a, b):
            await stack.enter_async_context(host.running())
        if protocol_id is not None and handler is not None:
            b.set_handler(protocol_id, handler)
        await a.libp2p.connect(PeerInfo(b.peer_id, b.listen_addrs))
        yield


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_an_ok_answer_is_empty_and_a_refusal_carries_its_reason(kind: Kind) -> None:
    assert kind.encode_answer(True, "") == b""  # uvarint(0): the single byte 00 on the wire
    assert kind.decode_answer(b"") == (True, "")
    ok, reason = kind.decode_answer(kind.encode_answer(False, "bad signature"))
    assert not ok and reason == "bad signature"
    with pytest.raises(MembershipError):
        kind.decode_answer(b"\xff\xff")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
async def test_a_push_is_taken_answered_and_counted_on_both_sides(kind: Kind) -> None:
    a, b = new_host(), new_host()
    sent, got = Counter[str](), Counter[str]()
    pusher, receiver = Spreader[bytes](kind, a, sent), Spreader[bytes](kind, b, got)
    taken: list[tuple[ID, bytes]] = []
    served: list[object] = []

    def take(sender: ID, data: bytes) -> int:
        if data == b"bad":
            raise MembershipError("not a valid object")
        taken.append((sender, data))
        return len(data)

    async def handler(stream: object) -> None:
        served.append(await receiver.serve(stream, take))

    async with connected(a, b, kind.protocol_id, handler):
        with trio.fail_after(20):
            await pusher.push(b.peer_id, b"object v2")
            await pusher.push(b.peer_id, b"bad")
            while len(served) < 2:
                await trio.sleep(0.01)
    assert taken == [(a.peer_id, b"object v2")]
    assert served == [(a.peer_id, 9), None]
    assert sent == Counter(pushed=1, push_refused_by_peer=1)
    assert got == Counter(received=1, push_refused=1)


async def test_a_push_over_the_size_limit_is_refused_before_it_is_read() -> None:
    kind = policy_service.KIND
    a, b = new_host(), new_host()
    sent, got = Counter[str](), Counter[str]()
    pusher, receiver = Spreader[bytes](kind, a, sent), Spreader[bytes](kind, b, got)
    calls: list[bytes] = []
    done = trio.Event()

    async def handler(stream: object) -> None:
        await receiver.serve(stream, lambda sender, data: calls.append(data))
        done.set()

    async with connected(a, b, kind.protocol_id, handler):
        with trio.fail_after(20):
            await pusher.push(b.peer_id, bytes(kind.max_message + 1))
            await done.wait()
    assert calls == [] and got["push_refused"] == 1 and sent["push_refused_by_peer"] == 1


async def test_a_push_to_a_peer_without_the_protocol_fails_counted() -> None:
    a, b = new_host(), new_host()
    sent = Counter[str]()
    async with connected(a, b):
        with trio.fail_after(20):
            await Spreader[bytes](policy_service.KIND, a, sent).push(b.peer_id, b"x")
    assert sent == Counter(push_failed=1)


async def test_a_push_that_got_no_answer_is_sent_again_on_a_new_stream() -> None:
    """A receiver too busy to answer the first push (here: it never does) takes the next one.

    Without the retry the peer would learn a revocation only at its next DHT read, up to 30 s later.
    """
    kind = membership_service.KIND
    a, b = new_host(), new_host()
    sent, got = Counter[str](), Counter[str]()
    pusher, receiver = Spreader[bytes](kind, a, sent), Spreader[bytes](kind, b, got)
    streams: list[object] = []
    served: list[object] = []

    async def handler(stream: object) -> None:
        streams.append(stream)
        if len(streams) == 1:
            await trio.sleep_forever()  # stalled; cancelled when the host stops
        served.append(await receiver.serve(stream, lambda sender, data: data))

    async with connected(a, b, kind.protocol_id, handler):
        with trio.fail_after(60):
            await pusher.push(b.peer_id, b"revocations v2")
    assert served == [(a.peer_id, b"revocations v2")] and got == Counter(received=1)
    # One retry, or two if the first stream reached the receiver only after the second (a starved CPU).
    assert sent["pushed"] == 1 and sent["push_failed"] == 0 and 1 <= sent["push_retried"] <= 2


async def test_a_push_that_never_gets_an_answer_is_tried_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pvpn.spread import spreader

    monkeypatch.setattr(spreader, "PUSH_TIMEOUT", 0.5)  # every answer is missing anyway: no need to wait 5 s
    monkeypatch.setattr(spreader, "PUSH_RETRY_DELAY", 0.0)
    kind = membership_service.KIND
    a, b = new_host(), new_host()
    sent = Counter[str]()

    async def never_answers(stream: object) -> None:
        await trio.sleep_forever()

    async with connected(a, b, kind.protocol_id, never_answers):
        with trio.fail_after(60):
            await Spreader[bytes](kind, a, sent).push(b.peer_id, b"revocations v2")
            await Spreader[bytes](kind, a, sent).push(b.peer_id, b"certificate", attempts=1)  # before a reservation
    assert sent == Counter(push_retried=spreader.PUSH_ATTEMPTS - 1, push_failed=2)


# -- DHT sync ---------------------------------------------------------------------


@dataclass
class MemoryDht:
    """Stands in for p2pvpn.discovery.dht.Dht's get/put (the real one is tested in tests/membership)."""

    values: dict[str, bytes] = field(default_factory=dict)
    extra_validators: dict[str, object] = field(default_factory=dict)
    fail: bool = False
    puts: int = 0
    gets: int = 0

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        if self.fail:
            raise OSError("no peers")
        return self.values.get(key)

    async def put(self, key: str, value: bytes) -> None:
        self.puts += 1
        self.values[key] = value


def parse(value: bytes) -> Rank:
    """``seq:bytes``; anything else is invalid."""
    seq, sep, _ = value.partition(b":")
    if not sep or not seq.isdigit():
        raise MembershipError("invalid")
    return int(seq), value


class Node:
    def __init__(self, own: Rank | None) -> None:
        self.own = own
        self.counters = Counter[str]()
        self.dht = MemoryDht()
        self.spreader = Spreader[Rank](policy_service.KIND, None, self.counters)
        self.spreader.attach_dht(self.dht, "/p2pvpn/n/policy", object())  # type: ignore[arg-type]

    async def take(self, theirs: Rank) -> None:
        if self.own is None or theirs > self.own:
            self.own = theirs

    async def sync(self) -> None:
        await self.spreader.sync_dht(parse, lambda r: r, self.take, lambda: self.own)


async def test_sync_publishes_ours_when_the_dht_has_none_or_worse_and_takes_a_better_one() -> None:
    node = Node((2, b"2:ours"))
    assert "/p2pvpn/n/policy" in node.dht.extra_validators
    await node.sync()
    assert node.dht.values["/p2pvpn/n/policy"] == b"2:ours"
    assert node.counters == Counter(dht_published=1, dht_reads=1)
    node.dht.values["/p2pvpn/n/policy"] = b"1:old"
    await node.sync()
    assert node.dht.values["/p2pvpn/n/policy"] == b"2:ours" and node.counters["dht_fetched"] == 1
    node.dht.values["/p2pvpn/n/policy"] = b"5:newer"
    await node.sync()
    assert node.own == (5, b"5:newer") and node.dht.puts == 2  # taken, and nothing better to put back
    assert not node.spreader.schedule.running


async def test_every_periodic_read_is_one_dht_get_and_an_equal_copy_is_not_put_back() -> None:
    """How cheap a read is, is Dht.get's rule (tests/discovery/test_dht_hygiene.py); the spreader reads through it."""
    node = Node((1, b"1:ours"))
    node.dht.values["/p2pvpn/n/policy"] = b"1:ours"
    for _ in range(12):  # as start_sync_if_due does
        node.spreader.schedule.start()
        await node.sync()
    assert node.counters == Counter(dht_reads=12, dht_fetched=12)
    assert node.dht.gets == 12 and node.dht.puts == 0


async def test_an_invalid_dht_value_is_counted_and_overwritten_and_a_failing_dht_is_retried() -> None:
    node = Node((1, b"1:ours"))
    node.dht.values["/p2pvpn/n/policy"] = b"garbage"
    await node.sync()
    assert node.counters["dht_refused"] == 1 and node.dht.values["/p2pvpn/n/policy"] == b"1:ours"
    empty = Node(None)
    empty.dht.fail = True
    empty.spreader.schedule.start()
    await empty.sync()  # logged, not raised
    schedule = empty.spreader.schedule
    assert not schedule.running and schedule.misses == 0  # a failed read is not a miss: early retries go on
    assert schedule.next_at == pytest.approx(trio.current_time() + schedule.early_retry, abs=1.0)


async def test_a_due_sync_starts_once_until_it_finishes() -> None:
    node = Node(None)
    started: list[int] = []

    async def sync() -> None:
        started.append(1)
        await trio.sleep(0.05)
        node.spreader.schedule.finished(trio.current_time(), have_own=False)

    async with trio.open_nursery() as nursery:
        node.spreader.start_sync_if_due(nursery, sync)
        node.spreader.start_sync_if_due(nursery, sync)
    assert started == [1] and not node.spreader.schedule.running
