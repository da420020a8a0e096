"""``up`` and ``relay`` run their node in a process that never imported the CLI's libraries (issue 16: RSS).

Why: typer coerces ``up``'s ~60 flags with pydantic, and the CLI imports
rich for its tables and help. A running node never uses them again, yet
they stay resident: ~15 MiB of the ~88 MiB an idle node held
(docs/performance.md, "A node process without the CLI").

How (theory of operation):

1. The command parses its flags and loads and validates the config in the
   CLI process as before, so every usage and config error, its message and
   its exit code are the CLI's, unchanged. Logging and the key are left to
   the node process: both import py-libp2p and trio (~0.5 s of CPU), which
   the CLI process then need not import too.
2. :func:`hand_over` pickles what the node needs (a :class:`Handover`) into
   a memfd and execs the same interpreter with its flags, ``-m p2pvpn`` and
   the same arguments: same PID, same open stdio, the same command line in
   ``ps``. ``P2PVPN_HANDOVER_FD`` names the memfd.
3. ``p2pvpn/__main__.py`` sees that variable before importing
   ``p2pvpn.cli`` and calls :func:`run_handed_over`, which loads the key,
   builds the node and runs it; its errors (a missing key among them) become
   the same one line on stderr and exit code as ``p2pvpn.cli.main`` gives
   them.

Only :func:`p2pvpn.cli.main` (the ``p2pvpn`` script and ``python -m
p2pvpn``) allows the handover; the command called any other way (tests,
embedding) runs the node in its own process as before.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV = "P2PVPN_HANDOVER_FD"
MAX_PAYLOAD = 1 << 20  # a pickled config is a few KiB; anything larger is not ours

# Set by p2pvpn.cli.main: only a process started as `p2pvpn ...` may replace itself.
allowed = False


@dataclass(frozen=True)
class Handover:
    """What the node process needs: the config already validated by the CLI."""

    kind: str                   # "up" or "relay"
    config: Any                 # p2pvpn.config.Config
    directory: Path
    overrides: dict[str, Any]   # the flags, merged again with config.toml on a reload (SIGHUP)
    log_stream: str             # "stderr" (up) or "stdout" (relay, for journald)
    package_dir: str            # where this p2pvpn came from: the new process must run the same code


def hand_over(handover: Handover) -> None:
    """Replace this process by a node process running ``handover`` (returns only if not allowed)."""
    if not allowed:
        return
    payload = pickle.dumps(handover, protocol=pickle.HIGHEST_PROTOCOL)
    fd = os.memfd_create("p2pvpn-handover", 0)  # no MFD_CLOEXEC: the new program reads it
    with open(fd, "wb", closefd=False) as f:  # writes it all
        f.write(payload)
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    root = str(Path(handover.package_dir).parent)
    flags = subprocess._args_from_interpreter_flags()  # -X, -W, -O, -I, ... as this interpreter has them
    if root != os.getcwd() and "-P" not in flags and "-I" not in flags:
        # `-m` puts the cwd first on sys.path: a p2pvpn/ in the cwd must not replace the one running now.
        flags.append("-P")
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ[ENV] = str(fd)
    os.execv(sys.executable, [sys.executable, *flags, "-m", "p2pvpn", *sys.argv[1:]])


def _read(fd: int) -> Handover:
    with os.fdopen(fd, "rb") as f:
        payload = f.read(MAX_PAYLOAD + 1)
    if len(payload) > MAX_PAYLOAD:
        raise RuntimeError(f"{ENV}: payload larger than {MAX_PAYLOAD} bytes")
    handover = pickle.loads(payload)  # our own memfd, written by the process we replaced
    if not isinstance(handover, Handover):
        raise RuntimeError(f"{ENV}: not a handover")
    return handover


def run_handed_over(fd: int) -> None:
    """Entry of the node process (p2pvpn/__main__.py): run the node; exit as p2pvpn.cli.main would."""
    from p2pvpn.errors import P2pvpnError

    os.environ.pop(ENV, None)  # the node's own children (ip, nft) are no handover
    handover = _read(fd)
    here = str(Path(__file__).resolve().parent)
    if here != str(Path(handover.package_dir).resolve()):
        raise RuntimeError(f"handover from {handover.package_dir} reached the p2pvpn in {here}")
    try:
        _run(handover)
    except P2pvpnError as exc:
        _fail(f"p2pvpn: error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except PermissionError as exc:
        _fail(f"p2pvpn: error: permission denied: {exc.filename or exc}", 1)
    except OSError as exc:  # a path that cannot be created or read, a full disk, ...
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"p2pvpn: error: {exc.strerror or exc}{where}", 1)
    sys.exit(0)


def _fail(line: str, code: int) -> None:
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)


def _run(handover: Handover) -> None:
    import trio

    from p2pvpn import identity, logs

    logs.install(handover.config.log_level, sys.stdout if handover.log_stream == "stdout" else sys.stderr)
    key_pair = identity.load(handover.directory / identity.KEY_FILE)
    node: Any
    if handover.kind == "relay":
        from p2pvpn.relay_node import RelayNode

        node = RelayNode(handover.config, key_pair, handover.directory)
    else:
        from p2pvpn.node import Node

        node = Node(handover.config, key_pair, handover.directory)
    node.start_overrides = handover.overrides
    logging.getLogger("p2pvpn").debug("node process %d: handed over from the CLI", os.getpid())
    trio.run(run_until_signal, node)


async def run_until_signal(node: Any) -> None:
    """Run ``node`` until a signal or ``down`` stops it; a failure caused by a user error becomes that error."""
    from p2pvpn.node_signals import run_node  # SIGTERM/SIGINT: graceful stop; SIGHUP: reload
    from p2pvpn.node import raise_user_error

    try:
        await run_node(node)
    except BaseExceptionGroup as group:
        raise_user_error(group)
        raise
