import ipaddress

from hypothesis import given, strategies as st

from p2pvpn import addressing


def test_ipv4_inside_overlay_and_not_network_or_broadcast() -> None:
    for i in range(2000):
        addr = addressing.derive(i.to_bytes(4, "big"), "default").ipv4
        assert addr in addressing.OVERLAY_V4_NET
        assert addr not in (addressing.OVERLAY_V4_NET.network_address, addressing.OVERLAY_V4_NET.broadcast_address)


def test_deterministic_and_network_scoped() -> None:
    pid = b"\x00\x24\x08\x01\x12\x20" + bytes(range(32))
    assert addressing.derive(pid, "a") == addressing.derive(pid, "a")
    assert addressing.derive(pid, "a").ipv4 != addressing.derive(pid, "b").ipv4
    assert addressing.derive(pid, "a").ipv6 != addressing.derive(pid, "b").ipv6


def test_ipv6_in_network_ula_64() -> None:
    prefix = addressing.network_v6_prefix("lab")
    assert prefix.prefixlen == 64
    assert prefix.subnet_of(ipaddress.IPv6Network("fd00::/8"))
    assert addressing.derive_ipv6(b"peer", "lab") in prefix


def test_later_index_gives_other_candidate() -> None:
    a, ia = addressing.derive_ipv4(b"peer", "x", 0)
    b, ib = addressing.derive_ipv4(b"peer", "x", 1)
    assert (ia, ib) == (0, 1) and a != b


@given(st.binary(min_size=1, max_size=64), st.text(min_size=1, max_size=20))
def test_any_peer_id_gets_valid_addresses(pid: bytes, network: str) -> None:
    addrs = addressing.derive(pid, network)
    assert addrs.ipv4 in addressing.OVERLAY_V4_NET
    assert addrs.ipv6 in addressing.network_v6_prefix(network)
