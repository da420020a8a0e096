"""Spreading one signed, sequence-numbered object to every member: push over tunnels plus a DHT key.

The revocation list (docs/protocol.md §15.5, §15.9.2) and the network
policy (§17.4) travel the same way:

1. A push is one stream per peer with the object's own protocol ID: the
   sender writes ``uvarint(len) || message``, the receiver validates it,
   answers ``uvarint(len) || answer`` (OK, or BAD_REQUEST with a message)
   and closes; each side gives up after PUSH_TIMEOUT.
2. The object also lives under a DHT key: read at start, then every
   DHT_INTERVAL (every DHT_EARLY_RETRY while none was found, at most
   DHT_EARLY_TRIES times), and ours is stored there whenever it beats what
   the DHT holds. How one read asks (the closest peers first, a walk only
   when needed) is the DHT's one rule (p2pvpn.discovery.dht.Dht.get). Higher ``seq`` wins, then the larger bytes.

``rules`` holds the decisions (no I/O); ``spreader`` moves the bytes.
What each object means, who it goes to and what a better one changes stay
with its service (p2pvpn.membership.service, p2pvpn.policy.service).
"""
