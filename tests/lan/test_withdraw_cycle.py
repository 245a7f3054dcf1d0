"""Withdrawing names while HQ is away and claiming them back: the NetBIOS core's part."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

from spokeshare.lan.responder import NameResponder, NameState, ResponderConfig


def test_names_are_claimed_again_after_stop() -> None:
    cfg = ResponderConfig(
        ("GLOBAL-NFS",), "ACME", IPv4Address("198.18.11.1"), IPv4Address("198.18.11.255")
    )
    r = NameResponder(cfg, rng=random.Random(1))
    now = 0.0
    assert r.start(now)
    while (t := r.get_timer()) is not None:
        now = t
        r.handle_timer(now)
    assert {s for _, s in r.names()} == {NameState.CLAIMED}
    assert r.stop(now)  # releases go out
    assert {s for _, s in r.names()} == {NameState.RELEASED}
    assert r.start(now + 1)  # registrations go out again
    now += 1
    while (t := r.get_timer()) is not None:
        now = t
        r.handle_timer(now)
    assert {s for _, s in r.names()} == {NameState.CLAIMED}
