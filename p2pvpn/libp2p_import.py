"""Import py-libp2p's modules without running its packages' ``__init__`` files (start-up time).

Why: ``libp2p/__init__.py`` imports every transport and service py-libp2p
has (QUIC with aioquic, WebSocket, WebRTC, AutoTLS's ACME client with httpx
and requests, dnspython, every peerstore backend), and subpackage
``__init__`` files do the same on a smaller scale (``libp2p.transport``
imports the WebSocket transport). A node uses TCP, Noise, yamux, the swarm,
identify, KadDHT and circuit relay: on this machine the package import was
~0.55 s of CPU of the ~0.8 s a node spends importing, and every CLI command
paid it through the one ``from libp2p...`` in its import chain.

How: :func:`install` puts a finder in front of ``sys.meta_path`` that
treats ``libp2p`` and each of its subpackages as usual (same spec, same
``__path__``, so submodules import as before), except that the package's
own ``__init__`` code does not run at import. It runs, in full and in the
package's namespace, the first time anyone asks the package for a name that
is not one of its submodules (a module ``__getattr__``, PEP 562): ``from
libp2p import new_host`` keeps working and just pays what it always paid.
p2pvpn itself builds its host with :func:`p2pvpn.libp2p_compat.new_host`
instead, so a node never needs the top-level ``__init__``.

What it relies on (checked by ``tests/compat/test_libp2p_import.py``):
py-libp2p's package ``__init__`` files only import and define names, with
no side effect a submodule needs -- the one side effect, ``setup_logging()``
in ``libp2p/__init__.py``, configures ``LIBP2P_DEBUG`` logging, which
p2pvpn undoes anyway (:func:`p2pvpn.libp2p_compat.route_libp2p_logs`). If an
upgrade adds another, the canary names the file and line.

Installed by ``p2pvpn/__init__.py``, so it is in force wherever p2pvpn is
imported before py-libp2p (the CLI, the node, the tests); if py-libp2p was
imported first, the finder changes nothing and everything still works.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from typing import Any

PACKAGE = "libp2p"
# Dunder names a package is asked for that its __init__ defines: asking runs it.
_INIT_DUNDERS = frozenset({"__all__", "__version__"})
_lock = threading.RLock()


class _DeferredInitLoader(importlib.abc.Loader):
    """Create the package module as the real loader would; run its ``__init__`` only on demand."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__getattr__ = _deferred_getattr(module, self.real)  # type: ignore[attr-defined]


def _deferred_getattr(module: types.ModuleType, real: importlib.abc.Loader) -> Any:
    def __getattr__(name: str) -> Any:
        if name.startswith("__") and name not in _INIT_DUNDERS:
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
        with _lock:
            if module.__dict__.get("__getattr__") is __getattr__:  # not run yet
                submodule = f"{module.__name__}.{name}"
                if submodule in sys.modules:
                    return sys.modules[submodule]
                if not name.startswith("__") and importlib.util.find_spec(submodule) is not None:
                    return importlib.import_module(submodule)
                del module.__dict__["__getattr__"]
                real.exec_module(module)  # the package's own __init__, in full
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None

    return __getattr__


def is_deferred(module: types.ModuleType) -> bool:
    """Whether ``module`` is a package whose ``__init__`` has not run (for tests and benchmarks)."""
    getattr_ = module.__dict__.get("__getattr__")
    return getattr_ is not None and getattr_.__qualname__.startswith("_deferred_getattr")


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``libp2p`` packages through the normal path finder and defers their ``__init__``."""

    def find_spec(self, fullname: str, path: Any, target: types.ModuleType | None = None) -> Any:
        if fullname != PACKAGE and not fullname.startswith(PACKAGE + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is None or spec.loader is None:
            return spec  # a plain module (or nothing): imported as usual
        if not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _DeferredInitLoader(spec.loader)
        return spec


_finder = _Finder()


def install() -> None:
    """Put the finder in front of the import system (idempotent)."""
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Remove the finder (tests); packages already imported keep their state."""
    while _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
