"""The routing-table watch of p2pvpn.nat.traversal: quick while the table is empty, rare once it is not.

It republishes our records when the table goes from empty to not (the
first publish reached nobody). An idle node used to look every 0.5 s
forever (docs/performance.md, "A node process without the CLI").
"""

from __future__ import annotations

from types import SimpleNamespace

import trio
import trio.testing

from p2pvpn.nat import traversal
from p2pvpn.nat.traversal import Traversal


async def test_the_watch_republishes_once_when_the_table_fills_then_looks_rarely(
        autojump_clock: trio.testing.MockClock) -> None:
    looks: list[float] = []
    sizes = {"now": 0}

    def routing_table_size() -> int:
        looks.append(trio.current_time())
        return sizes["now"]

    published: list[float] = []
    watch = object.__new__(Traversal)  # only the watch: no host, no AutoNAT
    watch._on_record_change = lambda: published.append(trio.current_time())
    dht = SimpleNamespace(routing_table_size=routing_table_size)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch._republish_when_table_fills, dht)
        await trio.sleep(5.01)
        assert published == [] and len(looks) >= 5 / traversal.TABLE_WATCH  # empty: every TABLE_WATCH
        sizes["now"] = 3
        await trio.sleep(traversal.TABLE_WATCH)
        assert len(published) == 1  # filled: one republish, within one look
        looks.clear()
        await trio.sleep(100)
        assert published[1:] == []
        assert len(looks) <= 100 / traversal.TABLE_WATCH_FULL + 1  # full: every TABLE_WATCH_FULL
        sizes["now"] = 0  # emptied (every peer gone) ...
        await trio.sleep(traversal.TABLE_WATCH_FULL)
        sizes["now"] = 2  # ... and filled again: noticed within TABLE_WATCH_FULL + TABLE_WATCH
        await trio.sleep(traversal.TABLE_WATCH_FULL + traversal.TABLE_WATCH)
        assert len(published) == 2
        nursery.cancel_scope.cancel()
