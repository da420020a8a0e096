"""Tunnel frames built straight from the generated protobuf types, valid or not, for codec tests."""

from __future__ import annotations

from p2pvpn.membership.join import uvarint
from p2pvpn.wire import tunnel_pb2


def datagram_offer_frame(**fields: object) -> bytes:
    """A length-prefixed Frame holding a DatagramOffer with exactly ``fields`` (docs/protocol.md §16.2)."""
    frame = tunnel_pb2.Frame()
    body = frame.datagram_offer
    for name, value in fields.items():
        if name == "endpoints":
            body.endpoints.extend(value)  # type: ignore[arg-type]
        else:
            setattr(body, name, value)
    body.SetInParent()
    data = frame.SerializeToString()
    return uvarint(len(data)) + data
