"""Canaries for p2pvpn.libp2p_import (py-libp2p without its package __init__s) and libp2p_compat.new_host.

If an upgrade of py-libp2p gives a package ``__init__`` a side effect, or
``libp2p.new_host`` starts wiring its host differently, these fail and name
what changed.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import multiaddr
import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from p2pvpn import libp2p_compat

REPO = Path(__file__).resolve().parents[2]
# Module-level statements of py-libp2p package __init__ files that are not imports or definitions,
# and why skipping them is harmless. A new one fails test_package_inits_have_no_other_side_effects.
KNOWN_INIT_STATEMENTS = {
    ("__init__.py", "setup_logging()"): "LIBP2P_DEBUG logging; p2pvpn.libp2p_compat.route_libp2p_logs undoes it",
    ("__init__.py", "logger = logging.getLogger(__name__)"): "a logger for new_host's own messages",
    ("__init__.py", "__version__ = __version('libp2p')"): "computed when asked for (__getattr__ runs __init__)",
    ("transport/websocket/__init__.py", "__all__.append('WebSocketTransport')"): "a name list",
}


def _run(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (imports are per process); it prints one JSON object."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def test_package_inits_have_no_other_side_effects() -> None:
    """Every statement of every libp2p package __init__ is an import, a definition or a known one."""
    spec = importlib.util.find_spec("libp2p")
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    inits = sorted(root.rglob("__init__.py"))
    assert len(inits) > 20  # the walk found the package
    unknown = []
    for init in inits:
        for stmt in ast.parse(init.read_text()).body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue  # a docstring
            calls = any(isinstance(n, ast.Call) for n in ast.walk(stmt))
            if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.If, ast.Try)) and not calls:
                continue
            if isinstance(stmt, (ast.If, ast.Try)) and all(
                isinstance(n, (ast.Import, ast.ImportFrom)) or not isinstance(n, ast.stmt)
                or isinstance(n, (ast.If, ast.Try, ast.Pass))
                for n in ast.walk(stmt) if n is not stmt and isinstance(n, ast.stmt)
            ):
                continue  # `if TYPE_CHECKING:` / `try: import ... except ImportError:`
            key = (init.relative_to(root).as_posix(), ast.unparse(stmt))
            if key not in KNOWN_INIT_STATEMENTS:
                unknown.append(f"{key[0]}:{stmt.lineno}: {key[1][:120]}")
    assert not unknown, "py-libp2p package __init__ statements p2pvpn.libp2p_import would skip:\n" + "\n".join(unknown)


def test_a_node_imports_without_running_libp2p_package_inits() -> None:
    out = _run(
        "import json, sys\n"
        "import p2pvpn.node, p2pvpn.cli, libp2p, libp2p.transport\n"
        "from p2pvpn.host import Host\n"
        "from p2pvpn.libp2p_import import is_deferred\n"
        "from libp2p.crypto.ed25519 import create_new_key_pair\n"
        "Host(create_new_key_pair(), ['/ip4/127.0.0.1/tcp/0'])\n"
        "heavy = ['trio_websocket', 'libp2p.transport.websocket.transport', 'libp2p.peer.persistent',\n"
        "         'libp2p.security.tls.transport', 'libp2p.security.secio.transport',\n"
        "         'libp2p.transport.quic.transport', 'libp2p.security.insecure.transport']\n"
        "print(json.dumps({'deferred': [is_deferred(libp2p), is_deferred(libp2p.transport)],\n"
        "                  'loaded': [m for m in heavy if m in sys.modules]}))\n"
    )
    assert out == {"deferred": [True, True], "loaded": []}


def test_asking_a_package_for_one_of_its_names_runs_its_init() -> None:
    """``from libp2p import new_host`` works as before: the deferred __init__ runs then, in full."""
    out = _run(
        "import json, sys\n"
        "import p2pvpn, libp2p\n"
        "from p2pvpn.libp2p_import import is_deferred\n"
        "before = is_deferred(libp2p)\n"
        "from libp2p import new_host, MUXER_YAMUX\n"
        "from libp2p.peer import id as id_module\n"  # a submodule: no __init__ needed for it
        "print(json.dumps({'before': before, 'after': is_deferred(libp2p), 'yamux': MUXER_YAMUX,\n"
        "                  'callable': callable(new_host), 'version': bool(libp2p.__version__)}))\n"
    )
    assert out == {"before": True, "after": False, "yamux": "YAMUX", "callable": True, "version": True}


def _shape(obj: Any, depth: int = 2) -> Any:
    """Attribute names, value types, and plain values of a py-libp2p object graph, ``depth`` levels down."""
    if isinstance(obj, (int, float, str, bool, type(None))):
        return obj
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, dict):
        return {str(k): _shape(v, depth - 1) if depth else type(v).__name__ for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_shape(v, depth - 1) if depth else type(v).__name__ for v in obj]
    name = type(obj).__module__ + "." + type(obj).__qualname__
    if depth == 0 or not type(obj).__module__.startswith("libp2p") or not hasattr(obj, "__dict__"):
        return name
    return {"type": name, **{k: _shape(v, depth - 1) for k, v in vars(obj).items()}}


@pytest.mark.parametrize("listen", [["/ip4/127.0.0.1/tcp/0"], ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]])
def test_our_new_host_builds_what_libp2p_new_host_builds(listen: list[str]) -> None:
    import libp2p

    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)

    def factory(addrs: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        return addrs

    kwargs = dict(key_pair=key_pair, sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise}, muxer_preference="YAMUX",
                  listen_addrs=[multiaddr.Multiaddr(a) for a in listen], enable_quic=len(listen) > 1,
                  addrs_factory=factory, enable_mDNS=False,
                  connection_config=ConnectionConfig(min_connections=0, low_watermark=0,
                                                     max_connections=99, high_watermark=99))
    ours, theirs = libp2p_compat._build_host(**kwargs), libp2p.new_host(**kwargs)  # type: ignore[arg-type]
    assert _shape(ours, depth=3) == _shape(theirs, depth=3)
    net_ours, net_theirs = ours.get_network(), theirs.get_network()
    transports = [net.transport_manager._transports for net in (net_ours, net_theirs)]
    assert [_shape(t) for t in transports[0]] == [_shape(t) for t in transports[1]]
    assert len(transports[0]) == len(listen)
    security = [dict(net.upgrader.security_multistream.transports) for net in (net_ours, net_theirs)]
    assert security[0] == security[1] == kwargs["sec_opt"]
    muxers = [list(net.upgrader.muxer_multistream.transports.items()) for net in (net_ours, net_theirs)]
    assert muxers[0] == muxers[1]
    assert net_ours.peerstore.privkey(ours.get_id()) == key_pair.private_key
    assert net_ours.connection_config is kwargs["connection_config"]
    assert type(net_ours._resource_manager) is type(net_theirs._resource_manager)
    assert ours._addrs_factory is factory


def test_arguments_we_do_not_build_for_go_to_libp2p_new_host(monkeypatch: pytest.MonkeyPatch) -> None:
    import libp2p

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(libp2p, "new_host", lambda **kw: seen.append(kw) or "upstream")
    ws = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0/ws")]
    assert libp2p_compat.new_host(key_pair=None, sec_opt={"x": 1}, listen_addrs=ws) == "upstream"
    assert libp2p_compat.new_host(key_pair=None, sec_opt={"x": 1}, listen_addrs=ws[:0]) == "upstream"
    assert len(seen) == 2


def test_the_fallback_to_libp2p_new_host_keeps_py_libp2p_logs_routed() -> None:
    """Running the deferred libp2p/__init__ late also runs its setup_logging(); new_host undoes it again."""
    out = _run(
        "import json, logging, multiaddr, p2pvpn, libp2p\n"
        "from libp2p.crypto.ed25519 import create_new_key_pair\n"
        "from p2pvpn import libp2p_compat\n"
        "from p2pvpn.libp2p_import import is_deferred\n"
        "libp2p_compat.route_libp2p_logs()\n"
        "before = is_deferred(libp2p)\n"
        "libp2p_compat.new_host(key_pair=create_new_key_pair(), sec_opt=None,\n"
        "                       listen_addrs=[multiaddr.Multiaddr('/ip4/127.0.0.1/tcp/0/ws')])\n"
        "print(json.dumps({'before': before, 'after': is_deferred(libp2p),\n"
        "                  'propagate': logging.getLogger('libp2p').propagate}))\n"
    )
    assert out == {"before": True, "after": False, "propagate": True}


def test_the_checks_leave_no_source_files_in_linecache() -> None:
    """libp2p_compat.check reads py-libp2p's source (inspect.getsource); the lines must not stay resident (~1 MiB)."""
    out = _run(
        "import json, linecache\n"
        "import p2pvpn.node\n"
        "from p2pvpn import libp2p_compat\n"
        "before = {k for k in linecache.cache if not k.startswith('<')}\n"
        "libp2p_compat.check(multihop=True)\n"
        "left = sorted(k for k in linecache.cache if not k.startswith('<') and k not in before)\n"
        "print(json.dumps({'left': left, 'generated_kept': any(k.startswith('<attrs') for k in linecache.cache)}))\n"
    )
    assert out == {"left": [], "generated_kept": True}
