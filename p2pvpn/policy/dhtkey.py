"""The network policy in the DHT (docs/protocol.md §17.4): key, validation, selection."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from libp2p.records.validator import Validator

from p2pvpn.discovery.record import RecordError
from p2pvpn.membership.errors import MembershipError
from p2pvpn.policy.model import Policy, open_policy


def policy_key(network_id: str) -> str:
    return f"/p2pvpn/{network_id}/policy"


class PolicyValidator(Validator):
    """KadDHT validator for the policy key; ``revoked`` is the node's revocation set (admin signers)."""

    def __init__(self, network_id: str, revoked: Callable[[], Mapping[bytes, int]],
                 clock: Callable[[], float] = time.time) -> None:
        self.network_id = network_id
        self._revoked = revoked
        self._clock = clock

    def open(self, key: str, value: bytes) -> Policy:
        if key != policy_key(self.network_id):
            raise RecordError(f"{key!r} is not this network's policy key")
        try:
            return open_policy(value, self.network_id, self._clock(), self._revoked())
        except MembershipError as exc:
            raise RecordError(str(exc)) from None

    def validate(self, key: str, value: bytes) -> None:
        self.open(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        best: int | None = None
        rank: tuple[int, bytes] | None = None
        for index, value in enumerate(values):
            try:
                policy = self.open(key, value)
            except RecordError:
                continue
            if rank is None or policy.rank() > rank:
                best, rank = index, policy.rank()
        if best is None:
            raise RecordError(f"none of the {len(values)} values for {key} is a valid policy")
        return best
