"""Discovery: how nodes of a network find each other without a central server.

Each node publishes a signed :class:`~p2pvpn.discovery.record.NodeRecord`
(peer ID, overlay addresses, dialable multiaddrs, relay / exit roles) in a
private Kademlia DHT and looks up the records of the others
(docs/protocol.md, "Node records and the DHT"). ``record`` is the sans-IO
record format and its validator; the DHT plumbing lives next to it.
"""
