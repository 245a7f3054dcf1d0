"""mDNS/DNS-SD publisher: the records per virtual name, conflicts, withdraw/announce.

The network side (probing, legacy unicast answers, goodbyes) is python-zeroconf's
and is exercised against dig and a zeroconf browser in test_discovery_lab.py.
Here a stand-in for AsyncZeroconf records what the publisher asks of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from uuid import UUID

import pytest
from zeroconf import NonUniqueNameException, ServiceInfo

from spokeshare.lan.discovery_settings import DiscoverySettings
from spokeshare.lan.mdns import DEVICE_INFO_TYPE, SMB_TYPE, MdnsPublisher
from tests.helpers import logged
from tests.lan.settings import discovery_settings

NS = UUID("0d5c1f2a-8a44-4a55-9f0e-6c6162000001")


def settings(**kw: object) -> DiscoverySettings:
    return discovery_settings("eth0", "198.18.203.1", ("GLOBAL-NFS", "PRINT-HQ"), NS, "ACME", **kw)


def test_smb_and_device_info_records() -> None:
    smb, device = MdnsPublisher(settings(smb_port=4450)).infos("GLOBAL-NFS")
    assert smb.type == SMB_TYPE == "_smb._tcp.local."
    assert smb.name == "GLOBAL-NFS._smb._tcp.local."
    assert smb.server == "GLOBAL-NFS.local."
    assert smb.port == 4450
    assert smb.parsed_addresses() == ["198.18.203.1"]
    assert smb.text in (b"", b"\x00")  # one empty string (RFC 6763 §6.1)
    assert device.type == DEVICE_INFO_TYPE == "_device-info._tcp.local."
    assert device.name == "GLOBAL-NFS._device-info._tcp.local."
    assert device.properties == {b"model": b"RackMac"}
    assert device.port == 0


def test_ipv6_link_local_also_published() -> None:
    smb, _ = MdnsPublisher(settings(ipv6_link_local="fe80::1")).infos("GLOBAL-NFS")
    assert sorted(smb.parsed_addresses()) == ["198.18.203.1", "fe80::1"]


def test_model_configurable() -> None:
    _, device = MdnsPublisher(settings(mdns_model="Xserve")).infos("GLOBAL-NFS")
    assert device.properties == {b"model": b"Xserve"}


class FakeZeroconf:
    """Stands in for AsyncZeroconf: register/unregister return awaitables, as zeroconf's do."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.registered: list[str] = []
        self.unregistered: list[str] = []
        self.closed = False

    async def _done(self) -> None:
        return None

    async def async_register_service(self, info: ServiceInfo) -> Awaitable[None]:
        if info.name in self.taken:
            raise NonUniqueNameException
        self.registered.append(info.name)
        return self._done()

    async def async_unregister_service(self, info: ServiceInfo) -> Awaitable[None]:
        self.unregistered.append(info.name)
        return self._done()

    async def async_close(self) -> None:
        self.closed = True


def run(coro: Awaitable[None]) -> None:
    async def wrap() -> None:
        await coro

    asyncio.run(wrap())


def test_conflict_reported_other_names_published(caplog: pytest.LogCaptureFixture) -> None:
    pub = MdnsPublisher(settings())
    fake = FakeZeroconf({"GLOBAL-NFS._smb._tcp.local."})
    pub._zc = fake  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, "spokeshare.lan.discovery"):
        run(pub._register_all())
    stats = pub.statistics()
    assert stats.conflicts == ("GLOBAL-NFS",) and stats.published == ("PRINT-HQ",)
    [line] = logged(caplog, "name conflict")
    assert (line["protocol"], line["name"], line["recheck_in_s"]) == (
        "mdns", "GLOBAL-NFS.local", "5")  # fmt: skip
    assert fake.registered == ["PRINT-HQ._smb._tcp.local.", "PRINT-HQ._device-info._tcp.local."]


def test_withdraw_goodbyes_announce_again_stop_closes() -> None:
    pub = MdnsPublisher(settings())
    fake = FakeZeroconf(set())
    pub._zc = fake  # type: ignore[assignment]
    run(pub._register_all())
    assert len(fake.registered) == 4
    run(pub.withdraw())
    assert sorted(fake.unregistered) == sorted(fake.registered)
    assert pub.statistics().withdrawn and pub.statistics().published == ()
    run(pub.announce())
    assert len(fake.registered) == 8 and not pub.statistics().withdrawn
    run(pub.announce())  # already published: nothing registered twice
    assert len(fake.registered) == 8
    run(pub.stop())
    assert fake.closed and len(fake.unregistered) == 8
    run(pub.stop())  # idempotent


def test_conflict_rechecked_and_reclaimed_once_the_owner_is_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another host held GLOBAL-NFS.local at start; the re-check publishes it once
    that host is gone, and a half-published name is undone, not left behind."""
    pub = MdnsPublisher(settings())
    fake = FakeZeroconf({"GLOBAL-NFS._device-info._tcp.local."})
    pub._zc = fake  # type: ignore[assignment]
    with caplog.at_level(logging.DEBUG, "spokeshare.lan.discovery"):
        run(pub._register_all())
        assert fake.unregistered == ["GLOBAL-NFS._smb._tcp.local."]  # undone
        run(pub._register_all())  # still taken: reported once only
        assert [ln["name"] for ln in logged(caplog, "name conflict")] == ["GLOBAL-NFS.local"] * 2
        assert [r.levelno for r in caplog.records if "conflict" in r.message] == [
            logging.WARNING,
            logging.DEBUG,
        ]
        fake.taken.clear()
        run(pub._register_all())
    stats = pub.statistics()
    assert stats.conflicts == () and set(stats.published) == {"GLOBAL-NFS", "PRINT-HQ"}
    assert stats.reclaimed == 1
    [line] = logged(caplog, "name reclaimed")
    assert (line["protocol"], line["name"]) == ("mdns", "GLOBAL-NFS.local")
    assert "GLOBAL-NFS.local" in [ln["name"] for ln in logged(caplog, "name claimed")]


def test_unicast_answers_are_budgeted() -> None:
    """zeroconf answers every legacy-unicast query; our wrapper of its send charges
    unicast answers to a per-destination and a global budget, multicast passes."""
    sent: list[tuple[object, str | None]] = []

    class Zc:
        def async_send(self, out: object, addr: str | None = None, *args: object) -> None:
            sent.append((out, addr))

    class Azc:
        zeroconf = Zc()

    pub = MdnsPublisher(settings())
    pub._budget_unicast(Azc())  # type: ignore[arg-type]
    for _ in range(100):
        Azc.zeroconf.async_send("answer", "198.18.200.2", 5300)
        Azc.zeroconf.async_send("multicast")
    assert sum(1 for _, a in sent if a is None) == 100
    from spokeshare.lan.mdns import UNICAST_BURST_PER_SOURCE

    unicast = sum(1 for _, a in sent if a is not None)
    assert UNICAST_BURST_PER_SOURCE <= unicast < UNICAST_BURST_PER_SOURCE + 5
    assert pub.statistics().rate_limited == 100 - unicast


# -- conflicts after start (RFC 6762 §9) ------------------------------------------------


def _response(name: str, address: str, ttl: int = 120) -> list[object]:
    """The record updates zeroconf's record manager hands its listeners for one
    response: ``name`` A ``address``, cache-flush bit set, encoded and parsed back."""
    import ipaddress

    from zeroconf import RecordUpdate
    from zeroconf._dns import DNSAddress
    from zeroconf._protocol.incoming import DNSIncoming
    from zeroconf._protocol.outgoing import DNSOutgoing
    from zeroconf.const import _CLASS_IN, _CLASS_UNIQUE, _FLAGS_AA, _FLAGS_QR_RESPONSE, _TYPE_A

    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    packed = ipaddress.ip_address(address).packed
    out.add_answer_at_time(DNSAddress(name, _TYPE_A, _CLASS_IN | _CLASS_UNIQUE, ttl, packed), 0)
    incoming = DNSIncoming(out.packets()[0])
    assert incoming.answers()[0].unique  # the cache-flush bit survived the round trip
    return [RecordUpdate(r, None) for r in incoming.answers()]


async def _hear(pub: MdnsPublisher, updates: list[object]) -> None:
    from spokeshare.lan.mdns import _HostConflictListener

    _HostConflictListener(pub).async_update_records(None, 1000.0, updates)
    await asyncio.gather(*list(pub._resetting.values()))


def test_conflict_after_start_resets_to_probing_and_leaves_a_taken_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another host answers for GLOBAL-NFS.local with its own address after we
    published it: the name's records are withdrawn and it is probed again; the other
    host still has it, so it is left to it (a re-check later), PRINT-HQ untouched."""
    pub = MdnsPublisher(settings())
    fake = FakeZeroconf(set())
    pub._zc = fake  # type: ignore[assignment]

    async def scenario() -> None:
        await pub._register_all()
        fake.taken.add("GLOBAL-NFS._smb._tcp.local.")  # the probe will meet the other host
        await _hear(pub, _response("GLOBAL-NFS.local.", "198.18.203.50"))

    with caplog.at_level(logging.INFO, "spokeshare.lan.discovery"):
        run(scenario())
    stats = pub.statistics()
    assert stats.conflicts_after_start == 1
    assert stats.conflicts == ("GLOBAL-NFS",) and stats.published == ("PRINT-HQ",)
    assert sorted(fake.unregistered) == [
        "GLOBAL-NFS._device-info._tcp.local.", "GLOBAL-NFS._smb._tcp.local."]  # fmt: skip
    after_start, taken = logged(caplog, "name conflict")
    assert (after_start["name"], after_start["owner"]) == ("GLOBAL-NFS.local", "198.18.203.50")
    assert "after start" in after_start["reason"] and "recheck_in_s" not in after_start
    assert taken["name"] == "GLOBAL-NFS.local" and "already in use" in taken["reason"]


def test_conflict_after_start_published_again_when_nobody_answers_the_probe() -> None:
    pub = MdnsPublisher(settings())
    fake = FakeZeroconf(set())
    pub._zc = fake  # type: ignore[assignment]

    async def scenario() -> None:
        await pub._register_all()
        await _hear(pub, _response("global-nfs.local.", "198.18.203.50"))

    run(scenario())
    stats = pub.statistics()
    assert stats.conflicts_after_start == 1 and stats.conflicts == ()
    assert set(stats.published) == {"GLOBAL-NFS", "PRINT-HQ"}
    assert fake.registered.count("GLOBAL-NFS._smb._tcp.local.") == 2  # probed, published again


@pytest.mark.parametrize(
    "updates",
    [
        _response("GLOBAL-NFS.local.", "198.18.203.1"),  # our own answer looped back
        _response("GLOBAL-NFS.local.", "198.18.203.50", ttl=0),  # a goodbye
        _response("OLDBOX.local.", "198.18.203.50"),  # not a name we hold
    ],
)
def test_not_a_conflict(updates: list[object]) -> None:
    pub = MdnsPublisher(settings())
    fake = FakeZeroconf(set())
    pub._zc = fake  # type: ignore[assignment]

    async def scenario() -> None:
        await pub._register_all()
        await _hear(pub, updates)

    run(scenario())
    assert pub.statistics().conflicts_after_start == 0 and fake.unregistered == []


def test_withdrawn_names_have_no_conflicts() -> None:
    pub = MdnsPublisher(settings())
    fake = FakeZeroconf(set())
    pub._zc = fake  # type: ignore[assignment]

    async def scenario() -> None:
        await pub._register_all()
        await pub.withdraw()
        await _hear(pub, _response("GLOBAL-NFS.local.", "198.18.203.50"))

    run(scenario())
    assert pub.statistics().conflicts_after_start == 0


def test_one_reset_in_flight_per_name() -> None:
    """A burst of conflicting answers (avahi announces twice, 1 s apart, and answers
    queries) resets the name once while the first reset runs."""
    pub = MdnsPublisher(settings())
    fake = FakeZeroconf(set())
    pub._zc = fake  # type: ignore[assignment]

    async def scenario() -> None:
        from spokeshare.lan.mdns import _HostConflictListener

        await pub._register_all()
        listener = _HostConflictListener(pub)
        other = _response("GLOBAL-NFS.local.", "198.18.203.50")
        for _ in range(5):
            listener.async_update_records(None, 1000.0, other)
        await asyncio.gather(*list(pub._resetting.values()))

    run(scenario())
    assert pub.statistics().conflicts_after_start == 1


def test_a_record_expiring_from_the_cache_is_no_conflict() -> None:
    """zeroconf's cache cleanup (every 10 s) hands listeners each record it expires as
    RecordUpdate(record, record): another host's answer heard two minutes ago is not
    heard again when it expires (seen in the lab fuzz: a spoofed answer's expiry
    reset a name published since)."""
    from zeroconf import RecordUpdate

    from spokeshare.lan.mdns import _HostConflictListener

    pub = MdnsPublisher(settings())
    fake = FakeZeroconf(set())
    pub._zc = fake  # type: ignore[assignment]
    (spoofed,) = [u.new for u in _response("GLOBAL-NFS.local.", "198.18.203.50", ttl=120)]  # type: ignore[attr-defined]
    expired_at = spoofed.created + 120 * 1000.0 + 1

    async def scenario() -> None:
        await pub._register_all()
        _HostConflictListener(pub).async_update_records(
            None, expired_at, [RecordUpdate(spoofed, spoofed)]
        )
        await asyncio.gather(*list(pub._resetting.values()))

    run(scenario())
    assert pub.statistics().conflicts_after_start == 0 and pub._claims == {}
    assert "GLOBAL-NFS" in pub.statistics().published


def test_answers_for_a_name_in_conflict_are_noted_not_reset() -> None:
    """GLOBAL-NFS.local was left to another host at start: its answers reset nothing
    (we hold nothing) but are noted, with their time, for the next probe to see."""
    pub = MdnsPublisher(settings())
    fake = FakeZeroconf({"GLOBAL-NFS._smb._tcp.local."})
    pub._zc = fake  # type: ignore[assignment]

    async def scenario() -> None:
        from spokeshare.lan.mdns import _HostConflictListener

        await pub._register_all()
        _HostConflictListener(pub).async_update_records(
            None, 2500.0, _response("GLOBAL-NFS.local.", "198.18.203.50")
        )
        _HostConflictListener(pub).async_update_records(
            None,
            2600.0,
            _response("PRINT-HQ.local.", "198.18.203.1"),  # ours: no claim
        )

    run(scenario())
    assert pub.statistics().conflicts_after_start == 0 and pub._resetting == {}
    assert pub._claims == {"global-nfs.local.": 2.5}


def test_host_watchers_hear_a_name_lost_and_won_back() -> None:
    """What points at a host name (HQ's printers) is told when the name is lost after
    start, and again when it is won back (here by the minute's re-check)."""
    pub = MdnsPublisher(settings())
    fake = FakeZeroconf(set())
    pub._zc = fake  # type: ignore[assignment]
    calls: list[tuple[str, ...]] = []
    pub.watch_hosts(lambda: calls.append(pub.statistics().published))

    async def scenario() -> None:
        await pub._register_all()
        assert calls == []
        fake.taken.add("GLOBAL-NFS._smb._tcp.local.")
        await _hear(pub, _response("GLOBAL-NFS.local.", "198.18.203.50"))
        fake.taken.clear()
        await pub._register_all()  # the re-check

    run(scenario())
    assert calls == [("PRINT-HQ",), ("PRINT-HQ", "GLOBAL-NFS")]


class _CacheOnly:
    """What _forget_own_pointer reads of AsyncZeroconf: ``.zeroconf.cache``, here a
    real zeroconf DNSCache."""

    def __init__(self) -> None:
        from zeroconf._cache import DNSCache

        self.cache = DNSCache()
        self.zeroconf = self


@pytest.mark.parametrize("other_owner", [False, True])
def test_own_pointer_heard_back_does_not_block_publishing(other_owner: bool) -> None:
    """zeroconf refuses to register an instance while its cache holds a PTR to it, and
    it caches its own multicast answers: one sent after the goodbyes of a reset to
    probing blocked GLOBAL-NFS for the PTR's 75 minutes (seen in the lab fuzz). Our
    own PTR is dropped before publishing; with another host's SRV for the instance
    (another target) the PTR is kept, and zeroconf's refusal stands."""
    from zeroconf._dns import DNSPointer, DNSService
    from zeroconf.const import _CLASS_IN, _CLASS_UNIQUE, _TYPE_PTR, _TYPE_SRV

    pub = MdnsPublisher(settings())
    fake = _CacheOnly()
    pub._zc = fake  # type: ignore[assignment]
    info = pub.infos("GLOBAL-NFS")[0]
    ptr = DNSPointer(info.type, _TYPE_PTR, _CLASS_IN, 4500, info.name)
    records: list[object] = [ptr]
    if other_owner:
        records.append(
            DNSService(
                info.name,
                _TYPE_SRV,
                _CLASS_IN | _CLASS_UNIQUE,
                120,
                0,
                0,
                info.port or 445,
                "other-pc.local.",
            )
        )
    fake.cache.async_add_records(records)  # type: ignore[arg-type]
    assert fake.cache.current_entry_with_name_and_alias(info.type, info.name) is not None
    pub._forget_own_pointer(info)
    left = fake.cache.current_entry_with_name_and_alias(info.type, info.name)
    assert (left is not None) is other_owner
