"""Epochs and rekeying (docs/protocol.md §16.4), sans-IO: offers in, offers and keys out.

Theory of operation
-------------------
Each epoch both sides send one ``DatagramOffer`` (a fresh X25519 public key
and the receiver_index they want to see). A side that holds both offers of
epoch e installs e: it sends with e's key from then on, and keeps the
previous epoch's receive key for OLD_KEY_GRACE seconds for datagrams
already in flight. Epoch 1's offers go out right after the Hellos, from
both sides at once. Later epochs are started by the tunnel stream's
initiator (REKEY_AFTER_TIME, REKEY_AFTER_PACKETS); the responder answers.
Epochs arrive strictly +1; anything else is a protocol error
(:class:`~p2pvpn.datagram.errors.DatagramError`).

Time is an argument (seconds, any monotonic clock); receiver indices come
from an ``allocate_index`` callable so the node can keep them unique
across its tunnels (the demultiplexer's keys).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pvpn.datagram import keys
from p2pvpn.datagram.errors import DatagramError
from p2pvpn.datagram.packet import MAX_COUNTER
from p2pvpn.datagram.replay import ReplayWindow
from p2pvpn.wire.codec import DatagramOffer as Offer, ProtocolError, check_datagram_offer

REKEY_AFTER_TIME = 120.0
REKEY_AFTER_PACKETS = 1 << 32
OLD_KEY_GRACE = 10.0


@dataclass(slots=True, eq=False)
class Epoch:
    """The installed keys of one epoch: what the send and receive paths use."""

    number: int
    send_aead: AESGCM
    recv_aead: AESGCM
    send_index: int          # the peer's receiver_index: goes into our datagrams
    recv_index: int          # ours: the peer's datagrams carry it, the demultiplexer's key
    installed: float
    send_counter: int = 0
    replay: ReplayWindow = field(default_factory=ReplayWindow)
    expires: float | None = None  # set when a newer epoch replaced it (receive only until then)

    def next_counter(self) -> int | None:
        """The counter for the next datagram, or None once the epoch is spent (2^60)."""
        counter = self.send_counter
        if counter >= MAX_COUNTER:
            return None
        self.send_counter = counter + 1
        return counter


@dataclass(slots=True)
class Installed:
    """What ``receive_offer`` changed: an epoch now current, and the offer to answer with (if any)."""

    reply: Offer | None
    epoch: Epoch | None


class KeySchedule:
    """One tunnel's epochs. ``initiator``: we opened the tunnel stream (we start rekeys)."""

    def __init__(self, initiator: bool, own_id: bytes, peer_id: bytes, port: int,
                 allocate_index: Callable[[], int], endpoints: tuple[bytes, ...] = (),
                 ephemeral: Callable[[], keys.Ephemeral] = keys.Ephemeral.generate) -> None:
        self.initiator = initiator
        self.own_id = own_id
        self.peer_id = peer_id
        self.port = port
        self.endpoints = endpoints
        self._allocate_index = allocate_index
        self._ephemeral = ephemeral
        self.current: Epoch | None = None
        self.previous: Epoch | None = None
        self._pending: tuple[Offer, keys.Ephemeral] | None = None  # our offer for current+1, not yet answered

    @property
    def number(self) -> int:
        return self.current.number if self.current is not None else 0

    def start(self) -> Offer:
        """Our epoch-1 offer, sent right after the Hellos."""
        if self.current is not None or self._pending is not None:
            raise RuntimeError("the key schedule already started")
        return self._offer(1)

    def _offer(self, number: int) -> Offer:
        own = self._ephemeral()
        offer = Offer(number, own.public, self._allocate_index(), self.port, self.endpoints)
        self._pending = (offer, own)
        return offer

    @property
    def pending_index(self) -> int | None:
        """Our receiver_index of the epoch we offered but have not installed (the peer may use it first)."""
        return self._pending[0].receiver_index if self._pending is not None else None

    def rekey_due(self, now: float) -> Offer | None:
        """Initiator only: our offer for the next epoch when the current one is old or worn, else None."""
        current = self.current
        if not self.initiator or current is None or self._pending is not None:
            return None
        if now - current.installed >= REKEY_AFTER_TIME or current.send_counter >= REKEY_AFTER_PACKETS:
            return self._offer(current.number + 1)
        return None

    def receive_offer(self, offer: Offer, now: float) -> Installed:
        """Judge the peer's offer; install the epoch when both offers are here. Raises DatagramError."""
        check_offer(offer)
        expected = self.number + 1
        if offer.epoch != expected:
            raise DatagramError(f"datagram offer for epoch {offer.epoch}, expected {expected}")
        reply: Offer | None = None
        if self._pending is None:
            if self.initiator and expected > 1:
                raise DatagramError(f"datagram offer for epoch {offer.epoch} before we started it")
            reply = self._offer(expected)
        assert self._pending is not None
        own_offer, own = self._pending
        self._pending = None
        derived = keys.derive(own, offer.public_key, self.own_id, self.peer_id)
        epoch = Epoch(
            number=expected,
            send_aead=AESGCM(derived.send),
            recv_aead=AESGCM(derived.recv),
            send_index=offer.receiver_index,
            recv_index=own_offer.receiver_index,
            installed=now,
        )
        if self.current is not None:
            self.current.expires = now + OLD_KEY_GRACE
        self.previous = self.current
        self.current = epoch
        return Installed(reply, epoch)

    def expire(self, now: float) -> Epoch | None:
        """Drop the previous epoch's receive key once its grace is over; returns it (to unregister its index)."""
        previous = self.previous
        if previous is not None and previous.expires is not None and now >= previous.expires:
            self.previous = None
            return previous
        return None

    def epochs(self) -> list[Epoch]:
        """Installed epochs whose receive key is live (current first)."""
        return [e for e in (self.current, self.previous) if e is not None]


def check_offer(offer: Offer) -> None:
    """The wire limits of a DatagramOffer (docs/protocol.md §16.2), as a DatagramError."""
    try:
        check_datagram_offer(offer)
    except DatagramError:
        raise
    except ProtocolError as exc:
        raise DatagramError(str(exc)) from None
