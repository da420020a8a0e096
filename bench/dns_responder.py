"""Cost of one DNS answer in the sans-IO responder (p2pvpn.names.responder), per outcome.

Run: python bench/dns_responder.py [--queries N]. Prints microseconds per
query for a member's A record, an NXDOMAIN and a REFUSED, with a table of
200 members. The server's rate limit (p2pvpn.names.server.RATE) is meant to
keep the responder well below one core; compare it with 1e6 / these numbers.
"""

from __future__ import annotations

import argparse
import ipaddress
import time

import dns.message

from p2pvpn.names.responder import answer
from p2pvpn.names.table import Member, NameTable, zone_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5000)
    n = parser.parse_args().queries
    zones = zone_names("lab", "a" * 32)
    members = [Member(f"m{i}", bytes([i]) * 38, ipaddress.IPv4Address(f"100.64.0.{i + 1}"),
                      ipaddress.IPv6Address(f"fd00::{i + 1:x}")) for i in range(200)]
    table = NameTable(zones[0], members, zones[1:])
    for label, name in (("A of a member", "m7.lab.internal"), ("NXDOMAIN", "zz.lab.internal"),
                        ("REFUSED", "example.com")):
        query = dns.message.make_query(name, "A").to_wire()
        started = time.perf_counter()
        for _ in range(n):
            answer(query, table)
        print(f"{label:14} {(time.perf_counter() - started) / n * 1e6:6.0f} us/query")


if __name__ == "__main__":
    main()
