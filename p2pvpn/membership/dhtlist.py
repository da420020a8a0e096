"""The network's revocation list in the DHT (docs/protocol.md §15.9.4): key, validation, selection.

Stored under ``/p2pvpn/<network_id>/revocations``; a DHT node stores only a
valid list (§15.5) and keeps the best one (highest seq, then larger bytes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from libp2p.records.validator import Validator

from p2pvpn.discovery.record import RecordError
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.revocation import RevocationList, open_list


def revocations_key(network_id: str) -> str:
    return f"/p2pvpn/{network_id}/revocations"


class RevocationListValidator(Validator):
    """KadDHT validator for the revocation-list key; ``revoked`` is the node's current set (admin checks)."""

    def __init__(self, network_id: str, revoked: Callable[[], Mapping[bytes, int]],
                 clock: Callable[[], float] = time.time) -> None:
        self.network_id = network_id
        self._revoked = revoked
        self._clock = clock

    def _open(self, key: str, value: bytes) -> RevocationList:
        if key != revocations_key(self.network_id):
            raise RecordError(f"{key!r} is not this network's revocation key")
        try:
            return open_list(value, self.network_id, self._clock(), self._revoked())
        except MembershipError as exc:
            raise RecordError(str(exc)) from None

    def validate(self, key: str, value: bytes) -> None:
        self._open(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        best: int | None = None
        rank: tuple[int, bytes] | None = None
        for index, value in enumerate(values):
            try:
                lst = self._open(key, value)
            except RecordError:
                continue
            if rank is None or (lst.seq, lst.raw) > rank:
                best, rank = index, (lst.seq, lst.raw)
        if best is None:
            raise RecordError(f"none of the {len(values)} values for {key} is a valid revocation list")
        return best
