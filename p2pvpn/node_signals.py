"""A running ``up`` or ``relay`` and its signals: SIGTERM/SIGINT stop it gracefully, SIGHUP reloads.

SIGTERM or SIGINT stop it gracefully (p2pvpn.ops: a node's tunnels closed
with a Close frame, then its TUN, routes and nft tables removed; a relay's
circuits ended and its connections closed, p2pvpn.relay_node), a second
one or :data:`STOP_DEADLINE` seconds without progress cancel at once;
SIGHUP reloads config.toml. Its own module, without typer or rich, so the
node process (p2pvpn.node_process) imports no CLI library.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger("p2pvpn")

STOP_DEADLINE = 10.0  # seconds a graceful stop may take before it is cut short (systemd waits 90)


async def run_node(node: Any) -> None:
    """Run ``node`` until it stops or a signal stops it; SIGHUP reloads (see the module docstring)."""
    import trio  # only `up` needs it: the other commands start faster without (tests/test_cli_imports.py)

    stopping = False
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:

            async def run_then_leave() -> None:
                await node.run()
                nursery.cancel_scope.cancel()  # stopped by itself (`p2pvpn down`)

            async def cut_short() -> None:
                await trio.sleep(STOP_DEADLINE)
                log.warning("graceful stop took over %.0f s; stopping now", STOP_DEADLINE)
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_then_leave)
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    if hasattr(node, "reload"):
                        log.info("SIGHUP received, reloading the configuration")
                        node.reload()
                    else:
                        log.info("SIGHUP received; this process has nothing to reload")
                    continue
                log.info("%s received, shutting down", name)
                if stopping or not hasattr(node, "stop"):
                    nursery.cancel_scope.cancel()
                    break
                stopping = True
                node.stop()
                nursery.start_soon(cut_short)
