"""p2pvpn.rtnl: the rtnetlink messages against fixed bytes (no network), then the real kernel in a namespace."""

from __future__ import annotations

import errno
import ipaddress
import json
import secrets
import socket
import subprocess
import sys
import textwrap

import pytest

from p2pvpn import rtnl


def test_a_dump_request_is_a_header_and_an_empty_family_header() -> None:
    assert rtnl.encode_dump(rtnl.RTM_GETADDR, 7) == bytes.fromhex(
        "18000000" "1600" "0103" "07000000" "00000000"  # len 24, RTM_GETADDR, REQUEST|DUMP, seq 7, port 0
        "00000000" "00000000"                           # ifaddrmsg: family 0, ..., index 0
    )
    assert rtnl.encode_dump(rtnl.RTM_GETLINK, 1)[:8] == bytes.fromhex("20000000" "1200" "0103")  # ifinfomsg: 16


def test_set_link_carries_mtu_and_the_up_flag_with_its_change_mask() -> None:
    msg = rtnl.encode_set_link(3, 9, mtu=1400, up=True)
    assert msg == bytes.fromhex(
        "28000000" "1000" "0500" "03000000" "00000000"  # len 40, RTM_NEWLINK, REQUEST|ACK, seq 3
        "00" "00" "0000" "09000000" "01000000" "01000000"  # AF_UNSPEC, index 9, flags IFF_UP, change IFF_UP
        "0800" "0400" "78050000"                        # IFLA_MTU 1400
    )
    only_mtu = rtnl.encode_set_link(4, 9, mtu=1280)
    assert only_mtu[24:32] == bytes(8)  # flags and change mask 0: the state is left alone


def test_an_ipv4_address_carries_local_and_address_an_ipv6_one_its_flags() -> None:
    v4 = rtnl.encode_address(5, rtnl.RTM_NEWADDR, 2, ipaddress.IPv4Interface("100.64.1.2/10"))
    assert v4 == bytes.fromhex(
        "28000000" "1400" "0506" "05000000" "00000000"  # RTM_NEWADDR, REQUEST|ACK|EXCL|CREATE
        "02" "0a" "00" "00" "02000000"                  # AF_INET, /10, flags 0, scope 0, index 2
        "0800" "0200" "64400102"                        # IFA_LOCAL
        "0800" "0100" "64400102"                        # IFA_ADDRESS
    )
    v6 = rtnl.encode_address(6, rtnl.RTM_NEWADDR, 2, ipaddress.IPv6Interface("fd00::5/64"), flags=0x02)
    body = v6[16:]
    assert body[:8] == bytes.fromhex("0a" "40" "02" "00" "02000000")  # AF_INET6, /64, IFA_F_NODAD
    attrs = rtnl.parse_attrs(body, 8)
    assert attrs == {rtnl.IFA_ADDRESS: ipaddress.IPv6Address("fd00::5").packed, rtnl.IFA_FLAGS: b"\x02\0\0\0"}
    delete = rtnl.encode_address(7, rtnl.RTM_DELADDR, 2, ipaddress.IPv4Interface("100.64.1.2/10"))
    assert delete[4:8] == bytes.fromhex("1500" "0500")  # RTM_DELADDR, REQUEST|ACK: no CREATE/EXCL


def _kernel_message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    msg = rtnl.encode_message(kind, flags, seq, body)
    return msg + b"\0" * (-len(msg) % 4)


def test_a_dump_answer_decodes_to_links_and_addresses() -> None:
    link = _kernel_message(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI, 8,
                           bytes.fromhex("00" "00" "0100" "02000000" "43100100" "00000000")
                           + rtnl.encode_attr(rtnl.IFLA_MTU, b"\xdc\x05\0\0")
                           + rtnl.encode_attr(rtnl.IFLA_IFNAME, b"eth0\0"))
    addr = _kernel_message(rtnl.RTM_NEWADDR, rtnl.NLM_F_MULTI, 8,
                           bytes.fromhex("02" "18" "80" "00" "02000000")
                           + rtnl.encode_attr(rtnl.IFA_ADDRESS, bytes([198, 18, 0, 1]))
                           + rtnl.encode_attr(rtnl.IFA_LOCAL, bytes([198, 18, 0, 2])))
    done = _kernel_message(rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, 8, b"\0\0\0\0")
    messages = list(rtnl.parse_messages(link + addr + done))
    assert [m.type for m in messages] == [rtnl.RTM_NEWLINK, rtnl.RTM_NEWADDR, rtnl.NLMSG_DONE]
    assert rtnl.decode_link(messages[0].payload) == (2, "eth0")
    assert rtnl.decode_address(messages[1].payload) == rtnl.Address(
        index=2, family=socket.AF_INET, prefixlen=24, address="198.18.0.1", local="198.18.0.2")


def test_an_error_answer_gives_the_errno_and_an_ack_zero() -> None:
    refused = _kernel_message(rtnl.NLMSG_ERROR, 0, 3, (-errno.EEXIST).to_bytes(4, "little", signed=True) + bytes(16))
    ack = _kernel_message(rtnl.NLMSG_ERROR, 0, 4, bytes(20))
    assert rtnl.error_of(next(rtnl.parse_messages(refused))) == errno.EEXIST
    assert rtnl.error_of(next(rtnl.parse_messages(ack))) == 0


def test_malformed_input_raises_and_a_truncated_attribute_ends_the_list() -> None:
    with pytest.raises(ValueError, match="malformed"):
        list(rtnl.parse_messages(bytes.fromhex("40000000" "1400" "0000" "00000000" "00000000")))  # says 64, has 16
    attrs = rtnl.encode_attr(rtnl.IFA_ADDRESS, b"\1\2\3\4") + bytes.fromhex("2000" "0200")  # says 32, has 4
    assert rtnl.parse_attrs(attrs, 0) == {rtnl.IFA_ADDRESS: b"\1\2\3\4"}


def test_the_kernel_dump_here_matches_socket_if_nameindex() -> None:
    """Dumps need no privilege: the links of this namespace, as the C library lists them."""
    with rtnl.Rtnl() as nl:
        links = nl.links()
        addresses = nl.addresses()
    assert links == dict(socket.if_nameindex())
    assert all(a.index in links for a in addresses)


def test_an_unknown_interface_is_enodev() -> None:
    with pytest.raises(rtnl.NetlinkError) as info:
        rtnl.link_index("p2vnone" + secrets.token_hex(3))
    assert info.value.errno == errno.ENODEV and info.value.strerror == "No such device"


IN_NAMESPACE = textwrap.dedent("""
    import errno, ipaddress, json, sys
    from p2pvpn import rtnl
    from p2pvpn.errors import TunError
    from p2pvpn.tun import device, readdress

    index = rtnl.link_index("v0")
    out = {}
    with rtnl.Rtnl() as nl:
        nl.set_link(index, mtu=1300, up=True)
        nl.add_address(index, ipaddress.IPv4Interface("100.64.9.1/10"))
        nl.add_address(index, ipaddress.IPv6Interface("fd00::9:1/64"), flags=device.IFA_F_NODAD)
        try:
            nl.add_address(index, ipaddress.IPv4Interface("100.64.9.1/10"))
        except rtnl.NetlinkError as exc:
            out["again"] = [exc.errno, exc.strerror]
        out["ours"] = sorted(f"{a.address}/{a.prefixlen}" for a in nl.addresses() if a.index == index
                             and not a.address.startswith("fe80"))
    readdress.replace_ipv4("v0", ipaddress.IPv4Interface("100.64.9.1/10"), ipaddress.IPv4Interface("100.64.9.2/10"))
    with open("/proc/sys/net/ipv4/conf/v0/promote_secondaries", "w") as f:
        f.write("0")  # as if /proc were read-only: the new address must survive its primary's removal anyway
    readdress.replace_ipv4("v0", ipaddress.IPv4Interface("100.64.9.2/10"), ipaddress.IPv4Interface("100.64.9.4/10"))
    try:
        device._configure("p2vnone0", 1300, ipaddress.IPv4Interface("100.64.9.3/10"),
                          ipaddress.IPv6Interface("fd00::9:3/64"))
    except TunError as exc:
        out["configure_error"] = str(exc)
    try:
        readdress.replace_ipv4("v0", ipaddress.IPv4Interface("100.64.9.7/10"), ipaddress.IPv4Interface("100.64.9.4/10"))
    except TunError as exc:
        out["move_error"] = str(exc)
    print(json.dumps(out))
""")


@pytest.mark.netns
def test_requests_change_a_real_link_as_ip_shows_it() -> None:
    ns = "p2v" + secrets.token_hex(3)[:5] + "rt"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"], check=True, timeout=30)
        res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", IN_NAMESPACE],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr[-2000:]
        out = json.loads(res.stdout)
        shown = json.loads(subprocess.run(["ip", "-n", ns, "-j", "addr", "show", "dev", "v0"], check=True,
                                          capture_output=True, text=True, timeout=30).stdout)[0]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)
    assert out["again"] == [errno.EEXIST, "File exists"]
    assert out["ours"] == ["100.64.9.1/10", "fd00::9:1/64"]
    assert out["configure_error"] == "cannot configure 'p2vnone0': No such device"
    assert out["move_error"] == "cannot move v0 from 100.64.9.7/10 to 100.64.9.4/10: File exists"
    assert shown["mtu"] == 1300 and "UP" in shown["flags"]
    addrs = {(a["local"], a["prefixlen"]): a for a in shown["addr_info"]}
    assert ("100.64.9.4", 10) in addrs  # moved twice: each time added, then the old one removed
    assert ("100.64.9.1", 10) not in addrs and ("100.64.9.2", 10) not in addrs
    assert addrs[("fd00::9:1", 64)].get("nodad") is True
