"""Canaries for the logs-and-dials reach-ins of p2pvpn.libp2p_compat (route_libp2p_logs, install_dial_filter,
ROUTINE_LIBP2P_LOGS), with real hosts where behaviour matters."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import PeerInfo

from p2pvpn import libp2p_compat
from p2pvpn.host import STREAM_ERRORS, Host

from p2pvpn.testing.cluster import free_port


@asynccontextmanager
async def hosts(count: int) -> AsyncIterator[list[Host]]:
    made = [Host(create_new_key_pair(), [f"/ip4/127.0.0.1/tcp/{free_port()}"]) for _ in range(count)]
    async with AsyncExitStack() as stack:
        for host in made:
            await stack.enter_async_context(host.running())
        yield made


def test_py_libp2p_still_hides_its_logger_at_import_and_we_undo_it() -> None:
    import libp2p.utils.logging as upstream

    logger = logging.getLogger("libp2p")
    saved = (logger.propagate, list(logger.handlers), logger.level)
    try:
        upstream.setup_logging()  # what `import libp2p` runs
        assert logger.propagate is False  # the reason its lines came out bare, in another format
        libp2p_compat.route_libp2p_logs()
        assert logger.propagate is True and logger.handlers == []
    finally:
        logger.propagate = saved[0]
        logger.handlers[:] = saved[1]
        logger.setLevel(saved[2])


def test_each_routine_text_is_still_written_by_py_libp2p() -> None:
    for module, text in libp2p_compat.ROUTINE_LIBP2P_SOURCES:
        source = inspect.getsource(__import__(module, fromlist=["_"]))
        assert text in source, f"{module} no longer says {text!r}: update ROUTINE_LIBP2P_LOGS"
    texts = {text for _, text in libp2p_compat.ROUTINE_LIBP2P_LOGS}
    assert texts == {text for _, text in libp2p_compat.ROUTINE_LIBP2P_SOURCES}  # each rule has its canary


async def test_a_stream_for_an_unserved_protocol_logs_the_routine_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="libp2p")
    logging.getLogger("libp2p").propagate = True  # caplog listens on the root logger
    async with hosts(2) as (a, b):
        with pytest.raises(STREAM_ERRORS):
            with trio.fail_after(15):
                await a.open_stream(b.peer_id, b.listen_addrs, "/p2pvpn/kad/1.0.0")
    texts = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    routine = [t for t in texts if t[0] == "libp2p.host.basic_host" and "Failed to open stream to peer" in t[2]]
    assert routine, texts
    assert routine[0][1] >= logging.WARNING and "protocols not supported" in routine[0][2]


def test_the_dial_filter_hook_is_what_dial_peer_and_dial_addr_call() -> None:
    from libp2p.network.swarm import Swarm

    libp2p_compat._check_logs_and_dials()
    for caller in libp2p_compat.DIAL_FILTER_CALLERS:
        assert "self._dial_with_retry(" in inspect.getsource(getattr(Swarm, caller))


def test_the_check_names_a_missing_dial_filter_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    from libp2p.network.swarm import Swarm

    monkeypatch.delattr(Swarm, "_dial_with_retry")
    with pytest.raises(libp2p_compat.CompatError, match="dial filter"):
        libp2p_compat.check()


async def test_the_dial_filter_sees_every_address_a_real_host_dials() -> None:
    async with hosts(2) as (a, b):
        good = b.listen_addrs[0]
        unusable = multiaddr.Multiaddr(f"/ip4/0.0.0.0/tcp/{good.value_for_protocol('tcp')}")
        with pytest.raises(STREAM_ERRORS):  # only an address that cannot work: skipped, not dialed
            with trio.fail_after(10):
                await a.libp2p.connect(PeerInfo(b.peer_id, [unusable]))
        assert a.dials.skipped["scope"] >= 1
        libp2p_compat.unblock_peer(a.libp2p, b.peer_id)
        a.libp2p.get_peerstore().clear_addrs(b.peer_id)
        with trio.fail_after(10):
            await a.libp2p.connect(PeerInfo(b.peer_id, [good]))
        assert b.peer_id in a.connected_peers()
        skipped = dict(a.dials.skipped)
        with pytest.raises(STREAM_ERRORS):  # the dial-back / hole-punch path goes through it too
            await a.libp2p.get_network().dial_addr(unusable, b.peer_id)
        assert a.dials.skipped["scope"] == skipped["scope"] + 1
