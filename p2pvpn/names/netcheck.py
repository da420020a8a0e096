"""How our NAT maps addresses, from what peers told us they see (identify), sans-IO.

A NAT's *mapping* is endpoint-independent (EIM, RFC 4787) when one inside
address and port keeps one outside address and port whatever the
destination; then a peer can reach us at the port another peer saw, and
hole punching works well. Endpoint-dependent mapping gives a new outside
port per destination.

Identify tells us, per connection, the address and port the other side
sees (``external``), and we know our own end of that connection
(``local``). The verdict, in order:

1. no observation: ``unknown``;
2. every observed IP is one of our own addresses: ``none`` (no NAT);
3. one local endpoint seen by two or more observers: the same outside
   endpoint for all of them is ``endpoint-independent``, different ones
   ``endpoint-dependent`` (this is the direct test; it needs connections
   from the same source port, e.g. our listen port);
4. otherwise, two or more observers, and every connection kept its source
   port through the NAT: ``endpoint-independent`` (a port-preserving NAT
   maps each inside port to the same outside port for every destination);
5. otherwise ``unknown``: py-libp2p dials each TCP connection from a fresh
   port, so a NAT that changes ports gives different outside ports per
   connection whatever its mapping behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Endpoint = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Observation:
    observer: str
    external: Endpoint
    local: Endpoint | None


@dataclass(frozen=True, slots=True)
class Mapping:
    verdict: str  # endpoint-independent, endpoint-dependent, none, unknown
    why: str


def mapping_behaviour(observations: Iterable[Observation], own_ips: Iterable[str]) -> Mapping:
    seen = list(observations)
    own = set(own_ips)
    if not seen:
        return Mapping("unknown", "no peer has told us yet which address it sees (identify)")
    if all(o.external[0] in own for o in seen):
        return Mapping("none", "peers see one of our own addresses: no NAT in between")
    by_local: dict[Endpoint, dict[str, Endpoint]] = {}
    for o in seen:
        if o.local is not None:
            by_local.setdefault(o.local, {})[o.observer] = o.external
    shared = {local: externals for local, externals in by_local.items() if len(externals) >= 2}
    for local, externals in shared.items():
        if len(set(externals.values())) > 1:
            return Mapping("endpoint-dependent", f"{len(externals)} peers saw {_text(local)} at different "
                                                 f"outside endpoints: {', '.join(sorted(map(_text, set(externals.values()))))}")
    if shared:
        local, externals = next(iter(shared.items()))
        return Mapping("endpoint-independent", f"{len(externals)} peers saw {_text(local)} at the same outside "
                                               f"endpoint {_text(next(iter(externals.values())))}")
    observers = {o.observer for o in seen}
    known = [o for o in seen if o.local is not None]
    if len(observers) >= 2 and known and len(known) == len(seen) and all(o.external[1] == o.local[1] for o in known):
        return Mapping("endpoint-independent", f"{len(observers)} peers saw our connections keep their source "
                                               "ports (a port-preserving NAT)")
    if len(observers) < 2:
        return Mapping("unknown", "only one peer has told us which address it sees; two are needed")
    return Mapping("unknown", "the NAT changes source ports, and no two peers saw connections from one port")


def _text(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
