"""Mark every underlay socket of this process, so policy routing sends them by the real routes.

With an exit in use, a client's default route points into its own TUN.
The node's own libp2p connections (to the exit, relays, DHT peers) must not
follow it, or they would be carried inside themselves. WireGuard's answer,
used here: our sockets carry a firewall mark (SO_MARK), and the rule
``not fwmark M lookup T`` sends only unmarked traffic to the exit's table.

py-libp2p's TCP and QUIC transports create every socket through
``trio.socket.socket`` (directly, or inside ``trio.open_tcp_stream``), so a
socket factory set for the trio run marks all of them: dialed connections,
listeners and the QUIC UDP socket. A connection accepted by a marked
listener gets the listener's mark from the kernel (``inet_request_mark``),
so replies to peers that dialed us also take the real routes.
"""

from __future__ import annotations

import socket as stdlib_socket

import trio

SO_MARK = getattr(stdlib_socket, "SO_MARK", 36)


class MarkingSocketFactory(trio.abc.SocketFactory):
    """Creates trio sockets as usual, with SO_MARK set on IP ones."""

    def __init__(self, mark: int) -> None:
        self.mark = mark
        self.marked = 0

    def socket(
        self,
        family: stdlib_socket.AddressFamily | int = stdlib_socket.AF_INET,
        type: stdlib_socket.SocketKind | int = stdlib_socket.SOCK_STREAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        sock = stdlib_socket.socket(family, type, proto)
        if family in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6):
            try:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, SO_MARK, self.mark)
            except OSError:
                sock.close()
                raise
            self.marked += 1
        return trio.socket.from_stdlib_socket(sock)


def install(mark: int) -> MarkingSocketFactory:
    """Mark the sockets of the current trio run from now on (call before the host starts)."""
    factory = MarkingSocketFactory(mark)
    trio.socket.set_custom_socket_factory(factory)
    return factory
