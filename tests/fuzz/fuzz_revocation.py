"""Fuzz target: revocation lists, ``p2pvpn.membership.revocation`` and its DHT validator (§15.5, §15.9.4).

Contract: hostile bytes raise ``MembershipError`` (``open_bytes``,
``open_list``, ``RevocationSet.merge_bytes``: lists pushed over tunnels and
read from the store) or ``RecordError`` (``RevocationListValidator``: lists
read from the DHT), and nothing else.

The first input byte picks what the rest is (so one corpus covers all):

0. a ``SignedRevocationList``, as pushed by a peer;
1. a ``RevocationList`` body that the harness signs with the owner key, so
   mutations reach the entry checks behind the signature;
2. a body the harness signs as the admin of vector A, with A attached;
3. up to four values, split at ``\\x00\\xff``, for the validator's
   ``select``, whose choice must validate.

Properties of a list that opens: its bytes are the input; its entries are
Ed25519 peer IDs, sorted, one per peer, with non-zero times; ``sign_list``
with the same signer, seq and entries gives back the same bytes; merging it
into a set never lowers a threshold, reports exactly the peers whose
threshold rose, and a second merge changes nothing; the DHT validator
accepts it under the network's key and refuses it under another.

Seeds: list L of docs/protocol.md §15.9 and an admin-signed list.
"""

from __future__ import annotations

from p2pvpn.discovery.record import RecordError
from p2pvpn.membership import membership_pb2 as pb
from p2pvpn.membership import revocation
from p2pvpn.membership.dhtlist import RevocationListValidator, revocations_key
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.network import Signer, network_id, peer_id_bytes, signer_from_seed

from .fuzz_cert import _ADMIN

EXPECTED = (MembershipError, RecordError)
MAX_LEN = 8192  # lists of a few dozen entries; the 64 KiB size limit is a plain length check

T0 = 1767225600
_OWNER = signer_from_seed(bytes([0x10]) * 32)
_NID = network_id(_OWNER.public_key)
_PID = {n: peer_id_bytes(signer_from_seed(bytes([n]) * 32).public_key) for n in (1, 2, 3, 4)}
_PREVIOUS = {_PID[2]: T0, _PID[4]: T0 + 50}
_VALIDATOR = RevocationListValidator(_NID, lambda: {}, clock=lambda: T0)
_KEY = revocations_key(_NID)
_SEPARATOR = b"\x00\xff"


def seeds() -> list[bytes]:
    doc = revocation.sign_list(_OWNER, _NID, 1, {_PID[3]: 1767312000})
    admin = revocation.sign_list(_ADMIN, _NID, 2, {_PID[2]: T0 + 10, _PID[3]: T0 + 20})
    return [
        b"\x00" + doc,
        b"\x00" + admin,
        b"\x01" + pb.SignedRevocationList.FromString(doc).revocation_list,
        b"\x02" + pb.SignedRevocationList.FromString(admin).revocation_list,
        b"\x03" + _SEPARATOR.join((doc, admin)),
    ]


def _properties(lst: revocation.RevocationList, data: bytes, signer: Signer | None) -> None:
    assert lst.raw == data and lst.network_id == _NID
    peers = list(lst.entries)
    assert all(len(p) == 38 and p[:6] == bytes.fromhex("002408011220") for p in peers)
    assert all(t > 0 for t in lst.entries.values()) and len(peers) <= revocation.MAX_REVOCATIONS
    if signer is not None:
        assert revocation.sign_list(signer, _NID, lst.seq, lst.entries) == data, "sign_list does not reproduce it"
    rset = revocation.RevocationSet(_NID, dict(_PREVIOUS))
    changed = rset.merge(lst)
    for peer, threshold in _PREVIOUS.items():
        assert rset.entries[peer] >= threshold, "a merge lowered a threshold"
    assert changed == {p for p, t in lst.entries.items() if t > _PREVIOUS.get(p, 0)}
    assert rset.merge(lst) == set() and rset.best is not None
    _VALIDATOR.validate(_KEY, data)  # a RecordError here escapes: a list we accept, the DHT would not
    try:
        _VALIDATOR.validate(revocations_key("a" * 32), data)
    except RecordError:
        pass
    else:
        raise AssertionError("the validator accepted a list under another network's key")


def _open(data: bytes, signer: Signer | None = None) -> None:
    try:
        lst = revocation.open_list(data, _NID, T0, {})
    except MembershipError:
        return
    _properties(lst, data, signer)


def _signed(body: bytes, signer: Signer) -> None:
    signed = pb.SignedRevocationList(revocation_list=body,
                                     signature=signer.sign(revocation.REVOCATION_CONTEXT + body))
    if signer.issuer_certificate is not None:
        signed.issuer_certificate.ParseFromString(signer.issuer_certificate)
    _open(signed.SerializeToString(deterministic=True), signer)


def _select(data: bytes) -> None:
    values = data.split(_SEPARATOR)[:4]
    try:
        index = _VALIDATOR.select(_KEY, values)
    except RecordError:
        return
    _VALIDATOR.validate(_KEY, values[index])  # a RecordError here escapes: select chose an invalid value
    chosen = revocation.open_list(values[index], _NID, T0, {})
    for value in values:
        try:
            other = revocation.open_list(value, _NID, T0, {})
        except MembershipError:
            continue
        assert not revocation.better(other, chosen), "select did not choose the best list"


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 4, data[1:]
    if mode == 0:
        _open(rest)
    elif mode == 1:
        _signed(rest, _OWNER)
    elif mode == 2:
        _signed(rest, _ADMIN)
    else:
        _select(rest)
