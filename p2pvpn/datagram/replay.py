"""Replay window (docs/protocol.md §16.6): 2048 counters, RFC 6479 semantics.

A counter is accepted only after its tag verified, and only if it is above
``highest - WINDOW`` and not seen before. The window is a Python int used
as a bitmap (bit i = counter ``highest - i`` seen): shifting a 2048-bit int
costs about what RFC 6479's block ring does in C, and reads in three lines.
"""

from __future__ import annotations

from p2pvpn.datagram.packet import MAX_COUNTER

WINDOW = 2048
_MASK = (1 << WINDOW) - 1


class ReplayWindow:
    __slots__ = ("highest", "_bits")

    def __init__(self) -> None:
        self.highest = -1  # nothing seen yet: counter 0 is new
        self._bits = 0

    def check(self, counter: int) -> bool:
        """Would ``counter`` be accepted? (Does not record it: call ``accept`` after the tag verified.)"""
        if counter >= MAX_COUNTER:
            return False
        if counter > self.highest:
            return True
        age = self.highest - counter
        return age < WINDOW and not (self._bits >> age) & 1

    def accept_checked(self, counter: int) -> None:
        """``accept`` for a counter ``check`` just passed (the receive ladder's hot path: no second check)."""
        if counter > self.highest:
            shift = counter - self.highest
            self._bits = ((self._bits << shift) | 1) & _MASK if shift < WINDOW else 1
            self.highest = counter
        else:
            self._bits |= 1 << (self.highest - counter)

    def accept(self, counter: int) -> bool:
        """Record an authenticated counter; False if it is a replay or too old (or >= 2^60)."""
        if not self.check(counter):
            return False
        if counter > self.highest:
            shift = counter - self.highest
            self._bits = ((self._bits << shift) | 1) & _MASK if shift < WINDOW else 1
            self.highest = counter
        else:
            self._bits |= 1 << (self.highest - counter)
        return True
