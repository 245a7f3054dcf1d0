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
    assert "name conflict: GLOBAL-NFS.local" in caplog.text
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
        assert caplog.text.count("name conflict: GLOBAL-NFS.local") == 2
        assert [r.levelno for r in caplog.records if "conflict" in r.message] == [
            logging.WARNING, logging.DEBUG]
        fake.taken.clear()
        run(pub._register_all())
    stats = pub.statistics()
    assert stats.conflicts == () and set(stats.published) == {"GLOBAL-NFS", "PRINT-HQ"}
    assert stats.reclaimed == 1
    assert "reclaimed GLOBAL-NFS.local" in caplog.text


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
