"""Simultaneous probe tie-breaking for the edge's host names (RFC 6762 §8.2, §8.2.1).

The decision is pure (:func:`tie_break`, :func:`simultaneous_probe`): property tests
for its order, probes built with zeroconf's own encoder (the bytes it puts on the
wire) and mutated for the parser, and the publisher's probing against a second real
python-zeroconf instance on loopback that probes the same name at the same time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zeroconf._dns import DNSAddress, DNSQuestion, DNSRecord
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.asyncio import AsyncZeroconf
from zeroconf.const import (
    _CLASS_IN,
    _CLASS_UNIQUE,
    _FLAGS_AA,
    _FLAGS_QR_QUERY,
    _FLAGS_QR_RESPONSE,
    _TYPE_A,
    _TYPE_AAAA,
    _TYPE_ANY,
)

from spokeshare.errors import DecodeError, UsageError
from spokeshare.lan.mdns import MdnsPublisher
from spokeshare.lan.mdns_defence import (
    HostNameQueryHandler,
    ProbeRecord,
    TieBreak,
    probe_records,
    simultaneous_probe,
    tie_break,
)
from tests.helpers import logged
from tests.lan.settings import discovery_settings
from tests.lan.test_mdns import settings
from tests.strategies import mutated_any


def a(address: str) -> ProbeRecord:
    packed = ipaddress.ip_address(address).packed
    return ProbeRecord(_CLASS_IN, _TYPE_A if len(packed) == 4 else _TYPE_AAAA, packed)


def probe(name: str, *addresses: str, flush: bool = False, question: str | None = None) -> bytes:
    """A probe as zeroconf encodes one: ``question`` (default ``name``) type ANY, the
    proposed address records for ``name`` in the authority section."""
    out = DNSOutgoing(_FLAGS_QR_QUERY)
    out.add_question(DNSQuestion(question or name, _TYPE_ANY, _CLASS_IN))
    for address in addresses:
        packed = ipaddress.ip_address(address).packed
        rrtype = _TYPE_A if len(packed) == 4 else _TYPE_AAAA
        rclass = _CLASS_IN | (_CLASS_UNIQUE if flush else 0)
        record: DNSRecord = DNSAddress(name, rrtype, rclass, 120, packed)
        out.authorities.append(record)  # type: ignore[arg-type]
    return out.packets()[0]


# -- the order (pure) --------------------------------------------------------------------


def test_rfc_example_later_address_wins() -> None:
    """§8.2's own example: probing with 169.254.99.200 and 169.254.200.50, the second
    is lexicographically later (200 > 99 in the third byte) and wins."""
    assert tie_break([a("169.254.99.200")], [a("169.254.200.50")]) is TieBreak.LOST
    assert tie_break([a("169.254.200.50")], [a("169.254.99.200")]) is TieBreak.WON


def test_class_then_type_then_rdata() -> None:
    high_class = ProbeRecord(2, _TYPE_A, b"\x00\x00\x00\x00")
    assert tie_break([high_class], [a("255.255.255.255")]) is TieBreak.WON
    # Same class: AAAA (28) is later than A (1) whatever the data.
    assert tie_break([a("fe80::1")], [a("255.255.255.255")]) is TieBreak.WON
    # A proper prefix of the rdata is earlier.
    assert tie_break([ProbeRecord(1, 99, b"ab")], [ProbeRecord(1, 99, b"abc")]) is TieBreak.LOST


def test_sets_sorted_then_compared_pairwise() -> None:
    """§8.2.1: both sides sorted, compared pair by pair; the order records appear in
    does not matter, and a set that runs out first is earlier."""
    ours = [a("198.18.11.9"), a("198.18.11.1")]
    theirs = [a("198.18.11.1"), a("198.18.11.5")]
    assert tie_break(ours, theirs) is TieBreak.WON
    assert tie_break(list(reversed(ours)), theirs) is TieBreak.WON
    assert tie_break([a("198.18.11.1")], [a("198.18.11.1"), a("fe80::1")]) is TieBreak.LOST
    assert tie_break([a("198.18.11.1"), a("198.18.11.1")], [a("198.18.11.1")]) is TieBreak.TIE


def test_cache_flush_bit_left_out_of_the_class() -> None:
    with pytest.raises(UsageError):
        ProbeRecord(_CLASS_IN | _CLASS_UNIQUE, _TYPE_A, b"\x01\x02\x03\x04")
    flushed = probe("GLOBAL-NFS.local.", "198.18.11.1", flush=True)
    assert probe_records(flushed, "global-nfs.local") == (a("198.18.11.1"),)


RECORDS = st.builds(
    ProbeRecord,
    st.sampled_from([1, 1, 1, 3, 255]),
    st.sampled_from([_TYPE_A, _TYPE_AAAA, 13, 16]),
    st.binary(max_size=6),
)
SETS = st.lists(RECORDS, min_size=1, max_size=4)


@given(SETS, SETS)
def test_exactly_one_side_wins_unless_identical(
    ours: list[ProbeRecord], theirs: list[ProbeRecord]
) -> None:
    mine, other = tie_break(ours, theirs), tie_break(theirs, ours)
    if set(ours) == set(theirs):
        assert mine is other is TieBreak.TIE
    else:
        assert {mine, other} == {TieBreak.WON, TieBreak.LOST}


@given(SETS, st.randoms())
def test_identical_data_is_a_tie_in_any_order(ours: list[ProbeRecord], rnd: object) -> None:
    shuffled = list(ours)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert tie_break(ours, shuffled) is TieBreak.TIE


@given(SETS, SETS, SETS)
def test_the_order_is_transitive(
    x: list[ProbeRecord], y: list[ProbeRecord], z: list[ProbeRecord]
) -> None:
    if tie_break(x, y) is TieBreak.WON and tie_break(y, z) is TieBreak.WON:
        assert tie_break(x, z) is TieBreak.WON


# -- reading a probe (pure) -------------------------------------------------------------

HOST = "global-nfs.local."


def test_probe_records_for_the_name_asked() -> None:
    raw = probe("GLOBAL-NFS.local.", "198.18.11.10", "fe80::10")
    assert probe_records(raw, HOST) == (a("198.18.11.10"), a("fe80::10"))
    assert probe_records(raw, "GLOBAL-NFS.local") == probe_records(raw, HOST)  # case, dot
    assert probe_records(raw, "global-eng.local.") is None  # another name
    ours = [a("198.18.11.1")]
    assert simultaneous_probe(raw, HOST, ours) is TieBreak.LOST  # .10 > .1
    assert simultaneous_probe(raw, HOST, [a("198.18.11.10"), a("fe80::10")]) is TieBreak.TIE


def test_not_probes() -> None:
    # A plain query (no authority section), a response, a probe asking another name.
    query = DNSOutgoing(_FLAGS_QR_QUERY)
    query.add_question(DNSQuestion("GLOBAL-NFS.local.", _TYPE_ANY, _CLASS_IN))
    assert probe_records(query.packets()[0], HOST) is None
    response = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    packed = ipaddress.ip_address("198.18.11.10").packed
    response.add_answer_at_time(DNSAddress(HOST, _TYPE_A, _CLASS_IN, 120, packed), 0)
    assert probe_records(response.packets()[0], HOST) is None
    other = probe("GLOBAL-NFS.local.", "198.18.11.10", question="OLDBOX.local.")
    assert probe_records(other, HOST) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00" * 11,
        b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00",  # counts past the end
        # a question name pointing at itself, then room for one authority record
        b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\xc0\x0c\x00\xff\x00\x01" + b"\x00" * 11,
        b"\x00" * 9001,
    ],
)
def test_malformed_probes_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        probe_records(raw, HOST)


SAMPLES = [
    probe("GLOBAL-NFS.local.", "198.18.11.10"),
    probe("GLOBAL-NFS.local.", "198.18.11.10", "fe80::10", flush=True),
]


@given(mutated_any(SAMPLES))
def test_mutated_probes_give_records_none_or_decode_error(raw: bytes) -> None:
    try:
        got = probe_records(raw, HOST)
    except DecodeError:
        return
    assert got is None or all(isinstance(r, ProbeRecord) for r in got)


# -- the publisher against another prober (real zeroconf on loopback) -------------------


class Rival:
    """A second python-zeroconf instance on loopback sending probes for one name (as
    a host probing it at the same time would), and an announcement if asked."""

    def __init__(self, zc: AsyncZeroconf, name: str, address: str) -> None:
        self.zc, self.name, self.address = zc, name, address

    async def probes(self, count: int = 3) -> None:
        raw = probe(self.name, self.address)
        for _ in range(count):
            self.zc.zeroconf.async_send(_Raw(raw))
            await asyncio.sleep(0.25)  # §8.1: probes 250 ms apart

    def announce(self) -> None:
        out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
        packed = ipaddress.ip_address(self.address).packed
        record = DNSAddress(self.name, _TYPE_A, _CLASS_IN | _CLASS_UNIQUE, 120, packed)
        out.add_answer_at_time(record, 0)
        self.zc.zeroconf.async_send(out)


class _Raw(DNSOutgoing):
    """An outgoing message whose one packet is given bytes."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(_FLAGS_QR_QUERY)
        self.raw = raw

    def packets(self) -> list[bytes]:
        return [self.raw]


async def _publisher() -> MdnsPublisher:
    pub = MdnsPublisher(settings())  # GLOBAL-NFS is 198.18.203.1
    azc = AsyncZeroconf(interfaces=["127.0.0.1"])
    handler = HostNameQueryHandler(azc.zeroconf)  # before the listeners exist, as start()
    handler.probe_heard = pub.probe_heard
    azc.zeroconf.query_handler = handler
    await azc.zeroconf.async_wait_for_start()
    pub._zc = azc
    return pub


@pytest.mark.parametrize(
    ("rival_address", "announces", "lost", "taken"),
    [
        # Later data (.50 > .1): we defer a second and probe again; the winner has
        # announced meanwhile, so our next probes find the name taken.
        ("198.18.203.50", True, 1, True),
        # Later data, but the winner went away without announcing: ours after all.
        ("198.18.203.50", False, 1, False),
        # Earlier data (.0 < .1): we win and go on; the rival is the one to defer.
        ("198.18.203.0", False, 0, False),
    ],
)
def test_simultaneous_probe_against_a_real_responder(
    rival_address: str, announces: bool, lost: int, taken: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> tuple[bool, int]:
        pub = await _publisher()
        other = AsyncZeroconf(interfaces=["127.0.0.1"])
        rival = Rival(other, "GLOBAL-NFS.local.", rival_address)
        try:
            info = pub.infos("GLOBAL-NFS")[0]
            ours = asyncio.create_task(pub._host_name_taken("GLOBAL-NFS", info))
            await rival.probes()
            if announces:
                rival.announce()
            result = await ours
            return result, pub.statistics().probe_tie_breaks_lost
        finally:
            assert pub._zc is not None
            await pub._zc.async_close()
            await other.async_close()

    with caplog.at_level(logging.INFO, "spokeshare.lan.discovery"):
        result, lost_count = asyncio.run(scenario())
    assert (result, lost_count) == (taken, lost)
    deferred = [ln["name"] for ln in logged(caplog, "name probe deferred")] == ["global-nfs.local"]
    assert deferred == bool(lost)


def test_our_own_probe_heard_back_is_no_conflict() -> None:
    """Multicast loops our probes back to our own socket: identical data, a tie."""

    async def scenario() -> tuple[bool, int]:
        pub = await _publisher()
        try:
            taken = await pub._host_name_taken("GLOBAL-NFS", pub.infos("GLOBAL-NFS")[0])
            assert pub._zc is not None
            # the registry's flag, raised while probing, follows the registry again
            assert not pub._zc.zeroconf.registry.has_entries
            return taken, pub.statistics().probe_tie_breaks_lost
        finally:
            assert pub._zc is not None
            await pub._zc.async_close()

    assert asyncio.run(scenario()) == (False, 0)


# -- avahi-daemon's own probe (captured) ------------------------------------------------
# Captured by tests/lan/vectors_discovery/capture_avahi_probe.py (2026-11-30): Debian's
# avahi-daemon 0.8, host-name global-eng on 198.18.204.1 (use-ipv6=no, no HINFO),
# starting up; a plain socket on 224.0.0.251:5353 in a second namespace kept its three
# probes, identical bytes (Wireshark: "Standard query 0x0000 ANY
# 1.4.0.8.2.a.e.f.f.f.f.7.2.9.8.2.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa, ANY
# 1.204.18.198.in-addr.arpa, ANY global-eng.local"; QM questions; authority: the two
# reverse PTRs, global-eng.local A 198.18.204.1 and AAAA fe80::2892:7fff:fea2:8041:
# avahi publishes its link-local AAAA even with IPv6 off, publish-aaaa-on-ipv4).
AVAHI_PROBE = (
    Path(__file__).with_name("vectors_discovery") / "avahi-probe-global-eng.bin"
).read_bytes()
AVAHI = "198.18.204.1"
AVAHI6 = "fe80::2892:7fff:fea2:8041"


def test_avahi_probe_read_and_tie_broken() -> None:
    assert probe_records(AVAHI_PROBE, "global-eng.local.") == (a(AVAHI), a(AVAHI6))
    assert probe_records(AVAHI_PROBE, "global-nfs.local.") is None  # not asked
    # the reverse name is asked too, with its PTR proposed (one record)
    reverse = probe_records(AVAHI_PROBE, "1.204.18.198.in-addr.arpa")
    assert reverse is not None and [r.rtype for r in reverse] == [12]
    ours = "global-eng.local."
    assert simultaneous_probe(AVAHI_PROBE, ours, [a("198.18.204.0")]) is TieBreak.LOST
    assert simultaneous_probe(AVAHI_PROBE, ours, [a("198.18.204.2")]) is TieBreak.WON
    assert simultaneous_probe(AVAHI_PROBE, ours, [a(AVAHI), a(AVAHI6)]) is TieBreak.TIE
    # §8.2.1: the same A but no AAAA: ours runs out first, avahi's set is later
    assert simultaneous_probe(AVAHI_PROBE, ours, [a(AVAHI)]) is TieBreak.LOST
    assert simultaneous_probe(AVAHI_PROBE, ours, [a(AVAHI), a("fe80::1")]) is TieBreak.LOST
    assert simultaneous_probe(AVAHI_PROBE, ours, [a(AVAHI), a("fe80::3000:0:0:1")]) is (
        TieBreak.WON
    )


@given(mutated_any([AVAHI_PROBE]))
def test_mutated_avahi_probes(raw: bytes) -> None:
    try:
        got = probe_records(raw, "global-eng.local.")
    except DecodeError:
        return
    assert got is None or all(isinstance(r, ProbeRecord) for r in got)


@pytest.mark.parametrize(("ours", "lost"), [("198.18.204.0", 1), ("198.18.204.2", 0)])
def test_publisher_hears_avahis_probe(ours: str, lost: int) -> None:
    """avahi's captured probe, sent by a second zeroconf on loopback while the
    publisher probes GLOBAL-ENG.local with an address before or after avahi's."""

    async def scenario() -> int:
        pub = MdnsPublisher(discovery_settings("lo", ours, ("GLOBAL-ENG",), UUID(int=1)))
        azc = AsyncZeroconf(interfaces=["127.0.0.1"])
        handler = HostNameQueryHandler(azc.zeroconf)
        handler.probe_heard = pub.probe_heard
        azc.zeroconf.query_handler = handler
        await azc.zeroconf.async_wait_for_start()
        pub._zc = azc
        other = AsyncZeroconf(interfaces=["127.0.0.1"])
        await other.zeroconf.async_wait_for_start()
        try:
            task = asyncio.create_task(
                pub._host_name_taken("GLOBAL-ENG", pub.infos("GLOBAL-ENG")[0])
            )
            while not pub._probing:  # noqa: ASYNC110 - the publisher's first probe sent
                await asyncio.sleep(0)
            other.zeroconf.async_send(_Raw(AVAHI_PROBE))
            assert not await task
            return pub.statistics().probe_tie_breaks_lost
        finally:
            await azc.async_close()
            await other.async_close()

    assert asyncio.run(scenario()) == lost
