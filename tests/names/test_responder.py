"""The DNS responder's answers, sans-IO: query bytes in, response bytes out, read back with dnspython."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings, strategies as st

from p2pvpn.names.responder import MAX_QUERY, answer
from p2pvpn.names.table import Member, NameTable, check_suffix, zone_label, zone_name, zone_names

NETWORK_ID = "abcdefghijklmnopqrstuvwxyz234567"
ALPHA = Member("alpha", b"\x00\x24" + bytes(36), ipaddress.IPv4Address("100.64.0.7"),
               ipaddress.IPv6Address("fd12:3456:789a:1::7"))
BETA = Member("beta", b"\x00\x24" + bytes([1]) * 36, ipaddress.IPv4Address("100.64.0.8"),
              ipaddress.IPv6Address("fd12:3456:789a:1::8"))


def table() -> NameTable:
    return NameTable(zone_name("lab", NETWORK_ID), [ALPHA, BETA], [zone_name("", NETWORK_ID)])


def ask(name: str, rdtype: str = "A", **kwargs: object) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kwargs)
    result = answer(query.to_wire(), table())
    assert result.response is not None
    response = dns.message.from_wire(result.response)
    assert response.id == query.id and response.flags & dns.flags.QR
    assert not response.flags & dns.flags.RA  # never recursive
    return response


def addresses(response: dns.message.Message) -> set[str]:
    return {rdata.to_text() for rrset in response.answer for rdata in rrset}


def test_a_record_of_a_member() -> None:
    response = ask("alpha.lab.internal", "A")
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    assert addresses(response) == {"100.64.0.7"}
    assert response.answer[0].ttl > 0


def test_aaaa_record_of_a_member() -> None:
    response = ask("beta.lab.internal", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR
    assert addresses(response) == {"fd12:3456:789a:1::8"}


def test_any_gives_both_addresses() -> None:
    assert addresses(ask("alpha.lab.internal", "ANY")) == {"100.64.0.7", "fd12:3456:789a:1::7"}


def test_names_are_case_insensitive_and_the_trailing_dot_is_optional() -> None:
    for name in ("ALPHA.Lab.INTERNAL", "alpha.lab.internal.", "Alpha.lab.internal"):
        assert addresses(ask(name, "A")) == {"100.64.0.7"}, name


def test_the_same_names_answer_under_the_network_id() -> None:
    assert addresses(ask(f"beta.{NETWORK_ID}.internal", "A")) == {"100.64.0.8"}
    response = ask(f"gamma.{NETWORK_ID}.internal", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0].name == dns.name.from_text(f"{NETWORK_ID}.internal")


def test_zone_names_are_the_label_then_the_id() -> None:
    assert [z.to_text() for z in zone_names("Lab", NETWORK_ID)] == ["lab.internal.", f"{NETWORK_ID}.internal."]
    assert [z.to_text() for z in zone_names("", NETWORK_ID, "vpn.example")] == [f"{NETWORK_ID}.vpn.example."]


def test_unknown_member_is_nxdomain_with_the_zone_soa() -> None:
    response = ask("gamma.lab.internal", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN and response.flags & dns.flags.AA
    assert not response.answer
    assert response.authority[0].name == dns.name.from_text("lab.internal")
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_deeper_names_under_the_zone_are_nxdomain() -> None:
    assert ask("www.alpha.lab.internal", "A").rcode() == dns.rcode.NXDOMAIN


def test_other_types_of_a_member_are_nodata() -> None:
    response = ask("alpha.lab.internal", "MX")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_the_zone_apex_has_an_soa_and_no_address() -> None:
    assert ask("lab.internal", "SOA").answer[0].rdtype == dns.rdatatype.SOA
    response = ask("lab.internal", "A")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer


@pytest.mark.parametrize("name", ["example.com", "internal", "other.internal", "alpha.other.internal", "."])
def test_names_outside_the_zone_are_refused(name: str) -> None:
    response = ask(name, "A")
    assert response.rcode() == dns.rcode.REFUSED and not response.answer


def test_chaos_class_is_refused() -> None:
    query = dns.message.make_query("alpha.lab.internal", "TXT", rdclass="CH")
    response = dns.message.from_wire(answer(query.to_wire(), table()).response or b"")
    assert response.rcode() == dns.rcode.REFUSED


def test_edns_query_gets_an_edns_answer() -> None:
    response = ask("alpha.lab.internal", "A", use_edns=0, payload=1232)
    assert response.edns == 0 and addresses(response) == {"100.64.0.7"}


def test_non_query_opcode_is_notimp() -> None:
    query = dns.message.make_query("alpha.lab.internal", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    result = answer(query.to_wire(), table())
    assert result.outcome == "notimp"
    assert dns.message.from_wire(result.response or b"").rcode() == dns.rcode.NOTIMP


def test_responses_are_never_answered() -> None:
    query = dns.message.make_query("alpha.lab.internal", "A")
    query.flags |= dns.flags.QR
    assert answer(query.to_wire(), table()).response is None


def test_malformed_query_gets_a_header_only_formerr() -> None:
    query = dns.message.make_query("alpha.lab.internal", "A").to_wire()
    result = answer(query[:20], table())  # cut inside the question
    assert result.outcome == "malformed"
    assert result.response is not None and len(result.response) == 12
    assert result.response[:2] == query[:2]
    response = dns.message.from_wire(result.response)
    assert response.rcode() == dns.rcode.FORMERR and response.flags & dns.flags.QR


def test_short_garbage_gets_nothing() -> None:
    for junk in (b"", b"\x00", b"\x12\x34\x01"):
        result = answer(junk, table())
        assert result.response is None and result.outcome == "malformed"


def test_oversized_query_is_refused_before_parsing() -> None:
    query = dns.message.make_query("alpha.lab.internal", "A").to_wire()
    result = answer(query + bytes(MAX_QUERY), table())
    assert result.outcome == "too_big"


def test_two_questions_are_formerr() -> None:
    query = dns.message.make_query("alpha.lab.internal", "A")
    query.question.append(dns.message.make_query("beta.lab.internal", "A").question[0])
    result = answer(query.to_wire(), table())
    assert result.outcome == "formerr"
    assert dns.message.from_wire(result.response or b"").rcode() == dns.rcode.FORMERR


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_give_an_answer_or_nothing_never_an_exception(data: bytes) -> None:
    result = answer(data, table())
    assert result.response is None or len(result.response) >= 12


def test_zone_label_is_the_network_name_when_it_is_a_dns_label() -> None:
    assert zone_label("Lab", NETWORK_ID) == "lab"
    assert zone_label("my network!", NETWORK_ID) == NETWORK_ID
    assert zone_label("", NETWORK_ID) == NETWORK_ID


def test_suffix_is_checked() -> None:
    assert check_suffix("Internal.") == "internal"
    assert check_suffix("vpn.example") == "vpn.example"
    for bad in ("", ".", "a..b", "-x", "x" * 64, "a.b.c.d.e"):
        with pytest.raises(ValueError):
            check_suffix(bad)


def test_first_member_of_a_name_wins() -> None:
    other = Member("alpha", BETA.peer_id, BETA.ipv4, BETA.ipv6)
    t = NameTable(zone_name("lab", NETWORK_ID), [ALPHA, other])
    assert t.lookup("ALPHA") == ALPHA
    assert t.by_address(ipaddress.IPv4Address("100.64.0.7")) == ALPHA
    assert t.fqdn(ALPHA) == "alpha.lab.internal"
