"""Canaries for p2pvpn.libp2p_import's stand-ins (a node's RSS, issue 16).

The stand-ins rely on each importer using the names it imports from a
stand-in module only as calls or annotations; these tests read the
importers' source to say so, check that a node's host imports none of the
modules behind the stand-ins, and that each feature behind a stand-in
still works when asked for (mDNS, the DNS resolver, QUIC).
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

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair

from p2pvpn import libp2p_import
from p2pvpn.host import Host

REPO = Path(__file__).resolve().parents[2]
# What the stand-ins keep out of a node (the reason they exist).
KEPT_OUT = ("zeroconf", "requests", "httpx", "aioquic", "miniupnpc", "multiaddr.resolvers", "dns.asyncresolver",
            "prometheus_client", "http.server", "urllib.request", "psutil", "cbor2", "coincurve",
            "pyroute2", "asyncio", "unittest",  # pyroute2 (with the asyncio and unittest it imports): p2pvpn.rtnl
            "Crypto", "importlib.metadata", "email", "zipfile", "cryptography.x509",  # RSA keys, agent version, AutoTLS
            "dns", "statistics")  # the names responder until its first query (tests/names); on-demand's status


def _run(code: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def _source(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    return ast.parse(Path(spec.origin).read_text())


@pytest.mark.parametrize("importer", sorted(libp2p_import.STAND_INS))
def test_importers_use_stand_in_names_only_as_calls_or_annotations(importer: str) -> None:
    tree = _source(importer)
    names: dict[str, str] = {}  # local name -> module it comes from
    modules: dict[str, str] = {}  # local name bound to a stand-in module itself (`import psutil`)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in libp2p_import.STAND_INS[importer]:
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
        elif isinstance(node, ast.ImportFrom):  # `from cryptography import x509`: a stand-in module itself
            for alias in node.names:
                if f"{node.module}.{alias.name}" in libp2p_import.STAND_INS[importer]:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in libp2p_import.STAND_INS[importer]:
                    assert "." not in alias.name or alias.asname, ast.unparse(node)  # binds the module itself
                    modules[alias.asname or alias.name] = alias.name
    found = set(names.values()) | set(modules.values())
    # `import a.b.c as d` imports a and a.b on the way: their stand-ins are placed too
    dotted = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names if a.name in modules.values()]
    found |= {".".join(m.split(".")[:i]) for m in dotted for i in range(1, m.count(".") + 1)}
    assert found == set(libp2p_import.STAND_INS[importer]), "the importer no longer imports them"
    annotations = {id(n) for node in ast.walk(tree) for ann in _annotations(node) for n in ast.walk(ann)}
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    # an imported name: only `name(...)`, `name.attr(...)` (a forwarder passes attributes on) or in an annotation
    attribute_of = {id(n.value): n for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    other = [f"{importer}:{n.lineno}: {n.id}" for n in ast.walk(tree)
             if isinstance(n, ast.Name) and n.id in names and id(n) not in annotations | called
             and not (id(n) in attribute_of and id(attribute_of[id(n)]) in called)]
    # a stand-in module's own name: only `module.name(...)`, `module.name.attr(...)` or inside an annotation

    def ends_in_call(node: ast.expr) -> bool:
        chain = [attribute_of[id(node)]] if id(node) in attribute_of else []
        while chain and id(chain[-1]) in attribute_of and len(chain) < 2:
            chain.append(attribute_of[id(chain[-1])])
        return any(id(a) in called for a in chain)

    other += [f"{importer}:{n.lineno}: {n.id}" for n in ast.walk(tree)
              if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in modules and id(n) not in annotations
              and not ends_in_call(n)]
    if importer == "libp2p.custom_types":  # QUICStream in one Callable[[...], ...] alias (a forwarder is callable)
        other = [o for o in other if not o.endswith(": QUICStream")]
        assert "Callable[[QUICStream], Awaitable[None]]" in ast.unparse(tree)
    if importer == "libp2p.host.basic_host":  # x509 values read after x509 was imported for real, in one method
        after = _lines_after_call(tree, "x509.load_pem_x509_certificates")
        other = [o for o in other if not (o.endswith((": x509", ": ExtensionOID")) and int(o.split(":")[1]) in after)]
    assert not other, "names of a stand-in used other than as a call or annotation:\n" + "\n".join(other)


def _lines_after_call(tree: ast.Module, func: str) -> set[int]:
    """Lines of the function bodies that come after the function's first call of ``func`` (a dotted name)."""
    lines: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            calls = [n.lineno for n in ast.walk(fn) if isinstance(n, ast.Call) and ast.unparse(n.func) == func]
            if calls:
                lines |= {n.lineno for n in ast.walk(fn) if hasattr(n, "lineno") and n.lineno > min(calls)}
    return lines


def _annotations(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.AnnAssign):
        return [node.annotation]
    if isinstance(node, ast.arg) and node.annotation is not None:
        return [node.annotation]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
        return [node.returns]
    return []


def test_a_node_host_imports_none_of_what_the_stand_ins_keep_out() -> None:
    out = _run(
        "import json, sys\n"
        "import p2pvpn.node, p2pvpn.cli, p2pvpn.session.demand, p2pvpn.names.service\n"
        "from p2pvpn.host import Host, interface_addresses\n"
        "from p2pvpn.libp2p_import import is_stand_in\n"
        "from libp2p.crypto.ed25519 import create_new_key_pair\n"
        "host = Host(create_new_key_pair(), ['/ip4/127.0.0.1/tcp/0'])\n"
        "addrs = interface_addresses()\n"
        f"kept_out = {KEPT_OUT!r}\n"
        "print(json.dumps({'loaded': [m for m in kept_out if m in sys.modules],\n"
        "                  'stand_ins_left': [m for m, v in sys.modules.items() if is_stand_in(v)],\n"
        "                  'loopback': any(a == '127.0.0.1' for _, a in addrs)}))\n"
    )
    assert out == {"loaded": [], "stand_ins_left": [], "loopback": True}


def test_mdns_still_gets_the_real_discovery() -> None:
    from libp2p.discovery.mdns.mdns import MDNSDiscovery

    host = Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"], mdns=True)
    assert isinstance(host.libp2p.mDNS, MDNSDiscovery)
    assert not libp2p_import.is_stand_in(sys.modules["libp2p.discovery.mdns.mdns"])


def test_the_dns_resolver_is_real_when_used() -> None:
    from multiaddr.resolvers import DNSResolver

    host = Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0"])
    resolver = host.libp2p.get_network().dns_resolver
    bound = resolver.resolve  # first use: the real resolver is made now (no query is sent)
    assert isinstance(bound.__self__, DNSResolver)


def test_quic_is_real_when_configured() -> None:
    from libp2p.transport.quic.transport import QUICTransport

    host = Host(create_new_key_pair(), ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"])
    transports = host.libp2p.get_network().transport_manager._transports
    assert any(isinstance(t, QUICTransport) for t in transports)


def test_libp2p_swarm_metrics_still_get_real_counters() -> None:
    out = _run(
        "import json, sys\n"
        "import p2pvpn\n"
        "from libp2p.metrics.swarm import SwarmEvent, SwarmMetrics\n"
        "before = 'prometheus_client' in sys.modules\n"
        "metrics = SwarmMetrics()\n"
        "from prometheus_client import Counter\n"
        "metrics.dial_attempt.labels(peer_id='p').inc()\n"
        "print(json.dumps({'before': before, 'real': isinstance(metrics.dial_attempt, Counter),\n"
        "                  'event': SwarmEvent().dial_attempt,\n"
        "                  'count': metrics.dial_attempt.labels(peer_id='p')._value.get()}))\n"
    )
    assert out == {"before": False, "real": True, "event": False, "count": 1.0}


def test_rcmgr_imports_prometheus_client_only_under_try_import_error() -> None:
    """HIDDEN_WHILE relies on the exporter's own fallback: the import sits in a try that catches ImportError."""
    tree = _source("libp2p.rcmgr.prometheus_exporter")
    guarded = [node for node in tree.body if isinstance(node, ast.Try)
               and any(isinstance(s, ast.ImportFrom) and s.module == "prometheus_client" for s in node.body)
               and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers)]
    unguarded = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 and "prometheus_client" in ((node.module or "") if isinstance(node, ast.ImportFrom) else
                                             " ".join(a.name for a in node.names))]
    assert guarded and not unguarded


def test_rcmgr_exporter_is_unavailable_and_prometheus_client_stays_real() -> None:
    out = _run(
        "import json, sys\n"
        "import p2pvpn\n"
        "from libp2p.rcmgr import prometheus_exporter\n"
        "loaded = 'prometheus_client' in sys.modules\n"
        "import prometheus_client\n"
        "print(json.dumps({'available': prometheus_exporter.PROMETHEUS_AVAILABLE, 'loaded': loaded,\n"
        "                  'content_type': prometheus_client.CONTENT_TYPE_LATEST.split(';')[0]}))\n"
    )
    assert out == {"available": False, "loaded": False, "content_type": "text/plain"}


def test_psutil_is_real_when_memory_stats_are_asked_for() -> None:
    out = _run(
        "import json, os, sys\n"
        "import p2pvpn\n"
        "from libp2p.rcmgr.memory_stats import MemoryStatsCache\n"
        "cache = MemoryStatsCache()\n"
        "loaded = 'psutil' in sys.modules\n"
        "stats = cache.get_memory_stats()\n"
        "import psutil\n"
        "print(json.dumps({'loaded_before': loaded, 'rss_matches': stats.process_memory_bytes > 1 << 20,\n"
        "                  'total': stats.system_memory_total == psutil.virtual_memory().total}))\n"
    )
    assert out == {"loaded_before": False, "rss_matches": True, "total": True}


def test_cbor2_is_real_when_used() -> None:
    out = _run(
        "import json, sys\n"
        "import p2pvpn\n"
        "from libp2p.records import ipns\n"
        "loaded = 'cbor2' in sys.modules\n"
        "import cbor2\n"
        "print(json.dumps({'loaded': loaded, 'cbor': ipns.cbor2.loads(cbor2.dumps({'a': 1}))}))\n"
    )
    assert out == {"loaded": False, "cbor": {"a": 1}}


def test_secp256k1_keys_still_work() -> None:
    out = _run(
        "import json, sys\n"
        "import p2pvpn\n"
        "from libp2p.crypto.secp256k1 import create_new_key_pair\n"
        "loaded = 'coincurve' in sys.modules\n"
        "pair = create_new_key_pair()\n"
        "signature = pair.private_key.sign(b'x')\n"
        "derived = pair.private_key.get_public_key().to_bytes() == pair.public_key.to_bytes()\n"
        "print(json.dumps({'loaded': loaded, 'verified': pair.public_key.verify(b'x', signature),\n"
        "                  'derived': derived}))\n"
    )
    assert out == {"loaded": False, "verified": True, "derived": True}


def test_rsa_keys_still_work() -> None:
    out = _run(
        "import json, sys\n"
        "import p2pvpn\n"
        "from libp2p.crypto.rsa import RSAPublicKey, create_new_key_pair\n"
        "from libp2p.crypto.serialization import deserialize_public_key\n"
        "loaded = 'Crypto' in sys.modules\n"
        "pair = create_new_key_pair(1024)\n"
        "signature = pair.private_key.sign(b'x')\n"
        "again = deserialize_public_key(pair.public_key.serialize())\n"
        "from Crypto.PublicKey.RSA import RsaKey\n"
        "import Crypto.Util._raw_api as raw\n"
        "print(json.dumps({'loaded': loaded, 'verified': again.verify(b'x', signature), 'wrong': again.verify(b'y', signature),\n"
        "                  'real': isinstance(pair.private_key.impl, RsaKey), 'backend': raw.backend,\n"
        "                  'type': type(again).__name__}))\n"
    )
    assert out == {"loaded": False, "verified": True, "wrong": False, "real": True, "backend": "ctypes",
                   "type": "RSAPublicKey"}


def test_psk_connections_still_get_salsa20() -> None:
    out = _run(
        "import json, sys\n"
        "import p2pvpn\n"
        "from libp2p.security.pnet import psk_conn\n"
        "loaded = 'Crypto' in sys.modules\n"
        "cipher = psk_conn.Salsa20.new(key=bytes(32), nonce=bytes(8))\n"
        "from Crypto.Cipher import Salsa20\n"
        "print(json.dumps({'loaded': loaded, 'same': cipher.encrypt(b'abc') == Salsa20.new(key=bytes(32), nonce=bytes(8)).encrypt(b'abc')}))\n"
    )
    assert out == {"loaded": False, "same": True}


def test_agent_version_is_what_importlib_metadata_says() -> None:
    """identify's agent version, which peers see, is unchanged: dist_version answers as importlib.metadata does."""
    out = _run(
        "import json, sys\n"
        "import p2pvpn\n"
        "from p2pvpn.libp2p_import import dist_version\n"
        "from libp2p.identity.identify import identify\n"
        "loaded = 'importlib.metadata' in sys.modules\n"
        "names = ['libp2p', 'trio', 'idna', 'typing-extensions', 'typing_extensions', 'Typing.Extensions', 'protobuf']\n"
        "ours = [dist_version(n) for n in names]\n"
        "import importlib.metadata as md\n"
        "try:\n"
        "    dist_version('no-such-distribution-p2pvpn')\n"
        "    missing = 'found'\n"
        "except md.PackageNotFoundError:\n"
        "    missing = 'PackageNotFoundError'\n"
        "print(json.dumps({'loaded': loaded, 'agent': identify.AGENT_VERSION, 'real_agent': 'py-libp2p/' + md.version('libp2p'),\n"
        "                  'ours': ours, 'real': [md.version(n) for n in names], 'missing': missing}))\n"
    )
    assert out["loaded"] is False
    assert out["agent"] == out["real_agent"]
    assert out["ours"] == out["real"] and all(out["ours"])
    assert out["missing"] == "PackageNotFoundError"


def test_autotls_x509_names_are_real_once_x509_is_imported() -> None:
    """basic_host reads x509.DNSName and ExtensionOID.X as values after x509.load_pem_x509_certificates(...)."""
    out = _run(
        "import json, sys\n"
        "import p2pvpn\n"
        "from libp2p.host import basic_host\n"
        "loaded = 'cryptography.x509' in sys.modules\n"
        "from cryptography.hazmat.primitives.asymmetric import ed25519\n"
        "from cryptography.hazmat.primitives import serialization\n"
        "import datetime\n"
        "from cryptography import x509\n"
        "from cryptography.x509.oid import ExtensionOID, NameOID\n"
        "key = ed25519.Ed25519PrivateKey.generate()\n"
        "name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'p2pvpn.test')])\n"
        "now = datetime.datetime.now(datetime.timezone.utc)\n"
        "cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())\n"
        "        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))\n"
        "        .add_extension(x509.SubjectAlternativeName([x509.DNSName('a.p2pvpn.test')]), False).sign(key, None))\n"
        "pem = cert.public_bytes(serialization.Encoding.PEM)\n"
        "chain = basic_host.x509.load_pem_x509_certificates(pem)\n"
        "san = chain[0].extensions.get_extension_for_oid(basic_host.ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value\n"
        "print(json.dumps({'loaded': loaded, 'dns': san.get_values_for_type(basic_host.x509.DNSName),\n"
        "                  'same': basic_host.x509.DNSName is x509.DNSName}))\n"
    )
    assert out == {"loaded": False, "dns": ["a.p2pvpn.test"], "same": True}
