"""Answering ANY questions, probes included, for the host names the edge publishes.

RFC 6762 §8.1 and §9: a host holding a unique record MUST answer a probe for it
(a query with the name in the question, type ANY, and the prober's proposed records
in the authority section), so that the prober picks another name. python-zeroconf
(0.154) answers an ANY question for a service instance name, but for a host name
(``NAME.local.``, the SRV target of a registered ``ServiceInfo``) its address
strategy keeps only records whose type equals the question's: A and AAAA never
equal ANY, so the answer set is empty and avahi-daemon, probing ``NAME.local`` with
ANY, hears no defence and keeps the name too.

:class:`HostNameQueryHandler` subclasses zeroconf's ``QueryHandler`` (not a fork:
its ``handle_assembled_query`` is a cpdef method, so the override is what the
listeners call) and, after zeroconf has answered what it answers, adds the address
records of every registered host name asked for with type ANY:

- a query from port 5353 (probe or not) gets a multicast answer (§6, §8.1), at most
  one per host name per 250 ms for probes and per second otherwise (§6);
- a legacy unicast query (source port not 5353) gets a unicast answer echoing its ID
  and question (§6.7; the TTL cap is applied by the send wrapper in
  :mod:`spokeshare.lan.mdns`).

The decision (:func:`host_answers`) is sans-IO: questions, the registry lookup and
``now`` in, records out.

Conflicts after start (RFC 6762 §9): zeroconf checks a name only while probing it
(and never the host name, which the publisher probes itself); once published, another
host answering for ``NAME.local`` with other data is only cached. :func:`conflicts`
decides, from the address records of a response just received, which of our held
host names another host now claims: a record whose data is one of our addresses for
that name (our own answer looped back, a re-announcement of the same data, or another
host agreeing) is never a conflict (§9: "resource records with identical rdata are
never considered inconsistent"), nor is a goodbye (TTL 0, §10.1). The publisher then
resets the name to probing (:class:`ProbeRate` says how long to wait first, §8.1's
rate limit) and, if the other host still answers the probe, leaves the name to it as
at start. The decision is pure: names, addresses and ``now`` in, names out.

Simultaneous probes (RFC 6762 §8.2): two hosts probing one name at once each hear the
other's probe, a query whose authority section holds the records the other proposes.
python-zeroconf (0.154) does no §8.2 comparison for what it probes (service instance
names): its probe loop only looks for the name in its cache, and its query handler
answers a probe only with records already registered. Two zeroconf hosts registering
one instance name at once (measured on loopback, three runs) ended with one published
and the other refused each time: the first to end its probes (500 ms apart, after a
random 150-250 ms delay) announces while the other still probes, so which one keeps
the name depends on that delay, not on the data. The host names
are probed by the publisher itself (:mod:`spokeshare.lan.mdns`), which hands every
probe heard while it probes to :func:`simultaneous_probe`: the authority records for
the name are compared with ours as §8.2 says (class without the cache-flush bit,
then type, then rdata as unsigned bytes, a shorter prefix being earlier; record sets
sorted and compared pair by pair, a set that runs out first being earlier, §8.2.1).
Lexicographically later data wins: the loser waits one second and probes again
(:data:`PROBE_DEFER`), by which time the winner's announcement or its answer to the
new probe takes the name from it. Identical data is no conflict (§8.2).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zeroconf import IPVersion
from zeroconf._dns import DNSAddress, DNSQuestion, DNSRecord, DNSRRSet
from zeroconf._handlers.answers import (
    construct_outgoing_multicast_answers,
    construct_outgoing_unicast_answers,
)
from zeroconf._handlers.query_handler import QueryHandler
from zeroconf.const import _TYPE_ANY

from spokeshare.errors import DecodeError, UsageError

#: RFC 6762 §3: the mDNS port; queries from another port are legacy unicast (§6.7).
MDNS_PORT = 5353
#: RFC 6762 §6: a record is multicast at most once per second on an interface; a
#: defence against a probe may come sooner, after 250 ms (§6, "probe defence").
MULTICAST_INTERVAL = 1.0
PROBE_DEFENCE_INTERVAL = 0.25
#: RFC 6762 §8.1: "If fifteen conflicts occur within any ten-second period, then the
#: host MUST wait at least five seconds before each successive additional probe
#: attempt."
CONFLICT_BURST = 15
CONFLICT_WINDOW = 10.0
CONFLICT_BACKOFF = 5.0
#: RFC 6762 §8.2: a host losing a simultaneous probe tie-break "defers to the winning
#: host by waiting one second, and then begins probing for this record again".
PROBE_DEFER = 1.0
#: Our bound: a name lost this many tie-breaks in one probing round counts as taken
#: (rechecked like any name in conflict), so that a host probing with later data
#: forever cannot hold up the other names, which are probed one at a time.
MAX_PROBE_DEFERS = 15
#: RFC 6762 §10.2: the cache-flush bit, the top bit of a record's class field; §8.2
#: compares the class without it.
CACHE_FLUSH = 0x8000
#: RFC 6762 §17: a multicast DNS message is at most 9000 bytes (jumbo frames).
MAX_MDNS_MESSAGE = 9000
#: RFC 1035 §2.3.4: a name is at most 255 octets; at most 127 labels fit.
MAX_NAME = 255
_MAX_LABELS = 128


@dataclass(frozen=True)
class HeardAddress:
    """An A or AAAA record heard in a response: owner name lower-cased with the
    trailing dot (``global-nfs.local.``), the packed address (4 or 16 octets), the TTL
    in seconds (0: a goodbye)."""

    name: str
    address: bytes
    ttl: int

    def __post_init__(self) -> None:
        if len(self.address) not in (4, 16):
            raise UsageError(f"address of {len(self.address)} octets")
        if self.ttl < 0:
            raise UsageError(f"negative TTL {self.ttl}")


def conflicts(
    ours: Mapping[str, frozenset[bytes]], heard: Iterable[HeardAddress]
) -> dict[str, bytes]:
    """Held host name -> the first other address heard for it (RFC 6762 §9).

    ``ours`` maps each host name the edge holds now (lower-cased, trailing dot) to
    every address it publishes for it (packed, IPv4 and IPv6); ``heard`` are the address
    records of one response. A record for a held name, TTL above 0, whose address is
    none of that name's addresses, is a conflict: host names are unique records (§2),
    so another host is answering for ours. A name's addresses of either family count as
    its data, so another host's AAAA for a name we publish with A only conflicts too
    (two hosts for one name, whichever record a client asks for).
    """
    out: dict[str, bytes] = {}
    for record in heard:
        held = ours.get(record.name)
        if held is None or record.ttl == 0 or record.address in held:
            continue
        out.setdefault(record.name, record.address)
    return out


class ProbeRate:
    """RFC 6762 §8.1's limit on probing again after conflicts: fifteen conflicts within
    ten seconds and each further probe waits five seconds. Pure: ``now`` in seconds on
    any monotonic clock."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=CONFLICT_BURST)

    def conflict(self, now: float) -> float:
        """Note a conflict at ``now``; the seconds to wait before probing again
        (0.0, or :data:`CONFLICT_BACKOFF` while conflicts come faster than the limit)."""
        self._times.append(now)
        if len(self._times) == CONFLICT_BURST and now - self._times[0] <= CONFLICT_WINDOW:
            return CONFLICT_BACKOFF
        return 0.0


def host_answers(
    questions: Iterable[DNSQuestion],
    addresses_of: Callable[[str], list[DNSAddress]],
    known: DNSRRSet | None = None,
) -> dict[str, list[DNSAddress]]:
    """Host name (lower case) -> its address records, for every ANY question about a
    host name ``addresses_of`` knows (it returns [] for names that are not ours).
    Records in ``known`` (the query's known answers, §7.1) are left out."""
    out: dict[str, list[DNSAddress]] = {}
    for q in questions:
        if q.type != _TYPE_ANY:
            continue
        name = q.name.lower()
        records = [r for r in addresses_of(name) if known is None or not known.suppresses(r)]
        if records:
            out[name] = records
    return out


class HostNameQueryHandler(QueryHandler):
    """zeroconf's query handler plus answers to ANY questions for host names."""

    def __init__(self, zc: Any) -> None:
        super().__init__(zc)
        self._zc = zc
        #: host name -> when its address records were last multicast by this handler.
        self._last_multicast: dict[str, float] = {}
        #: Probes for a held host name answered (statistics).
        self.probes_defended = 0
        #: Called with every probe's bytes and its arrival (seconds, zeroconf's
        #: clock): the publisher's tie-break for the host names it is probing (§8.2).
        self.probe_heard: Callable[[bytes, float], None] | None = None

    def _addresses_of(self, name: str) -> list[DNSAddress]:
        seen: dict[DNSAddress, None] = {}
        for info in self._zc.registry.async_get_infos_server(name):
            for record in info.dns_addresses(version=IPVersion.All):
                seen[record] = None
        return list(seen)

    def handle_assembled_query(
        self,
        packets: list[Any],
        addr: str,
        port: int,
        transport: Any,
        v6_flow_scope: tuple[()] | tuple[int, int],
    ) -> None:
        super().handle_assembled_query(packets, addr, port, transport, v6_flow_scope)
        if self.probe_heard is not None:
            for packet in packets:
                if packet.is_probe():
                    self.probe_heard(bytes(packet.data), packet.now / 1000.0)
        first = packets[0]
        probe = any(p.is_probe() for p in packets)
        known = None if probe else DNSRRSet([r for p in packets for r in p.answers()])
        questions = [q for p in packets for q in p.questions]
        found = host_answers(questions, self._addresses_of, known)
        if not found:
            return
        if port != MDNS_PORT:
            answers: dict[DNSRecord, set[DNSRecord]] = {
                r: set() for records in found.values() for r in records
            }
            out = construct_outgoing_unicast_answers(answers, True, first.questions, first.id)
            self._zc.async_send(out, addr, port, v6_flow_scope, transport)
            return
        now = first.now / 1000.0  # zeroconf's clock: milliseconds
        gap = PROBE_DEFENCE_INTERVAL if probe else MULTICAST_INTERVAL
        due = {
            name: records
            for name, records in found.items()
            if now - self._last_multicast.get(name, float("-inf")) >= gap
        }
        if not due:
            return
        for name in due:
            self._last_multicast[name] = now
        if probe:
            self.probes_defended += 1
        multicast: dict[DNSRecord, set[DNSRecord]] = {
            r: set() for records in due.values() for r in records
        }
        self._zc.async_send(construct_outgoing_multicast_answers(multicast))


# -- simultaneous probe tie-breaking (RFC 6762 §8.2) -------------------------------------


@dataclass(frozen=True, order=True)
class ProbeRecord:
    """One record proposed in a probe's authority section, as §8.2 compares it: the
    class without the cache-flush bit, the type, the rdata bytes as received. Field
    order is the comparison order, so ``<`` is §8.2's "lexicographically earlier"
    (bytes compare as unsigned octets, a proper prefix first). The rdata of an A or
    AAAA record (all a host name's probe holds) carries no name, so no compression
    needs undoing."""

    rclass: int
    rtype: int
    rdata: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.rclass <= 0x7FFF:
            raise UsageError(f"mdns: class {self.rclass} outside 0..0x7fff (no cache-flush bit)")
        if not 0 <= self.rtype <= 0xFFFF:
            raise UsageError(f"mdns: type {self.rtype} outside 0..0xffff")
        if len(self.rdata) > 0xFFFF:
            raise UsageError("mdns: rdata longer than 65535 bytes")


class TieBreak(enum.Enum):
    """How our proposed records compare with another prober's (RFC 6762 §8.2)."""

    WON = "won"  # ours are lexicographically later: go on probing
    LOST = "lost"  # ours are earlier: wait PROBE_DEFER, then probe again
    TIE = "tie"  # identical data: no conflict (our own probe looped back, or agreement)


def tie_break(ours: Iterable[ProbeRecord], theirs: Iterable[ProbeRecord]) -> TieBreak:
    """Compare two probers' records for one name (RFC 6762 §8.2, §8.2.1): each set is
    sorted, then compared pair by pair; the first difference decides, and a set that
    runs out first (all its records equal to the other's first ones) is earlier.
    Later data wins. Duplicates count once (a record set)."""
    a = sorted(set(ours))
    b = sorted(set(theirs))
    if a == b:
        return TieBreak.TIE
    return TieBreak.WON if a > b else TieBreak.LOST


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    """The (possibly compressed, RFC 1035 §4.1.4) name at ``pos``, lower-cased with a
    trailing dot, and the offset after it. Pointers must point backwards; raises
    :class:`DecodeError`."""
    labels: list[str] = []
    total = 1
    end = -1
    for _ in range(_MAX_LABELS):
        if pos >= len(data):
            raise DecodeError("mdns", "name runs past the message", pos)
        length = data[pos]
        if length == 0:
            return ".".join(labels).lower() + ".", (pos + 1 if end < 0 else end)
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise DecodeError("mdns", "pointer runs past the message", pos)
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= pos:
                raise DecodeError("mdns", f"compression pointer to {target} not backwards", pos)
            if end < 0:
                end = pos + 2
            pos = target
            continue
        if length & 0xC0:
            raise DecodeError("mdns", f"label type {length & 0xC0:#x} not supported", pos)
        total += length + 1
        if total > MAX_NAME or pos + 1 + length > len(data):
            raise DecodeError("mdns", "name too long or past the message", pos)
        labels.append(data[pos + 1 : pos + 1 + length].decode("utf-8", "replace"))
        pos += 1 + length
    raise DecodeError("mdns", "too many labels or a pointer loop", pos)


def probe_records(packet: bytes, name: str) -> tuple[ProbeRecord, ...] | None:
    """The records a probe proposes for ``name`` (RFC 6762 §8.2), or None when
    ``packet`` is not a probe for it: a response (QR set), no question about ``name``,
    or no authority record for it. ``name`` is compared without case, with or without
    the trailing dot.

    The rdata is kept as received: right for data without names (A and AAAA, all a
    host name's probe carries, TXT, HINFO); a name inside rdata (PTR, SRV) may be
    compressed and would need expanding before §8.2's comparison.

    Layout (RFC 1035 §4.1): a 12-byte header (ID, flags, QDCOUNT, ANCOUNT, NSCOUNT,
    ARCOUNT), the questions (name, type, class), then answer, authority and additional
    records (name, type, class, TTL, RDLENGTH, RDATA). Raises :class:`DecodeError`
    for a message over 9000 bytes (§17), counts larger than the message, or a record
    or name running past its end."""
    if len(packet) > MAX_MDNS_MESSAGE:
        raise DecodeError("mdns", f"message of {len(packet)} bytes too long")
    if len(packet) < 12:
        raise DecodeError("mdns", "message shorter than its header")
    flags = int.from_bytes(packet[2:4], "big")
    qd, an, ns, _ar = (int.from_bytes(packet[i : i + 2], "big") for i in (4, 6, 8, 10))
    if qd * 5 + (an + ns) * 11 > len(packet) - 12:
        raise DecodeError("mdns", "section counts larger than the message")
    if flags & 0x8000 or ns == 0:
        return None
    want = name.lower().rstrip(".") + "."
    pos = 12
    asked = False
    for _ in range(qd):
        qname, pos = _read_name(packet, pos)
        if pos + 4 > len(packet):
            raise DecodeError("mdns", "question runs past the message", pos)
        pos += 4
        asked = asked or qname == want
    out: list[ProbeRecord] = []
    for index in range(an + ns):
        rname, pos = _read_name(packet, pos)
        if pos + 10 > len(packet):
            raise DecodeError("mdns", "record header runs past the message", pos)
        rtype = int.from_bytes(packet[pos : pos + 2], "big")
        rclass = int.from_bytes(packet[pos + 2 : pos + 4], "big") & ~CACHE_FLUSH
        rdlength = int.from_bytes(packet[pos + 8 : pos + 10], "big")
        pos += 10
        if pos + rdlength > len(packet):
            raise DecodeError("mdns", "rdata runs past the message", pos)
        if index >= an and rname == want:
            out.append(ProbeRecord(rclass, rtype, packet[pos : pos + rdlength]))
        pos += rdlength
    if not asked or not out:
        return None
    return tuple(out)


def simultaneous_probe(packet: bytes, name: str, ours: Iterable[ProbeRecord]) -> TieBreak | None:
    """The tie-break against a probe heard while we probe ``name`` (RFC 6762 §8.2), or
    None if ``packet`` is not a probe for ``name``. Raises :class:`DecodeError` for a
    malformed message (see :func:`probe_records`)."""
    theirs = probe_records(packet, name)
    if theirs is None:
        return None
    return tie_break(ours, theirs)
