"""NetBIOS decision cores: name service (nbns, UDP 137) and browse announcements over
the datagram service (nbdgm, UDP 138), RFC 1002 §4.2 and §4.4, MS-BRWS. Sans-IO.

Two cores, both driven aioquic-style: events in (a decoded packet with where it
came from, or "the timer fired"), commands out (:class:`SendNbns`,
:class:`SendBrowse`) plus notices for the log (:class:`NameClaimed`,
:class:`NameConflict`, :class:`NameDefended`). Time is always the ``now`` argument;
randomness (transaction ids, the AnnouncementRequest delay) comes from an injected
``random.Random``. Nothing here reads a clock, opens a socket or logs.

NameResponder: one state machine per owned name
-----------------------------------------------

Each virtual name ``N`` gives ``N<00>`` and ``N<20>`` (unique); the workgroup gives
``WG<00>`` (group). A B-node claims a name by broadcasting NAME REGISTRATION
REQUESTs and listening for a defence (RFC 1001 §15.2.2.1, RFC 1002 §5.1.1.1)::

    state        event                                          next       output
    -----------  ---------------------------------------------  ---------  ----------------------
    IDLE         start()                                        REGISTERING query + registration #1
    REGISTERING  timer, fewer than retries sent                 REGISTERING registration #k
    REGISTERING  timer, all sent, silence (= success, nmbd)     CLAIMED    NameClaimed
    REGISTERING  ACT_ERR response, or another host's positive   CONFLICT   NameConflict, re-check
                 answer for the name (we detected it ourselves)            timer armed
    CLAIMED      query for the name                             CLAIMED    positive answer (unicast)
    CLAIMED      another host registers/refreshes it (unique)   CLAIMED    ACT_ERR unicast, Defended
    CLAIMED      CFT_ERR (conflict demand), release, or an      CLAIMED    ChallengeIgnored
                 unsolicited answer for it from another host
    CLAIMED      stop()                                         RELEASED   release request (bcast)
    CONFLICT     re-check timer (lan.recheck's schedule)        REGISTERING query + registration #1
    CONFLICT     start() (after a withdraw/announce cycle)      REGISTERING query + registration #1
    CONFLICT     stop()                                         CONFLICT   nothing (timer cleared)

Conflicts come only from what the edge detects itself: its own registration
refused (ACT_ERR) or another host answering the query the edge sends before it
registers. Such a name is not answered, and is checked again by claiming it anew,
5 s after the conflict and then at doubling intervals up to
``conflict_recheck_interval`` seconds (:mod:`spokeshare.lan.recheck`): while the other owner
is there it defends the name again (a repeat conflict, reported as such); once it
is gone the claim meets silence and the name is ours again. An unsolicited NAME
CONFLICT DEMAND (RFC 1002 §4.2.8), a NAME RELEASE for a name we hold, or a
positive answer nobody asked for are one spoofable packet each: they are
counted, reported as :class:`ChallengeIgnored` and change nothing. This is
Windows' ``NoNameReleaseOnDemand`` behaviour (default since Windows Server
2003), which nmbd shares by never acting on CFT_ERR.

Rules that hold in every state: packets from our own address are ignored (we hear
our own broadcasts); a broadcast query never gets a negative answer; only names
we own are answered; every answer we send is charged to a per-source token
bucket, so the edge cannot amplify traffic. With a WINS server configured, the
unique names are also registered unicast with it and refreshed every
``refresh_interval`` (nmbd's REFRESH_TIME); B-nodes without WINS do not refresh
(lan-presence.md §1.6).

BrowseAnnouncer
---------------

Per virtual name, a HostAnnouncement to ``WG<1D>`` on UDP 138: one at start, then
after 1, 2, 4, 8 and 12 minutes and every 12 minutes from then on (MS-BRWS §3.2.6:
"starting at 1 minute ... doubling ... up to 12 minutes"; Periodicity carries the
interval in milliseconds). An AnnouncementRequest for our workgroup makes every
name announce again after a random delay of up to 30 s (MS-BRWS §3.2.5.1, so that
a whole LAN does not answer at once), and resets the ramp to its start; further
requests before that answer has gone out do not move it (a flood of requests
makes one answer per delay, not a flood of broadcasts). stop()
announces every name with server type 0 ("this server is gone", nmbd's
``announce_my_servers_removed()``).
"""

from __future__ import annotations

import enum
import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from spokeshare.config import LanPresence
from spokeshare.errors import UsageError
from spokeshare.lan import browse, netbios
from spokeshare.lan.netbios import (
    NameFlags,
    NbEntry,
    NbnsPacket,
    NetbiosName,
    NodeName,
    Opcode,
    Rcode,
    RRType,
)
from spokeshare.lan.recheck import RECHECK_LONGEST, recheck_delay

#: RFC 1002 §6 BCAST_REQ_RETRY_TIMEOUT (250 ms) and BCAST_REQ_RETRY_COUNT (3).
BCAST_REQ_RETRY_TIMEOUT = 0.25
BCAST_REQ_RETRY_COUNT = 3
#: RFC 1002 §6 UCAST_REQ_RETRY_TIMEOUT (5 s) and UCAST_REQ_RETRY_COUNT (3), for WINS.
UCAST_REQ_RETRY_TIMEOUT = 5.0
UCAST_REQ_RETRY_COUNT = 3
#: nmbd REFRESH_TIME: names registered with WINS are refreshed every 15 minutes.
WINS_REFRESH_INTERVAL = 15 * 60.0
#: TTL we ask a WINS server for (nmbd's ``max ttl`` default, 3 days).
WINS_TTL = netbios.DEFAULT_ANSWER_TTL
#: MS-BRWS §3.2.6: first announcement interval 1 minute, doubling to 12 minutes.
ANNOUNCE_INITIAL_INTERVAL = 60.0
ANNOUNCE_MAX_INTERVAL = 12 * 60.0
#: MS-BRWS §3.2.5.1: answer an AnnouncementRequest after a random 0..30 s.
ANNOUNCE_REQUEST_MAX_DELAY = 30.0
#: Answers per source: a bucket of 10, refilled at 5 per second. A PC resolving a
#: name sends a handful of packets; anything beyond that is a flood or a loop.
RATE_BURST = 10.0
RATE_PER_SECOND = 5.0
#: Sources remembered by the rate limiter (oldest forgotten first).
RATE_MAX_SOURCES = 1024
#: All answers together, whatever the source (spoofed sources defeat a per-source
#: bucket): a bucket of 100 refilled at 50 per second, far above what an office's PCs
#: ask for and a bound on what the edge can be made to send (docs/lan-hardening.md).
RATE_GLOBAL_BURST = 100.0
RATE_GLOBAL_PER_SECOND = 50.0
#: The longest wait between two checks of a name in conflict (our choice; RFC 1001/1002
#: have no re-check, a B-node there keeps the conflict until restarted): the first
#: comes 5 s after the conflict and the waits double up to this (spokeshare.lan.recheck),
#: so a departed owner's name comes back within seconds, and a present owner is asked
#: with one query and three registrations a minute per name.
CONFLICT_RECHECK_INTERVAL = RECHECK_LONGEST


# -- commands and notices ------------------------------------------------------------


@dataclass(frozen=True)
class SendNbns:
    """Send ``packet`` from UDP 137 to ``address``:``port``."""

    packet: NbnsPacket
    address: IPv4Address
    port: int = netbios.NAME_SERVICE_UDP_PORT


@dataclass(frozen=True)
class SendBrowse:
    """Send ``packet`` from UDP 138 to ``address``:``port`` (the subnet broadcast)."""

    packet: browse.BrowseDatagram
    address: IPv4Address
    port: int = browse.DATAGRAM_PORT


@dataclass(frozen=True)
class NameClaimed:
    """Registration met no defence: the name is ours and will be answered.

    ``reclaimed`` is True when the name was in conflict before (the other owner is gone).
    """

    name: NetbiosName
    reclaimed: bool = False


@dataclass(frozen=True)
class NameConflict:
    """Another host owns (or defends) the name; we do not answer for it until a
    re-check finds it gone. ``repeated`` is True when the re-check found the same
    owner again (the adapter need not shout twice)."""

    name: NetbiosName
    owner: IPv4Address
    reason: str
    repeated: bool = False
    #: Seconds until the name is claimed again (spokeshare.lan.recheck).
    recheck_in: float = 0.0


@dataclass(frozen=True)
class NameDefended:
    """We refused another host's registration of one of our names (ACT_ERR)."""

    name: NetbiosName
    challenger: IPv4Address


@dataclass(frozen=True)
class ChallengeIgnored:
    """An unsolicited claim on a name we hold (conflict demand, release, stray answer)
    from ``source``, ignored (NoNameReleaseOnDemand, see the module docstring)."""

    name: NetbiosName
    source: IPv4Address
    reason: str


Command = SendNbns | SendBrowse | NameClaimed | NameConflict | NameDefended | ChallengeIgnored


@dataclass(frozen=True, slots=True)
class NameResponderStatistics:
    """What :meth:`NameResponder.statistics` counts (spokeshare.stats has the schema
    rules): queries answered (name and node status), registrations of our names
    defended, packets ignored, demands to release ignored (NoNameReleaseOnDemand),
    conflicts found, names reclaimed, queries refused by the per-source and global
    rate limits."""

    answered: int = 0
    status: int = 0
    defended: int = 0
    ignored: int = 0
    challenges_ignored: int = 0
    conflicts: int = 0
    reclaimed: int = 0
    rate_limited: int = 0
    rate_limited_global: int = 0


@dataclass(frozen=True, slots=True)
class AnnouncerStatistics:
    """What :meth:`BrowseAnnouncer.statistics` counts."""

    announcements: int = 0
    announcement_requests: int = 0


class NameState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    CLAIMED = "claimed"
    CONFLICT = "conflict"
    RELEASED = "released"


# -- rate limiting -------------------------------------------------------------------


class TokenBucket:
    """Per-source token buckets; ``allow(source, now)`` spends one token if it can."""

    def __init__(
        self,
        burst: float = RATE_BURST,
        rate: float = RATE_PER_SECOND,
        max_sources: int = RATE_MAX_SOURCES,
    ) -> None:
        if burst < 1 or rate <= 0 or max_sources < 1:
            raise UsageError("token bucket needs burst >= 1, rate > 0, max_sources >= 1")
        self._burst = burst
        self._rate = rate
        self._max = max_sources
        self._buckets: OrderedDict[IPv4Address, tuple[float, float]] = OrderedDict()
        self.refused = 0

    def allow(self, source: IPv4Address, now: float) -> bool:
        tokens, last = self._buckets.pop(source, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        else:
            self.refused += 1
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return ok


# -- the name service core -----------------------------------------------------------

#: The one key of the global bucket.
_EVERYONE = IPv4Address("0.0.0.0")


@dataclass
class _Name:
    name: NetbiosName
    group: bool
    state: NameState = NameState.IDLE
    sent: int = 0
    trn_id: int = 0
    deadline: float | None = None
    wins_trn_id: int | None = None
    wins_refresh_at: float | None = None
    wins_sent: int = 0
    wins_deadline: float | None = None
    wins_registered: bool = False
    conflict_with: IPv4Address | None = None
    #: When a name in CONFLICT is claimed again to see whether its owner is gone.
    recheck_at: float | None = None
    #: True from a conflict until the name is claimed again.
    was_in_conflict: bool = False
    #: Claims in a row that found the name held (spokeshare.lan.recheck).
    checks_failed: int = 0
    #: The name's own address, when it has one (else the interface's).
    address: IPv4Address | None = None


@dataclass(frozen=True)
class ResponderConfig:
    """What a :class:`NameResponder` owns and how it behaves.

    ``presence`` (:class:`spokeshare.config.LanPresence`, validated at config load)
    gives the names, the workgroup, the interface address and the names' own
    addresses, taken as they are; ``broadcast`` is the subnet's broadcast address.
    The rest are RFC 1002 timers and our rate limits (tests shorten them).
    UsageError for no name or a re-check shorter than a registration.
    """

    presence: LanPresence
    broadcast: IPv4Address
    answer_ttl: int = netbios.DEFAULT_ANSWER_TTL
    retry_interval: float = BCAST_REQ_RETRY_TIMEOUT
    retry_count: int = BCAST_REQ_RETRY_COUNT
    wins_server: IPv4Address | None = None
    wins_refresh_interval: float = WINS_REFRESH_INTERVAL
    rate_burst: float = RATE_BURST
    rate_per_second: float = RATE_PER_SECOND
    rate_global_burst: float = RATE_GLOBAL_BURST
    rate_global_per_second: float = RATE_GLOBAL_PER_SECOND
    conflict_recheck_interval: float = CONFLICT_RECHECK_INTERVAL
    extra_addresses: tuple[IPv4Address, ...] = field(default=())
    #: Where broadcasts and WINS requests go (137 on a LAN; other values for tests).
    port: int = netbios.NAME_SERVICE_UDP_PORT

    def __post_init__(self) -> None:
        # Names and workgroup come from spokeshare.config.LanPresence, validated at
        # config load (one rule for every protocol); only this core's own invariants here.
        if not self.presence.names:
            raise UsageError("at least one virtual name is needed")
        if self.retry_count < 1 or self.retry_interval <= 0:
            raise UsageError("registration needs at least one send and a positive interval")
        if recheck_delay(1, self.conflict_recheck_interval) <= (
            self.retry_interval * self.retry_count
        ):
            raise UsageError("conflict re-check must be longer than a registration")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.presence.names)

    @property
    def workgroup(self) -> str:
        return self.presence.workgroup

    @property
    def address(self) -> IPv4Address:
        return self.presence.ipv4

    @property
    def name_addresses(self) -> tuple[tuple[str, IPv4Address], ...]:
        """(name, address) for virtual names that answer with an address of their own."""
        return tuple((n.name, IPv4Address(n.address)) for n in self.presence.names if n.address)


class NameResponder:
    """The NetBIOS name service side of the edge (see the module docstring)."""

    def __init__(self, config: ResponderConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self._limiter = TokenBucket(config.rate_burst, config.rate_per_second)
        self._global = TokenBucket(config.rate_global_burst, config.rate_global_per_second, 1)
        per_name = {n.upper(): a for n, a in config.name_addresses}
        self._own = {config.address, *config.extra_addresses, *per_name.values()}
        self._names: dict[tuple[str, int, str], _Name] = {}
        for vname in config.names:
            for suffix in (0x00, 0x20):
                n = NetbiosName.create(vname, suffix)
                self._names[n.key] = _Name(n, group=False, address=per_name.get(vname.upper()))
        wg = NetbiosName.create(config.workgroup, 0x00)
        self._names[wg.key] = _Name(wg, group=True)
        self._stats = {
            "answered": 0,
            "status": 0,
            "defended": 0,
            "ignored": 0,
            "challenges_ignored": 0,
            "conflicts": 0,
            "reclaimed": 0,
        }

    def __repr__(self) -> str:
        states = ", ".join(f"{n.name}={n.state.value}" for n in self._names.values())
        return f"<NameResponder {self.config.address} {states}>"

    # -- inspection ------------------------------------------------------------------
    def state(self, name: NetbiosName) -> NameState:
        return self._names[name.key].state

    def names(self) -> list[tuple[NetbiosName, NameState]]:
        return [(n.name, n.state) for n in self._names.values()]

    def statistics(self) -> NameResponderStatistics:
        """Counters since the responder was made (:class:`NameResponderStatistics`)."""
        return NameResponderStatistics(
            **self._stats,
            rate_limited=self._limiter.refused,
            rate_limited_global=self._global.refused,
        )

    # -- lifecycle -------------------------------------------------------------------
    def start(self, now: float) -> list[Command]:
        """Begin claiming every name: the first broadcast registration of each.

        Also after :meth:`stop`: released names are claimed again (the edge withdraws
        its names while HQ is away and claims them back when it returns), and names
        in conflict are checked again at once.
        """
        out: list[Command] = []
        for n in self._names.values():
            if n.state not in (NameState.IDLE, NameState.RELEASED, NameState.CONFLICT):
                continue
            out += self._claim(n, now)
        return out

    def _claim(self, n: _Name, now: float) -> list[Command]:
        """Query for the name (unique ones) and send the first registration."""
        out: list[Command] = []
        n.recheck_at = None
        n.state = NameState.REGISTERING
        n.trn_id = self._rng.randrange(1, 0x10000)
        n.sent = 0
        if not n.group:
            # Ask first: a host that owns the name but does not defend it (or is
            # itself still registering, as nmbd is for its first seconds) may
            # still answer a query (RFC 1001 §15.1.4 "name query" before use).
            query = netbios.name_query_request(
                self._rng.randrange(1, 0x10000), n.name, broadcast=True
            )
            out.append(SendNbns(query, self.config.broadcast, self.config.port))
        out += self._send_registration(n, now)
        return out

    def stop(self, now: float) -> list[Command]:
        """Release every claimed name (broadcast, and with WINS if registered there)."""
        out: list[Command] = []
        for n in self._names.values():
            if n.state is NameState.CLAIMED or n.state is NameState.REGISTERING:
                pkt = netbios.release_request(
                    self._rng.randrange(1, 0x10000),
                    n.name,
                    n.address or self.config.address,
                    group=n.group,
                )
                out.append(SendNbns(pkt, self.config.broadcast, self.config.port))
                if self.config.wins_server is not None and n.wins_registered:
                    pkt = netbios.release_request(
                        self._rng.randrange(1, 0x10000),
                        n.name,
                        n.address or self.config.address,
                        group=n.group,
                        broadcast=False,
                        node_type=netbios.NodeType.H,
                    )
                    out.append(SendNbns(pkt, self.config.wins_server, self.config.port))
                n.state = NameState.RELEASED
            n.deadline = n.wins_deadline = n.wins_refresh_at = n.recheck_at = None
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` wants to run next (None: nothing pending)."""
        times = [
            t
            for n in self._names.values()
            for t in (n.deadline, n.wins_deadline, n.wins_refresh_at, n.recheck_at)
            if t is not None
        ]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Command]:
        out: list[Command] = []
        for n in self._names.values():
            if n.deadline is not None and now >= n.deadline:
                n.deadline = None
                if n.state is NameState.REGISTERING:
                    if n.sent < self.config.retry_count:
                        out += self._send_registration(n, now)
                    else:
                        n.state = NameState.CLAIMED
                        out.append(NameClaimed(n.name, reclaimed=n.was_in_conflict))
                        if n.was_in_conflict:
                            self._stats["reclaimed"] += 1
                        n.was_in_conflict = False
                        n.conflict_with = None
                        n.checks_failed = 0
                        if self.config.wins_server is not None and not n.group:
                            n.wins_sent = 0
                            n.wins_trn_id = self._rng.randrange(1, 0x10000)
                            out += self._send_wins(n, now, Opcode.REGISTRATION)
            if n.recheck_at is not None and now >= n.recheck_at:
                n.recheck_at = None
                if n.state is NameState.CONFLICT:
                    out += self._claim(n, now)
            if n.wins_deadline is not None and now >= n.wins_deadline:
                n.wins_deadline = None
                if n.state is NameState.CLAIMED and n.wins_sent < UCAST_REQ_RETRY_COUNT:
                    out += self._send_wins(n, now, self._wins_opcode(n))
            if n.wins_refresh_at is not None and now >= n.wins_refresh_at:
                n.wins_refresh_at = None
                if n.state is NameState.CLAIMED:
                    n.wins_sent = 0
                    n.wins_trn_id = self._rng.randrange(1, 0x10000)
                    out += self._send_wins(n, now, Opcode.REFRESH)
        return out

    # -- packets ---------------------------------------------------------------------
    def handle_packet(
        self,
        packet: NbnsPacket,
        source: IPv4Address,
        port: int,
        interface: IPv4Address,
        now: float,
    ) -> list[Command]:
        """Decide what to do with one decoded packet from ``source``:``port`` that
        arrived on the interface whose address is ``interface`` (answers carry it)."""
        if source in self._own or source == interface:
            self._stats["ignored"] += 1
            return []
        if packet.response:
            return self._handle_response(packet, source, now)
        q = packet.question
        if q is None:
            return []
        if packet.opcode is Opcode.QUERY and q.qtype == RRType.NB:
            return self._handle_query(packet, q.name, source, port, interface, now)
        if packet.opcode is Opcode.QUERY and q.qtype == RRType.NBSTAT:
            return self._handle_node_status(packet, q.name, source, port, interface, now)
        if packet.opcode in (
            Opcode.REGISTRATION,
            Opcode.MULTIHOMED_REGISTRATION,
            Opcode.REFRESH,
            Opcode.REFRESH_ALT,
        ):
            # Another host refreshing one of our names claims it just as much
            # (smbtorture nbt.register.refresh_own expects ACT_ERR here too).
            return self._handle_registration(packet, q.name, source, port, now)
        if packet.opcode is Opcode.RELEASE:
            return self._ignore(q.name, source, "name release for a name we hold")
        return []

    def _ignore(self, name: NetbiosName, source: IPv4Address, reason: str) -> list[Command]:
        """NoNameReleaseOnDemand: count an unsolicited claim on a held unique name."""
        n = self._names.get(name.key)
        if n is None or n.group or n.state is not NameState.CLAIMED:
            return []
        self._stats["challenges_ignored"] += 1
        return [ChallengeIgnored(n.name, source, reason)]

    def _allow(self, source: IPv4Address, now: float) -> bool:
        """Per-source bucket first, then the global one (both must have a token)."""
        return self._limiter.allow(source, now) and self._global.allow(_EVERYONE, now)

    def _owned(self, name: NetbiosName) -> _Name | None:
        n = self._names.get(name.key)
        if n is None or n.state is not NameState.CLAIMED:
            return None
        return n

    def _handle_query(
        self,
        packet: NbnsPacket,
        name: NetbiosName,
        source: IPv4Address,
        port: int,
        interface: IPv4Address,
        now: float,
    ) -> list[Command]:
        n = self._owned(name)
        if n is None:
            # RFC 1002 §4.2.14 / nmbd: never a negative answer to a broadcast query,
            # none to a recursive one when not a WINS server; only plain unicast
            # queries for names we have never heard of get NAM_ERR.
            known = self._names.get(name.key)
            if packet.broadcast or netbios.NmFlags.RD in packet.flags or known is not None:
                return []
            if not self._allow(source, now):
                return []
            return [SendNbns(netbios.negative_query_response(packet, name), source, port)]
        if not self._allow(source, now):
            return []
        self._stats["answered"] += 1
        entry = NbEntry(n.address or interface, group=n.group)
        answer = netbios.positive_query_response(packet, name, [entry], self.config.answer_ttl)
        return [SendNbns(answer, source, port)]

    def _handle_node_status(
        self,
        packet: NbnsPacket,
        name: NetbiosName,
        source: IPv4Address,
        port: int,
        asked: IPv4Address,
        now: float,
    ) -> list[Command]:
        wildcard = name.name == "*" and name.suffix == 0
        if wildcard and packet.broadcast:
            return []  # everyone would answer a broadcast "*": not our business
        owned = None if wildcard else self._owned(name)
        if not wildcard and owned is None:
            return []
        # Only the names served at the address asked (a broadcast asks the name's
        # own address); the workgroup is listed at every address, as nmbd does.
        if packet.broadcast and owned is not None and not owned.group:
            asked = owned.address or self.config.address
        listed = [
            NodeName(
                n.name.name,
                n.name.suffix,
                NameFlags.ACT | (NameFlags.GROUP if n.group else NameFlags(0)),
            )
            for n in self._names.values()
            if n.state is NameState.CLAIMED
            and (n.group or (n.address or self.config.address) == asked)
        ]
        if not listed or not self._allow(source, now):
            return []
        self._stats["status"] += 1
        return [SendNbns(netbios.node_status_response(packet, name, listed), source, port)]

    def _handle_registration(
        self, packet: NbnsPacket, name: NetbiosName, source: IPv4Address, port: int, now: float
    ) -> list[Command]:
        n = self._owned(name)
        if n is None or n.group:
            return []  # group names are shared; only unique names are defended
        if not packet.additionals or not self._allow(source, now):
            return []
        self._stats["defended"] += 1
        reply = netbios.negative_registration_response(packet, Rcode.ACT_ERR)
        return [SendNbns(reply, source, port), NameDefended(n.name, source)]

    def _handle_response(
        self, packet: NbnsPacket, source: IPv4Address, now: float
    ) -> list[Command]:
        out: list[Command] = []
        for rr in packet.answers:
            n = self._names.get(rr.name.key)
            if n is None:
                continue
            from_wins = source == self.config.wins_server
            if packet.opcode in (Opcode.REGISTRATION, Opcode.REFRESH, Opcode.REFRESH_ALT):
                if from_wins and packet.rcode == Rcode.OK and n.state is NameState.CLAIMED:
                    n.wins_registered = True
                    n.wins_deadline = None
                    n.wins_refresh_at = now + self.config.wins_refresh_interval
                    continue
                if packet.rcode == Rcode.ACT_ERR and n.state is NameState.REGISTERING:
                    out += self._conflict(n, source, now, "registration refused with ACT_ERR")
                elif (
                    packet.rcode == Rcode.ACT_ERR
                    and from_wins
                    and n.state is NameState.CLAIMED
                    and packet.trn_id == n.wins_trn_id  # the answer to our own request
                ):
                    out += self._conflict(n, source, now, "WINS server refused the registration")
                elif packet.rcode == Rcode.ACT_ERR:
                    out += self._ignore(n.name, source, "unsolicited registration refusal")
                elif packet.rcode == Rcode.CFT_ERR:
                    # RFC 1002 §4.2.8 NAME CONFLICT DEMAND: unsolicited, from anyone,
                    # spoofable in one packet; never obeyed (module docstring).
                    out += self._ignore(n.name, source, "name conflict demand (CFT_ERR)")
            elif (
                packet.opcode is Opcode.QUERY
                and packet.rcode == Rcode.OK
                and rr.rtype == RRType.NB
                and not n.group
            ):
                if n.state is NameState.REGISTERING:
                    out += self._conflict(n, source, now, "another host answers queries for it")
                else:
                    out += self._ignore(n.name, source, "unsolicited answer for a name we hold")
            elif packet.opcode is Opcode.WACK and from_wins:
                n.wins_deadline = now + max(float(rr.ttl), UCAST_REQ_RETRY_TIMEOUT)
        return out

    # -- helpers ---------------------------------------------------------------------
    def _conflict(self, n: _Name, owner: IPv4Address, now: float, reason: str) -> list[Command]:
        repeated = n.was_in_conflict and n.conflict_with == owner
        n.state = NameState.CONFLICT
        n.deadline = n.wins_deadline = n.wins_refresh_at = None
        n.checks_failed += 1
        delay = recheck_delay(n.checks_failed, self.config.conflict_recheck_interval)
        n.recheck_at = now + delay
        n.conflict_with = owner
        n.was_in_conflict = True
        self._stats["conflicts"] += 1
        return [NameConflict(n.name, owner, reason, repeated, delay)]

    def _send_registration(self, n: _Name, now: float) -> list[Command]:
        n.sent += 1
        n.deadline = now + self.config.retry_interval
        pkt = netbios.registration_request(
            n.trn_id,
            n.name,
            n.address or self.config.address,
            group=n.group,
            ttl=netbios.INFINITE_TTL,
        )
        return [SendNbns(pkt, self.config.broadcast, self.config.port)]

    def _wins_opcode(self, n: _Name) -> Opcode:
        return Opcode.REFRESH if n.wins_registered else Opcode.REGISTRATION

    def _send_wins(self, n: _Name, now: float, opcode: Opcode) -> list[Command]:
        wins = self.config.wins_server
        if wins is None or n.wins_trn_id is None:
            return []
        n.wins_sent += 1
        n.wins_deadline = now + UCAST_REQ_RETRY_TIMEOUT
        if opcode is Opcode.REFRESH:
            pkt = netbios.refresh_request(
                n.wins_trn_id,
                n.name,
                n.address or self.config.address,
                ttl=WINS_TTL,
                group=n.group,
            )
        else:
            pkt = netbios.registration_request(
                n.wins_trn_id,
                n.name,
                n.address or self.config.address,
                group=n.group,
                ttl=WINS_TTL,
                broadcast=False,
                node_type=netbios.NodeType.H,
            )
        return [SendNbns(pkt, wins, self.config.port)]


# -- the browse announcer ------------------------------------------------------------


@dataclass
class _Announce:
    name: str
    comment: str
    next_at: float | None = None
    interval: float = ANNOUNCE_INITIAL_INTERVAL
    update_count: int = 0
    #: An AnnouncementRequest scheduled the next announcement (and more do not move it).
    requested: bool = False


class BrowseAnnouncer:
    """HostAnnouncements for each virtual name (see the module docstring).

    ``names`` pairs each virtual name with its comment. ``initial_interval`` and
    ``max_interval`` (seconds) default to MS-BRWS's 1 and 12 minutes; tests shorten
    them. ``request_max_delay`` bounds the random wait before answering an
    AnnouncementRequest.
    """

    def __init__(
        self,
        names: Sequence[tuple[str, str]],
        workgroup: str,
        address: IPv4Address,
        broadcast: IPv4Address,
        *,
        server_type: int = browse.DEFAULT_SERVER_TYPE,
        initial_interval: float = ANNOUNCE_INITIAL_INTERVAL,
        max_interval: float = ANNOUNCE_MAX_INTERVAL,
        request_max_delay: float = ANNOUNCE_REQUEST_MAX_DELAY,
        rng: random.Random | None = None,
        port: int = browse.DATAGRAM_PORT,
    ) -> None:
        if not 0 < initial_interval <= max_interval:
            raise UsageError("announce intervals must satisfy 0 < initial <= max")
        if request_max_delay < 0:
            raise UsageError("request_max_delay must not be negative")
        if not 0 <= server_type <= 0xFFFFFFFF:
            raise UsageError("server type must fit in 32 bits")
        self.workgroup = workgroup.upper()
        self.address = address
        self.broadcast = broadcast
        self.server_type = server_type
        self.initial_interval = initial_interval
        self.max_interval = max_interval
        self.request_max_delay = request_max_delay
        self.port = port
        self._rng = rng or random.Random()
        self._items = [
            _Announce(n.upper(), c[: browse.MAX_COMMENT_LENGTH], interval=initial_interval)
            for n, c in names
        ]
        self._running = False
        self.sent = 0
        self.requests = 0

    def __repr__(self) -> str:
        return f"<BrowseAnnouncer {self.workgroup} names={[i.name for i in self._items]}>"

    def statistics(self) -> AnnouncerStatistics:
        """Announcements sent and Announcement Requests heard (MS-BRWS 2.2.2)."""
        return AnnouncerStatistics(announcements=self.sent, announcement_requests=self.requests)

    def start(self, now: float) -> list[Command]:
        """Announce every name at once, then follow the ramp."""
        self._running = True
        for item in self._items:
            item.interval = self.initial_interval
            item.next_at = now
        return self.handle_timer(now)

    def stop(self, now: float) -> list[Command]:
        """Server type 0 for every name: the master browser drops us at once."""
        if not self._running:
            return []
        self._running = False
        out: list[Command] = []
        for item in self._items:
            item.next_at = None
            out.append(self._announce(item, 0, self.initial_interval))
        return out

    def get_timer(self) -> float | None:
        times = [i.next_at for i in self._items if i.next_at is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Command]:
        out: list[Command] = []
        for item in self._items:
            if item.next_at is None or now < item.next_at:
                continue
            # Periodicity tells the master browser when to expect the next one; it
            # drops us after three missed periods (lan-presence.md §2.2).
            interval = item.interval
            item.requested = False
            out.append(self._announce(item, self.server_type, interval))
            item.next_at = now + interval
            item.interval = min(interval * 2, self.max_interval)
        return out

    def handle_datagram(self, packet: browse.BrowseDatagram, now: float) -> list[Command]:
        """React to a browse frame: only AnnouncementRequests to our workgroup matter."""
        msg = packet.message
        if not self._running or not isinstance(msg, browse.AnnouncementRequest):
            return []
        if packet.datagram.source_ip == self.address:
            return []
        if packet.datagram.destination_name.name.upper() != self.workgroup:
            return []
        self.requests += 1
        if all(item.requested for item in self._items):
            # One answer per request delay, however many requests: each new request
            # drawing its own delay would pull the answer ever earlier, so that a
            # flood of requests became a flood of broadcasts.
            return []
        when = now + self._rng.uniform(0.0, self.request_max_delay)
        for item in self._items:
            if item.requested:
                continue
            item.requested = True
            item.interval = self.initial_interval
            if item.next_at is None or item.next_at > when:
                item.next_at = when
        return []

    def _announce(self, item: _Announce, server_type: int, interval: float) -> SendBrowse:
        self.sent += 1
        pkt = browse.host_announcement(
            self._rng.randrange(1, 0x10000),
            self.address,
            item.name,
            self.workgroup,
            comment=item.comment,
            server_type=server_type,
            periodicity_ms=int(interval * 1000),
            update_count=item.update_count,
        )
        item.update_count = (item.update_count + 1) & 0xFF
        return SendBrowse(pkt, self.broadcast, self.port)


def next_timer(*timers: float | None) -> float | None:
    """The earliest of several ``get_timer()`` results (None when all are None)."""
    present: Iterable[float] = (t for t in timers if t is not None)
    return min(present, default=None)
