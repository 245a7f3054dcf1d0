"""mDNS / DNS-SD for the edge's virtual names, through python-zeroconf.

Per virtual name ``NAME`` (lan-presence.md §4.1; RFC 6762, RFC 6763):

- ``NAME.local.`` A (and AAAA when a link-local IPv6 is configured): the SRV
  target, published by zeroconf from ``ServiceInfo.server`` (host TTL 120 s);
- ``NAME._smb._tcp.local.`` SRV 0 0 <smb_port> ``NAME.local.``, TXT one empty
  string, PTR from ``_smb._tcp.local.`` (RFC 6763 §4, §6; other TTLs 4500 s);
- ``NAME._device-info._tcp.local.`` TXT ``model=<mdns_model>`` (default ``RackMac``),
  which Finder uses to pick the icon (what Samba publishes, port 0).

zeroconf probes each unique record (RFC 6762 §8.1: three probes 250 ms apart),
announces (§8.3), answers legacy unicast queries (§6.7, which is what makes
``dig -p 5353 @224.0.0.251`` work), and sends goodbyes with TTL 0 (§10.1) when a
service is unregistered. A name another host already holds makes registration
raise ``NonUniqueNameException``: the publisher logs the conflict, records it in
:meth:`MdnsPublisher.statistics` and goes on with the other names.

A conflict after start (RFC 6762 §9: another host answers for a held ``NAME.local``
with other data, heard in any response) resets that name to probing: its records are
withdrawn (goodbyes), it is probed again (after §8.1's rate limit, see
:mod:`spokeshare.lan.mdns_defence`), and it is published again if nobody answers the
probes, or else left to the other host and rechecked like a name found taken at start.
The edge's other names, and every other protocol, go on meanwhile.

The responder is bound to the LAN interface address only (``interfaces=[ipv4]``),
so it never answers on, or with the address of, another interface.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zeroconf import IPVersion, NonUniqueNameException, RecordUpdateListener, ServiceInfo
from zeroconf._dns import DNSAddress, DNSPointer, DNSService
from zeroconf.asyncio import AsyncZeroconf

from spokeshare.errors import DecodeError
from spokeshare.lan import interfaces as interfaces_mod
from spokeshare.lan import mdns_defence
from spokeshare.lan.ratelimit import AnswerBudget, Budget
from spokeshare.lan.recheck import RECHECK_LONGEST, recheck_delay
from spokeshare.logfmt import Line
from spokeshare.tasks import TaskSet

if TYPE_CHECKING:
    from spokeshare.lan.discovery_settings import DiscoverySettings

log = logging.getLogger("spokeshare.lan.discovery")

SMB_TYPE = "_smb._tcp.local."
DEVICE_INFO_TYPE = "_device-info._tcp.local."
#: The longest wait between two probes of a name in conflict (our choice, as for
#: NetBIOS names): the first comes 5 s after the conflict, the waits double up to this
#: (spokeshare.lan.recheck); once its other owner is gone the name is published again.
CONFLICT_RECHECK_INTERVAL = RECHECK_LONGEST
#: Unicast answers (legacy unicast, RFC 6762 §6.7, and QU answers, §5.4) per
#: destination and for everyone: zeroconf limits its multicast answers (one per
#: record per second, §6) but answers every unicast query, so a spoofed source could
#: be sent answers it never asked for (docs/lan-hardening.md).
UNICAST_BURST_PER_SOURCE = 10.0
UNICAST_RATE_PER_SOURCE = 5.0
UNICAST_BURST_GLOBAL = 50.0
UNICAST_RATE_GLOBAL = 25.0


@dataclass(frozen=True)
class MdnsStatistics:
    published: tuple[str, ...]
    conflicts: tuple[str, ...]
    withdrawn: bool
    #: Unicast answers zeroconf wanted to send and the budget refused.
    rate_limited: int = 0
    #: Names published again after a conflict (the other owner went away).
    reclaimed: int = 0
    #: Conflicts heard after publication (RFC 6762 §9), each a reset to probing.
    conflicts_after_start: int = 0
    #: Simultaneous probes lost (RFC 6762 §8.2): another host probed one of our host
    #: names with lexicographically later data; we waited a second and probed again.
    probe_tie_breaks_lost: int = 0
    #: Unicast answers not sent: the asker is not on the office link (RFC 6762 §11).
    off_link_dropped: int = 0


class _HostConflictListener(RecordUpdateListener):
    """Hands the address records of every response the responder receives to the
    publisher's conflict check (zeroconf's public listener interface, not a fork:
    zeroconf only caches a conflicting record once a name is published)."""

    def __init__(self, publisher: MdnsPublisher) -> None:
        self.publisher = publisher

    def async_update_records(self, zc: Any, now: float, records: list[Any]) -> None:
        # zeroconf also calls listeners with the records its cache expires (every 10 s,
        # as RecordUpdate(record, record)): an answer heard minutes ago, not a new one.
        heard = [
            mdns_defence.HeardAddress(update.new.key, bytes(update.new.address), update.new.ttl)
            for update in records
            if isinstance(update.new, DNSAddress)
            and len(update.new.address) in (4, 16)
            and not update.new.is_expired(now)
        ]
        if heard:
            self.publisher.heard(heard, now / 1000.0)  # zeroconf's clock: milliseconds


class MdnsPublisher:
    """Publishes and withdraws the mDNS/DNS-SD records of every virtual name."""

    def __init__(self, settings: DiscoverySettings) -> None:
        self.settings = settings
        self._zc: AsyncZeroconf | None = None
        self._registered: list[ServiceInfo] = []
        self._published: list[str] = []
        self._conflicts: list[str] = []
        self._withdrawn = False
        self._budget = AnswerBudget(
            Budget(UNICAST_BURST_PER_SOURCE, UNICAST_RATE_PER_SOURCE),
            Budget(UNICAST_BURST_GLOBAL, UNICAST_RATE_GLOBAL),
        )
        self._reclaimed = 0
        #: The conflict re-check and the resets to probing after a conflict.
        self._tasks = TaskSet(log, "mdns task")
        #: One probe-and-publish at a time (start, re-checks, resets after conflicts).
        self._lock = asyncio.Lock()
        self._probe_rate = mdns_defence.ProbeRate()
        self._resetting: dict[str, asyncio.Task[None]] = {}
        self._conflicts_after = 0
        #: name in conflict -> probes in a row that found it taken, and its re-check.
        self._checks_failed: dict[str, int] = {}
        self._rechecks: dict[str, asyncio.Task[None]] = {}
        #: host name -> when (seconds, zeroconf's clock) another host last answered
        #: for it with other data, heard through the listener whether we hold the
        #: name or not: zeroconf drops a packet identical to one received within the
        #: last second and keeps the first copy of a cached record, so neither its
        #: cache nor one probe window shows every answer of a host repeating itself.
        self._claims: dict[str, float] = {}
        #: name -> the moment its reset to probing began (a claim heard later counts).
        self._probing_since: dict[str, float] = {}
        self._own: dict[str, frozenset[bytes]] | None = None
        self._host_watchers: list[Callable[[], None]] = []
        #: host name being probed (lower-cased, trailing dot) -> the records our probes
        #: propose (RFC 6762 §8.2), and those that lost a tie-break since the last probe.
        self._probing: dict[str, tuple[mdns_defence.ProbeRecord, ...]] = {}
        self._deferred: set[str] = set()
        self._tie_breaks_lost = 0
        #: Unicast answers not sent: the asker is not on the office link (RFC 6762 §11).
        self.off_link_dropped = 0

    def __repr__(self) -> str:
        return f"<MdnsPublisher {','.join(self._published)} withdrawn={self._withdrawn}>"

    def statistics(self) -> MdnsStatistics:
        return MdnsStatistics(
            tuple(self._published),
            tuple(self._conflicts),
            self._withdrawn,
            self._budget.refused_source + self._budget.refused_global,
            self._reclaimed,
            self._conflicts_after,
            self._tie_breaks_lost,
            self.off_link_dropped,
        )

    @property
    def zeroconf(self) -> AsyncZeroconf | None:
        """The running responder, or None before start / after stop. HQ's printers
        (:mod:`spokeshare.printing.printer_sync`) are published through it too: one
        responder per interface (RFC 6762 section 15)."""
        return self._zc

    def infos(self, name: str) -> tuple[ServiceInfo, ...]:
        """The ``_smb._tcp`` and ``_device-info._tcp`` records of one virtual name
        (the first one's addresses are the name's A/AAAA, probed before publishing;
        a subclass may publish other records for its names)."""
        s = self.settings
        own = dict(s.name_addresses).get(name, s.ipv4)
        addresses = [ipaddress.IPv4Address(own).packed]
        own6 = s.ipv6_of(name)  # only an address whose listeners serve this name
        if own6 is not None:
            addresses.append(ipaddress.IPv6Address(own6.split("%", 1)[0]).packed)
        server = f"{name}.local."
        smb = ServiceInfo(
            SMB_TYPE,
            f"{name}.{SMB_TYPE}",
            port=s.smb_port,
            properties={},
            server=server,
            addresses=addresses,
        )
        device = ServiceInfo(
            DEVICE_INFO_TYPE,
            f"{name}.{DEVICE_INFO_TYPE}",
            port=0,
            properties={"model": s.mdns_model},
            server=server,
            addresses=addresses,
        )
        return smb, device

    async def start(self) -> None:
        s = self.settings
        interfaces: list[str | int] = [s.ipv4]
        version = IPVersion.V4Only
        if s.ipv6_link_local is not None:
            interfaces.append(socket.if_nametoindex(s.interface))
            version = IPVersion.All
        self._zc = AsyncZeroconf(interfaces=interfaces, ip_version=version)
        # Host names answered for ANY questions and probes (RFC 6762 §8.1, §9): set
        # before the listeners exist (zeroconf creates them in a task, each taking
        # zc.query_handler), so every one of them calls this handler.
        from spokeshare.lan.mdns_defence import HostNameQueryHandler

        handler = HostNameQueryHandler(self._zc.zeroconf)
        handler.probe_heard = self.probe_heard
        self._zc.zeroconf.query_handler = handler
        self._link_rules(self._zc)  # innermost: the budget below charges what it sends
        self._budget_unicast(self._zc)
        self._zc.zeroconf.async_add_listener(_HostConflictListener(self), None)
        # RFC 6762 §11: every response leaves with IP TTL / hop limit 255, unicast ones
        # too (QU answers to port 5353, legacy answers). zeroconf sets only the
        # multicast TTL; set the unicast one on each of its sockets once they exist.
        await self._zc.zeroconf.async_wait_for_start()
        engine = self._zc.zeroconf.engine
        for transport in (*engine.readers, *engine.senders):
            _unicast_ttl_255(transport)
        await self._register_all()

    def _budget_unicast(self, azc: AsyncZeroconf) -> None:
        """Wrap zeroconf's send (not a fork: one attribute on our own instance) so
        that unicast answers are charged to :attr:`_budget`; multicast ones (addr
        None) pass, zeroconf already limits those per record."""
        zc = azc.zeroconf
        send = zc.async_send
        budget = self._budget

        def budgeted_send(out: Any, addr: str | None = None, *args: Any, **kw: Any) -> None:
            if addr is not None and not budget.allow(addr, time.monotonic()):
                return
            send(out, addr, *args, **kw)

        zc.async_send = budgeted_send  # type: ignore[method-assign]

    # -- on-link and legacy-unicast rules (RFC 6762 §11, §6.7) ------------------------
    def _link_rules(self, azc: AsyncZeroconf) -> None:
        """Wrap zeroconf's send (one attribute on our own instance, not a fork):

        - a unicast answer to a source that is not on the office link is dropped
          (RFC 6762 §11: such queries MUST be ignored);
        - unicast answers leave with IP TTL / hop limit 255 (§11 SHOULD);
        - a legacy unicast answer (querier's port not 5353) gets every TTL capped at
          10 s and no cache-flush bit (§6.7; zeroconf echoes ID and question).
        """
        from zeroconf._core import async_send_with_transport

        from spokeshare.lan import onlink

        zc = azc.zeroconf
        send = zc.async_send
        s = self.settings
        try:
            v4 = interfaces_mod.ipv4_interface(s.interface, s.ipv4)
            link = onlink.Link((v4.network,))
        except Exception:  # noqa: BLE001 - no netmask: the interface address alone
            link = onlink.Link.of([f"{s.ipv4}/32", *(f"{a}/32" for _, a in s.name_addresses)])
        self._link = link

        def ruled_send(
            out: Any,
            addr: str | None = None,
            port: int = MDNS_PORT,
            v6_flow_scope: Any = (),
            transport: Any = None,
        ) -> None:
            if addr is None:
                send(out, addr, port, v6_flow_scope, transport)
                return
            if not link.on_link(addr):
                self.off_link_dropped += 1
                return
            senders = [transport] if transport else list(zc.engine.senders)
            for t in senders:
                _unicast_ttl_255(t)
            if port == MDNS_PORT:
                send(out, addr, port, v6_flow_scope, transport)
                return
            for num, packet in enumerate(out.packets()):
                try:
                    fixed = onlink.legacy_unicast_response(packet)
                except ValueError:
                    continue
                for t in senders:
                    async_send_with_transport(False, t, fixed, num, out, addr, port, v6_flow_scope)

        zc.async_send = ruled_send  # type: ignore[method-assign]

    # -- probing the host name (RFC 6762 §8.1) ------------------------------------------
    async def _host_name_taken(self, name: str, info: ServiceInfo) -> bool:
        """Probe ``NAME.local`` before publishing it: zeroconf probes the service
        instance names only, not the A/AAAA host name (a unique record too, §8.1).

        Three queries for ``NAME.local`` type ANY, 250 ms apart, our address records
        in the authority section (§8.2); then any address record for the name that
        came in since the first probe, with an address that is not ours, means
        another host holds it. zeroconf caches every record it hears, so the answers
        are read from its cache, keeping only those created after the probing began.

        Another host probing the same name meanwhile with lexicographically later
        records (:meth:`probe_heard`, §8.2) wins: we wait :data:`PROBE_DEFER` (1 s)
        and start the three probes again, so that its announcement, or its answer to
        our next probe, is what we find. After :data:`MAX_PROBE_DEFERS` lost
        tie-breaks in one round the name counts as taken.
        """
        from zeroconf import current_time_millis
        from zeroconf._dns import DNSAddress, DNSQuestion
        from zeroconf._protocol.outgoing import DNSOutgoing
        from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_A, _TYPE_AAAA, _TYPE_ANY

        zc = getattr(self._zc, "zeroconf", None)  # None before start (or a stand-in)
        if zc is None:
            return False
        host = f"{name}.local."
        ours = {bytes(a) for a in info.addresses_by_version(IPVersion.All)}
        started = current_time_millis()
        key = host.lower()
        self._probing[key] = tuple(
            mdns_defence.ProbeRecord(_CLASS_IN, _TYPE_A if len(p) == 4 else _TYPE_AAAA, p)
            for p in ours
        )
        self._deferred.discard(key)
        # zeroconf's listener hands queries to the query handler (and so probes to
        # probe_heard) only while its registry has entries: the first name probed at
        # start would never hear another prober. Its public flag is raised while we
        # probe (one attribute of our own instance; the handler finds nothing to
        # answer in an empty registry) and set from the registry again afterwards.
        registry = zc.registry
        forced = not registry.has_entries
        if forced:
            registry.has_entries = True
        try:
            sent = defers = 0
            while sent < PROBE_COUNT:
                out = DNSOutgoing(_FLAGS_QR_QUERY)
                out.add_question(DNSQuestion(host, _TYPE_ANY, _CLASS_IN))
                for packed in ours:  # §10.2: no cache-flush bit in a query's records
                    rrtype = _TYPE_A if len(packed) == 4 else _TYPE_AAAA
                    # add_authorative_answer takes pointers only; the list takes any record
                    record = DNSAddress(host, rrtype, _CLASS_IN, HOST_TTL, packed)
                    out.authorities.append(record)  # type: ignore[arg-type]
                zc.async_send(out)
                sent += 1
                await asyncio.sleep(PROBE_INTERVAL)
                if key in self._deferred:  # §8.2: lost a tie-break; defer, then again
                    self._deferred.discard(key)
                    defers += 1
                    if defers >= mdns_defence.MAX_PROBE_DEFERS:
                        return True
                    await asyncio.sleep(mdns_defence.PROBE_DEFER)
                    # The winner's probes heard while we waited are the same round's.
                    self._deferred.discard(key)
                    sent = 0
        finally:
            self._probing.pop(key, None)
            self._deferred.discard(key)
            if forced:
                registry.has_entries = bool(registry.async_get_service_infos())
        for entry in zc.cache.entries_with_name(host.lower()):
            address = getattr(entry, "address", None)
            if address is not None and entry.created >= started and bytes(address) not in ours:
                return True
        # A name reset to probing after a conflict (§9) is in probing state from that
        # moment: another answer heard since then (the one that started it excluded)
        # means the other host still holds it. At start, answers since the first probe.
        since = self._probing_since.get(name, started / 1000.0)
        claimed = self._claims.get(host.lower())
        return claimed is not None and claimed > since

    def probe_heard(self, packet: bytes, now: float) -> None:
        """A probe received (``packet``: the whole message; ``now``: its arrival in
        seconds on zeroconf's clock, which the decision does not need): for each host
        name we are probing that it also probes, the §8.2 tie-break. A lost one
        makes :meth:`_host_name_taken` defer and probe again; a won one or identical
        data (our own probe looped back) changes nothing. A message zeroconf parsed
        but we cannot is ignored."""
        for host, ours in self._probing.items():
            try:
                outcome = mdns_defence.simultaneous_probe(packet, host, ours)
            except DecodeError as exc:
                log.debug("mdns: probe not read (%s)", exc)
                return
            if outcome is mdns_defence.TieBreak.LOST and host not in self._deferred:
                self._deferred.add(host)
                self._tie_breaks_lost += 1
                log.info(
                    "%s",
                    Line(
                        "name probe deferred",
                        protocol="mdns",
                        name=host.rstrip("."),
                        retry_in_s=round(mdns_defence.PROBE_DEFER),
                        reason="another host probes it with later data (RFC 6762 section 8.2)",
                    ),
                )

    def _schedule_recheck(self, name: str) -> float:
        """Probe ``name`` (in conflict) again on spokeshare.lan.recheck's schedule;
        the seconds until then. A re-check already due stays as it is."""
        failed = self._checks_failed[name] = self._checks_failed.get(name, 0) + 1
        delay = recheck_delay(failed, CONFLICT_RECHECK_INTERVAL)
        if name not in self._rechecks:
            self._rechecks[name] = self._tasks.spawn(
                self._recheck_later(name, delay), name=f"mdns-recheck-{name}"
            )
        return delay

    async def _recheck_later(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self._rechecks.pop(name, None)
        if name in self._conflicts and not self._withdrawn:
            await self._register_all(only=name)

    # -- conflicts after start (RFC 6762 §9) ------------------------------------------
    def watch_hosts(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (no arguments, on the event loop) when a host name the
        edge held is lost after start or published again after a conflict: records
        published elsewhere with this publisher's host names as their target (HQ's
        printers) make zeroconf answer for those names too, so their owner must look
        at :meth:`statistics` again at once rather than at its next sync."""
        self._host_watchers.append(callback)

    def _hosts_changed(self) -> None:
        for callback in self._host_watchers:
            callback()

    def held_addresses(self) -> dict[str, frozenset[bytes]]:
        """Host name we hold now (``name.local.``, lower-cased) -> its addresses
        (packed, both families), as published."""
        out: dict[str, frozenset[bytes]] = {}
        for name in self._published:
            host = f"{name}.local."
            packed = {
                bytes(a)
                for info in self._registered
                if info.server == host
                for a in info.addresses_by_version(IPVersion.All)
            }
            out[host.lower()] = frozenset(packed)
        return out

    def own_addresses(self) -> dict[str, frozenset[bytes]]:
        """Every configured host name (``name.local.``, lower-cased) -> the addresses
        it is published with (packed), held now or not."""
        if self._own is None:
            self._own = {
                f"{n}.local.".lower(): frozenset(
                    bytes(a) for a in self.infos(n)[0].addresses_by_version(IPVersion.All)
                )
                for n in self.settings.names
            }
        return self._own

    def heard(self, records: list[mdns_defence.HeardAddress], now: float) -> None:
        """Address records just received (``now`` in seconds, zeroconf's clock): a
        held host name that another host answers for with other data is reset to
        probing (§9), one reset in flight per name; every such answer, held name or
        not, is noted for the probes (:meth:`_host_name_taken`)."""
        for host in mdns_defence.conflicts(self.own_addresses(), records):
            self._claims[host] = now
        if self._withdrawn:
            return
        lost = mdns_defence.conflicts(self.held_addresses(), records)
        by_host = {f"{n}.local.".lower(): n for n in self._published}
        for host, address in lost.items():
            name = by_host.get(host)
            if name is None or name in self._resetting:
                continue
            self._conflicts_after += 1
            delay = self._probe_rate.conflict(now)
            log.warning(
                "%s",
                Line(
                    "name conflict",
                    protocol="mdns",
                    name=f"{name}.local",
                    owner=ipaddress.ip_address(address),
                    interface=self.settings.interface,
                    reason="another host answers for it after start (RFC 6762 section 9); "
                    "probing the name again",
                ),
            )
            self._probing_since[name] = now
            task = self._tasks.spawn(
                self._reset_to_probing(name, delay), name=f"mdns-reprobe-{name}"
            )
            self._resetting[name] = task

    async def _reset_to_probing(self, name: str, delay: float) -> None:
        try:
            async with self._lock:
                if name not in self._published or self._zc is None:
                    return
                for info in [i for i in self._registered if i.server == f"{name}.local."]:
                    self._registered.remove(info)
                    await (await self._zc.async_unregister_service(info))
                self._published.remove(name)
            self._hosts_changed()
            if delay:
                await asyncio.sleep(delay)
            await self._register_all()
            if name in self._published:
                self._hosts_changed()
        finally:
            self._resetting.pop(name, None)
            self._probing_since.pop(name, None)

    def _forget_own_pointer(self, info: ServiceInfo) -> None:
        """Drop cached PTR records ``info.type`` -> ``info.name`` unless another host
        holds that instance (a cached SRV for it with another target or port).

        zeroconf refuses to register an instance while its cache holds such a PTR
        (NonUniqueNameException), and it caches what it hears, its own multicast
        answers included: an answer queued (RFC 6762 §6, 20-120 ms) before a reset to
        probing and sent after its goodbyes (TTL 0) leaves our own PTR, TTL 75 minutes,
        in the cache, and the name could not be published again for that long (seen in
        the lab fuzz). A bare PTR proves no other owner: SRV records name one."""
        zc = getattr(self._zc, "zeroconf", None)
        if zc is None:
            return
        instance = info.name.lower()
        for record in zc.cache.entries_with_name(instance):
            if isinstance(record, DNSService) and (
                record.server.lower() != (info.server or "").lower() or record.port != info.port
            ):
                return
        ours = [
            record
            for record in zc.cache.entries_with_name(info.type.lower())
            if isinstance(record, DNSPointer) and record.alias.lower() == instance
        ]
        if ours:
            zc.cache.async_remove_records(ours)

    async def _register_all(self, only: str | None = None) -> None:
        """Probe and publish every name not published yet (or only ``only``)."""
        async with self._lock:
            await self._register_all_locked(only)

    async def _register_all_locked(self, only: str | None = None) -> None:
        if self._zc is None:
            return
        for name in self.settings.names:
            if name in self._published or only not in (None, name):
                continue
            infos = self.infos(name)
            done: list[ServiceInfo] = []
            try:
                if await self._host_name_taken(name, infos[0]):
                    raise NonUniqueNameException(f"{name}.local")
                for info in infos:
                    self._forget_own_pointer(info)
                    await (await self._zc.async_register_service(info))
                    self._registered.append(info)
                    done.append(info)
            except NonUniqueNameException:
                # Undo a half-published name, so that the re-check starts clean.
                for info in done:
                    self._registered.remove(info)
                    await (await self._zc.async_unregister_service(info))
                log.log(
                    logging.DEBUG if name in self._conflicts else logging.WARNING,
                    "%s",
                    Line(
                        "name conflict",
                        protocol="mdns",
                        name=f"{name}.local",
                        interface=self.settings.interface,
                        recheck_in_s=round(self._schedule_recheck(name)),
                        reason="already in use on the LAN (RFC 6762 section 8.1)",
                    ),
                )
                if name not in self._conflicts:
                    self._conflicts.append(name)
                continue
            self._checks_failed.pop(name, None)
            reclaimed = name in self._conflicts
            if reclaimed:
                self._conflicts.remove(name)
                self._reclaimed += 1
                log.warning(
                    "%s",
                    Line("name reclaimed", protocol="mdns", name=f"{name}.local",
                         interface=self.settings.interface, reason="its other owner is gone"),
                )  # fmt: skip
            if name not in self._published:
                self._published.append(name)
            log.info(
                "%s",
                Line("name claimed", protocol="mdns", name=f"{name}.local",
                     interface=self.settings.interface),
            )  # fmt: skip
            if reclaimed:
                self._hosts_changed()

    async def _unregister_all(self) -> None:
        if self._zc is None:
            return
        for task in list(self._resetting.values()):
            task.cancel()
        async with self._lock:
            for info in self._registered:
                await (await self._zc.async_unregister_service(info))
            self._registered.clear()
            self._published.clear()

    async def withdraw(self) -> None:
        """Send goodbyes (TTL 0) for every record; keep the responder running."""
        self._withdrawn = True
        await self._unregister_all()
        names = ",".join(self.settings.names)
        log.info("%s", Line("names withdrawn", protocol="mdns", names=names))

    async def announce(self) -> None:
        """Probe and announce every name again."""
        self._withdrawn = False
        await self._register_all()

    async def stop(self) -> None:
        """Goodbyes, then close the responder."""
        if self._zc is None:
            return
        await self._tasks.aclose()  # the re-check and any reset, cancelled and awaited
        await self._unregister_all()
        await self._zc.async_close()
        self._zc = None


#: RFC 6762 §3: the mDNS port; a query from another port is a legacy unicast query.
MDNS_PORT = 5353
#: RFC 6762 §11: responses (unicast ones too) SHOULD carry IP TTL / hop limit 255.
UNICAST_TTL = 255


def _unicast_ttl_255(transport: Any) -> None:
    """IP TTL and hop limit 255 for unicast datagrams from a zeroconf socket. An IPv6
    socket gets both: zeroconf's IPv6 listening socket is dual-stack, and what it sends
    to an IPv4 querier (a QU answer to a query that came in as a v4-mapped address)
    takes the socket's IPv4 TTL, not its hop limit (measured: 64 without it)."""
    sock = getattr(transport, "sock", None)
    if sock is None:
        return
    options = [(socket.IPPROTO_IP, socket.IP_TTL)]
    if getattr(transport, "is_ipv6", False):
        options.append((socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS))
    for level, option in options:
        try:
            sock.setsockopt(level, option, UNICAST_TTL)
        except OSError:
            continue  # the kernel default then; answers still go out


#: RFC 6762 §10: host address records' TTL (what zeroconf publishes them with).
HOST_TTL = 120
#: RFC 6762 §8.1: three probes, 250 ms apart.
PROBE_COUNT = 3
PROBE_INTERVAL = 0.25
