"""Network access policy: signed rules between members, enforced statefully by the receiving node.

See docs/protocol.md §17.
"""
