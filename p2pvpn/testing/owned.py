"""Give test nodes an owned network offline (docs/protocol.md §15), as ``network create`` + ``admit`` + ``join CERT``.

Tests and labs whose nodes must find each other through the DHT need one:
without an owner, records admit nobody (only listed peers get tunnels).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from p2pvpn import identity
from p2pvpn.membership.cert import Certificate


def make_owned_network(owner_dir: Path, members: Mapping[str, Path], roles: int | None = None,
                       label: str = "test") -> tuple[str, dict[str, Certificate]]:
    """Create a network in ``owner_dir`` and admit each member (name -> initialised node directory).

    Writes each member's certificate and ``network`` into its directory (config.toml too), so a
    plain ``p2pvpn up --dir`` joins. ``roles``: ROLE_* bits for the members; None = relay and exit.
    Returns the network ID and the certificates by name (the owner's under "" ).
    """
    from p2pvpn.cli_membership import create_network, set_config
    from p2pvpn.membership import authority, cert
    from p2pvpn.membership.network import ROLE_EXIT, ROLE_RELAY
    from p2pvpn.membership.revocation import RevocationSet
    from p2pvpn.membership.store import Store

    nid, own = create_network(owner_dir, label)
    store = Store(owner_dir)
    now = time.time()
    signer = store.signer(identity.load(owner_dir / identity.KEY_FILE), now)
    issued: dict[str, Certificate] = {"": own}
    for name, directory in members.items():
        peer = identity.peer_id(identity.load(directory / identity.KEY_FILE)).to_bytes()
        admission = authority.admit(signer, nid, peer, issued=store.issued(), revoked={}, now=now, name=name.lower(),
                                    roles=ROLE_RELAY | ROLE_EXIT if roles is None else roles, groups=())
        store.save_issued(admission.certificate)
        member = Store(directory)
        member.create(nid, label)
        member.save_certificate(admission.certificate)
        member.save_revocations(RevocationSet(nid))
        set_config(directory, network=nid)
        issued[name] = cert.open_certificate(admission.certificate, nid)
    return nid, issued
