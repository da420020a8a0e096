"""The hidden ``test_clock_skew`` config key: the ±CLOCK_SKEW of §15.4, shortened so tests see expiry."""

from __future__ import annotations

import tomllib

import pytest

from p2pvpn import config
from p2pvpn.errors import ConfigError
from p2pvpn.membership import cert
from p2pvpn.membership.errors import MembershipError
from p2pvpn.membership.revocation import RevocationSet
from p2pvpn.membership.view import MembershipView

from .conftest import DAY, T0, Net


def test_check_takes_the_skew_at_both_ends_of_the_window(net: Net) -> None:
    c = cert.open_certificate(net.issue(net.owner, 2, lifetime=DAY), net.nid)
    end = T0 + DAY
    cert.check(c, end + cert.CLOCK_SKEW - 1, {})  # the default tolerates 300 s
    with pytest.raises(MembershipError, match="expired"):
        cert.check(c, end + 1, {}, skew=1)
    cert.check(c, end, {}, skew=1)  # a skew of 1 s still absorbs one second
    with pytest.raises(MembershipError, match="not valid yet"):
        cert.check(c, T0 - 2, {}, skew=1)


def test_a_view_with_a_short_skew_sees_a_presented_certificate_expire(net: Net) -> None:
    own = cert.open_certificate(net.issue(net.owner, 1), net.nid)
    now = [float(T0)]
    view = MembershipView(net.nid, own, RevocationSet(net.nid), lambda: now[0], skew=2)
    view.verify(net.issue(net.owner, 2, lifetime=60), net.pids[2])
    assert view.invalid_peers([net.pids[2]]) == {}
    now[0] = T0 + 62
    assert "expired" in view.invalid_peers([net.pids[2]])[net.pids[2]]


def test_the_key_is_hidden_from_the_template_and_bounded() -> None:
    assert "test_clock_skew" not in config.template()
    assert config.Config().test_clock_skew == cert.CLOCK_SKEW
    assert config.build(tomllib.loads("test_clock_skew = 1"), {}).test_clock_skew == 1
    with pytest.raises(ConfigError, match="test_clock_skew"):
        config.build({"test_clock_skew": -1}, {})
