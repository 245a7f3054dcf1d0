"""The asyncio side of NetBIOS on the LAN: nbns on UDP 137 (names) and nbdgm on UDP 138 (browse).

Thin on purpose: it binds, receives, decodes, hands the packet to the pure cores
in :mod:`spokeshare.lan.netbios_core`, sends what they return and keeps one timer for
both. Everything that decides lives in the cores.

Sockets, per port (as nmbd does it, lan-presence.md §1.1): one bound to the
interface address (unicast in, and every packet out, so replies carry the LAN
address) and one bound to the subnet broadcast address (broadcasts in). Both have
SO_REUSEADDR and SO_BROADCAST, and SO_BINDTODEVICE when an interface name is
given, so nothing is heard or sent on another interface.

Datagrams (138) from a source outside the interface's subnet are dropped before
they are decoded (``off_link_dropped``): browse frames go to workgroup group names
(MS-BRWS §2.2.2), and a B-node's datagram to a group name is a broadcast that never
leaves the link (RFC 1001 §17), so an AnnouncementRequest from a routed address is
not an office PC's. The name service
(137) keeps no such check: a WINS server's answers may come from another subnet.

Use::

    service = NetbiosService(settings)
    await service.start()      # binds, starts claiming names, announces
    ...
    await service.stop()       # releases the names, announces server type 0, closes
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from spokeshare.config import LanPresence
from spokeshare.errors import DecodeError, UsageError
from spokeshare.lan import browse, netbios, onlink
from spokeshare.lan.hostile import GuardedDatagramProtocol, RateLimitedLog
from spokeshare.lan.netbios_core import (
    ANNOUNCE_INITIAL_INTERVAL,
    ANNOUNCE_MAX_INTERVAL,
    ANNOUNCE_REQUEST_MAX_DELAY,
    BCAST_REQ_RETRY_COUNT,
    BCAST_REQ_RETRY_TIMEOUT,
    CONFLICT_RECHECK_INTERVAL,
    BrowseAnnouncer,
    ChallengeIgnored,
    Command,
    NameClaimed,
    NameConflict,
    NameDefended,
    NameResponder,
    NameState,
    ResponderConfig,
    SendBrowse,
    SendNbns,
    next_timer,
)
from spokeshare.logfmt import Line

logger = logging.getLogger("spokeshare.lan.netbios")

#: Linux <asm-generic/socket.h>; the socket module lacks the constant on some builds.
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
#: At most one debug line about bad packets per this many seconds (zeroconf does the same).
_BAD_PACKET_LOG_INTERVAL = 10.0


@dataclass(frozen=True)
class NetbiosSettings:
    """What the NetBIOS side of the edge needs: the LAN presence, taken as it is.

    ``presence`` (:class:`spokeshare.config.LanPresence`) gives the names, their
    comments and own addresses, the workgroup, the interface address, and the
    interface (``presence.interface``, e.g. ``"eth1"``) the sockets are pinned to;
    they were validated at config load and are not checked again here.
    ``broadcast_address`` is the interface's subnet broadcast (read at start).
    ``network`` is the interface's subnet: datagrams (138) from outside it are
    dropped (None, only for tests on loopback: every source is accepted).
    ``announce_*`` are the browse timers in seconds (MS-BRWS defaults; tests shorten
    them). ``nbns_port`` / ``dgm_port`` exist for tests on loopback; on a LAN they
    are 137 and 138. Raises UsageError for a presence without names or timers out
    of order (the edge builds none then; config.py checks the configured ones).
    """

    presence: LanPresence
    broadcast_address: IPv4Address
    announce_initial_interval: float = ANNOUNCE_INITIAL_INTERVAL
    announce_max_interval: float = ANNOUNCE_MAX_INTERVAL
    announce_request_max_delay: float = ANNOUNCE_REQUEST_MAX_DELAY
    server_type: int = browse.DEFAULT_SERVER_TYPE
    wins_server: IPv4Address | None = None
    registration_retry_interval: float = BCAST_REQ_RETRY_TIMEOUT
    registration_retry_count: int = BCAST_REQ_RETRY_COUNT
    answer_ttl: int = netbios.DEFAULT_ANSWER_TTL
    nbns_port: int = netbios.NAME_SERVICE_UDP_PORT
    dgm_port: int = netbios.DATAGRAM_SERVICE_UDP_PORT
    bind_broadcast: bool = True
    #: Seconds between re-checks of a name in conflict (netbios_core.py; tests shorten it).
    conflict_recheck_interval: float = CONFLICT_RECHECK_INTERVAL
    network: IPv4Network | None = None

    def __post_init__(self) -> None:
        if not self.presence.names:
            raise UsageError("NetbiosSettings needs at least one virtual name")
        if not 0 < self.announce_initial_interval <= self.announce_max_interval:
            raise UsageError("announce intervals must satisfy 0 < initial <= max")

    @classmethod
    def for_interface(
        cls, interface: IPv4Interface, presence: LanPresence, **kwargs: object
    ) -> NetbiosSettings:
        """Settings for ``presence`` on an address with its prefix (``198.18.201.1/24``),
        which gives the broadcast address and the subnet datagrams must come from."""
        return cls(
            presence,
            interface.network.broadcast_address,
            network=interface.network,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def interface_address(self) -> IPv4Address:
        return self.presence.ipv4

    @property
    def interface_name(self) -> str | None:
        return self.presence.interface or None

    @property
    def workgroup(self) -> str:
        return self.presence.workgroup

    @property
    def names(self) -> tuple[tuple[str, str], ...]:
        """(name, comment its HostAnnouncement carries) per virtual name."""
        return tuple((n.name, n.comment) for n in self.presence.names)

    @property
    def name_addresses(self) -> tuple[tuple[str, IPv4Address], ...]:
        """(name, address) for names answered with an address of their own."""
        return tuple((n.name, IPv4Address(n.address)) for n in self.presence.names if n.address)

    def responder_config(self) -> ResponderConfig:
        return ResponderConfig(
            self.presence,
            self.broadcast_address,
            answer_ttl=self.answer_ttl,
            retry_interval=self.registration_retry_interval,
            retry_count=self.registration_retry_count,
            wins_server=self.wins_server,
            port=self.nbns_port,
            conflict_recheck_interval=self.conflict_recheck_interval,
        )


@dataclass(frozen=True)
class NetbiosStatistics:
    """What :meth:`NetbiosService.statistics` reports: the name responder's counters
    (netbios_core.NameResponderStatistics), the browse announcer's
    (netbios_core.AnnouncerStatistics), undecodable packets dropped, defences and
    ignored release demands that were logged (rate-limited, lan/hostile.py),
    datagrams dropped for an off-link source (``off_link_dropped``), and ``names``:
    each name (``NAME<XX>``) -> its netbios_core.NameState value."""

    answered: int
    status: int
    defended: int
    ignored: int
    challenges_ignored: int
    conflicts: int
    reclaimed: int
    rate_limited: int
    rate_limited_global: int
    announcements: int
    announcement_requests: int
    bad_packets: int
    defences_logged: int
    challenges_logged: int
    off_link_dropped: int
    names: Mapping[str, str]


class NetbiosService:
    """Binds UDP 137/138 on one interface and runs the name and browse cores."""

    def __init__(self, settings: NetbiosSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        rng = rng or random.Random()
        self.names = NameResponder(settings.responder_config(), rng)
        self.announcer = BrowseAnnouncer(
            settings.names,
            settings.workgroup,
            settings.interface_address,
            settings.broadcast_address,
            server_type=settings.server_type,
            initial_interval=settings.announce_initial_interval,
            max_interval=settings.announce_max_interval,
            request_max_delay=settings.announce_request_max_delay,
            rng=rng,
            port=settings.dgm_port,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transports: list[asyncio.DatagramTransport] = []
        self._send: dict[str, asyncio.DatagramTransport] = {}
        #: While answering a packet that came to a name's own address: its socket.
        self._reply_from: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: When ``_timer`` fires (loop time): kept here, not asked of the handle,
        #: whose type depends on the event loop (uvloop's Handle has no ``when()``).
        self._timer_due: float | None = None
        #: Hostile-input lines, rate-limited, and their counters (hostile.py).
        self._hostile = RateLimitedLog(logger, _BAD_PACKET_LOG_INTERVAL)
        self._link = None if settings.network is None else onlink.Link((settings.network,))
        #: Datagrams (138) dropped because their source is not on the link.
        self.off_link_dropped = 0
        self._running = False

    def __repr__(self) -> str:
        s = self.settings
        return f"<NetbiosService {s.interface_address} {s.workgroup} running={self._running}>"

    def statistics(self) -> NetbiosStatistics:
        """The responder's and the announcer's counters, the hostile-input ones, and
        every name's state now (:class:`NetbiosStatistics`)."""
        counts = self._hostile.counts
        return NetbiosStatistics(
            **dataclasses.asdict(self.names.statistics()),
            **dataclasses.asdict(self.announcer.statistics()),
            bad_packets=counts.get("bad_packets", 0),
            defences_logged=counts.get("defences_logged", 0),
            challenges_logged=counts.get("challenges_logged", 0),
            off_link_dropped=self.off_link_dropped,
            names={str(n): st.value for n, st in self.names.names()},
        )

    def conflicts(self) -> list[netbios.NetbiosName]:
        return [n for n, st in self.names.names() if st is NameState.CONFLICT]

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        s = self.settings
        try:
            for kind, port in (("nbns", s.nbns_port), ("dgm", s.dgm_port)):
                unicast = await self._endpoint(kind, s.interface_address, port)
                self._send[kind] = unicast
                if s.bind_broadcast and s.broadcast_address != s.interface_address:
                    await self._endpoint(kind, s.broadcast_address, port)
            # A name with its own address answers node status there, with its names
            # only (queries to that address reach no other socket).
            for own in sorted({a for _, a in s.name_addresses} - {s.interface_address}):
                self._send[f"nbns {own}"] = await self._endpoint(
                    "nbns", own, s.nbns_port, local=own
                )
        except OSError:
            self._close()
            raise
        self._running = True
        now = self._loop.time()
        logger.info(
            "%s",
            Line(
                "names announced",
                protocol="netbios",
                names=",".join(n for n, _ in s.names),
                interface=s.interface_name or None,
                address=s.interface_address,
                workgroup=s.workgroup,
            ),
        )
        self._execute(self.names.start(now) + self.announcer.start(now))
        self._rearm()

    async def stop(self) -> None:
        """Release our names and announce server type 0, then close the sockets."""
        if not self._running or self._loop is None:
            return
        self._running = False
        now = self._loop.time()
        self._execute(self.names.stop(now) + self.announcer.stop(now))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_due = None
        # Let the datagram transports flush what stop() queued before closing.
        await asyncio.sleep(0)
        self._close()
        logger.info(
            "%s",
            Line("protocol stopped", protocol="netbios", address=self.settings.interface_address),
        )

    async def __aenter__(self) -> NetbiosService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- plumbing --------------------------------------------------------------------
    async def _endpoint(
        self, kind: str, address: IPv4Address, port: int, local: IPv4Address | None = None
    ) -> asyncio.DatagramTransport:
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if self.settings.interface_name:
                sock.setsockopt(
                    socket.SOL_SOCKET,
                    _SO_BINDTODEVICE,
                    self.settings.interface_name.encode() + b"\0",
                )
            sock.setblocking(False)
            sock.bind((str(address), port))
        except OSError:
            sock.close()
            raise
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: GuardedDatagramProtocol(
                functools.partial(self._received, kind, local=local),
                self._hostile,
                f"netbios {kind}",
            ),
            sock=sock,
        )
        self._transports.append(transport)
        return transport

    def _close(self) -> None:
        for t in self._transports:
            t.close()
        self._transports.clear()
        self._send.clear()

    def _received(
        self,
        kind: str,
        data: bytes,
        addr: tuple[str | object, int],
        local: IPv4Address | None = None,
    ) -> None:
        if not self._running or self._loop is None:
            return
        now = self._loop.time()
        try:
            source = IPv4Address(str(addr[0]))
            port = int(addr[1])
        except ValueError:
            return
        try:
            if len(data) > netbios.MAX_UDP_PAYLOAD:
                raise DecodeError(kind, "oversized datagram", 0)
            if kind == "nbns":
                commands = self.names.handle_packet(
                    netbios.decode(data),
                    source,
                    port,
                    local or self.settings.interface_address,
                    now,
                )
                if local is not None:  # answer from the address that was asked
                    self._reply_from = f"nbns {local}"
                    try:
                        self._execute(commands)
                    finally:
                        self._reply_from = None
                    self._rearm()
                    return
            else:
                if self._link is not None and not self._link.on_link(str(source)):
                    self.off_link_dropped += 1  # group datagrams stay on the link (RFC 1001 §17)
                    return
                commands = self.announcer.handle_datagram(browse.decode(data), now)
        except DecodeError as exc:
            self._bad_packet(source, exc)
            return
        self._execute(commands)
        self._rearm()

    def _bad_packet(self, source: IPv4Address, exc: DecodeError) -> None:
        self._hostile(
            "bad_packets", exc.protocol, "dropped undecodable packet from %s: %s", source, exc
        )

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = None
        if not self._running or self._loop is None:
            return
        now = self._loop.time()
        self._execute(self.names.handle_timer(now) + self.announcer.handle_timer(now))
        self._rearm()

    def _rearm(self) -> None:
        if self._loop is None or not self._running:
            return
        when = next_timer(self.names.get_timer(), self.announcer.get_timer())
        if self._timer is not None:
            if when is not None and self._timer_due == when:
                return
            self._timer.cancel()
            self._timer = None
            self._timer_due = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)
            self._timer_due = when

    def _execute(self, commands: Sequence[Command]) -> None:
        for cmd in commands:
            if isinstance(cmd, SendNbns):
                self._sendto("nbns", netbios.encode(cmd.packet), cmd.address, cmd.port)
            elif isinstance(cmd, SendBrowse):
                self._sendto("dgm", browse.encode(cmd.packet), cmd.address, cmd.port)
            elif isinstance(cmd, NameClaimed):
                if cmd.reclaimed:
                    logger.warning(
                        "%s",
                        Line(
                            "name reclaimed",
                            protocol="netbios",
                            name=cmd.name,
                            interface=self.settings.interface_name or None,
                            reason="its other owner is gone",
                        ),
                    )
                else:
                    logger.info(
                        "%s",
                        Line(
                            "name claimed",
                            protocol="netbios",
                            name=cmd.name,
                            interface=self.settings.interface_name or None,
                            address=self.settings.interface_address,
                        ),
                    )
            elif isinstance(cmd, NameConflict):
                logger.log(
                    logging.DEBUG if cmd.repeated else logging.WARNING,
                    "%s",
                    Line(
                        "name conflict",
                        protocol="netbios",
                        name=cmd.name,
                        owner=cmd.owner,
                        interface=self.settings.interface_name or None,
                        recheck_in_s=round(cmd.recheck_in),
                        reason=cmd.reason,
                    ),
                )
            elif isinstance(cmd, NameDefended):
                # One line per name per interval: spoofed sources must not flood the log.
                self._hostile(
                    "defences_logged",
                    str(cmd.name),
                    "defended NetBIOS name %s against %s",
                    cmd.name,
                    cmd.challenger,
                )
            elif isinstance(cmd, ChallengeIgnored):
                self._hostile(
                    "challenges_logged",
                    str(cmd.name),
                    "ignored %s from %s for %s (NoNameReleaseOnDemand)",
                    cmd.reason,
                    cmd.source,
                    cmd.name,
                )

    def _sendto(self, kind: str, data: bytes, address: IPv4Address, port: int) -> None:
        own = self._reply_from if kind == "nbns" else None
        transport = (self._send.get(own) if own else None) or self._send.get(kind)
        if transport is None or transport.is_closing():
            return
        transport.sendto(data, (str(address), port))
