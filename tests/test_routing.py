import pytest
from hypothesis import given, strategies as st

from p2pvpn.routing import RouteTable

V4A, V4B = bytes([100, 64, 0, 1]), bytes([100, 64, 0, 2])
V6A = bytes(15) + b"\x01"


def test_lookup_and_source_check_use_one_table() -> None:
    table: RouteTable[str] = RouteTable()
    table.set_peer("a", [V4A, V6A])
    table.set_peer("b", [V4B])
    assert table.lookup(V4A) == "a" and table.lookup(V6A) == "a" and table.lookup(V4B) == "b"
    assert table.source_allowed("a", V4A)
    assert not table.source_allowed("a", V4B)
    assert not table.source_allowed("b", bytes([100, 64, 0, 9]))


def test_set_peer_replaces_and_remove_forgets() -> None:
    table: RouteTable[str] = RouteTable()
    table.set_peer("a", [V4A])
    table.set_peer("a", [V4B])
    assert table.lookup(V4A) is None and table.lookup(V4B) == "a"
    table.remove_peer("a")
    assert table.lookup(V4B) is None and len(table) == 0


def test_address_owned_by_another_peer_is_refused() -> None:
    table: RouteTable[str] = RouteTable()
    table.set_peer("a", [V4A])
    with pytest.raises(ValueError):
        table.set_peer("b", [V4A])
    assert table.lookup(V4A) == "a"


@given(st.dictionaries(st.integers(0, 20), st.sets(st.binary(min_size=4, max_size=4), max_size=4), max_size=10))
def test_matches_reference_model(assignments: dict[int, set[bytes]]) -> None:
    """Against a plain dict model: every address routes to its last owner, or the set was refused."""
    table: RouteTable[int] = RouteTable()
    model: dict[bytes, int] = {}
    for peer, addrs in assignments.items():
        taken = {a for a in addrs if model.get(a, peer) != peer}
        if taken:
            with pytest.raises(ValueError):
                table.set_peer(peer, addrs)
            continue
        table.set_peer(peer, addrs)
        model.update({a: peer for a in addrs})
    for addr, peer in model.items():
        assert table.lookup(addr) == peer
        assert table.source_allowed(peer, addr)
