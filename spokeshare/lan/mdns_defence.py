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
"""

from __future__ import annotations

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
            raise ValueError(f"address of {len(self.address)} octets")
        if self.ttl < 0:
            raise ValueError(f"negative TTL {self.ttl}")


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
