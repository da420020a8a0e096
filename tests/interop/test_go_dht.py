"""p2pvpn nodes on a go-libp2p-kad-dht server (the Go peer's ``dht`` mode, /p2pvpn/kad/1.0.0).

* two Python nodes that know only the Go DHT server find each other and
  form a tunnel (records and "members" providers stored on the Go node);
* the Go DHT stores a Python node's record and serves it back byte for
  byte; a tampered copy sent to it with a raw PUT_VALUE is rejected by its
  validator (docs/protocol.md §12.7) and does not replace the stored one.
All on loopback.
"""

from __future__ import annotations

from pathlib import Path

import multiaddr
import trio
import varint
from gopeer import GoPeer
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.network.stream.net_stream import INetStream
from libp2p.peer.id import ID

from p2pvpn.discovery import record as rec
from p2pvpn.host import STREAM_ERRORS, Host
from p2pvpn.testing.cluster import Cluster, running, wait_mesh
from p2pvpn.testing.packets import udp4

KAD = "/p2pvpn/kad/1.0.0"
FAST = {"record_ttl": 30.0, "discovery_interval": 0.5}


async def test_python_nodes_find_each_other_through_the_go_dht(go_dht: GoPeer, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    cluster.node("a")
    cluster.node("b")  # keys first: without a network owner, each must list the other to get a tunnel
    a = cluster.node("a", bootstrap=[go_dht.addr()], allow_peers=(str(cluster.nodes["b"].peer_id),), **FAST)
    b = cluster.node("b", bootstrap=[go_dht.addr()], allow_peers=(str(a.peer_id),), **FAST)
    async with running(a, b):
        await wait_mesh([a, b], timeout=45)
        # Each found the other's record in the Go DHT (a tunnel may have come in before that record did:
        # listed peers are let in without a lookup).
        with trio.fail_after(30):
            while a.manager.peers[b.peer_id].learned_from != "dht" or b.manager.peers[a.peer_id].learned_from != "dht":
                await trio.sleep(0.1)
        pkt = udp4(str(a.addresses.ipv4), str(b.addresses.ipv4), b"via go dht")
        cluster.tuns["a"].inject(pkt)
        with trio.fail_after(10):
            assert await cluster.tuns["b"].delivered.receive() == pkt
        # The Go DHT stored both records (its validator accepted them). Nodes fetch
        # a record from its owner first, so the mesh may form before the PUTs land.
        for node in (a, b):
            key = rec.record_key("default", node.peer_id)
            await go_dht.await_event("record_validated", lambda e, k=key: e["key"] == k and e["ok"], timeout=30)


async def _read_exact(stream: INetStream, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = await stream.read(n - len(out))
        if not chunk:
            raise EOFError("stream ended")
        out += chunk
    return out


async def kad_request(host: Host, peer: ID, addr: multiaddr.Multiaddr, message: Message) -> Message | None:
    """One request/response on a fresh /p2pvpn/kad/1.0.0 stream; None if the server reset it."""
    stream = await host.open_stream(peer, [addr], KAD)
    try:
        body = message.SerializeToString()
        await stream.write(varint.encode(len(body)) + body)
        with trio.fail_after(10):
            prefix = b""
            while not prefix or prefix[-1] & 0x80:
                prefix += await _read_exact(stream, 1)
            reply = Message()
            reply.ParseFromString(await _read_exact(stream, varint.decode_bytes(prefix)))
            return reply
    except (EOFError, *STREAM_ERRORS):
        return None
    finally:
        await stream.reset()


def get_value(key: str) -> Message:
    return Message(type=Message.MessageType.GET_VALUE, key=key.encode())


def put_value(key: str, value: bytes) -> Message:
    m = Message(type=Message.MessageType.PUT_VALUE, key=key.encode())
    m.record.key = key.encode()
    m.record.value = value
    return m


async def test_go_dht_stores_and_serves_a_python_record_and_rejects_a_tampered_one(
    go_dht: GoPeer, tmp_path: Path
) -> None:
    cluster = Cluster(tmp_path)
    node = cluster.node("a", bootstrap=[go_dht.addr()], **FAST)
    key = rec.record_key("default", node.peer_id)
    go_id = ID.from_base58(go_dht.peer_id)
    go_addr = multiaddr.Multiaddr(go_dht.addr()).decapsulate(multiaddr.Multiaddr(f"/p2p/{go_id}"))
    async with running(node):
        await go_dht.await_event("record_validated", lambda e: e["key"] == key and e["ok"], timeout=30)
        client = Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"])
        async with client.running():
            with trio.fail_after(30):  # the first PUT may still be on its way
                while True:
                    reply = await kad_request(client, go_id, go_addr, get_value(key))
                    if reply is not None and reply.HasField("record"):
                        break
                    await trio.sleep(0.2)
            stored = reply.record.value
            opened = rec.open_sealed(stored)  # what Go serves is the node's own, valid record
            rec.check(opened, network="default", now=opened.expires - 1, key_peer=node.peer_id)
            assert opened.peer_id == node.peer_id and opened.ipv4 == node.addresses.ipv4

            # A copy with a higher seq would win, if the signature held: flip one byte of it.
            forged = bytearray(stored)
            forged[-1] ^= 0x01
            mark = go_dht.mark()
            answer = await kad_request(client, go_id, go_addr, put_value(key, bytes(forged)))
            rejected = await go_dht.await_event("record_validated", lambda e: e["key"] == key, start=mark)
            assert not rejected["ok"] and "signature" in rejected["error"]
            assert answer is None or not answer.HasField("record")  # Go resets the stream on a rejected PUT
            again = await kad_request(client, go_id, go_addr, get_value(key))
            assert again is not None and again.record.value != bytes(forged)
            rec.open_sealed(again.record.value)

            # A record under a foreign namespace, or a key naming another peer, is refused as well.
            for bad_key in ("/pk/" + key, rec.record_key("default", client.peer_id)):
                await kad_request(client, go_id, go_addr, put_value(bad_key, stored))
                missing = await kad_request(client, go_id, go_addr, get_value(bad_key))
                assert missing is None or not missing.HasField("record"), bad_key
