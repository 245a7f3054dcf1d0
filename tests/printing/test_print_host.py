"""A printing-only office's print host name (``<office>-print.local``) and HQ's
printers pointing at it, against real python-zeroconf responders on loopback (no lab).

The publisher is the edge's own (:class:`PrintHostPublisher`, probing and all); only
its responder is bound to loopback instead of the LAN address (which is what the
records carry), and HQ's answer is the CUPS-Get-Printers answer captured from the lab's
stock cupsd (``vectors_dnssd/get-printers.bin``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterator
from uuid import UUID

import pytest
from zeroconf._services.info import AddressResolver
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from spokeshare.config import LanPresence
from spokeshare.lan.discovery_settings import DiscoverySettings
from spokeshare.lan.mdns import DEVICE_INFO_TYPE
from spokeshare.printing.print_host import PrintHostPublisher, default_host_name
from spokeshare.printing.printer_sync import PrinterAdvertiser
from tests.printing.test_printer_sync import ANSWER

LAN_ADDRESS = "198.18.210.1"  # what the records carry; nothing is sent to it
NS = UUID("0d5c1f2a-8a44-4a55-9f0e-6c6162000002")


def test_default_host_name_is_one_label() -> None:
    assert default_host_name("sf") == "sf-print"
    long = "a" * 63
    assert default_host_name(long) == "a" * 57 + "-print"
    assert len(default_host_name(long)) == 63
    # a cut that would leave "--print" drops the office part's trailing '-'
    assert default_host_name("b" * 56 + "-cc") == "b" * 56 + "-print"


def publisher(name: str = "sf-print") -> PrintHostPublisher:
    return PrintHostPublisher(
        DiscoverySettings(LanPresence("eth0", LAN_ADDRESS, host_names=(name,)), NS)
    )


def test_print_host_publishes_no_file_server_records() -> None:
    (device,) = publisher().infos("sf-print")
    assert device.type == DEVICE_INFO_TYPE
    assert device.server == "sf-print.local."
    assert device.addresses == [ipaddress.IPv4Address(LAN_ADDRESS).packed]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def fetch() -> bytes:
    return ANSWER


def test_printing_only_office_printers_point_at_the_print_host(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        pub = publisher()
        pub._zc = AsyncZeroconf(interfaces=["127.0.0.1"])  # the LAN interface's stand-in
        lan = AsyncZeroconf(interfaces=["127.0.0.1"])
        name = "sf-print"
        adv = PrinterAdvertiser(
            pub, fetch, f"{name}.local.", list(pub.infos(name)[0].addresses), 631,
            interval=3600, host_owned=lambda: name in pub.statistics().published,
        )  # fmt: skip
        try:
            await pub._register_all()  # probes sf-print.local, then publishes it
            assert pub.statistics().published == (name,)
            await adv.sync_once()
            assert sorted(adv.statistics().printers) == ["HQ colour (lab)", "HQ laser (lab)"]
            info = AsyncServiceInfo(
                "_universal._sub._ipp._tcp.local.", "HQ laser (lab)._ipp._tcp.local."
            )
            assert await info.async_request(lan.zeroconf, 3000)
            assert info.server == "sf-print.local." and info.port == 631
            resolver = AddressResolver("sf-print.local.")
            assert await resolver.async_request(lan.zeroconf, 3000)
            assert resolver.parsed_addresses() == [LAN_ADDRESS]
        finally:
            await adv.stop()
            await pub.stop()
            await lan.async_close()

    loop.run_until_complete(scenario())
