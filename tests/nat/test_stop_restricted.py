"""Relayed connections are accepted only through relays we hold a slot on (real hosts, in process)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId, StopMessage

from p2pvpn.config import Config
from p2pvpn.host import STREAM_ERRORS, Host
from p2pvpn.nat import circuit as c
from p2pvpn.nat.traversal import Traversal
from p2pvpn.testing.cluster import free_port


async def test_a_stop_from_a_peer_we_hold_no_slot_on_is_refused_and_counted() -> None:
    node, pretender = (Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"]) for _ in range(2))
    async with AsyncExitStack() as stack:
        for host in (node, pretender):
            await stack.enter_async_context(host.running())
        traversal = Traversal(node, Config(), None, None, lambda: None)
        traversal.stop.install()
        await pretender.libp2p.connect(PeerInfo(node.peer_id, node.listen_addrs))
        with trio.fail_after(10):
            stream = await pretender.libp2p.new_stream(node.peer_id, [c.STOP_PROTOCOL])
            await c.write_msg(stream, StopMessage(type=StopMessage.CONNECT, peer=PeerId(id=pretender.peer_id.to_bytes())))
            try:
                answer: StopMessage | None = await c.read_stop(stream)
            except STREAM_ERRORS:  # the handler resets right after its answer; the reset may win the race
                answer = None
        assert answer is None or (answer.type == StopMessage.STATUS and answer.status == c.PERMISSION_DENIED)
        assert traversal.stop.accepted == 0 and traversal.stop.refused == 1
        assert node.limits.status()["stop_unexpected_relay"]["hits"] == 1
        assert traversal._expects_relayed(pretender.peer_id, node.peer_id) is False
        traversal.keeper.reservations[pretender.peer_id] = object()  # type: ignore[assignment]  # now we hold a slot there
        assert traversal._expects_relayed(pretender.peer_id, node.peer_id) is True
