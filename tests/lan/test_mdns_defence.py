"""The host-name answers added to zeroconf's (RFC 6762 §8.1, §9), as a pure decision.

The probe is built with zeroconf's encoder in the shape avahi-daemon sends (question
``NAME.local`` type ANY with the unicast-response bit, proposed A record in the
authority section) and parsed back, so the handler sees what a listener hands it;
tests/lab/test_name_defence.py runs the real avahi-daemon against the edge.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zeroconf._dns import DNSAddress, DNSQuestion, DNSRecord
from zeroconf._protocol.incoming import DNSIncoming
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.const import _CLASS_IN, _CLASS_UNIQUE, _FLAGS_QR_QUERY, _TYPE_A, _TYPE_ANY

from spokeshare.errors import UsageError
from spokeshare.lan.mdns_defence import (
    CONFLICT_BACKOFF,
    CONFLICT_BURST,
    CONFLICT_WINDOW,
    HeardAddress,
    ProbeRate,
    conflicts,
    host_answers,
)

HOST = "global-eng.local."
ENG = ipaddress.ip_address("198.18.11.3").packed
OURS = DNSAddress(HOST, _TYPE_A, _CLASS_IN | _CLASS_UNIQUE, 120, ENG)


def _addresses_of(name: str) -> list[DNSAddress]:
    return [OURS] if name == HOST else []


def _query(
    name: str, rrtype: int, authority: bool, known: tuple[DNSAddress, ...] = ()
) -> DNSIncoming:
    out = DNSOutgoing(_FLAGS_QR_QUERY)
    q = DNSQuestion(name, rrtype, _CLASS_IN)
    q.unicast = True
    out.add_question(q)
    if authority:
        proposed: DNSRecord = DNSAddress(
            name, _TYPE_A, _CLASS_IN, 120, ipaddress.ip_address("198.18.11.2").packed
        )
        out.authorities.append(proposed)  # type: ignore[arg-type]
    for k in known:
        out.add_answer_at_time(k, 0)
    return DNSIncoming(out.packets()[0])


def test_a_probe_for_a_held_host_name_is_answered() -> None:
    probe = _query("GLOBAL-ENG.local.", _TYPE_ANY, authority=True)
    assert probe.is_probe()
    assert host_answers(probe.questions, _addresses_of) == {HOST: [OURS]}


def test_only_any_questions_about_our_host_names() -> None:
    # A/AAAA questions zeroconf answers itself; other names are not ours (§6).
    assert host_answers(_query(HOST, _TYPE_A, False).questions, _addresses_of) == {}
    assert host_answers(_query("oldbox.local.", _TYPE_ANY, True).questions, _addresses_of) == {}


def test_known_answers_suppress() -> None:
    from zeroconf._dns import DNSRRSet

    q = _query(HOST, _TYPE_ANY, False, (OURS,))
    assert host_answers(q.questions, _addresses_of, DNSRRSet(q.answers())) == {}


async def _ask_any(defend: bool) -> list[tuple[str, int]]:
    """A legacy unicast ANY query for a registered host name, on loopback."""
    import asyncio
    import socket

    from zeroconf import IPVersion, ServiceInfo
    from zeroconf.asyncio import AsyncZeroconf

    from spokeshare.lan.mdns_defence import HostNameQueryHandler

    azc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    if defend:  # as MdnsPublisher.start does, before zeroconf's listeners exist
        azc.zeroconf.query_handler = HostNameQueryHandler(azc.zeroconf)
    host = "defence-test.local."
    info = ServiceInfo(
        "_smb._tcp.local.", "T._smb._tcp.local.", port=445, server=host,
        addresses=[ipaddress.ip_address("127.0.0.1").packed],
    )  # fmt: skip
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await (await azc.async_register_service(info))
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        out = DNSOutgoing(_FLAGS_QR_QUERY, multicast=False, id_=0x1234)
        out.add_question(DNSQuestion(host, _TYPE_ANY, _CLASS_IN))
        s.sendto(out.packets()[0], ("127.0.0.1", 5353))
        try:
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(s, 9000), 3)
        except TimeoutError:
            return []
        return [(r.name, r.type) for r in DNSIncoming(data).answers()]
    finally:
        s.close()
        await azc.async_close()


def test_zeroconf_alone_does_not_answer_any_for_a_host_name_and_the_handler_does() -> None:
    import asyncio

    assert asyncio.run(_ask_any(defend=False)) == []  # why the handler exists
    assert asyncio.run(_ask_any(defend=True)) == [("defence-test.local.", _TYPE_A)]


# -- conflicts after start (RFC 6762 §9) --------------------------------------------------

PC = ipaddress.ip_address("198.18.11.10").packed
ENG6 = ipaddress.ip_address("fe80::3").packed
OTHER = ipaddress.ip_address("198.18.11.11").packed
OTHER6 = ipaddress.ip_address("fe80::99").packed
HELD = {HOST: frozenset({ENG, ENG6})}


def _heard(name: str, address: bytes, ttl: int = 120) -> HeardAddress:
    return HeardAddress(name, address, ttl)


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        # another host's address for our host name: a conflict, whatever the family
        ([_heard(HOST, PC)], {HOST: PC}),
        ([_heard(HOST, OTHER6)], {HOST: OTHER6}),
        # our own answer looped back, a re-announcement of the same data, either family
        ([_heard(HOST, ENG)], {}),
        ([_heard(HOST, ENG6)], {}),
        # a goodbye claims nothing (§10.1)
        ([_heard(HOST, PC, ttl=0)], {}),
        # a name we do not hold
        ([_heard("oldbox.local.", PC)], {}),
        # one response with ours and another's: the other one counts, the first kept
        ([_heard(HOST, ENG), _heard(HOST, PC), _heard(HOST, OTHER)], {HOST: PC}),
    ],
)
def test_conflicts(heard: list[HeardAddress], expected: dict[str, bytes]) -> None:
    assert conflicts(HELD, heard) == expected


def test_heard_address_is_checked() -> None:
    with pytest.raises(UsageError):
        HeardAddress(HOST, b"\x01\x02\x03", 120)
    with pytest.raises(UsageError):
        HeardAddress(HOST, ENG, -1)


def test_probe_rate_limit() -> None:
    """§8.1: fifteen conflicts within ten seconds, then five seconds before each
    further probe; slower conflicts never wait."""
    rate = ProbeRate()
    assert [rate.conflict(t * 0.5) for t in range(CONFLICT_BURST - 1)] == [0.0] * 14
    assert rate.conflict(7.0) == CONFLICT_BACKOFF  # the fifteenth within 10 s
    assert rate.conflict(7.5) == CONFLICT_BACKOFF
    slow = ProbeRate()
    assert {slow.conflict(t * 1.0) for t in range(40)} == {0.0}  # 15 span 14 s


@given(st.lists(st.floats(0, 1e6, allow_nan=False), max_size=60))
def test_probe_rate_waits_only_after_a_burst(times: list[float]) -> None:
    rate = ProbeRate()
    seen: list[float] = []
    for now in sorted(times):
        seen.append(now)
        recent = [t for t in seen if now - t <= CONFLICT_WINDOW]
        assert (rate.conflict(now) > 0) == (len(recent) >= CONFLICT_BURST)


# Captured in tests/lab/test_name_defence.py's lab (a raw AF_PACKET socket on office
# nyc's file server, 2026-11-30): avahi-daemon 0.8 on nyc-pc (198.18.11.10), told over
# D-Bus to publish GLOBAL-ENG.local A 198.18.11.10 unique without probing
# (tests/lab/avahi_announce.py), announces it (Wireshark: "Standard query response
# 0x0000 A, cache flush 198.18.11.10"), then says goodbye (TTL 0) when stopped.
VECTORS = Path(__file__).with_name("vectors_discovery")


def _heard_from(raw: bytes) -> list[HeardAddress]:
    msg = DNSIncoming(raw)
    assert msg.valid and not msg.is_query()
    return [
        HeardAddress(r.key, bytes(r.address), r.ttl)
        for r in msg.answers()
        if isinstance(r, DNSAddress)
    ]


def test_avahi_announcing_our_host_name_is_a_conflict() -> None:
    heard = _heard_from((VECTORS / "avahi-announce-a-no-probe.bin").read_bytes())
    assert heard == [HeardAddress(HOST, PC, 120)]
    raw = (VECTORS / "avahi-announce-a-no-probe.bin").read_bytes()
    assert DNSIncoming(raw).answers()[0].unique  # the cache-flush bit
    assert conflicts(HELD, heard) == {HOST: PC}
    assert conflicts({"global-nfs.local.": frozenset({ENG})}, heard) == {}  # not ours
    assert conflicts({HOST: frozenset({PC})}, heard) == {}  # identical data: no conflict


def test_avahi_goodbye_is_not_a_conflict() -> None:
    heard = _heard_from((VECTORS / "avahi-goodbye-a.bin").read_bytes())
    assert heard == [HeardAddress(HOST, PC, 0)]
    assert conflicts(HELD, heard) == {}
