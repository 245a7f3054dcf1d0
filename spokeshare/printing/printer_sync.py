"""HQ's printers on the office LAN: the edge's printer sync (asyncio adapter).

Every ``printers.sync_interval`` seconds (and at once after HQ comes back) the edge
asks HQ's CUPS for its printers, through the hub's ``ipp`` service on a tunnel from the
warm pool (:func:`fetch_printers`: CUPS-Get-Printers in an HTTP POST, the same path an
office PC's IPP takes), builds their DNS-SD records (:mod:`spokeshare.printing.dnssd`)
and brings the LAN in step (:func:`spokeshare.printing.dnssd.plan_sync`), through the
*same* python-zeroconf responder that publishes the file-server names
(:class:`spokeshare.lan.mdns.MdnsPublisher`):

- a new printer is probed and announced (RFC 6762 sections 8.1, 8.3) as
  ``<instance>._ipp._tcp`` with the ``_universal`` and ``_print`` subtypes, plus
  ``<instance>._printer._tcp``; SRV target the edge's ``NAME.local.``, port the edge's
  IPP port;
- a changed printer is announced again with its new TXT; a renamed one leaves under its
  old name and comes under its new one; a removed or unshared one leaves with goodbye
  packets (TTL 0, RFC 6762 section 10.1);
- while HQ is unreachable past ``discovery.withdraw_after`` the daemon withdraws every
  name (:meth:`PrinterAdvertiser.withdraw`: goodbyes) and the sync pauses; on
  :meth:`PrinterAdvertiser.announce` it syncs at once and the printers return.

Conflicts (RFC 6762 section 9): when probing finds ``Office Laser._ipp._tcp.local.``
already held by another host, the printer is published as ``Office Laser (2)`` (then
``(3)``...), as CUPS and mDNSResponder rename, with a log line; its ``_universal`` and
``_print`` subtypes follow the new name. A conflict after publication (another host
starts announcing a published instance name with other SRV/TXT data) is caught by a
record listener on the responder (python-zeroconf checks only while probing) and
renames the printer the same way (:meth:`PrinterAdvertiser.heard`).

Subtypes: python-zeroconf keeps one registration per instance name and publishes the
PTR of that registration's type only. The subtype PTRs
(``_universal._sub._ipp._tcp.local. PTR <instance>._ipp._tcp.local.``, RFC 6763
section 7.1) are therefore entered beside the registration in the responder's type
index (so queries for the subtype are answered, with SRV/TXT/A as additionals) and
announced and withdrawn by this module. If that index is not where this module expects
it (another zeroconf version), the printer is published without subtypes and an error
is logged: never silently.

A failed fetch (hub refused, cupsd down, bad answer) leaves what is advertised as it is
and is logged once until a fetch succeeds; a printer whose attributes cannot make a
service is left out with one log line while the others stay.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
from zeroconf import (
    BadTypeInNameException,
    NonUniqueNameException,
    RecordUpdateListener,
    ServiceInfo,
    ServiceNameAlreadyRegistered,
)
from zeroconf import Error as ZeroconfError
from zeroconf._dns import DNSService, DNSText  # not exported by the package

from spokeshare.errors import DecodeError
from spokeshare.logfmt import Line
from spokeshare.printing import dnssd, hq_printers
from spokeshare.printing.dnssd import PrinterService
from spokeshare.tasks import TaskSet

if TYPE_CHECKING:
    from zeroconf.asyncio import AsyncZeroconf

    from spokeshare.lan.mdns import MdnsPublisher
    from spokeshare.tunnel.edge import Edge

log = logging.getLogger("spokeshare.printing.sync")

#: Seconds a whole fetch (stream open, request, answer) may take.
FETCH_TIMEOUT = 15.0
#: RFC 6762 section 9 leaves the number of retries open; after this many names give up.
MAX_RENAMES = 20

#: The reason of ``printers not advertised`` while another host holds the print host name.
HOST_HELD = "the host name is held by another host"
#: RFC 6762 section 8.3: at least two announcements, one second apart.
ANNOUNCE_INTERVAL = 1.0
ANNOUNCEMENTS = 2


class FetchError(Exception):
    """The printers could not be fetched from HQ (reason in the message)."""


# -- asking HQ ---------------------------------------------------------------------------


async def open_stream(
    edge: Edge, service: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to the hub's ``service`` from the edge's own pool, as a LAN client gets.

    One end of a socket pair is handed to the edge exactly like an accepted LAN
    connection (so it takes a warm tunnel, or fails fast while the hub is down); the
    other end is returned as asyncio streams.
    """
    from spokeshare.tunnel.edge import ClientEnd

    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    try:
        await loop.connect_accepted_socket(functools.partial(ClientEnd, edge, service), theirs)
        return await asyncio.open_connection(sock=ours)
    except BaseException:
        ours.close()
        theirs.close()
        raise


async def http_post(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    body: bytes,
    limit: int = hq_printers.MAX_ANSWER,
) -> bytes:
    """POST ``body`` as ``application/ipp`` to ``/`` (RFC 8010 section 4) and return the
    answer's body (at most ``limit`` octets). Raises :class:`FetchError`."""
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target="/",
        headers=[
            ("Host", host),
            ("Content-Type", "application/ipp"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("User-Agent", "spokeshare-edge"),
        ],
    )
    for outgoing in (request, h11.Data(data=body), h11.EndOfMessage()):
        writer.write(conn.send(outgoing) or b"")
    await writer.drain()
    answer = bytearray()
    status = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise FetchError(f"bad HTTP answer: {exc}") from None
        if event is h11.NEED_DATA:
            chunk = await reader.read(65536)
            conn.receive_data(chunk)
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            answer += event.data
            if len(answer) > limit:
                raise FetchError(f"answer over {limit} octets")
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise FetchError("connection closed before the answer was complete")
    if status != 200:
        raise FetchError(f"HTTP status {status}")
    return bytes(answer)


async def fetch_printers(edge: Edge, host: str) -> bytes:
    """CUPS-Get-Printers through the hub's ``ipp`` service; the IPP answer's body.

    ``host`` is the Host header (the edge's name and IPP port, as a PC would send).
    Raises :class:`FetchError` for every failure (no tunnel, refused, closed, bad HTTP,
    no answer within :data:`FETCH_TIMEOUT`).
    """
    try:
        async with asyncio.timeout(FETCH_TIMEOUT):
            reader, writer = await open_stream(edge, "ipp")
            try:
                return await http_post(reader, writer, host, hq_printers.get_printers_request())
            finally:
                writer.close()
    except TimeoutError:
        raise FetchError(f"no answer within {FETCH_TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise FetchError(f"stream failed: {exc!r}") from None


# -- publishing ----------------------------------------------------------------------------


def _name_conflict(svc: PrinterService, name: str, n: int) -> Line:
    """The line for a printer's mDNS ``name`` (its ``n``-th choice) held by another
    host: the next name is tried."""
    return Line(
        "printer name conflict",
        printer=svc.printer,
        name=name,
        next=dnssd.alternative_name(svc.instance, n + 1),
        reason="already in use on the LAN (RFC 6762 section 9)",
    )


@dataclass
class _Published:
    service: PrinterService  # as built (before any LAN rename)
    instance: str  # the name it holds on the LAN
    ipp: ServiceInfo
    lpd: ServiceInfo
    subtypes: tuple[ServiceInfo, ...]
    n: int = 1  # 1: the instance name as built; n >= 2: dnssd.alternative_name(..., n)


class _ConflictListener(RecordUpdateListener):
    """Hands every SRV/TXT answer the responder receives to the advertiser's conflict
    check. python-zeroconf checks for conflicts only while probing (it looks for the
    name in its cache before each probe, ``Zeroconf.async_check_service``); once a
    service is registered, a conflicting answer from another host is only cached. This
    listener (zeroconf's public listener interface, not a fork) closes that gap."""

    def __init__(self, advertiser: PrinterAdvertiser) -> None:
        self.advertiser = advertiser

    def async_update_records(self, zc: Any, now: float, records: list[Any]) -> None:
        heard: list[tuple[str, dnssd.RecordData]] = []
        for update in records:
            rec = update.new
            if rec.ttl == 0:  # a goodbye claims nothing (RFC 6762 section 10.1)
                continue
            if isinstance(rec, DNSService):
                heard.append((rec.key, ("SRV", rec.server.lower(), rec.port)))
            elif isinstance(rec, DNSText):
                heard.append((rec.key, ("TXT", rec.text)))
        if heard:
            self.advertiser.heard(heard)


@dataclass(frozen=True)
class PrinterSyncStatistics:
    printers: tuple[str, ...]  # instance names on the LAN
    renamed: tuple[tuple[str, str], ...]  # (wanted, got) after conflicts
    syncs: int
    failures: int
    withdrawn: bool


class PrinterAdvertiser:
    """The edge's printers on the LAN; a presence service (start/withdraw/announce/stop).

    ``fetch`` returns the IPP body of a CUPS-Get-Printers answer or raises
    :class:`FetchError`; ``host`` is the SRV target (``NAME.local.``) with its
    ``addresses`` (packed), ``port`` the edge's IPP port, ``lpd_port`` the office's LPD
    port (0: placeholder), ``interval`` seconds between syncs. ``host_owned`` says
    whether the edge holds ``host`` on the LAN now: while another host has it (an mDNS
    conflict), no printer points at it (the edge answers only for names it owns).
    """

    def __init__(
        self,
        publisher: MdnsPublisher,
        fetch: Callable[[], Awaitable[bytes]],
        host: str,
        addresses: list[bytes],
        port: int,
        lpd_port: int = 0,
        interval: float = 20.0,
        host_owned: Callable[[], bool] = lambda: True,
    ) -> None:
        self.publisher = publisher
        self.host_owned = host_owned
        self.fetch = fetch
        self.host = host
        self.addresses = addresses
        self.port = port
        self.lpd_port = lpd_port
        self.interval = interval
        self._published: dict[str, _Published] = {}
        self._renamed: dict[str, str] = {}
        self._skipped: set[tuple[str, str]] = set()
        self._withdrawn = False
        self._failing = False
        self._fetch_failures = 0  # in a row, since the last fetch that worked
        self._host_lost = False
        #: The printers of the last successful fetch (None before one).
        self._last: list[hq_printers.PrinterValues] | None = None
        self._syncs = 0
        self._failures = 0
        self._wake = asyncio.Event()
        #: The sync loop and the renames after a conflict.
        self._tasks = TaskSet(log, "printer sync task")
        self._lock = asyncio.Lock()
        #: name key -> every SRV/TXT data announced for it while we hold it.
        self._ours: dict[str, set[dnssd.RecordData]] = {}
        self._listener = _ConflictListener(self)
        self._listening: AsyncZeroconf | None = None
        self._renaming: dict[str, asyncio.Task[None]] = {}
        self._conflicts_after = 0

    def __repr__(self) -> str:
        return (
            f"<PrinterAdvertiser {len(self._published)} printers on {self.host} "
            f"withdrawn={self._withdrawn}>"
        )

    def statistics(self) -> PrinterSyncStatistics:
        return PrinterSyncStatistics(
            tuple(p.instance for p in self._published.values()),
            tuple(self._renamed.items()),
            self._syncs,
            self._failures,
            self._withdrawn,
        )

    # -- life cycle ------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.spawn(self._run(), name="printer-sync")

    async def stop(self) -> None:
        await self._tasks.aclose()
        self._renaming.clear()
        async with self._lock:
            await self._unpublish_all()
        if self._listening is not None:
            self._listening.zeroconf.async_remove_listener(self._listener)
            self._listening = None

    async def withdraw(self) -> None:
        """Goodbyes for every printer; the sync pauses until :meth:`announce`."""
        self._withdrawn = True
        async with self._lock:
            count = len(self._published)
            await self._unpublish_all()
        log.info("%s", Line("printers withdrawn", count=count))

    async def announce(self) -> None:
        """Sync at once and publish again."""
        self._withdrawn = False
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self._withdrawn:
                await self.sync_once()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()

    # -- one sync --------------------------------------------------------------------
    async def sync_once(self) -> None:
        """Fetch, build, and bring the LAN in step (one pass).

        While HQ cannot be reached the printers last fetched stay as they are shown,
        but the host check still holds: a host name lost to another host takes every
        printer off the LAN (none may point at it), and one won back brings the last
        fetched printers back without waiting for the hub."""
        try:
            body = await self.fetch()
            printers = hq_printers.parse_get_printers(body)
        except (FetchError, DecodeError) as exc:
            self._failures += 1
            self._fetch_failures += 1
            if not self._failing:
                log.warning(
                    "%s",
                    Line("printers not fetched", error=exc, reason="keeping what is shown"),
                )
            self._failing = True
            if self._last is None:
                if self.host_owned():
                    return
                printers = []  # nothing fetched yet; nothing may point at the name
            else:
                printers = self._last
        else:
            if self._failing:
                log.info("%s", Line("printers fetched again", failures=self._fetch_failures))
            self._failing = False
            self._fetch_failures = 0
            self._syncs += 1
            self._last = printers
        services, skipped = dnssd.printer_services(printers, self.host, self.port, self.lpd_port)
        if not self.host_owned():
            if not self._host_lost:
                log.warning(
                    "%s",
                    Line("printers not advertised", host=self.host, reason=HOST_HELD),
                )
            self._host_lost = True
            services = ()
        elif self._host_lost:
            log.info(
                "%s",
                Line("printers advertised", host=self.host, reason="the host name is ours again"),
            )
            self._host_lost = False
        now_skipped = {(s.printer, s.reason) for s in skipped}
        for printer, reason in sorted(now_skipped - self._skipped):
            log.warning("%s", Line("printer left out", printer=printer, reason=reason))
        self._skipped = now_skipped
        async with self._lock:
            if self._withdrawn:
                return
            current = {k: p.service for k, p in self._published.items()}
            plan = dnssd.plan_sync(current, services)
            # One printer's trouble with the responder costs that printer only.
            for printer in plan.remove:
                await self._guarded(printer, "withdraw", self._unpublish(printer))
            for svc in plan.update:
                await self._guarded(svc.printer, "update", self._update(svc))
            for svc in plan.add:
                await self._guarded(svc.printer, "publish", self._publish(svc))

    async def _guarded(self, printer: str, what: str, step: Awaitable[None]) -> None:
        try:
            await step
        except (ZeroconfError, OSError) as exc:
            self._failures += 1
            log.error("%s", Line("printer failed", printer=printer, action=what, error=repr(exc)))

    # -- zeroconf ----------------------------------------------------------------------
    def _zc(self) -> AsyncZeroconf | None:
        return self.publisher.zeroconf

    def _info(self, type_: str, instance: str, port: int, svc: PrinterService) -> ServiceInfo:
        props = svc.properties if type_ != dnssd.PRINTER_TYPE else dict(svc.lpd_txt)
        return ServiceInfo(
            type_,
            f"{instance}.{dnssd.IPP_TYPE if '._sub.' in type_ else type_}",
            port=port,
            properties=props,
            server=self.host,
            addresses=self.addresses,
        )

    def _infos(
        self, svc: PrinterService, instance: str
    ) -> tuple[ServiceInfo, ServiceInfo, tuple[ServiceInfo, ...]]:
        ipp = self._info(dnssd.IPP_TYPE, instance, svc.port, svc)
        lpd = self._info(dnssd.PRINTER_TYPE, instance, svc.lpd_port, svc)
        subs = tuple(
            self._info(f"{sub}._sub.{dnssd.IPP_TYPE}", instance, svc.port, svc)
            for sub in dnssd.SUBTYPES
        )
        return ipp, lpd, subs

    async def _publish(self, svc: PrinterService, first: int = 1) -> None:
        azc = self._zc()
        if azc is None:
            return
        self._listen(azc)
        for n in range(first, first + MAX_RENAMES):
            instance = svc.instance if n == 1 else dnssd.alternative_name(svc.instance, n)
            ipp, lpd, subs = self._infos(svc, instance)
            # Before the records go out: their loopback is ours, not a conflict.
            self._remember(ipp, lpd)
            try:
                await (await azc.async_register_service(ipp))
            except (NonUniqueNameException, ServiceNameAlreadyRegistered):
                self._forget(ipp, lpd)
                # Held by another host (probing), or by another of HQ's printers that
                # got this name after a conflict: either way, the next name.
                log.warning("%s", _name_conflict(svc, f"{instance}.{dnssd.IPP_TYPE}", n))
                continue
            except BadTypeInNameException as exc:
                self._forget(ipp, lpd)
                log.warning("%s", Line("printer left out", printer=svc.printer, reason=exc))
                return
            try:
                await (await azc.async_register_service(lpd))
            except (NonUniqueNameException, ServiceNameAlreadyRegistered):
                log.warning("%s", _name_conflict(svc, f"{instance}.{dnssd.PRINTER_TYPE}", n))
                await (await azc.async_unregister_service(ipp))
                self._forget(ipp, lpd)
                continue
            published = self._add_subtypes(azc, subs)
            self._published[svc.printer] = _Published(svc, instance, ipp, lpd, published, n)
            if instance != svc.instance:
                self._renamed[svc.instance] = instance
            else:
                self._renamed.pop(svc.instance, None)
            log.info(
                "%s",
                Line(
                    "printer published",
                    printer=svc.printer,
                    name=f"{instance}.{dnssd.IPP_TYPE}",
                    host=self.host,
                    port=svc.port,
                    subtypes=",".join(dnssd.SUBTYPES) if len(published) == len(subs) else "",
                ),
            )
            return
        log.error(
            "%s",
            Line(
                "printer failed",
                printer=svc.printer,
                action="publish",
                reason=f"no free name for {svc.instance!r} after {MAX_RENAMES} tries",
            ),
        )

    def _add_subtypes(
        self, azc: AsyncZeroconf, subs: tuple[ServiceInfo, ...]
    ) -> tuple[ServiceInfo, ...]:
        types: Any = getattr(azc.zeroconf.registry, "types", None)
        if not isinstance(types, dict):
            log.error(
                "%s",
                Line(
                    "printer subtypes missing",
                    subtypes=",".join(dnssd.SUBTYPES),
                    reason="this zeroconf has no type index: subtypes not published",
                ),
            )
            return ()
        for sub in subs:
            types.setdefault(sub.type.lower(), {})[sub.key] = sub
        self._broadcast(azc, subs, None)
        return subs

    def _remove_subtypes(self, azc: AsyncZeroconf, subs: tuple[ServiceInfo, ...]) -> None:
        types: Any = getattr(azc.zeroconf.registry, "types", None)
        if isinstance(types, dict):
            for sub in subs:
                bucket = types.get(sub.type.lower())
                if bucket is not None:
                    bucket.pop(sub.key, None)
                    if not bucket:
                        del types[sub.type.lower()]
        self._broadcast(azc, subs, 0)

    def _broadcast(
        self, azc: AsyncZeroconf, subs: tuple[ServiceInfo, ...], ttl: int | None
    ) -> None:
        """Announce (ttl None) or say goodbye to (ttl 0) the subtype PTRs: the first
        packet now, the second :data:`ANNOUNCE_INTERVAL` later."""
        if not subs:
            return
        zc = azc.zeroconf

        def send() -> None:
            for sub in subs:
                zc.async_send(zc.generate_service_broadcast(sub, ttl, False))

        send()
        for i in range(1, ANNOUNCEMENTS):
            asyncio.get_running_loop().call_later(i * ANNOUNCE_INTERVAL, send)

    async def _update(self, svc: PrinterService) -> None:
        azc = self._zc()
        old = self._published.get(svc.printer)
        if azc is None or old is None:
            return
        ipp, lpd, subs = self._infos(svc, old.instance)
        self._remember(ipp, lpd)  # before the new TXT goes out
        self._remove_subtypes_quietly(azc, old.subtypes)
        await (await azc.async_update_service(ipp))
        if lpd.port != old.lpd.port or lpd.properties != old.lpd.properties:
            await (await azc.async_update_service(lpd))
        published = self._add_subtypes(azc, subs)
        self._published[svc.printer] = _Published(svc, old.instance, ipp, lpd, published, old.n)
        log.info(
            "%s",
            Line("printer updated", printer=svc.printer, name=f"{old.instance}.{dnssd.IPP_TYPE}"),
        )

    def _remove_subtypes_quietly(self, azc: AsyncZeroconf, subs: tuple[ServiceInfo, ...]) -> None:
        types: Any = getattr(azc.zeroconf.registry, "types", None)
        if isinstance(types, dict):
            for sub in subs:
                types.get(sub.type.lower(), {}).pop(sub.key, None)

    async def _unpublish(self, printer: str) -> None:
        pub = self._published.pop(printer, None)
        azc = self._zc()
        if pub is None or azc is None:
            return
        self._ours.pop(pub.ipp.key, None)
        self._ours.pop(pub.lpd.key, None)
        self._remove_subtypes(azc, pub.subtypes)
        await (await azc.async_unregister_service(pub.lpd))
        await (await azc.async_unregister_service(pub.ipp))
        self._renamed.pop(pub.service.instance, None)
        log.info(
            "%s",
            Line("printer withdrawn", printer=printer, name=f"{pub.instance}.{dnssd.IPP_TYPE}"),
        )

    # -- conflicts after publication (RFC 6762 section 9) ------------------------------
    def _listen(self, azc: AsyncZeroconf) -> None:
        if self._listening is not azc:
            azc.zeroconf.async_add_listener(self._listener, None)
            self._listening = azc

    def _remember(self, *infos: ServiceInfo) -> None:
        for info in infos:
            ours = self._ours.setdefault(info.key, set())
            ours.add(("SRV", (info.server or "").lower(), info.port or 0))
            ours.add(("TXT", info.text))

    def _forget(self, *infos: ServiceInfo) -> None:
        """Drop what :meth:`_remember` noted for names that were not taken after all
        (unless another of our printers holds them)."""
        held = {k for p in self._published.values() for k in (p.ipp.key, p.lpd.key)}
        for info in infos:
            if info.key not in held:
                self._ours.pop(info.key, None)

    def heard(self, records: list[tuple[str, dnssd.RecordData]]) -> None:
        """SRV/TXT answers just received (lower-cased name, data): a printer whose
        name another host now announces with other data is renamed (RFC 6762 section
        9: on a conflict after probing, the host MUST probe again; here with the next
        name, as CUPS and mDNSResponder do)."""
        held = {k for p in self._published.values() for k in (p.ipp.key, p.lpd.key)}
        lost = dnssd.conflicts({k: v for k, v in self._ours.items() if k in held}, records)
        for pub in list(self._published.values()):
            if {pub.ipp.key, pub.lpd.key} & lost and pub.service.printer not in self._renaming:
                task = self._tasks.spawn(
                    self._rename(pub.service.printer), name=f"printer-rename-{pub.instance}"
                )
                self._renaming[pub.service.printer] = task

    async def _rename(self, printer: str) -> None:
        try:
            async with self._lock:
                pub = self._published.get(printer)
                if pub is None or self._withdrawn:
                    return
                self._conflicts_after += 1
                log.warning(
                    "%s",
                    Line(
                        "printer name conflict",
                        printer=printer,
                        name=f"{pub.instance}.{dnssd.IPP_TYPE}",
                        next=dnssd.alternative_name(pub.service.instance, pub.n + 1),
                        reason="another host announces it with other data (RFC 6762 section 9)",
                    ),
                )
                await self._guarded(printer, "withdraw", self._unpublish(printer))
                await self._guarded(printer, "publish", self._publish(pub.service, pub.n + 1))
        finally:
            self._renaming.pop(printer, None)

    async def _unpublish_all(self) -> None:
        for printer in list(self._published):
            await self._unpublish(printer)


# -- wiring into the edge ------------------------------------------------------------------


@dataclass(frozen=True)
class MdnsWithPrintersStatistics:
    """What :meth:`MdnsWithPrinters.statistics` reports: the publisher's statistics
    (lan.mdns.MdnsStatistics for the edge's names) and the printers'."""

    publisher: Any
    printers: PrinterSyncStatistics


class MdnsWithPrinters:
    """The edge's mDNS presence: the names' records and HQ's printers, one life cycle.

    The printers share the names' responder, so they start after it, stop before it,
    and are withdrawn and announced with it.
    """

    def __init__(self, publisher: MdnsPublisher, printers: PrinterAdvertiser) -> None:
        self.publisher = publisher
        self.printers = printers

    def __repr__(self) -> str:
        return f"<MdnsWithPrinters {self.publisher!r} {self.printers!r}>"

    def statistics(self) -> MdnsWithPrintersStatistics:
        """The names' publisher's statistics and the printers' (one value)."""
        return MdnsWithPrintersStatistics(self.publisher.statistics(), self.printers.statistics())

    async def start(self) -> None:
        await self.publisher.start()
        await self.printers.start()

    async def stop(self) -> None:
        try:
            await self.printers.stop()
        finally:
            await self.publisher.stop()

    async def withdraw(self) -> None:
        await self.printers.withdraw()
        await self.publisher.withdraw()

    async def announce(self) -> None:
        await self.publisher.announce()
        await self.printers.announce()


def with_printers(
    publisher: MdnsPublisher, edge: Edge, host: str | None = None
) -> MdnsPublisher | MdnsWithPrinters:
    """``publisher`` alone, or with HQ's printers when this office advertises them.

    Printers need the ``ipp`` service in the bundle, an IPP listener (``ports.ipp``),
    ``printers.advertise`` and a host name on ``lan.address`` (where the IPP listener
    is) to be their SRV target: ``host`` (one of ``publisher``'s names: the print host
    of a printing-only office, :mod:`spokeshare.printing.print_host`), else the first
    virtual name there; each missing piece is said in one log line.
    """
    cfg = edge.cfg
    if not cfg.printers.advertise:
        return publisher
    port = cfg.ports.get("ipp", 0)
    if "ipp" not in edge.bundle.services or port <= 0:
        log.info(
            "%s",
            Line("printers not advertised", reason="this office has no IPP service or listener"),
        )
        return publisher
    name = host or next(
        (n.name for n in cfg.names if not n.address or n.address == cfg.lan_address), None
    )
    if name is None:
        log.warning(
            "%s",
            Line(
                "printers not advertised",
                address=cfg.lan_address,
                reason="no virtual name answers on lan.address, where the IPP listener is",
                fix="give one name no address of its own",
            ),
        )
        return publisher
    lpd = cfg.ports.get("lpd", 0) if "lpd" in edge.bundle.services else 0
    host = f"{name}.local."
    addresses = list(publisher.infos(name)[0].addresses)  # exactly the name's A/AAAA

    async def fetch() -> bytes:
        return await fetch_printers(edge, f"{name}.local:{port}")

    advertiser = PrinterAdvertiser(
        publisher, fetch, host, addresses, port, lpd_port=max(lpd, 0),
        interval=cfg.printers.sync_interval,
        host_owned=lambda: name in publisher.statistics().published,
    )  # fmt: skip
    # A host name lost to another host after start (RFC 6762 section 9), or won back:
    # sync at once, so the printers stop (or start) pointing at it now.
    publisher.watch_hosts(advertiser._wake.set)
    return MdnsWithPrinters(publisher, advertiser)
