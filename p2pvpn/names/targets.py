"""Which peer ``p2pvpn ping TARGET`` means, sans-IO: a member name, a peer ID, or an overlay address."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass


class UnknownTarget(ValueError):
    """The target names no peer this node knows; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Target:
    peer_id: str
    name: str | None
    ipv4: str
    ipv6: str


def resolve(text: str, known: Iterable[Target], zones: Iterable[str], own: Target) -> Target:
    """The target ``text`` names: an overlay IP, a name (bare or under one of ``zones``, any case), or a peer ID."""
    text = text.strip()
    candidates = list(known)
    if not text:
        raise UnknownTarget("no target given")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is not None:
        matches = [t for t in [own, *candidates] if str(address) in (t.ipv4, t.ipv6)]
        if not matches:
            raise UnknownTarget(f"{text} is no overlay address of a peer this node knows")
        return _not_self(matches[0], own, text)
    name = text.rstrip(".").lower()
    for zone in zones:
        if name.endswith("." + zone.lower()):
            name = name[: -len(zone) - 1]
            break
    for target in [own, *candidates]:
        if target.name is not None and target.name.lower() == name:
            return _not_self(target, own, text)
        if target.peer_id == text:
            return _not_self(target, own, text)
    raise UnknownTarget(f"{text!r} is no member name, peer ID or overlay address this node knows")


def _not_self(target: Target, own: Target, text: str) -> Target:
    if target.peer_id == own.peer_id:
        raise UnknownTarget(f"{text} is this node itself")
    return target
