"""Network access policy: signed rules between members, enforced statefully by the receiving node (docs/protocol.md §17)."""
