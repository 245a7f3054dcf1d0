"""The edge's printer sync against a real python-zeroconf responder and browser on
loopback (no lab): what reaches the network after each sync, subtypes included.

HQ's answers are the CUPS-Get-Printers answer captured from the lab's stock cupsd
(``vectors_dnssd/get-printers.bin``), edited with the IPP codec to play HQ adding,
renaming and removing queues; the fetch is the only stand-in (the real path through
the hub is the lab test, tests/lab/test_printers_lan.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from zeroconf import ServiceInfo, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from spokeshare.printing import ipp
from spokeshare.printing.printer_sync import FetchError, PrinterAdvertiser
from tests.helpers import logged

ANSWER = (Path(__file__).parent / "vectors_dnssd" / "get-printers.bin").read_bytes()
HOST = "EDGE-T.local."
LOOPBACK = bytes([127, 0, 0, 1])
#: What the LAN browser (:class:`Seen`) watches: the printer type and both subtypes.
BROWSED_TYPES = (
    "_ipp._tcp.local.",
    "_universal._sub._ipp._tcp.local.",
    "_print._sub._ipp._tcp.local.",
)


def edited(
    drop: str = "", rename: tuple[str, str] | None = None, attribute: str = "printer-info"
) -> bytes:
    """The captured answer without queue ``drop`` / with ``attribute`` of a queue changed
    (``rename`` = (queue, new text))."""
    msg = ipp.decode(ANSWER)
    groups = []
    for g in msg.groups:
        name_attr = g.get("printer-name")
        name = name_attr.string() if name_attr else ""
        if g.tag == ipp.GroupTag.PRINTER and name == drop:
            continue
        if g.tag == ipp.GroupTag.PRINTER and rename and name == rename[0]:
            tag = ipp.Tag.NAME if attribute == "printer-name" else ipp.Tag.TEXT
            attrs = tuple(
                ipp.Attribute.of(attribute, tag, rename[1]) if a.name == attribute else a
                for a in g.attributes
            )
            g = dataclasses.replace(g, attributes=attrs)
        groups.append(g)
    return ipp.encode(dataclasses.replace(msg, groups=tuple(groups)))


class Responder:
    """What the advertiser needs of the names' publisher: its running responder."""

    def __init__(self, zc: AsyncZeroconf) -> None:
        self.zeroconf: AsyncZeroconf | None = zc


class Script:
    """HQ's answers, one per fetch; an exception instance is raised instead."""

    def __init__(self) -> None:
        self.next: bytes | Exception = ANSWER

    async def __call__(self) -> bytes:
        if isinstance(self.next, Exception):
            raise self.next
        return self.next


def advertiser(
    zc: AsyncZeroconf, script: Script, host_owned: Callable[[], bool] = lambda: True
) -> PrinterAdvertiser:
    """The advertiser on loopback for HOST, HQ's answers from ``script``, syncing only
    when a test says so; ``host_owned``: whether the edge holds HOST (default: yes)."""
    return PrinterAdvertiser(
        Responder(zc),  # type: ignore[arg-type]
        script,
        HOST,
        [LOOPBACK],
        631,
        interval=3600,
        host_owned=host_owned,
    )


class Seen:
    """A browser on the LAN (another responder): instance names present per type."""

    def __init__(self) -> None:
        self.names: dict[str, set[str]] = {}
        self.changed = asyncio.Event()

    def handler(
        self, zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        names = self.names.setdefault(service_type, set())
        instance = name.removesuffix("._ipp._tcp.local.")
        if state_change is ServiceStateChange.Removed:
            names.discard(instance)
        else:
            names.add(instance)
        self.changed.set()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_sync_follows_hq_and_the_lan_sees_it(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "spokeshare.printing.sync")

    async def scenario() -> None:
        zc = AsyncZeroconf(interfaces=["127.0.0.1"])
        lan = AsyncZeroconf(interfaces=["127.0.0.1"])
        seen = Seen()
        types = list(BROWSED_TYPES)
        browser = AsyncServiceBrowser(lan.zeroconf, types, handlers=[seen.handler])
        script = Script()
        adv = advertiser(zc, script)

        async def until(what: str, cond: Callable[[], bool]) -> None:
            try:
                async with asyncio.timeout(15):
                    while not cond():
                        seen.changed.clear()
                        await seen.changed.wait()
            except TimeoutError:
                pytest.fail(f"{what}: not within 15 s; the LAN sees {seen.names}")

        def on_lan(*names: str) -> bool:
            return all(seen.names.get(t, set()) == set(names) for t in types)

        try:
            await adv.sync_once()
            assert sorted(adv.statistics().printers) == ["HQ colour (lab)", "HQ laser (lab)"]
            await until("both on the LAN", lambda: on_lan("HQ colour (lab)", "HQ laser (lab)"))
            info = AsyncServiceInfo("_ipp._tcp.local.", "HQ laser (lab)._ipp._tcp.local.")
            assert await info.async_request(lan.zeroconf, 3000)
            assert info.server == HOST and info.port == 631
            assert info.properties[b"rp"] == b"printers/hq-laser"
            assert info.properties[b"URF"] == b"V1.4,CP1,W8,PQ4,RS150,FN3"

            # HQ moves hq-laser: same name, the LAN gets the new TXT (note=).
            script.next = edited(rename=("hq-laser", "Basement"), attribute="printer-location")
            await adv.sync_once()

            async def note() -> bytes | None:
                fresh = AsyncServiceInfo("_ipp._tcp.local.", "HQ laser (lab)._ipp._tcp.local.")
                await fresh.async_request(lan.zeroconf, 3000)
                return fresh.properties.get(b"note")

            async with asyncio.timeout(15):  # the browser sees Updated when TXT changes
                while True:
                    seen.changed.clear()
                    if await note() == b"Basement":
                        break
                    await seen.changed.wait()
            assert on_lan("HQ colour (lab)", "HQ laser (lab)")  # nobody left or came
            assert {"printer": "hq-laser", "name": "HQ laser (lab)._ipp._tcp.local."} in logged(
                caplog, "printer updated"
            )

            # HQ renames hq-color: the old name leaves (goodbye), the new one comes.
            script.next = edited(rename=("hq-color", "Colour, 2nd floor"))
            await adv.sync_once()  # (hq-laser's location is back to "HQ" too: an update)
            await until("renamed", lambda: on_lan("Colour, 2nd floor", "HQ laser (lab)"))

            # HQ unreachable: nothing changes, one line however often it fails.
            script.next = FetchError("hub refused: NOT_ALLOWED")
            await adv.sync_once()
            await adv.sync_once()
            assert sorted(adv.statistics().printers) == ["Colour, 2nd floor", "HQ laser (lab)"]
            fails = logged(caplog, "printers not fetched")
            assert fails == [{"error": "hub refused: NOT_ALLOWED",
                              "reason": "keeping what is shown"}]  # fmt: skip
            assert adv.statistics().failures == 2

            # HQ removes hq-laser: it leaves the LAN, the other stays.
            script.next = edited(drop="hq-laser", rename=("hq-color", "Colour, 2nd floor"))
            await adv.sync_once()
            await until("hq-laser gone", lambda: on_lan("Colour, 2nd floor"))

            # Withdrawn with the names, back when announced.
            await adv.withdraw()
            await until("all withdrawn", lambda: on_lan())
            await adv.sync_once()  # a sync while withdrawn publishes nothing
            assert adv.statistics().printers == ()
            script.next = ANSWER
            await adv.start()
            await adv.announce()
            await until("back", lambda: on_lan("HQ colour (lab)", "HQ laser (lab)"))
        finally:
            await adv.stop()
            await browser.async_cancel()
            await lan.async_close()
            await zc.async_close()
        assert not any(
            t.endswith("._sub._ipp._tcp.local.") for t in zc.zeroconf.registry.async_get_types()
        )

    loop.run_until_complete(scenario())


def test_no_printer_points_at_a_name_another_host_holds(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "spokeshare.printing.sync")

    async def scenario() -> None:
        zc = AsyncZeroconf(interfaces=["127.0.0.1"])
        owned = [False]
        adv = advertiser(zc, Script(), host_owned=lambda: owned[0])
        try:
            await adv.sync_once()
            await adv.sync_once()
            assert adv.statistics().printers == ()
            assert zc.zeroconf.registry.async_get_infos_server(HOST.lower()) == []
            owned[0] = True
            await adv.sync_once()
            assert len(adv.statistics().printers) == 2
            owned[0] = False
            await adv.sync_once()
            assert adv.statistics().printers == ()
        finally:
            await adv.stop()
            await zc.async_close()

    loop.run_until_complete(scenario())
    lines = logged(caplog, "printers not advertised")
    assert lines == [{"host": HOST, "reason": "the host name is held by another host"}] * 2
    assert logged(caplog, "printers advertised") == [
        {"host": HOST, "reason": "the host name is ours again"}]  # fmt: skip


def test_host_check_holds_while_hq_cannot_be_reached(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """A host name lost while the hub is away takes the printers off the LAN anyway,
    and one won back brings the last fetched printers back before the hub returns."""

    async def scenario() -> None:
        zc = AsyncZeroconf(interfaces=["127.0.0.1"])
        owned = [True]
        script = Script()
        adv = advertiser(zc, script, host_owned=lambda: owned[0])
        try:
            await adv.sync_once()
            assert len(adv.statistics().printers) == 2
            script.next = FetchError("hub unreachable")
            owned[0] = False
            await adv.sync_once()
            assert adv.statistics().printers == ()
            assert zc.zeroconf.registry.async_get_infos_server(HOST.lower()) == []
            owned[0] = True
            await adv.sync_once()
            assert sorted(adv.statistics().printers) == ["HQ colour (lab)", "HQ laser (lab)"]
            assert adv.statistics().failures == 2 and adv.statistics().syncs == 1
        finally:
            await adv.stop()
            await zc.async_close()

    loop.run_until_complete(scenario())
    assert [f["reason"] for f in logged(caplog, "printers not advertised")] == [
        "the host name is held by another host"]  # fmt: skip


def test_conflicts_rename_past_other_hosts_and_our_own_names(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """Another host holds "HQ laser (lab)"; HQ also has a queue named "HQ laser (lab) (2)"
    (listed first): hq-laser becomes "HQ laser (lab) (3)", both subtypes follow."""
    caplog.set_level(logging.INFO, "spokeshare.printing.sync")

    async def scenario() -> None:
        other = AsyncZeroconf(interfaces=["127.0.0.1"])
        mac = ServiceInfo(
            "_ipp._tcp.local.", "HQ laser (lab)._ipp._tcp.local.", port=631,
            properties={"rp": "ipp/print"}, server="office-mac.local.", addresses=[LOOPBACK],
        )  # fmt: skip
        await (await other.async_register_service(mac))
        zc = AsyncZeroconf(interfaces=["127.0.0.1"])
        script = Script()
        script.next = edited(rename=("hq-color", "HQ laser (lab) (2)"))
        adv = advertiser(zc, script)
        try:
            await adv.sync_once()
            assert sorted(adv.statistics().printers) == ["HQ laser (lab) (2)", "HQ laser (lab) (3)"]
            assert adv.statistics().renamed == (("HQ laser (lab)", "HQ laser (lab) (3)"),)
            for sub in ("_universal", "_print"):
                names = {i.name for i in zc.zeroconf.registry.async_get_infos_type(
                    f"{sub}._sub._ipp._tcp.local.")}  # fmt: skip
                assert "HQ laser (lab) (3)._ipp._tcp.local." in names
        finally:
            await adv.stop()
            await zc.async_close()
            await (await other.async_unregister_service(mac))
            await other.async_close()

    loop.run_until_complete(scenario())
    assert {
        "printer": "hq-laser",
        "name": "HQ laser (lab)._ipp._tcp.local.",
        "next": "HQ laser (lab) (2)",
        "reason": "already in use on the LAN (RFC 6762 section 9)",
    } in logged(caplog, "printer name conflict")


def test_unusable_printer_left_out_with_one_line_the_others_published(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """HQ answers hq-color with a printer-name CUPS would never create ("a/b")."""
    caplog.set_level(logging.INFO, "spokeshare.printing.sync")

    async def scenario() -> None:
        zc = AsyncZeroconf(interfaces=["127.0.0.1"])
        script = Script()
        script.next = edited(rename=("hq-color", "a/b"), attribute="printer-name")
        adv = advertiser(zc, script)
        try:
            await adv.sync_once()
            await adv.sync_once()
            assert adv.statistics().printers == ("HQ laser (lab)",)
        finally:
            await adv.stop()
            await zc.async_close()

    loop.run_until_complete(scenario())
    assert logged(caplog, "printer left out") == [
        {"printer": "a/b", "reason": "printer-name is not a CUPS queue name"}]  # fmt: skip


def test_conflict_after_publication_renames_with_both_subtypes(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 6762 section 9: "HQ laser (lab)" is published; then an office Mac starts
    announcing that instance name with its own SRV/TXT (without probing, as after two
    LAN segments are joined). The edge renames its printer "HQ laser (lab) (2)" with a
    log line; a browser on the LAN finds the new name under both subtypes, and the
    edge's other printer and the Mac's record stay."""
    caplog.set_level(logging.INFO, "spokeshare.printing.sync")

    async def scenario() -> None:
        zc = AsyncZeroconf(interfaces=["127.0.0.1"])
        other = AsyncZeroconf(interfaces=["127.0.0.1"])
        lan = AsyncZeroconf(interfaces=["127.0.0.1"])
        seen = Seen()
        types = list(BROWSED_TYPES)
        browser = AsyncServiceBrowser(lan.zeroconf, types, handlers=[seen.handler])
        adv = PrinterAdvertiser(
            Responder(zc),  # type: ignore[arg-type]
            Script(),
            HOST,
            [LOOPBACK],
            631,
            interval=3600,
        )
        mac = ServiceInfo(
            "_ipp._tcp.local.", "HQ laser (lab)._ipp._tcp.local.", port=631,
            properties={"rp": "ipp/print"}, server="office-mac.local.", addresses=[LOOPBACK],
        )  # fmt: skip
        try:
            await adv.sync_once()
            assert sorted(adv.statistics().printers) == ["HQ colour (lab)", "HQ laser (lab)"]
            assert not any("another host announces" in m for m in caplog.messages)
            # cooperating_responders: zeroconf announces without probing first
            await (await other.async_register_service(mac, cooperating_responders=True))

            def renamed() -> bool:
                return sorted(adv.statistics().printers) == [
                    "HQ colour (lab)", "HQ laser (lab) (2)"
                ]  # fmt: skip

            def subtypes_follow() -> bool:
                return all(
                    "HQ laser (lab) (2)" in seen.names.get(t, set())
                    and "HQ colour (lab)" in seen.names.get(t, set())
                    for t in types[1:]
                )

            async with asyncio.timeout(15):
                while not (renamed() and subtypes_follow()):
                    seen.changed.clear()
                    try:
                        await asyncio.wait_for(seen.changed.wait(), 1.0)
                    except TimeoutError:
                        pass  # the rename itself is not seen by the browser; look again
            assert adv.statistics().renamed == (("HQ laser (lab)", "HQ laser (lab) (2)"),)
            info = AsyncServiceInfo("_ipp._tcp.local.", "HQ laser (lab) (2)._ipp._tcp.local.")
            assert await info.async_request(lan.zeroconf, 3000)
            assert info.server == HOST and info.properties[b"rp"] == b"printers/hq-laser"
            # The Mac's record is the Mac's: the edge's goodbye did not take it away.
            theirs = AsyncServiceInfo("_ipp._tcp.local.", "HQ laser (lab)._ipp._tcp.local.")
            assert await theirs.async_request(lan.zeroconf, 3000)
            assert theirs.server == "office-mac.local."
        finally:
            await adv.stop()
            await browser.async_cancel()
            await (await other.async_unregister_service(mac))
            await other.async_close()
            await lan.async_close()
            await zc.async_close()

    loop.run_until_complete(scenario())
    lines = [f for f in logged(caplog, "printer name conflict") if "other data" in f["reason"]]
    assert lines == [{
        "printer": "hq-laser",
        "name": "HQ laser (lab)._ipp._tcp.local.",
        "next": "HQ laser (lab) (2)",
        "reason": "another host announces it with other data (RFC 6762 section 9)",
    }]  # fmt: skip
