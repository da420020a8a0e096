"""The DNS answer for one query, sans-IO: query bytes and a name table in, response bytes out.

Rules (README "Names, ping and netcheck"):

* The responder is authoritative for its zones (``p2pvpn.names.table``:
  the label's and the network ID's, with the same names) and nothing else: it never recurses and never forwards. A question outside
  the zone gets REFUSED; a name in the zone that is no member, NXDOMAIN;
  a member's name, its A and AAAA records (ANY gives both; other types
  NOERROR with no answer). Negative answers carry the zone's SOA, so
  resolvers cache them briefly (RFC 2308).
* Names compare case-insensitively, as DNS names do (RFC 4343).
* Bounded: a query is at most MAX_QUERY bytes and must hold exactly one
  question; a response over UDP fits the client's limit (512 bytes, or its
  EDNS size) or is truncated (TC). Input that is not a DNS query gets
  FORMERR when its header is readable, else nothing; every outcome is
  counted by the caller under ``Answer.outcome``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from p2pvpn.names.table import MAX_QUERY, NameTable, Zone

__all__ = ["MAX_QUERY", "Answer", "answer"]
HEADER_LEN = 12
TTL = 60
NEGATIVE_TTL = 10
UDP_DEFAULT_PAYLOAD = 512
TCP_MAX_RESPONSE = 65535


@dataclass(frozen=True, slots=True)
class Answer:
    """The wire response (None: send nothing) and what happened, for the counters."""

    response: bytes | None
    outcome: str  # answered, nodata, nxdomain, refused, notimp, formerr, malformed, too_big


def answer(query: bytes, table: NameTable, *, tcp: bool = False) -> Answer:
    """Answer one query for ``table``'s zone; never raises on bad input."""
    if len(query) > MAX_QUERY:
        return Answer(_header_only(query, dns.rcode.FORMERR), "too_big")
    try:
        message = dns.message.from_wire(query)
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
        return Answer(_header_only(query, dns.rcode.FORMERR), "malformed")
    if message.flags & dns.flags.QR:
        return Answer(None, "malformed")  # a response sent to us: never answer one (no reflection loops)
    if message.opcode() != dns.opcode.QUERY:
        return _reply(message, dns.rcode.NOTIMP, tcp, "notimp")
    if len(message.question) != 1:
        return _reply(message, dns.rcode.FORMERR, tcp, "formerr")
    question = message.question[0]
    if question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
        return _reply(message, dns.rcode.REFUSED, tcp, "refused")
    qname: dns.name.Name = question.name
    zone = next((z for z in map(_name, table.zones) if qname.is_subdomain(z)), None)
    if zone is None:
        return _reply(message, dns.rcode.REFUSED, tcp, "refused")
    relative = qname.relativize(zone)
    member = None
    if len(relative.labels) == 1 and relative != dns.name.empty:
        member = table.lookup(relative.labels[0].decode("ascii", "replace"))
    if member is None and qname != zone:
        return _reply(message, dns.rcode.NXDOMAIN, tcp, "nxdomain", soa=zone)
    records: list[dns.rrset.RRset] = []
    qtype = question.rdtype
    if member is not None:
        if qtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            records.append(_rrset(qname, dns.rdatatype.A, str(member.ipv4)))
        if qtype in (dns.rdatatype.AAAA, dns.rdatatype.ANY):
            records.append(_rrset(qname, dns.rdatatype.AAAA, str(member.ipv6)))
    elif qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):  # the zone's apex
        records.append(_soa(zone))
    if not records:
        return _reply(message, dns.rcode.NOERROR, tcp, "nodata", soa=zone)
    return _reply(message, dns.rcode.NOERROR, tcp, "answered", records=records)


def _reply(query: dns.message.Message, rcode: int, tcp: bool, outcome: str, *,
           records: list[dns.rrset.RRset] | None = None, soa: dns.name.Name | None = None) -> Answer:
    response = dns.message.make_response(query, recursion_available=False)
    response.set_rcode(rcode)
    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        response.flags |= dns.flags.AA
    for rrset in records or ():
        response.answer.append(rrset)
    if soa is not None:
        response.authority.append(_soa(soa))
    limit = TCP_MAX_RESPONSE if tcp else max(UDP_DEFAULT_PAYLOAD, min(query.payload, 4096)) if query.edns >= 0 \
        else UDP_DEFAULT_PAYLOAD
    try:
        wire = response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer.clear()
        response.authority.clear()
        response.flags |= dns.flags.TC
        wire = response.to_wire()
    return Answer(wire, outcome)


@functools.lru_cache(maxsize=16)
def _name(zone: Zone) -> dns.name.Name:
    """The zone's name for dnspython (the table keeps text: p2pvpn.names.table.Zone)."""
    return dns.name.from_text(zone.to_text())


def _rrset(name: dns.name.Name, rdtype: int, text: str, ttl: int = TTL) -> dns.rrset.RRset:
    return dns.rrset.from_text(name, ttl, dns.rdataclass.IN, rdtype, text)


@functools.lru_cache(maxsize=16)  # parsing the SOA text was half an NXDOMAIN's cost; responses only read it
def _soa(zone: dns.name.Name) -> dns.rrset.RRset:
    text = f"ns.{zone.to_text()} hostmaster.{zone.to_text()} 1 3600 600 86400 {NEGATIVE_TTL}"
    return _rrset(zone, dns.rdatatype.SOA, text, NEGATIVE_TTL)


def _header_only(query: bytes, rcode: int) -> bytes | None:
    """A 12-byte FORMERR echoing the query's ID, when there is a header and it is a query; else None."""
    if len(query) < HEADER_LEN or query[2] & 0x80:  # too short to answer, or QR set: a response
        return None
    flags = 0x8000 | (query[2] & 0x79) << 8 | (query[3] & 0x10) | (rcode & 0x0F)  # QR, opcode, RD; CD
    return query[0:2] + flags.to_bytes(2, "big") + bytes(8)
