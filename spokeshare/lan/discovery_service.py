"""asyncio adapters for LLMNR and WS-Discovery on the office LAN interface.

Thin shells around the sans-IO cores in :mod:`spokeshare.lan.llmnr` and
:mod:`spokeshare.lan.wsd`: they bind, receive, call the core, send. Every socket
is bound to the LAN interface (its address, the multicast group joined on its
index, ``SO_BINDTODEVICE`` where permitted, ``IP_MULTICAST_ALL`` off), so the
edge never answers on, or with the address of, another interface.

Each service has the same life cycle, driven by the edge:

- ``await start()`` binds and begins answering (WSD also sends Hello);
- ``await withdraw()`` hides the names while HQ is unreachable (WSD sends Bye,
  LLMNR stops answering, HTTP metadata answers 503);
- ``await announce()`` shows them again (Hello, answers);
- ``await stop()`` withdraws, waits for the Byes to go out, closes everything.

What they need is :class:`spokeshare.lan.discovery_settings.DiscoverySettings`: the
LAN presence validated at config load, plus what the edge learns at start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from spokeshare.errors import DecodeError
from spokeshare.lan import NEED_DATA, counters, llmnr, wsd
from spokeshare.lan.discovery_settings import DiscoverySettings
from spokeshare.lan.hostile import GuardedDatagramProtocol, RateLimitedLog
from spokeshare.logfmt import Line
from spokeshare.tasks import TaskSet

log = logging.getLogger("spokeshare.lan.discovery")

#: Linux values missing from the socket module (linux/in.h, linux/in6.h).
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
#: RFC 4795 §2.5: unicast LLMNR responses carry IPv4 TTL / hop limit 255.
LLMNR_UNICAST_TTL = 255
#: RFC 4795 §2.7 / §4.1: LLMNR_TIMEOUT, 1 s, how long a uniqueness query waits.
LLMNR_UNIQUENESS_WAIT = 1.0
#: Multicast stays on the link: TTL / hop limit 1 (RFC 4795 §2, WS-Discovery §2.4).
MULTICAST_TTL = 1
#: HTTP metadata connection budget: read the request and write the answer within
#: this time (Windows fetches metadata in one short request).
HTTP_TIMEOUT = 5.0
#: HTTP metadata connections open at once; more are closed at once (our bound: an
#: office's PCs fetch metadata a few at a time, after a Hello or a Probe).
HTTP_MAX_CONNECTIONS = 32
#: Bad packets: at most one debug line per source per this many seconds.
BAD_PACKET_LOG_INTERVAL = 10.0

# -- sockets ----------------------------------------------------------------------------


def _bind_to_device(sock: socket.socket, ifname: str) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode() + b"\0")
    except PermissionError:
        # Without CAP_NET_RAW the address binds and IP_MULTICAST_ALL=0 still keep
        # us on this interface; note it once per socket.
        log.debug("SO_BINDTODEVICE %s not permitted; relying on address binding", ifname)


def multicast_socket(group: str, port: int, settings: DiscoverySettings) -> socket.socket:
    """A socket receiving ``group``:``port`` on the settings' interface only."""
    idx = settings.ifindex
    if ":" in group:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        mreq6 = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", idx)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        _bind_to_device(sock, settings.interface)
        sock.bind((group, port, 0, idx))
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        mreqn = socket.inet_aton(group) + socket.inet_aton(settings.ipv4) + struct.pack("@i", idx)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        _bind_to_device(sock, settings.interface)
        sock.bind((group, port))
    sock.setblocking(False)
    return sock


def unicast_socket(
    local: str, port: int, settings: DiscoverySettings, unicast_ttl: int | None = None
) -> socket.socket:
    """A socket bound to the interface address; it sends to the group and replies."""
    idx = settings.ifindex
    if ":" in local:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, MULTICAST_TTL)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        if unicast_ttl is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, unicast_ttl)
        _bind_to_device(sock, settings.interface)
        sock.bind((local, port, 0, idx))
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        mreqn = socket.inet_aton("0.0.0.0") + socket.inet_aton(local) + struct.pack("@i", idx)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        if unicast_ttl is not None:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, unicast_ttl)
        _bind_to_device(sock, settings.interface)
        sock.bind((local, port))
    sock.setblocking(False)
    return sock


async def _endpoint(
    sock: socket.socket,
    on_datagram: Callable[[bytes, Any], None],
    hostile: RateLimitedLog,
    what: str,
) -> asyncio.DatagramTransport:
    """A datagram endpoint whose handler nothing escapes (hostile.GuardedDatagramProtocol)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: GuardedDatagramProtocol(on_datagram, hostile, what), sock=sock
    )
    return transport


# -- LLMNR -----------------------------------------------------------------------------


class LlmnrService:
    """LLMNR responder on UDP 5355: 224.0.0.252, and ff02::1:3 when IPv6 is configured."""

    def __init__(self, settings: DiscoverySettings) -> None:
        self.settings = settings
        self._link = settings.link()
        #: Queries not answered: the sender is not on the office link.
        self.off_link_dropped = 0
        self.core = llmnr.LlmnrResponder(
            settings.names,
            ttl=settings.llmnr_ttl,
            name_addresses=dict(settings.name_addresses),
            name_addresses6={n: settings.ipv6_of(n) for n in settings.names},
        )
        self._local = llmnr.InterfaceAddresses(settings.ipv4, settings.ipv6_link_local)
        self._own = {settings.ipv4, *(a for _, a in settings.name_addresses)}
        if settings.ipv6_link_local:
            self._own.add(settings.ipv6_link_local)
        self._own.update(a for _, a in settings.name_addresses6 if a)
        # LLMNR uniqueness and conflicts (RFC 4795 §4): llmnr.NameClaims decides.
        self.claims = llmnr.NameClaims(settings.names, self._own, wait=LLMNR_UNIQUENESS_WAIT)
        self._claims_timer: asyncio.TimerHandle | None = None
        self._transports: list[asyncio.DatagramTransport] = []
        self._replies: dict[int, asyncio.DatagramTransport] = {}
        self._hostile = RateLimitedLog(log, BAD_PACKET_LOG_INTERVAL)

    def __repr__(self) -> str:
        return f"<LlmnrService {self.settings.interface} {self.core!r}>"

    @property
    def conflicts(self) -> dict[str, str]:
        """Names another host answers for -> that host (we do not answer for them)."""
        return self.claims.conflicts()

    def statistics(self) -> llmnr.ResponderStatistics:
        return dataclasses.replace(
            self.core.statistics(),
            internal_errors=self._hostile.counts.get("internal_errors", 0),
            off_link_dropped=self.off_link_dropped,
            **dataclasses.asdict(self.claims.statistics()),
        )

    async def start(self) -> None:
        s = self.settings
        families: list[tuple[str, str, socket.AddressFamily]] = [
            (llmnr.MCAST_V4, s.ipv4, socket.AF_INET)
        ]
        if s.ipv6_link_local is not None:
            families.append((llmnr.MCAST_V6, s.ipv6_link_local, socket.AF_INET6))
        try:
            for group, local, family in families:
                uni = await _endpoint(
                    unicast_socket(local, s.llmnr_port, s, LLMNR_UNICAST_TTL),
                    self._received,
                    self._hostile,
                    "llmnr",
                )
                self._transports.append(uni)
                self._replies[family] = uni
                mc = await _endpoint(
                    multicast_socket(group, s.llmnr_port, s), self._received, self._hostile, "llmnr"
                )
                self._transports.append(mc)
        except OSError:
            await self.stop()
            raise
        await self._verify_unique()
        self.core.enabled = True
        answered = [n for n in s.names if n not in self.conflicts]
        log.info(
            "%s",
            Line("names announced", protocol="llmnr", names=",".join(answered),
                 interface=s.interface),
        )  # fmt: skip

    async def _verify_unique(self) -> None:
        """RFC 4795 §4.1: before answering, ask for each name on the link and wait
        LLMNR_TIMEOUT; a name another host answers for is not answered over LLMNR
        (the other protocols are unaffected) and is checked again, on
        spokeshare.lan.recheck's schedule, until it is free."""
        self._claims_run(self.claims.verify(time.monotonic()))
        await asyncio.sleep(LLMNR_UNIQUENESS_WAIT)
        self._claims_due()

    def _claims_run(self, commands: Sequence[llmnr.ClaimCommand]) -> None:
        s = self.settings
        for c in commands:
            if isinstance(c, llmnr.UniquenessQuery):
                for family, group in (
                    (socket.AF_INET, (llmnr.MCAST_V4, s.llmnr_port)),
                    (socket.AF_INET6, (llmnr.MCAST_V6, s.llmnr_port, 0, s.ifindex)),
                ):
                    transport = self._replies.get(family)
                    if transport is not None:
                        transport.sendto(c.data, group)
            elif isinstance(c, llmnr.LlmnrConflict):
                self.core.exclude(c.name)
                # A repeat (same owner at a re-check) is debug: one warning per owner.
                log.log(
                    logging.DEBUG if c.repeat else logging.WARNING,
                    "%s",
                    Line(
                        "name conflict",
                        protocol="llmnr",
                        name=c.name,
                        owner=c.owner,
                        interface=s.interface,
                        recheck_in_s=round(c.recheck_in),
                        reason="another host answers for it (RFC 4795 section 4.1)",
                    ),
                )
            else:
                self.core.include(c.name)
                log.info(
                    "%s",
                    Line("name reclaimed", protocol="llmnr", name=c.name, interface=s.interface,
                         reason="its other owner is gone"),
                )  # fmt: skip
        self._claims_rearm()

    def _claims_rearm(self) -> None:
        if self._claims_timer is not None:
            self._claims_timer.cancel()
            self._claims_timer = None
        due = self.claims.get_timer()
        if due is None or not self._transports:
            return
        delay = max(0.0, due - time.monotonic())
        self._claims_timer = asyncio.get_running_loop().call_later(delay, self._claims_due)

    def _claims_due(self) -> None:
        self._claims_timer = None
        self._claims_run(self.claims.handle_timer(time.monotonic()))

    def _received(self, data: bytes, addr: Any) -> None:
        source = str(addr[0])
        if not self._link.on_link(source):  # RFC 4795 §2.5: off-link senders get nothing
            self.off_link_dropped += 1
            return
        now = time.monotonic()
        try:  # answers to our uniqueness queries, C-bit queries (RFC 4795 §4)
            commands = self.claims.received(llmnr.decode(data), source, now)
        except DecodeError:
            commands = []  # counted and logged by core.handle below
        if commands:
            self._claims_run(commands)
        try:
            reply = self.core.handle(data, source, self._local, now)
        except DecodeError as exc:
            self._hostile(
                "bad_packets", source, "llmnr: dropped bad packet from %s: %s", source, exc
            )
            return
        if reply is None:
            return
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        transport = self._replies.get(family)
        if transport is not None:
            transport.sendto(reply, addr)

    async def withdraw(self) -> None:
        self.core.enabled = False
        log.info(
            "%s", Line("names withdrawn", protocol="llmnr", names=",".join(self.settings.names))
        )

    async def announce(self) -> None:
        self.core.enabled = True
        log.info(
            "%s",
            Line("names announced", protocol="llmnr", names=",".join(self.settings.names),
                 interface=self.settings.interface),
        )  # fmt: skip
        self._claims_run(self.claims.verify(time.monotonic()))  # RFC 4795 §4.1

    async def stop(self) -> None:
        self.core.enabled = False
        if self._claims_timer is not None:
            self._claims_timer.cancel()
            self._claims_timer = None
        for t in self._transports:
            t.close()
        self._transports.clear()
        self._replies.clear()


# -- WS-Discovery ----------------------------------------------------------------------


@dataclass
class _WsdFamily:
    local: str
    group: tuple[Any, ...]
    unicast: asyncio.DatagramTransport | None = None
    transports: list[asyncio.DatagramTransport] = field(default_factory=list)


class WsdService:
    """WS-Discovery target services for every virtual name, plus the HTTP metadata server."""

    def __init__(self, settings: DiscoverySettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._link = settings.link()
        #: Datagrams not answered: the sender is not on the office link.
        self.off_link_dropped = 0
        addresses = [settings.ipv4]
        if settings.ipv6_link_local is not None:
            addresses.append(settings.ipv6_link_local)
        self.counters = self._advance_counters(settings, addresses)
        self.endpoints = tuple(
            wsd.Endpoint.for_name(
                n, settings.workgroup, settings.uuid_namespace, self.counters.metadata_version
            )
            for n in settings.names
        )
        self.core = wsd.WsdHost(
            self.endpoints,
            addresses,
            instance_id=self.counters.instance_id,  # WS-Discovery §7: only grows
            rng=rng or random.SystemRandom(),
            http_port=settings.wsd_http_port,
        )
        self._families: dict[str, _WsdFamily] = {}
        self._servers: list[asyncio.Server] = []
        self._timer_task: asyncio.Task[None] | None = None
        self._tasks = TaskSet(log, "wsd timer task")
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._hostile = RateLimitedLog(log, BAD_PACKET_LOG_INTERVAL)
        self._http_connections = 0

    def __repr__(self) -> str:
        return f"<WsdService {self.settings.interface} {self.core!r}>"

    @staticmethod
    def _advance_counters(
        settings: DiscoverySettings, addresses: list[str]
    ) -> counters.WsdCounters:
        """This start's InstanceId and MetadataVersion, stored before first use."""
        digest = counters.metadata_digest(settings.names, settings.workgroup, addresses)
        previous = counters.load(settings.state_dir) if settings.state_dir else None
        now = counters.advance(previous, time.time(), digest)
        if settings.state_dir is not None:
            try:
                counters.store(settings.state_dir, now)
            except OSError as exc:
                log.warning(
                    "%s",
                    Line(
                        "state not written",
                        protocol="wsd",
                        file=settings.state_dir / counters.FILE_NAME,
                        error=exc,
                    ),
                )
        return now

    def statistics(self) -> wsd.HostStatistics:
        c = self._hostile.counts
        return dataclasses.replace(
            self.core.statistics(),
            internal_errors=c.get("internal_errors", 0),
            http_refused=c.get("http_refused", 0),
            http_bad=c.get("http_bad", 0),
            off_link_dropped=self.off_link_dropped,
        )

    async def start(self) -> None:
        s = self.settings
        idx = s.ifindex
        fams: list[tuple[str, tuple[Any, ...]]] = [(s.ipv4, (wsd.MCAST_V4, s.wsd_port))]
        if s.ipv6_link_local is not None:
            fams.append((s.ipv6_link_local, (wsd.MCAST_V6, s.wsd_port, 0, idx)))
        try:
            for local, group in fams:
                fam = _WsdFamily(local, group)
                self._families[local] = fam
                fam.unicast = await _endpoint(
                    unicast_socket(local, s.wsd_port, s),
                    partial(self._received, local, False),
                    self._hostile,
                    "wsd",
                )
                fam.transports.append(fam.unicast)
                mc = await _endpoint(
                    multicast_socket(str(group[0]), s.wsd_port, s),
                    partial(self._received, local, True),
                    self._hostile,
                    "wsd",
                )
                fam.transports.append(mc)
                # An IPv6 link-local listen address needs its scope (the interface).
                host = local if ":" not in local else f"{local}%{s.interface}"
                server = await asyncio.start_server(
                    self._http_client, host=host, port=s.wsd_http_port, reuse_address=True
                )
                self._servers.append(server)
        except OSError:
            await self.stop()
            raise
        self._timer_task = self._tasks.spawn(self._timer_loop(), name="wsd-timers")
        self.core.announce(time.monotonic())
        self._wake.set()
        log.info(
            "%s",
            Line(
                "names announced",
                protocol="wsd",
                names=",".join(ep.name for ep in self.endpoints),
                interface=s.interface,
                workgroup=s.workgroup,
            ),
        )

    def _received(self, local: str, multicast: bool, data: bytes, addr: Any) -> None:
        source = (str(addr[0]), int(addr[1]))
        if not self._link.on_link(source[0]):  # only office PCs (as LLMNR, mDNS)
            self.off_link_dropped += 1
            return
        try:
            self.core.handle_datagram(data, source, local, multicast, time.monotonic())
        except DecodeError as exc:
            self._hostile(
                "bad_packets", source[0], "wsd: dropped bad packet from %s: %s", source[0], exc
            )
            return
        self._wake.set()

    async def _timer_loop(self) -> None:
        while True:
            due = self.core.get_timer()
            self._wake.clear()
            now = time.monotonic()
            if due is None:
                self._idle.set()
                await self._wake.wait()
                continue
            if due > now:
                try:
                    await asyncio.wait_for(self._wake.wait(), due - now)
                except TimeoutError:
                    pass
                continue
            for dg in self.core.handle_timer(time.monotonic()):
                fam = self._families.get(dg.local)
                if fam is None or fam.unicast is None:
                    continue
                fam.unicast.sendto(dg.payload, dg.destination or fam.group)

    async def _http_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        if self._http_connections >= HTTP_MAX_CONNECTIONS:
            # Beyond the cap a connection is closed at once: held-open connections
            # from one host cannot starve Explorer's metadata requests for long.
            self._hostile(
                "http_refused",
                "cap",
                "wsd: http from %s refused: %d connections open",
                source,
                self._http_connections,
            )
            writer.transport.abort()
            return
        self._http_connections += 1
        try:
            # One budget for the whole exchange: reading, answering and writing.
            async with asyncio.timeout(HTTP_TIMEOUT):
                try:
                    request = await self._read_request(reader)
                except DecodeError as exc:
                    self._hostile("http_bad", source, "wsd: bad http from %s: %s", source, exc)
                    writer.write(wsd.build_http_response(400))
                    await writer.drain()
                    return
                if request is None:
                    return
                status, body = self.core.handle_http(request)
                log.debug("wsd: %s %s %s from %s", request.method, request.target, status, source)
                writer.write(wsd.build_http_response(status, body))
                await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("wsd: http connection from %s ended: %r", source, exc)
        except Exception as exc:  # noqa: BLE001 - top of the connection handler
            self._hostile("internal_errors", "http", "wsd: http from %s raised %r", source, exc)
        finally:
            self._http_connections -= 1
            writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> wsd.HttpRequest | None:
        """Read until one request is complete (None: the peer closed first); bounded by
        wsd.parse_http_request's limits, which raise DecodeError beyond them."""
        raw = b""
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                return None
            raw += chunk
            request = wsd.parse_http_request(raw)
            if request is not NEED_DATA:
                return request

    async def _flush(self, budget: float = 2.5) -> None:
        """Wait until queued datagrams (e.g. Byes) have gone out, at most ``budget`` s."""
        self._idle.clear()
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), budget)
        except TimeoutError:
            log.debug("wsd: datagrams still queued at stop: %r", self.core)

    async def withdraw(self) -> None:
        self.core.withdraw(time.monotonic())
        self._wake.set()
        names = ",".join(ep.name for ep in self.endpoints)
        log.info("%s", Line("names withdrawn", protocol="wsd", names=names))

    async def announce(self) -> None:
        self.core.announce(time.monotonic())
        self._wake.set()
        s = self.settings
        names = ",".join(ep.name for ep in self.endpoints)
        log.info(
            "%s",
            Line("names announced", protocol="wsd", names=names, interface=s.interface,
                 workgroup=s.workgroup),
        )  # fmt: skip

    async def stop(self) -> None:
        if self._timer_task is not None:
            self.core.withdraw(time.monotonic())
            await self._flush()
            # Cancelled and awaited; a cancellation of stop() itself still propagates.
            await self._tasks.aclose()
            self._timer_task = None
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers.clear()
        for fam in self._families.values():
            for t in fam.transports:
                t.close()
        self._families.clear()
