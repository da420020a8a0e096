"""The DNS suffix of member names (config ``dns_suffix``): checked without loading dnspython (config imports it)."""

from __future__ import annotations

from p2pvpn.membership.network import is_dns_label

DEFAULT_SUFFIX = "internal"


def check_suffix(suffix: str) -> str:
    """``suffix`` without dots at either end, lowercased; ValueError unless it is 1..4 DNS labels."""
    text = suffix.strip().strip(".").lower()
    labels = text.split(".") if text else []
    if not 1 <= len(labels) <= 4 or not all(is_dns_label(label) for label in labels):
        raise ValueError(f"{suffix!r} is not a DNS suffix (1 to 4 labels of a-z 0-9 -, e.g. 'internal')")
    return text
