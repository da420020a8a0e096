"""NAT traversal: how nodes behind NATs reach each other (docs/protocol.md §13).

* ``reachability``: AutoNAT v1; are we dialable from outside? It decides the
  DHT mode and whether we need relays.
* ``circuit``: circuit relay v2 as a client: reserve a slot on a relay, dial
  a peer through one, accept connections relayed to us.
* ``reservations``: while unreachable, keep slots on a few relays found in
  the DHT and publish the ``/p2p-circuit`` addresses they give us.
* ``holepunch``: DCUtR, upgrading a relayed connection to a direct one.

The relay's own side (the "hop") is a role: ``p2pvpn.roles.relay``.
"""
