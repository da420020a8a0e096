"""Names for members: a DNS responder on the overlay, the systemd-resolved hook, and the node side of ping/netcheck."""
