"""The relay's admission rules (p2pvpn.roles.relay.RelayPolicy), without I/O."""

from __future__ import annotations

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from p2pvpn.nat import circuit as c
from p2pvpn.roles.relay import RelayLimits, RelayPolicy

NOW = 1_000_000.0


def peer() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


def test_members_get_unlimited_circuits_and_strangers_the_small_limit() -> None:
    policy = RelayPolicy(RelayLimits())
    member, other_member, stranger = peer(), peer(), peer()
    assert policy.reserve(member, True, NOW)[0] == c.OK
    assert policy.admit(other_member, member, True, NOW) == (c.OK, c.CircuitLimit(0, 0))
    assert policy.admit(stranger, member, False, NOW) == (c.OK, c.CircuitLimit(duration=120, data=128 * 1024))


def test_a_circuit_to_a_stranger_gets_the_stranger_limit_even_from_a_member() -> None:
    policy = RelayPolicy(RelayLimits())
    member, stranger = peer(), peer()
    assert policy.reserve(stranger, False, NOW)[0] == c.OK
    assert policy.admit(member, stranger, True, NOW)[1] == RelayLimits().stranger


def test_strangers_are_refused_when_not_served() -> None:
    policy = RelayPolicy(RelayLimits(serve_strangers=False))
    member, stranger = peer(), peer()
    assert policy.reserve(stranger, False, NOW) == (c.PERMISSION_DENIED, None)
    policy.reserve(member, True, NOW)
    assert policy.admit(stranger, member, False, NOW)[0] == c.PERMISSION_DENIED
    assert policy.refused == {"stranger_reservation": 1, "stranger_circuit": 1}


def test_no_circuit_without_a_reservation_and_slots_are_bounded() -> None:
    policy = RelayPolicy(RelayLimits(max_reservations=2))
    a, b, x = peer(), peer(), peer()
    assert policy.admit(a, b, True, NOW)[0] == c.NO_RESERVATION
    assert policy.reserve(a, True, NOW)[0] == c.OK
    assert policy.reserve(b, True, NOW)[0] == c.OK
    assert policy.reserve(x, True, NOW) == (c.RESERVATION_REFUSED, None)
    assert policy.reserve(a, True, NOW)[0] == c.OK  # renewing takes no new slot


def test_slots_expire_and_go_with_the_connection() -> None:
    policy = RelayPolicy(RelayLimits(reservation_ttl=60))
    a, b = peer(), peer()
    policy.reserve(a, True, NOW)
    policy.reserve(b, True, NOW)
    assert policy.admit(b, a, True, NOW + 61)[0] == c.NO_RESERVATION
    policy.release(b)
    assert b not in policy.slots


def test_circuits_are_capped_per_peer_and_in_total_and_released() -> None:
    policy = RelayPolicy(RelayLimits(max_circuits=3, max_circuits_per_peer=2))
    dst, s1, s2, s3, s4 = (peer() for _ in range(5))
    policy.reserve(dst, True, NOW)
    assert policy.admit(s1, dst, True, NOW)[0] == c.OK
    assert policy.admit(s2, dst, True, NOW)[0] == c.OK
    assert policy.admit(s3, dst, True, NOW)[0] == c.RESOURCE_LIMIT_EXCEEDED  # dst has 2 already
    policy.circuit_closed(s1, dst)
    assert policy.admit(s3, dst, True, NOW)[0] == c.OK
    other = peer()
    policy.reserve(other, True, NOW)
    assert policy.admit(s4, other, True, NOW)[0] == c.OK  # 3 open: the total cap
    assert policy.admit(s1, other, True, NOW)[0] == c.RESOURCE_LIMIT_EXCEEDED
    assert policy.open_circuits == 3


def test_a_peer_cannot_circuit_to_itself() -> None:
    policy = RelayPolicy(RelayLimits())
    a = peer()
    policy.reserve(a, True, NOW)
    assert policy.admit(a, a, True, NOW)[0] == c.PERMISSION_DENIED


def test_strangers_are_capped_per_ip_and_a_share_stays_for_members() -> None:
    from p2pvpn.limits import Limits, ResourceManager

    rm = ResourceManager(Limits(relay_reservations_per_ip=2, relay_member_reservations=2))
    policy = RelayPolicy(RelayLimits(max_reservations=5), rm=rm)  # strangers: 5 - 2 = 3 slots
    s1, s2, s3, s4, s5 = (peer() for _ in range(5))
    assert policy.reserve(s1, False, NOW, "198.18.0.1")[0] == c.OK
    assert policy.reserve(s2, False, NOW, "198.18.0.1")[0] == c.OK
    assert policy.reserve(s3, False, NOW, "198.18.0.1") == (c.RESERVATION_REFUSED, None)  # same IP
    assert policy.reserve(s3, False, NOW, "198.18.0.2")[0] == c.OK
    assert policy.reserve(s4, False, NOW, "198.18.0.3") == (c.RESERVATION_REFUSED, None)  # stranger share full
    assert policy.reserve(s1, False, NOW, "198.18.0.1")[0] == c.OK  # renewing takes nothing new
    m1, m2 = peer(), peer()
    assert policy.reserve(m1, True, NOW, "198.18.0.1")[0] == c.OK  # the members' share
    assert policy.reserve(m2, True, NOW, "198.18.0.1")[0] == c.OK
    assert policy.refused["stranger_reservations_limit"] == 2
    assert rm.gauges["relay_reservations_per_ip"].hits == 1
    assert rm.gauges["relay_stranger_reservations"].hits == 1
    policy.release(s1)  # its connection closed: its stranger share and its IP's count come back
    assert policy.reserve(s5, False, NOW, "198.18.0.1")[0] == c.OK


def test_a_stranger_that_becomes_a_member_gives_its_stranger_share_back() -> None:
    from p2pvpn.limits import Limits, ResourceManager

    rm = ResourceManager(Limits(relay_member_reservations=0))
    policy = RelayPolicy(RelayLimits(max_reservations=4), rm=rm)
    a = peer()
    policy.reserve(a, False, NOW, "198.18.0.1")
    assert rm.gauges["relay_stranger_reservations"].in_use == 1
    policy.reserve(a, True, NOW, "198.18.0.1")
    assert rm.gauges["relay_stranger_reservations"].in_use == 0
    policy.release(a)
    policy.reserve(a, False, NOW, "198.18.0.1")
    policy.expire(NOW + RelayLimits().reservation_ttl + 1)
    assert rm.gauges["relay_stranger_reservations"].in_use == 0
    assert rm.gauges["relay_reservations_per_ip"].in_use == 0


def test_new_limits_keep_the_slots_held_and_apply_to_the_next_reservation() -> None:
    """A reload (p2pvpn.relay_node) lowers the limits: nobody loses a slot, the next one is refused."""
    policy = RelayPolicy(RelayLimits(max_reservations=40))
    held = [peer() for _ in range(3)]
    for p in held:
        assert policy.reserve(p, False, NOW)[0] == c.OK
    assert policy.rm.gauges["relay_stranger_reservations"].limit == 40 - 32
    policy.set_limits(RelayLimits(max_reservations=2, serve_strangers=True))
    assert set(policy.slots) == set(held)
    assert policy.rm.gauges["relay_stranger_reservations"].limit == 1  # at least one, as at start
    assert policy.reserve(held[0], False, NOW)[0] == c.OK  # a renewal of a slot held is not a new slot
    assert policy.reserve(peer(), True, NOW) == (c.RESERVATION_REFUSED, None)
    assert policy.refused == {"reservations_full": 1}
