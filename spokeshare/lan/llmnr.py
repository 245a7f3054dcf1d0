"""LLMNR (RFC 4795) codec and responder core, sans-IO.

Wire format, RFC 4795 §2.1.1 (DNS header layout with LLMNR's own flag bits)::

     0  1  2  3  4  5  6  7  8  9  10 11 12 13 14 15
    +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
    |                      ID                       |
    +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
    |QR|   Opcode  | C|TC| T| Z| Z| Z| Z|   RCODE   |
    +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
    |                    QDCOUNT                    |
    |                    ANCOUNT                    |
    |                    NSCOUNT                    |
    |                    ARCOUNT                    |
    +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+

followed by the question and resource record sections of RFC 1035 §4.1.2/§4.1.3.
Names may use RFC 1035 §4.1.4 compression pointers; the decoder follows only
pointers that go backwards, so it always terminates.

:class:`LlmnrResponder` decides what to answer: only queries (QR=0, opcode 0,
C=0, TC=0, one question, no answers or authority, RFC 4795 §2.1.1) for a name
the edge owns (compared case-insensitively), types A, AAAA and ANY (MS-LLMNRP
§3.2.5), answered with the address of the interface the query arrived on, rate
limited per source address. Time is passed in; nothing here touches a socket.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from spokeshare.buffer import Buffer
from spokeshare.errors import DecodeError, UsageError, decoder
from spokeshare.lan.ratelimit import AnswerBudget, Budget
from spokeshare.lan.recheck import RECHECK_LONGEST, recheck_delay

PROTOCOL = "llmnr"

#: RFC 4795 §2: UDP (and TCP) port 5355.
PORT = 5355
#: RFC 4795 §2: IPv4 link-scope multicast group.
MCAST_V4 = "224.0.0.252"
#: RFC 4795 §2: IPv6 link-scope multicast group.
MCAST_V6 = "ff02::1:3"
#: RFC 4795 §2.8: "the default TTL ... SHOULD be 30 seconds".
DEFAULT_TTL = 30
#: RFC 4795 §2.1: a UDP query or response is at most 512 octets unless EDNS0 says
#: more; we accept anything up to the largest UDP payload and check lengths inside.
MAX_MESSAGE = 65535

HEADER_LEN = 12

# Flag bits, RFC 4795 §2.1.1.
FLAG_QR = 0x8000
OPCODE_MASK = 0x7800
OPCODE_SHIFT = 11
FLAG_C = 0x0400  #: conflict
FLAG_TC = 0x0200  #: truncation
FLAG_T = 0x0100  #: tentative
RCODE_MASK = 0x000F

# RR types and class, RFC 1035 §3.2.2-§3.2.4, RFC 3596 §2.1 (AAAA).
TYPE_A = 1
TYPE_PTR = 12
TYPE_AAAA = 28
TYPE_ANY = 255
CLASS_IN = 1

#: RFC 1035 §2.3.4 size limits.
MAX_LABEL = 63
MAX_NAME = 255
#: Compression pointers followed per name before giving up (defence against loops).
MAX_POINTERS = 32


def _check_u16(what: str, v: int) -> None:
    if not 0 <= v <= 0xFFFF:
        raise UsageError(f"llmnr: {what} {v} outside 0..65535")


def _name_labels(name: str) -> list[bytes]:
    """Split a dotted name into UTF-8 labels (MS-LLMNRP: names are UTF-8)."""
    text = name[:-1] if name.endswith(".") else name
    if not text:
        return []
    labels = [part.encode("utf-8") for part in text.split(".")]
    return labels


def _check_name(name: str) -> None:
    labels = _name_labels(name)
    for label in labels:
        if not 1 <= len(label) <= MAX_LABEL:
            raise UsageError(f"llmnr: label {label!r} must be 1..{MAX_LABEL} bytes")
    if sum(len(label) + 1 for label in labels) + 1 > MAX_NAME:
        raise UsageError(f"llmnr: name {name!r} longer than {MAX_NAME} bytes")


@dataclass(frozen=True)
class Question:
    """One entry of the question section (RFC 1035 §4.1.2). ``name`` has no trailing dot."""

    name: str
    qtype: int
    qclass: int = CLASS_IN

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_u16("qtype", self.qtype)
        _check_u16("qclass", self.qclass)


@dataclass(frozen=True)
class ResourceRecord:
    """One resource record (RFC 1035 §4.1.3); ``rdata`` is kept as bytes."""

    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_u16("type", self.rtype)
        _check_u16("class", self.rclass)
        if not 0 <= self.ttl <= 0xFFFFFFFF:
            raise UsageError(f"llmnr: ttl {self.ttl} outside 0..2**32-1")
        if len(self.rdata) > 0xFFFF:
            raise UsageError("llmnr: rdata longer than 65535 bytes")

    @property
    def address(self) -> str | None:
        """The address of an A or AAAA record, else None."""
        if self.rtype == TYPE_A and len(self.rdata) == 4:
            return str(ipaddress.IPv4Address(self.rdata))
        if self.rtype == TYPE_AAAA and len(self.rdata) == 16:
            return str(ipaddress.IPv6Address(self.rdata))
        return None


@dataclass(frozen=True)
class Message:
    """An LLMNR query or response (RFC 4795 §2.1.1)."""

    id: int
    flags: int
    questions: tuple[Question, ...] = ()
    answers: tuple[ResourceRecord, ...] = ()
    authority: tuple[ResourceRecord, ...] = ()
    additional: tuple[ResourceRecord, ...] = field(default=())

    def __post_init__(self) -> None:
        _check_u16("id", self.id)
        _check_u16("flags", self.flags)
        for section in (self.questions, self.answers, self.authority, self.additional):
            _check_u16("section count", len(section))

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> OPCODE_SHIFT

    @property
    def conflict(self) -> bool:
        return bool(self.flags & FLAG_C)

    @property
    def truncated(self) -> bool:
        return bool(self.flags & FLAG_TC)

    @property
    def tentative(self) -> bool:
        return bool(self.flags & FLAG_T)

    @property
    def rcode(self) -> int:
        return self.flags & RCODE_MASK


# -- decoding ---------------------------------------------------------------------------


def _pull_name(buf: Buffer, data: bytes) -> str:
    """Read a (possibly compressed) name at the buffer's position (RFC 1035 §4.1.4)."""
    labels: list[str] = []
    total = 1
    pointers = 0
    # After the first pointer we walk ``data`` directly; ``buf`` stays after the pointer.
    pos = -1
    while True:
        if pos < 0:
            length = buf.pull_uint8()
        else:
            if pos >= len(data):
                raise DecodeError(PROTOCOL, "name runs past the message", pos)
            length = data[pos]
            pos += 1
        if length == 0:
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos < 0:
                low = buf.pull_uint8()
                here = buf.position - 2
            else:
                if pos >= len(data):
                    raise DecodeError(PROTOCOL, "pointer runs past the message", pos)
                low = data[pos]
                here = pos - 1
            target = ((length & 0x3F) << 8) | low
            pointers += 1
            if target >= here or pointers > MAX_POINTERS:
                raise DecodeError(PROTOCOL, f"compression pointer to {target} not backwards", here)
            pos = target
            continue
        if kind != 0:
            raise DecodeError(PROTOCOL, f"label type {kind:#x} not supported", buf.position)
        if pos < 0:
            raw = buf.pull_bytes(length)
        else:
            if pos + length > len(data):
                raise DecodeError(PROTOCOL, "label runs past the message", pos)
            raw = data[pos : pos + length]
            pos += length
        total += length + 1
        if total > MAX_NAME:
            raise DecodeError(PROTOCOL, f"name longer than {MAX_NAME} bytes", buf.position)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(PROTOCOL, "label is not UTF-8", buf.position) from exc
        if "." in text:
            raise DecodeError(PROTOCOL, "label contains a dot", buf.position)
        labels.append(text)
    return ".".join(labels)


def _pull_rr(buf: Buffer, data: bytes) -> ResourceRecord:
    name = _pull_name(buf, data)
    rtype = buf.pull_uint16()
    rclass = buf.pull_uint16()
    ttl = buf.pull_uint32()
    rdlength = buf.pull_uint16()
    rdata = buf.pull_bytes(rdlength)
    return ResourceRecord(name, rtype, rclass, ttl, rdata)


@decoder(PROTOCOL)
def decode(data: bytes) -> Message:
    """Decode one LLMNR message; raises only :class:`DecodeError`."""
    if len(data) > MAX_MESSAGE:
        raise DecodeError(PROTOCOL, f"message of {len(data)} bytes too long")
    data = bytes(data)
    buf = Buffer(data, PROTOCOL)
    msg_id = buf.pull_uint16()
    flags = buf.pull_uint16()
    counts = [buf.pull_uint16() for _ in range(4)]
    # Every entry needs at least 5 bytes (question) or 11 bytes (RR): reject
    # absurd counts before looping.
    if counts[0] * 5 + (counts[1] + counts[2] + counts[3]) * 11 > buf.remaining:
        raise DecodeError(PROTOCOL, "section counts larger than the message", buf.position)
    try:
        questions = []
        for _ in range(counts[0]):
            name = _pull_name(buf, data)
            qtype = buf.pull_uint16()
            qclass = buf.pull_uint16()
            questions.append(Question(name, qtype, qclass))
        sections = [[_pull_rr(buf, data) for _ in range(n)] for n in counts[1:]]
    except UsageError as exc:  # a value the dataclasses refuse, e.g. an empty label
        raise DecodeError(PROTOCOL, str(exc), buf.position) from exc
    buf.finish()
    return Message(
        msg_id,
        flags,
        tuple(questions),
        tuple(sections[0]),
        tuple(sections[1]),
        tuple(sections[2]),
    )


# -- encoding ---------------------------------------------------------------------------


def _push_name(buf: Buffer, name: str, first_question: str | None) -> None:
    # The one compression we do, as Windows and wsdd2 do: an answer for the
    # question's name points back to it at offset 12 (RFC 1035 §4.1.4).
    if first_question is not None and name == first_question:
        buf.push_uint16(0xC000 | HEADER_LEN)
        return
    for label in _name_labels(name):
        buf.push_uint8(len(label))
        buf.push_bytes(label)
    buf.push_uint8(0)


def encode(msg: Message) -> bytes:
    """Encode a message; answers for the first question's name are compressed."""
    buf = Buffer(protocol=PROTOCOL)
    buf.push_uint16(msg.id)
    buf.push_uint16(msg.flags)
    for section in (msg.questions, msg.answers, msg.authority, msg.additional):
        buf.push_uint16(len(section))
    first = msg.questions[0].name if msg.questions else None
    for i, q in enumerate(msg.questions):
        _push_name(buf, q.name, None if i == 0 else first)
        buf.push_uint16(q.qtype)
        buf.push_uint16(q.qclass)
    for rr in (*msg.answers, *msg.authority, *msg.additional):
        _push_name(buf, rr.name, first)
        buf.push_uint16(rr.rtype)
        buf.push_uint16(rr.rclass)
        buf.push_uint32(rr.ttl)
        buf.push_uint16(len(rr.rdata))
        buf.push_bytes(rr.rdata)
    return buf.getvalue()


def build_query(msg_id: int, name: str, qtype: int = TYPE_A) -> bytes:
    """A query as a sender builds it (RFC 4795 §2.1.1); used by tests and uniqueness checks."""
    return encode(Message(msg_id, 0, (Question(name, qtype, CLASS_IN),)))


# -- responder core ----------------------------------------------------------------------

#: Answers allowed per source address per window (our own limit; RFC 4795 §2.7
#: asks responders to limit the impact of floods).
RATE_LIMIT = 20
RATE_WINDOW = 1.0
#: Sources remembered by the limiter (oldest forgotten first): bounded memory.
RATE_SOURCES = 1024
#: All answers together, whatever the source (a spoofer has many): 100 at once,
#: then 50 a second (docs/lan-hardening.md).
RATE_GLOBAL_BURST = 100.0
RATE_GLOBAL_PER_SECOND = 50.0


@dataclass(frozen=True)
class InterfaceAddresses:
    """The addresses of the interface a query arrived on (the only ones we answer with)."""

    ipv4: str | None = None
    ipv6: str | None = None

    def __post_init__(self) -> None:
        if self.ipv4 is not None:
            ipaddress.IPv4Address(self.ipv4)
        if self.ipv6 is not None:
            ipaddress.IPv6Address(self.ipv6.split("%", 1)[0])


@dataclass(frozen=True)
class ClaimStatistics:
    """What :meth:`NameClaims.statistics` counts: conflicts found by our uniqueness
    checks, names reclaimed once their other owner was gone, and answers, C-bit
    queries and other claims on our names nobody asked us about (RFC 4795 section 4)."""

    conflicts: int = 0
    reclaimed: int = 0
    challenges_ignored: int = 0


@dataclass(frozen=True)
class ResponderStatistics:
    answered: int
    ignored: int
    malformed: int
    rate_limited: int
    #: Filled in by the adapter (discovery_service.LlmnrService).
    internal_errors: int = 0
    #: From :class:`NameClaims` (filled in by the adapter): conflicts found by our
    #: own uniqueness checks, names reclaimed once their other owner was gone, and
    #: answers, C-bit queries and other claims on our names nobody asked us about.
    conflicts: int = 0
    reclaimed: int = 0
    challenges_ignored: int = 0
    #: Queries from a source outside the office link, dropped unanswered (RFC 4795
    #: §2.5); filled in by the adapter.
    off_link_dropped: int = 0


class LlmnrResponder:
    """Decides the answer to one received datagram.

    ``handle()`` returns the response bytes to send by unicast to the querier's
    source address and port (RFC 4795 §2.1.1, "responses are sent by unicast"),
    or None to stay silent. Queries with C or TC set, responses, other opcodes and
    types, names we do not own and our own packets are ignored.
    """

    def __init__(
        self,
        names: Iterable[str],
        *,
        ttl: int = DEFAULT_TTL,
        rate_limit: int = RATE_LIMIT,
        rate_window: float = RATE_WINDOW,
        name_addresses: Mapping[str, str] | None = None,
        name_addresses6: Mapping[str, str | None] | None = None,
        global_burst: float = RATE_GLOBAL_BURST,
        global_rate: float = RATE_GLOBAL_PER_SECOND,
    ) -> None:
        self._names = frozenset(n.rstrip(".").casefold() for n in names)
        self._configured = self._names
        #: A name's own IPv6 address (None: the name has none, so no AAAA: only what
        #: answers is advertised); names not listed share the interface's.
        self._addresses6 = {
            n.rstrip(".").casefold(): str(ipaddress.IPv6Address(a.split("%", 1)[0])) if a else None
            for n, a in (name_addresses6 or {}).items()
        }
        #: A name with an address of its own is answered with it, not the interface's
        #: (two names carrying different SMB services live on two addresses).
        self._addresses = {
            n.rstrip(".").casefold(): str(ipaddress.IPv4Address(a))
            for n, a in (name_addresses or {}).items()
        }
        if not self._names:
            raise UsageError("llmnr: a responder needs at least one name")
        self._ttl = ttl
        self._rate_limit = rate_limit
        self._rate_window = rate_window
        self._sources: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # The global budget only: the per-source window above is the per-source one.
        everyone = Budget(global_burst, global_rate)
        self._global = AnswerBudget(everyone, everyone, max_sources=1)
        self.enabled = True
        self._answered = 0
        self._ignored = 0
        self._malformed = 0
        self._rate_limited = 0

    def __repr__(self) -> str:
        return f"<LlmnrResponder names={sorted(self._names)} enabled={self.enabled}>"

    def owns(self, name: str) -> bool:
        return name.rstrip(".").casefold() in self._names

    def exclude(self, name: str) -> None:
        """Stop answering for ``name``: another host holds it (RFC 4795 §4.1). The
        responder keeps at least its type; with no name left it answers nothing."""
        self._names = self._names - {name.rstrip(".").casefold()}

    def include(self, name: str) -> None:
        """Answer for a configured ``name`` again (it was reclaimed, RFC 4795 §4.1)."""
        key = name.rstrip(".").casefold()
        if key in self._configured:
            self._names = self._names | {key}

    def statistics(self) -> ResponderStatistics:
        return ResponderStatistics(
            self._answered, self._ignored, self._malformed, self._rate_limited
        )

    def _allow(self, source: str, now: float) -> bool:
        start, count = self._sources.pop(source, (now, 0))
        if now - start >= self._rate_window or now < start:
            start, count = now, 0
        count += 1
        self._sources[source] = (start, count)
        while len(self._sources) > RATE_SOURCES:
            self._sources.popitem(last=False)
        return count <= self._rate_limit

    def answer(self, query: Message, local: InterfaceAddresses) -> Message | None:
        """The response to a decoded query, or None (pure decision, no rate limit)."""
        if query.is_response or query.opcode != 0 or query.conflict or query.truncated:
            return None
        if len(query.questions) != 1 or query.answers or query.authority:
            return None
        q = query.questions[0]
        if q.qclass != CLASS_IN or q.qtype not in (TYPE_A, TYPE_AAAA, TYPE_ANY):
            return None
        if not self.owns(q.name):
            return None
        answers: list[ResourceRecord] = []
        ipv4 = self._addresses.get(q.name.rstrip(".").casefold(), local.ipv4)
        if q.qtype in (TYPE_A, TYPE_ANY) and ipv4 is not None:
            packed = ipaddress.IPv4Address(ipv4).packed
            answers.append(ResourceRecord(q.name, TYPE_A, CLASS_IN, self._ttl, packed))
        key = q.name.rstrip(".").casefold()
        ipv6 = self._addresses6[key] if key in self._addresses6 else local.ipv6
        if q.qtype in (TYPE_AAAA, TYPE_ANY) and ipv6 is not None:
            packed = ipaddress.IPv6Address(ipv6.split("%", 1)[0]).packed
            answers.append(ResourceRecord(q.name, TYPE_AAAA, CLASS_IN, self._ttl, packed))
        # An authoritative responder with no record of the asked type still answers,
        # with an empty answer section, so the querier need not wait for its timeout.
        return Message(query.id, FLAG_QR, (q,), tuple(answers))

    def handle(
        self, data: bytes, source: str, local: InterfaceAddresses, now: float
    ) -> bytes | None:
        """Decide on one datagram from ``source`` (an IP address) received at ``local``.

        Raises :class:`DecodeError` for malformed input (the caller drops it and logs).
        """
        if not self.enabled:
            self._ignored += 1
            return None
        src = source.split("%", 1)[0]
        if src in (local.ipv4, (local.ipv6 or "").split("%", 1)[0]):
            self._ignored += 1  # our own packet, looped back
            return None
        try:
            query = decode(data)
        except DecodeError:
            self._malformed += 1
            raise
        response = self.answer(query, local)
        if response is None:
            self._ignored += 1
            return None
        if not self._allow(src, now) or not self._global.allow("", now):
            self._rate_limited += 1
            return None
        self._answered += 1
        return encode(response)


# -- uniqueness verification and conflicts (RFC 4795 §4) ---------------------------------

#: RFC 4795 §2.7: LLMNR_TIMEOUT, 1 s: how long a uniqueness query waits for answers.
UNIQUENESS_WAIT = 1.0
#: The longest wait between two checks of a name in conflict (our choice, as for
#: NetBIOS and mDNS in this project; RFC 4795 §4 has no re-check): the first comes 5 s
#: after the conflict, the waits double up to this (spokeshare.lan.recheck); while the
#: other owner answers the name stays in conflict; once it is silent it is ours again.
CONFLICT_RECHECK_INTERVAL = RECHECK_LONGEST


@dataclass(frozen=True)
class UniquenessQuery:
    """Send ``data`` (a query for ``name``, C clear, type ANY, RFC 4795 §4.1) to the
    LLMNR groups of every family the edge answers on."""

    name: str
    id: int
    data: bytes


@dataclass(frozen=True)
class LlmnrConflict:
    """Another host (``owner``, an address) answered our uniqueness query for ``name``:
    it is not answered until a re-check finds it free, ``recheck_in`` seconds from
    now. ``repeat`` is True when the name was already in conflict (report it
    quietly)."""

    name: str
    owner: str
    repeat: bool = False
    recheck_in: float = 0.0


@dataclass(frozen=True)
class LlmnrReclaimed:
    """A name in conflict met silence at its re-check: it is answered again."""

    name: str


ClaimCommand = UniquenessQuery | LlmnrConflict | LlmnrReclaimed


@dataclass
class _Claim:
    name: str
    #: None, or the id of the uniqueness query in flight and when its wait ends.
    query_id: int | None = None
    deadline: float | None = None
    #: First other host that answered the query in flight.
    answered_by: str | None = None
    #: Verified (or verified before and not found in conflict since): answered.
    held: bool = False
    #: Owner found by the last check that failed (None: not in conflict).
    conflict_with: str | None = None
    recheck_at: float | None = None
    #: Checks in a row that found the name answered by another host.
    checks_failed: int = 0


class NameClaims:
    """Uniqueness verification and conflict handling for the edge's LLMNR names.

    RFC 4795 §4.1: at start and when the interface comes up (:meth:`verify`) a query
    for each name (type ANY, C clear) goes to the link; an answer with C clear from
    an address that is not ours, to *that* query's id, within ``wait`` seconds, puts
    the name in conflict: it is not answered (:meth:`answering` False) and is
    reported (:class:`LlmnrConflict`). Answers with C set are from a host attached
    several times to the link and are not a conflict (§4.1).

    RFC 4795 §4.2: a query with C set for a name we hold makes us re-verify it
    (:meth:`received` returns the query) and is never answered (the responder
    ignores C queries); the name keeps being answered while it is re-verified, so a
    spoofed C query silences nothing.

    A name in conflict is checked again 5 s later, then at doubling intervals up to
    ``recheck_interval`` seconds (:mod:`spokeshare.lan.recheck`), and reclaimed
    (:class:`LlmnrReclaimed`) when nobody answers. Responses nobody asked for
    (another id, or no query in flight) are counted as ``challenges_ignored``
    and change nothing, so a spoofer can cause at most a conflict that a single
    forged answer to an in-flight query creates, lasting until the next re-check.

    Time is the ``now`` argument (seconds, monotonic); nothing here logs or sends.
    """

    def __init__(
        self,
        names: Iterable[str],
        own_addresses: Iterable[str],
        *,
        wait: float = UNIQUENESS_WAIT,
        recheck_interval: float = CONFLICT_RECHECK_INTERVAL,
        new_id: Callable[[], int] | None = None,
    ) -> None:
        if recheck_delay(1, recheck_interval) <= wait:
            raise UsageError("llmnr: conflict re-check must be longer than a uniqueness wait")
        self._claims = {n.rstrip(".").casefold(): _Claim(n.rstrip(".")) for n in names}
        self._own = frozenset(a.split("%", 1)[0] for a in own_addresses)
        self._wait = wait
        self._recheck = recheck_interval
        rng = random.SystemRandom()
        self._new_id = new_id or (lambda: rng.randrange(1, 0x10000))
        self._stats = {"conflicts": 0, "reclaimed": 0, "challenges_ignored": 0}

    def statistics(self) -> ClaimStatistics:
        """Counters since the claims were made (:class:`ClaimStatistics`)."""
        return ClaimStatistics(**self._stats)

    def answering(self, name: str) -> bool:
        """True if ``name`` is ours to answer for now."""
        claim = self._claims.get(name.rstrip(".").casefold())
        return claim is not None and claim.held

    def conflicts(self) -> dict[str, str]:
        """Names in conflict -> the address that answered for them."""
        return {c.name: c.conflict_with for c in self._claims.values() if c.conflict_with}

    def _query(self, claim: _Claim, now: float) -> UniquenessQuery:
        qid = self._new_id() & 0xFFFF
        claim.query_id, claim.deadline, claim.answered_by = qid, now + self._wait, None
        claim.recheck_at = None
        return UniquenessQuery(claim.name, qid, build_query(qid, claim.name, TYPE_ANY))

    def verify(self, now: float) -> list[UniquenessQuery]:
        """Start a uniqueness check of every name not already being checked (start-up,
        interface up, announce after a withdraw; RFC 4795 §4.1)."""
        return [self._query(c, now) for c in self._claims.values() if c.query_id is None]

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` next has something to do (monotonic seconds), or None."""
        times = [
            t for c in self._claims.values() for t in (c.deadline, c.recheck_at) if t is not None
        ]
        return min(times, default=None)

    def received(self, msg: Message, source: str, now: float) -> list[ClaimCommand]:
        """Look at one decoded datagram from ``source`` (an address)."""
        src = source.split("%", 1)[0]
        if src in self._own or len(msg.questions) != 1:
            return []
        claim = self._claims.get(msg.questions[0].name.rstrip(".").casefold())
        if claim is None:
            return []
        if not msg.is_response:
            if msg.conflict and msg.opcode == 0 and claim.held and claim.query_id is None:
                return [self._query(claim, now)]  # RFC 4795 §4.2: re-verify, do not answer
            return []
        if claim.query_id is None or msg.id != claim.query_id:
            if msg.answers:
                self._stats["challenges_ignored"] += 1
            return []
        others = [rr.address for rr in msg.answers if rr.address is not None]
        if msg.conflict or not others or all(a in self._own for a in others):
            return []  # §4.1: C set means the same host on the link twice
        if claim.answered_by is None:
            claim.answered_by = src
        return []

    def handle_timer(self, now: float) -> list[ClaimCommand]:
        """Finish checks whose wait is over and start due re-checks (RFC 4795 §4.1);
        [] when nothing is due at ``now``."""
        out: list[ClaimCommand] = []
        for c in self._claims.values():
            if c.deadline is not None and now >= c.deadline:
                c.query_id = c.deadline = None
                if c.answered_by is not None:
                    repeat = c.conflict_with == c.answered_by
                    c.conflict_with, c.answered_by, c.held = c.answered_by, None, False
                    c.checks_failed += 1
                    delay = recheck_delay(c.checks_failed, self._recheck)
                    c.recheck_at = now + delay
                    self._stats["conflicts"] += 1
                    out.append(LlmnrConflict(c.name, c.conflict_with, repeat, delay))
                else:
                    if c.conflict_with is not None:
                        self._stats["reclaimed"] += 1
                        out.append(LlmnrReclaimed(c.name))
                    c.conflict_with, c.held, c.checks_failed = None, True, 0
            elif c.recheck_at is not None and now >= c.recheck_at:
                out.append(self._query(c, now))
        return out
