"""Withdrawing names while HQ is away and claiming them back: the NetBIOS core's part."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

from spokeshare.config import LanPresence, VirtualName
from spokeshare.lan.netbios_core import NameResponder, NameState, ResponderConfig, SendNbns


def test_names_are_claimed_again_after_stop() -> None:
    cfg = ResponderConfig(
        LanPresence("", "198.18.11.1", "ACME", (VirtualName("GLOBAL-NFS", "smb"),)),
        IPv4Address("198.18.11.255"),
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


def test_a_name_with_its_own_address_answers_with_it() -> None:
    from spokeshare.lan import netbios

    eng = VirtualName("GLOBAL-ENG", "eng", address="198.18.11.3")
    names = (VirtualName("GLOBAL-NFS", "smb"), eng)
    cfg = ResponderConfig(
        LanPresence("", "198.18.11.1", "ACME", names), IPv4Address("198.18.11.255")
    )
    r = NameResponder(cfg, rng=random.Random(2))
    now = 0.0
    sent = r.start(now)
    while (t := r.get_timer()) is not None:
        now = t
        sent += r.handle_timer(now)
    answers = {}
    for name in ("GLOBAL-NFS", "GLOBAL-ENG"):
        q = netbios.decode(
            netbios.encode(
                netbios.name_query_request(7, netbios.NetbiosName.create(name, 0), broadcast=True)
            )
        )
        out = r.handle_packet(q, IPv4Address("198.18.11.10"), 137, IPv4Address("198.18.11.1"), now)
        assert isinstance(out[0], SendNbns)
        reply = netbios.decode(netbios.encode(out[0].packet))
        answers[name] = str(reply.answers[0].rdata.entries[0].address)  # type: ignore[union-attr]
    assert answers == {"GLOBAL-NFS": "198.18.11.1", "GLOBAL-ENG": "198.18.11.3"}


def test_llmnr_name_with_its_own_address() -> None:
    from spokeshare.lan import llmnr

    core = llmnr.LlmnrResponder(
        ["GLOBAL-NFS", "GLOBAL-ENG"], name_addresses={"GLOBAL-ENG": "198.18.11.3"}
    )
    local = llmnr.InterfaceAddresses("198.18.11.1", None)
    for name, want in (("GLOBAL-NFS", "198.18.11.1"), ("global-eng", "198.18.11.3")):
        q = llmnr.Message(9, 0, (llmnr.Question(name, llmnr.TYPE_A, llmnr.CLASS_IN),))
        resp = core.answer(q, local)
        assert resp is not None
        assert IPv4Address(resp.answers[0].rdata) == IPv4Address(want)
