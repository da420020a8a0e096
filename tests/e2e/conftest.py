"""End-to-end fixtures: real ``p2pvpn up`` processes in network namespaces.

Topology of every lab (p2pvpn.lab.demo.Lab)::

    n1 eth0 198.18.1.1 ─┐                        ┌─ n2 eth0 198.18.1.2
      TUN <prefix>-vpn  └── switch lan (br0) ────┘    TUN <prefix>-vpn

Every name this run creates (namespaces, TUNs, nft tables, temp dirs)
starts with ``RUN``; after each test :func:`nothing_left_behind` checks
that none of them survived, and that no node process is still running.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from p2pvpn.lab.demo import Lab
from p2pvpn.lab import topology
from p2pvpn.lab.topology import new_prefix

RUN = new_prefix()  # p2v + 5 hex; each lab adds two more characters
_lab_numbers = itertools.count(1)

MakeLab = Callable[..., Lab]


def next_prefix() -> str:
    return f"{RUN}{next(_lab_numbers) % 256:02x}"


@pytest.fixture
def make_lab() -> Iterator[MakeLab]:
    """``make_lab(nodes=2, start=True, mtus=None)``: a running lab, closed after the test."""
    labs: list[Lab] = []

    def make(nodes: int = 2, *, start: bool = True, mtus: Sequence[int] | None = None) -> Lab:
        lab = Lab(nodes, prefix=next_prefix(), mtus=mtus)
        labs.append(lab)
        lab.__enter__()
        if start:
            lab.start()
            lab.wait_up()
        return lab

    yield make
    for lab in labs:
        for node in lab.nodes:  # shown by pytest only when the test fails
            print(f"--- log of {node.name} ({lab.prefix}) ---\n{node.log_tail(40)}")
        lab.close()


@pytest.fixture
def lab_prefix() -> Callable[[], str]:
    """Fresh prefixes under this run's RUN, for labs a test builds itself (e.g. NatLab)."""
    return next_prefix


@pytest.fixture
def lab2(make_lab: MakeLab) -> Lab:
    """Two nodes, each with the other as static peer, tunnel up."""
    return make_lab(2)


def leftovers(prefix: str) -> list[str]:
    """Everything named with ``prefix`` that still exists on this machine."""
    return topology.leftovers(prefix, Path("/tmp").glob(f"{prefix}*"))


@pytest.fixture
def leftovers_of() -> Callable[[str], list[str]]:
    """:func:`leftovers`, for tests that check what a subprocess left."""
    return leftovers


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    yield
    left = leftovers(RUN)
    assert not left, f"left behind: {left}"
