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

Stand-ins (STAND_INS, memory, issue 16): a few py-libp2p modules import, at
their top, modules of features p2pvpn does not use unless configured.
``libp2p.host.basic_host`` imports mDNS (zeroconf), UPnP and AutoTLS's ACME
client and broker (requests, httpx, dnspython), ``libp2p.custom_types``
imports the QUIC stream (aioquic, pyOpenSSL) for one type alias: ~20 MiB of
a node's RSS; ``libp2p.metrics.swarm`` (imported by the swarm for
``SwarmEvent``) imports prometheus_client, whose ``__init__`` imports its
HTTP exposition (http.server, email, urllib: ~2 MiB), for a ``Counter``
made only when py-libp2p's own metrics are on; and the resource manager's
``libp2p.rcmgr.memory_stats`` does ``import psutil`` (~1 MiB) to make a
``psutil.Process()`` at start that it asks something only to enforce a
memory-based limit (that module's name is then the stand-in module itself,
whose attributes are forwarders: uses ``psutil.X(...)`` only), as does
``multiaddr.utils`` (``psutil.net_if_addrs()``, called only to expand a
wildcard address, which p2pvpn does itself); and cbor2 (in
``libp2p.records.ipns``) and coincurve (in ``libp2p.crypto.secp256k1``,
~0.8 MiB) are C extensions a node loads for IPNS records and secp256k1
keys it never meets (a forwarder also passes on attribute access, for
``coincurve.PublicKey.from_secret(...)``); pycryptodome (``libp2p.crypto.rsa``,
``libp2p.security.pnet.psk_conn``) for RSA keys and pre-shared-key
connections (``import Crypto.PublicKey.RSA as RSA`` walks the stand-ins of
its parent packages, which are placed too); ``cryptography.x509`` (with
email and datetime) for AutoTLS's certificate in ``basic_host``, whose
value uses (``x509.DNSName``) come after a call that imports it, when a
stand-in module passes on the real names; and ``importlib.metadata``
(email, zipfile, csv) in ``libp2p.utils.version``, whose ``version()`` --
called once at import for identify's agent version, which peers see -- is
SUBSTITUTES' :func:`dist_version`, the same answer read from the one
METADATA file. While such an importer's own code runs, each of those modules
is a stand-in whose names are forwarders; a forwarder imports the real
module when first called (``enable_mDNS=True`` creates the real
MDNSDiscovery). After the importer ran, the stand-ins leave ``sys.modules``,
so anyone else importing those modules gets the real ones. What this relies
on -- the importer uses each name only as a call or in an annotation -- is
checked, by reading the importer's source, in
``tests/compat/test_libp2p_import.py``; a forwarder used any other way fails
at once (it is not a class: ``isinstance`` and subclassing raise).

Hidden modules (HIDDEN_WHILE, memory and start-up): pycryptodome, which
py-libp2p imports for RSA keys, loads its C code through cffi when cffi
imports, and cffi's in-line mode parses every C declaration with pycparser
(1.7 MiB resident, ~0.2 s of CPU in every process). While
``Crypto.Util._raw_api`` picks its backend, ``cffi`` is hidden (``import
cffi`` raises ImportError), so it picks its documented other backend,
ctypes; anyone importing cffi later gets the real one. Likewise
``prometheus_client`` is hidden while ``libp2p.rcmgr.prometheus_exporter``
runs (its ``try: from prometheus_client import ... except ImportError``):
the resource manager's exporter, which p2pvpn never enables, then reports
itself unavailable, and the import costs nothing. The canary in
``tests/test_node_process.py`` checks the backend and an RSA signature.

Installed by ``p2pvpn/__init__.py``, so it is in force wherever p2pvpn is
imported before py-libp2p (the CLI, the node, the tests); if py-libp2p was
imported first, the finder changes nothing and everything still works.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

PACKAGE = "libp2p"
DEFERRED_PACKAGES = (PACKAGE,)  # packages whose __init__ runs only when asked for one of its names
# importer -> {module it imports: why a stand-in is enough while the importer runs}
STAND_INS: dict[str, dict[str, str]] = {
    "libp2p.host.basic_host": {
        "libp2p.discovery.mdns.mdns": "zeroconf; called only with enable_mDNS",
        # x509 (with email and datetime, ~1.6 MiB) for AutoTLS's certificate; its value uses (x509.DNSName,
        # ExtensionOID.X) come after x509.load_pem_x509_certificates(...) in the same method, which imports it
        "cryptography.x509": "load_pem_x509_certificates() called only by AutoTLS",
        "cryptography.x509.oid": "ExtensionOID read only by AutoTLS, after x509 is imported",
        "libp2p.discovery.upnp.upnp": "miniupnpc; called only with enable_upnp",
        "libp2p.security.tls.autotls.acme": "httpx, requests; called only by AutoTLS",
        "libp2p.security.tls.autotls.broker": "requests, dnspython; called only by AutoTLS",
    },
    "libp2p.custom_types": {
        "libp2p.transport.quic.stream": "aioquic; QUICStream appears in one type alias",
    },
    # dnspython (and through it aioquic again, for DNS over QUIC): resolvers are made at start, used
    # only for /dns* addresses (LAZY_INSTANCES)
    "libp2p.network.swarm": {"multiaddr.resolvers": "dnspython; a resolver for /dns* addresses"},
    "libp2p.transport.tcp.tcp": {"multiaddr.resolvers": "dnspython; a resolver for /dns* addresses"},
    "libp2p.discovery.bootstrap.bootstrap": {"multiaddr.resolvers": "dnspython; a resolver for /dns* addresses"},
    # prometheus_client's __init__ imports its exposition (http.server, email, urllib, wsgiref: ~2 MiB); py-libp2p's
    # swarm imports this module for SwarmEvent, and a Counter is made only when libp2p metrics are on
    "libp2p.metrics.swarm": {"prometheus_client": "http.server, email, urllib; Counter called only by SwarmMetrics"},
    # the resource manager's memory-stats cache makes a psutil.Process() at start (LAZY_INSTANCES) but asks it
    # something only for a memory-based connection limit (~1 MiB)
    "libp2p.rcmgr.memory_stats": {"psutil": "Process() and virtual_memory() called only for memory limits"},
    # imported by libp2p.utils.address_validation (the swarm's auto-connector); net_if_addrs() called only to
    # list interface addresses for a wildcard listen address, which p2pvpn expands itself (p2pvpn.host)
    "multiaddr.utils": {"psutil": "net_if_addrs() called only by get_network_addrs"},
    # a C extension (~0.75 MiB resident) for records a node never meets
    "libp2p.records.ipns": {"cbor2": "loads() called only to validate an IPNS record"},
    "libp2p.crypto.secp256k1": {"coincurve": "called only for a secp256k1 key (p2pvpn's are Ed25519)"},
    # pycryptodome (~1.3 MiB: its Python modules and the .so files they map) for RSA keys, which p2pvpn's peers
    # do not have (theirs are Ed25519); `import Crypto.PublicKey.RSA as RSA` needs its parent packages placed too
    "libp2p.crypto.rsa": {
        "Crypto": "parent of Crypto.PublicKey.RSA (`import Crypto.PublicKey.RSA as RSA`)",
        "Crypto.PublicKey": "parent of Crypto.PublicKey.RSA",
        "Crypto.PublicKey.RSA": "import_key(), generate() called only for an RSA key; RsaKey in annotations",
        "Crypto.Hash": "SHA256.new() called only to sign or verify with an RSA key",
        "Crypto.Signature": "pkcs1_15.new() called only to sign or verify with an RSA key",
    },
    # the private-network (PSK) connection, imported by the swarm; made only with a pre-shared key
    "libp2p.security.pnet.psk_conn": {"Crypto.Cipher": "Salsa20.new() called only for a PSK connection"},
    # importlib.metadata imports email, zipfile and csv (~1.4 MiB) for identify's agent version, computed once at
    # import: SUBSTITUTES reads the same METADATA file without it (and asks the real one when in doubt)
    "libp2p.utils.version": {"importlib.metadata": "version() is SUBSTITUTES' dist_version"},
}
# module -> {module hidden (ImportError) while it runs: why}
HIDDEN_WHILE: dict[str, dict[str, str]] = {
    "Crypto.Util._raw_api": {"cffi": "pycryptodome falls back to ctypes: no pycparser grammar tables"},
    # imported by the resource manager every host has; its exporter is made only with enable_prometheus,
    # which p2pvpn never sets (p2pvpn.metrics serves /metrics itself)
    "libp2p.rcmgr.prometheus_exporter": {"prometheus_client": "PROMETHEUS_AVAILABLE = False: no exporter, no HTTP"},
}
# Names whose call is deferred too: the object is built on its first attribute access (swarm makes a
# DNSResolver in __init__ but asks it something only to dial a /dns address).
LAZY_INSTANCES = frozenset({("multiaddr.resolvers", "DNSResolver"), ("psutil", "Process")})
# Forwarders called as something else: the substitute gives what the real name would, without importing its module.
SUBSTITUTES: dict[tuple[str, str], Callable[..., Any]] = {}  # filled below (dist_version)
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


class _Forwarder:
    """A name of a stand-in module: the real module is imported when the name is first called."""

    def __init__(self, module: str, name: str) -> None:
        self._module = module
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if (self._module, self._name) in LAZY_INSTANCES:
            return _LazyInstance(self, args, kwargs)
        substitute = SUBSTITUTES.get((self._module, self._name))
        if substitute is not None:
            return substitute(*args, **kwargs)
        return self.real()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        """``module.Class.method(...)``: the real class's attribute (imports its module)."""
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.real(), attr)

    def real(self) -> Any:
        """The real object this name stands for (imports its module)."""
        real = importlib.import_module(self._module)
        if getattr(real, "__stand_in__", False):  # called while its importer still runs: not expected
            raise ImportError(f"{self._module}.{self._name} called while {self._module} is a stand-in "
                              "(p2pvpn.libp2p_import.STAND_INS no longer fits py-libp2p)")
        try:
            return getattr(real, self._name)
        except AttributeError:  # `from package import submodule` (`from Crypto.Hash import SHA256`)
            return importlib.import_module(f"{self._module}.{self._name}")

    def __repr__(self) -> str:
        return f"<forwarder to {self._module}.{self._name}>"


class _LazyInstance:
    """What calling a LAZY_INSTANCES forwarder gives: the real object, made on first attribute access."""

    def __init__(self, forwarder: _Forwarder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._made: list[Any] = []
        self._make = lambda: forwarder.real()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        with _lock:
            if not self._made:
                self._made.append(self._make())
        return getattr(self._made[0], attr)


def _stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name, f"stand-in for {name} (p2pvpn.libp2p_import)")
    module.__stand_in__ = True  # type: ignore[attr-defined]
    forwarders: dict[str, _Forwarder] = {}

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(f"module {name!r} (a stand-in) has no attribute {attr!r}")
        child = sys.modules.get(f"{name}.{attr}")  # `import a.b.c as d` walks a's and b's stand-ins
        if getattr(child, "__stand_in__", False):
            return child
        real = sys.modules.get(name)
        if real is not None and real is not module and not getattr(real, "__stand_in__", False):
            # imported for real meanwhile: the real name (`x509.DNSName` as a value), a submodule if need be
            return forwarders.setdefault(attr, _Forwarder(name, attr)).real()
        return forwarders.setdefault(attr, _Forwarder(name, attr))

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return module


class _StandInLoader(importlib.abc.Loader):
    """Run a module with STAND_INS in ``sys.modules`` for the modules it imports, then remove them."""

    def __init__(self, real: importlib.abc.Loader, stand_ins: dict[str, str]) -> None:
        self.real = real
        self.stand_ins = stand_ins

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        with _lock:
            placed = {name: _stand_in(name) for name in self.stand_ins if name not in sys.modules}
            sys.modules.update(placed)
            try:
                self.real.exec_module(module)
            finally:
                for name, stand_in in placed.items():
                    if sys.modules.get(name) is stand_in:
                        del sys.modules[name]


class _HidingLoader(importlib.abc.Loader):
    """Run a module with HIDDEN_WHILE's modules set to None in ``sys.modules`` (their import fails), then restore."""

    def __init__(self, real: importlib.abc.Loader, hidden: dict[str, str]) -> None:
        self.real = real
        self.hidden = hidden

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        with _lock:
            missing = object()
            saved = {name: sys.modules.get(name, missing) for name in self.hidden}
            sys.modules.update(dict.fromkeys(self.hidden))  # type: ignore[arg-type]
            try:
                self.real.exec_module(module)
            finally:
                for name, value in saved.items():
                    if value is missing:
                        sys.modules.pop(name, None)
                    else:
                        sys.modules[name] = value  # type: ignore[assignment]


def dist_version(name: str) -> str:
    """``importlib.metadata.version(name)``, read from the one installed METADATA without importing
    importlib.metadata (email, zipfile, csv: ~1.4 MiB of every node, for identify's agent version string).

    It finds the distribution as importlib.metadata does (``*.dist-info`` and ``*.egg-info`` directories
    on ``sys.path``, the name normalized as there) and reads its first ``Version:`` header; anything less
    plain -- no match or more than one, a zip or egg on the path, a folded header, another finder on
    ``sys.meta_path`` that lists distributions -- asks the real
    ``importlib.metadata.version``, so the answer is always the one it gives
    (``tests/compat/test_libp2p_stand_ins.py`` compares them).
    """
    wanted = _dist_key(name)
    found: list[str] = []
    others = [f for f in sys.meta_path if hasattr(f, "find_distributions") and f is not importlib.machinery.PathFinder]
    for entry in sys.path if not others else ():  # another finder that lists distributions: ask the real one
        base = entry or "."
        if not os.path.isdir(base):
            if os.path.exists(base):  # a zip file on the path: importlib.metadata searches it too
                found = []
                break
            continue
        if base.lower().endswith(".egg"):
            found = []
            break
        try:
            children = os.listdir(base)
        except OSError:
            continue
        for child in children:
            low = child.lower()
            if low.endswith((".dist-info", ".egg-info")):
                stem = low.rpartition(".")[0].partition("-")[0]
                if _dist_key(stem) == wanted:
                    found.append(os.path.join(base, child))
    version = _version_header(found[0]) if len(found) == 1 else None
    if version is not None:
        return version
    from importlib.metadata import version as real_version  # not plain: the real answer

    return real_version(name)


def _dist_key(name: str) -> str:
    """A distribution name normalized as importlib.metadata compares them (PEP 503, ``-`` as ``_``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _version_header(directory: str) -> str | None:
    """The ``Version`` header of a dist-info's METADATA (egg-info: PKG-INFO); None if not plainly there."""
    for file in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(directory, file), encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, UnicodeDecodeError):
            continue
        for i, line in enumerate(lines):
            if not line.strip():  # the end of the headers
                return None
            key, colon, value = line.partition(":")
            if colon and key.lower() == "version":
                folded = i + 1 < len(lines) and lines[i + 1][:1] in (" ", "\t")
                return None if folded else value.lstrip(" \t").rstrip("\r")
        return None
    return None


SUBSTITUTES[("importlib.metadata", "version")] = dist_version


def is_stand_in(value: Any) -> bool:
    """Whether ``value`` is a stand-in module or one of its forwarders (tests)."""
    return isinstance(value, _Forwarder) or bool(getattr(value, "__stand_in__", False))


class _Finder(importlib.abc.MetaPathFinder):
    """Finds DEFERRED_PACKAGES through the normal path finder, defers their ``__init__``, places STAND_INS;
    hides HIDDEN_WHILE."""

    def find_spec(self, fullname: str, path: Any, target: types.ModuleType | None = None) -> Any:
        if fullname in HIDDEN_WHILE:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _HidingLoader(spec.loader, HIDDEN_WHILE[fullname])
            return spec
        if not any(fullname == p or fullname.startswith(p + ".") for p in DEFERRED_PACKAGES):
            if fullname not in STAND_INS:
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _StandInLoader(spec.loader, STAND_INS[fullname])
            return spec
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        if spec.submodule_search_locations is None:  # a plain module
            if fullname in STAND_INS:
                spec.loader = _StandInLoader(spec.loader, STAND_INS[fullname])
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
