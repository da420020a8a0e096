"""Networks with an owner: signed membership certificates, revocations and invites (docs/protocol.md §15).

Everything here is sans-IO except ``store`` (files in the node directory):
bytes and ``now`` go in, plain values or a :class:`MembershipError` come out.
"""
