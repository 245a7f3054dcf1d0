"""NetBIOS name service (nbns, RFC 1002 §4.2; UDP 137) codec, and NetBIOS names. Sans-IO.

:func:`decode` turns one UDP payload into an :class:`NbnsPacket`, :func:`encode` turns
one back into bytes. Both sides check everything: every length and count, every
label, every compression pointer (pointers must go strictly backwards, so a
hostile packet cannot make the decoder loop), and trailing bytes. Only
:class:`~spokeshare.errors.DecodeError` ever escapes :func:`decode`; values that
cannot be encoded are refused when the dataclass is built (:class:`~spokeshare.errors.UsageError`).

The builders at the bottom (:func:`name_query_request`,
:func:`positive_query_response`, :func:`node_status_response`,
:func:`registration_request`, :func:`negative_registration_response`, ...) produce
the packets a B-node sends, laid out as Samba's nmbd lays them out (see
``lan-presence.md`` §1), so what we put on the wire matches what real clients accept.

Packet layout (RFC 1002 §4.2.1)::

                        1 1 1 1 1 1 1 1 1 1 2 2 2 2 2 2 2 2 2 2 3 3
    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |         NAME_TRN_ID           | OPCODE  |   NM_FLAGS  | RCODE |
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |          QDCOUNT              |           ANCOUNT             |
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |          NSCOUNT              |           ARCOUNT             |
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |  QUESTION ENTRIES, ANSWER / AUTHORITY / ADDITIONAL RECORDS    |
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from spokeshare.buffer import Buffer
from spokeshare.errors import DecodeError, UsageError, decoder

PROTOCOL = "nbns"

#: RFC 1002 §6 "Defined constants": the name service port.
NAME_SERVICE_UDP_PORT = 137
#: RFC 1002 §6: the datagram service port.
DATAGRAM_SERVICE_UDP_PORT = 138
#: RFC 1002 §6: the session service port.
SESSION_SERVICE_TCP_PORT = 139
#: RFC 1002 §6: MAX_DATAGRAM_LENGTH. We refuse to decode anything larger than a UDP
#: payload can be, and warn callers to stay below this when sending broadcasts.
MAX_DATAGRAM_LENGTH = 576
#: Largest UDP payload over IPv4; anything larger is not a packet we received.
MAX_UDP_PAYLOAD = 65507
#: RFC 1002 §4.1: the whole encoded name, labels and lengths included, is at most 255.
MAX_NAME_LENGTH = 255
#: RFC 1002 §6: PERMANENT/INFINITE TTL; nmbd uses 0 for broadcast registration.
INFINITE_TTL = 0
#: nmbd's ``max ttl`` default (3 days), the TTL it puts in positive query answers.
DEFAULT_ANSWER_TTL = 259200
#: Bounded pointer chasing: no legitimate NetBIOS name needs more than a couple.
_MAX_POINTER_HOPS = 8


class Opcode(enum.IntEnum):
    """RFC 1002 §4.2.1.1 OPCODE (Samba ``nameserv.h``)."""

    QUERY = 0
    REGISTRATION = 5
    RELEASE = 6
    WACK = 7
    REFRESH = 8
    #: RFC 1002 lists 8 for refresh; RFC 1002 errata and Windows use 9 too.
    REFRESH_ALT = 9
    #: Microsoft's multi-homed registration extension.
    MULTIHOMED_REGISTRATION = 15


class NmFlags(enum.IntFlag):
    """RFC 1002 §4.2.1.1 NM_FLAGS, at their bit positions in the 16-bit flags word."""

    AA = 0x0400  # authoritative answer
    TC = 0x0200  # truncation
    RD = 0x0100  # recursion desired
    RA = 0x0080  # recursion available
    B = 0x0010  # broadcast


class Rcode(enum.IntEnum):
    """RFC 1002 §4.2.6, §4.2.11, §4.2.14 RCODE values."""

    OK = 0
    FMT_ERR = 1  # format error
    SRV_ERR = 2  # server failure
    NAM_ERR = 3  # name error: the name does not exist
    IMP_ERR = 4  # unsupported request
    RFS_ERR = 5  # refused
    ACT_ERR = 6  # active error: the name is owned by another node
    CFT_ERR = 7  # name in conflict


class RRType(enum.IntEnum):
    """RFC 1002 §4.2.1.2 / §4.2.1.3 QUESTION_TYPE and RR_TYPE."""

    A = 0x0001
    NS = 0x0002
    NULL = 0x000A
    NB = 0x0020
    NBSTAT = 0x0021


#: RFC 1002 §4.2.1.2 QUESTION_CLASS / RR_CLASS: Internet class.
CLASS_IN = 0x0001

# NB_FLAGS in NB RDATA (RFC 1002 §4.2.2): G bit and ONT (owner node type).
NB_FLAG_GROUP = 0x8000
NB_ONT_MASK = 0x6000


class NodeType(enum.IntEnum):
    """RFC 1002 §4.2.1.3 ONT: owner node type, bits 0x6000 of NB_FLAGS / NAME_FLAGS."""

    B = 0x0000
    P = 0x2000
    M = 0x4000
    H = 0x6000


class NameFlags(enum.IntFlag):
    """RFC 1002 §4.2.18 NAME_FLAGS of a node status entry (ONT is :class:`NodeType`)."""

    GROUP = 0x8000
    DRG = 0x1000  # deregister
    CNF = 0x0800  # in conflict
    ACT = 0x0400  # active (nmbd always sets it)
    PRM = 0x0200  # permanent node name


def _check_uint(value: int, bits: int, what: str) -> None:
    if not 0 <= value < (1 << bits):
        raise UsageError(f"{what} must fit in {bits} bits, got {value!r}")


# -- names ---------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class NetbiosName:
    """A NetBIOS name: up to 15 bytes, a one-byte suffix ("type"), an optional scope.

    ``name`` is kept as it came (trailing space padding removed); use
    :meth:`create` for our own names, which upper-cases as nmbd does
    (``make_nmb_name()``). ``key`` gives the case-insensitive identity used for
    matching. The wildcard ``*`` is padded with NUL bytes instead of spaces
    (RFC 1002 §4.2.18, the node status question).
    """

    name: str
    suffix: int
    scope: str = ""

    def __post_init__(self) -> None:
        if not _is_latin1(self.name):
            raise UsageError(f"NetBIOS name {self.name!r} is not representable in bytes")
        if len(self.name) > 15:
            raise UsageError(f"NetBIOS name {self.name!r} longer than 15 bytes")
        _check_uint(self.suffix, 8, "NetBIOS name suffix")
        if self.scope:
            labels = self.scope.split(".")
            for label in labels:
                if not 1 <= len(label) <= 63 or not _is_latin1(label):
                    raise UsageError(f"bad NetBIOS scope label {label!r}")
            if 34 + len(self.scope) + 1 > MAX_NAME_LENGTH:
                raise UsageError("NetBIOS scope too long")

    @classmethod
    def create(cls, name: str, suffix: int, scope: str = "") -> NetbiosName:
        """Our own name: upper-cased (nmbd's ``make_nmb_name()``)."""
        return cls(name.upper(), suffix, scope.upper())

    @property
    def key(self) -> tuple[str, int, str]:
        """Case-insensitive identity (NetBIOS names compare without case)."""
        return (self.name.upper(), self.suffix, self.scope.upper())

    def raw16(self) -> bytes:
        """The 16 bytes before first-level encoding: padded name plus suffix."""
        pad = b"\0" if self.name == "*" else b" "
        return self.name.encode("latin-1").ljust(15, pad) + bytes([self.suffix])

    def __str__(self) -> str:
        s = f"{self.name}<{self.suffix:02x}>"
        return f"{s}.{self.scope}" if self.scope else s


def _is_latin1(s: str) -> bool:
    return all(ord(c) < 256 for c in s)


def _name_from_raw16(raw: bytes, scope: str) -> NetbiosName:
    body = raw[:15]
    if body[:1] == b"*" and body[1:].strip(b"\0") == b"":
        text = "*"
    else:
        text = body.rstrip(b" ").decode("latin-1")
    return NetbiosName(text, raw[15], scope)


def encode_first_level(raw16: bytes) -> bytes:
    """RFC 1001 §14.1 first-level encoding: each half-byte becomes ``'A' + nibble``."""
    out = bytearray()
    for c in raw16:
        out.append(0x41 + (c >> 4))
        out.append(0x41 + (c & 0x0F))
    return bytes(out)


def push_name(buf: Buffer, name: NetbiosName) -> None:
    """Write a name: label 0x20 + 32 encoded bytes, the scope labels, a 0 terminator.

    RFC 1002 §4.1 (NAME FORMAT) and RFC 1001 §14.1; no compression on output.
    """
    buf.push_uint8(32)
    buf.push_bytes(encode_first_level(name.raw16()))
    if name.scope:
        for label in name.scope.split("."):
            raw = label.encode("latin-1")
            buf.push_uint8(len(raw))
            buf.push_bytes(raw)
    buf.push_uint8(0)


def pull_name(buf: Buffer, *, allow_pointers: bool = True) -> NetbiosName:
    """Read a (possibly compressed) name at the buffer's position.

    RFC 1002 §4.1: a label is ``LEN(8) BYTES`` with LEN < 64; ``11xxxxxx xxxxxxxx``
    is a pointer to an earlier offset (RFC 883 compression). Each pointer must land
    strictly before every offset this name has read so far, so chains are finite;
    at most :data:`_MAX_POINTER_HOPS` are followed. The first label must be 32 bytes
    of ``'A'..'P'`` (the first-level encoding).
    """
    start = buf.position
    floor = start
    resume: int | None = None
    hops = 0
    labels: list[bytes] = []
    total = 0
    while True:
        here = buf.position
        length = buf.pull_uint8()
        if length == 0:
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if not allow_pointers:
                raise DecodeError(PROTOCOL, "label pointer not allowed here", here)
            target = ((length & 0x3F) << 8) | buf.pull_uint8()
            hops += 1
            if hops > _MAX_POINTER_HOPS:
                raise DecodeError(PROTOCOL, "too many label pointers", here)
            if target >= floor:
                raise DecodeError(PROTOCOL, f"label pointer to {target} does not go back", here)
            if resume is None:
                resume = buf.position
            floor = target
            buf.seek(target)
            continue
        if kind != 0:
            raise DecodeError(PROTOCOL, f"reserved label type 0x{kind:02x}", here)
        total += length + 1
        if total + 1 > MAX_NAME_LENGTH:
            raise DecodeError(PROTOCOL, "name longer than 255 bytes", here)
        labels.append(buf.pull_bytes(length))
    if resume is not None:
        buf.seek(resume)
    if not labels:
        raise DecodeError(PROTOCOL, "empty name", start)
    first = labels[0]
    if len(first) != 32:
        raise DecodeError(PROTOCOL, f"first label is {len(first)} bytes, not 32", start)
    raw = bytearray()
    for i in range(0, 32, 2):
        hi, lo = first[i] - 0x41, first[i + 1] - 0x41
        if not (0 <= hi < 16 and 0 <= lo < 16):
            raise DecodeError(PROTOCOL, "first label is not first-level encoded", start)
        raw.append(hi << 4 | lo)
    for label in labels[1:]:
        if b"." in label:
            raise DecodeError(PROTOCOL, "scope label contains a dot", start)
    scope = ".".join(label.decode("latin-1") for label in labels[1:])
    return _name_from_raw16(bytes(raw), scope)


# -- resource data -------------------------------------------------------------------


@dataclass(frozen=True)
class NbEntry:
    """One NB_FLAGS + NB_ADDRESS pair (RFC 1002 §4.2.2, 6 bytes).

    ``reserved`` keeps the RESERVED bits (0x1FFF) as they came: RFC 1002 says
    they are zero, but real senders set them (python3-samba's ``register_name()``
    sends NB_FLAGS 0xDA00), so they are carried, not refused.
    """

    address: IPv4Address
    group: bool = False
    node_type: NodeType = NodeType.B
    reserved: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.address, IPv4Address):
            raise UsageError("NB address must be an IPv4Address")
        if self.reserved & ~0x1FFF or self.reserved < 0:
            raise UsageError("reserved NB_FLAGS bits are 0x1FFF")

    @property
    def flags(self) -> int:
        return (NB_FLAG_GROUP if self.group else 0) | int(self.node_type) | self.reserved


@dataclass(frozen=True)
class NbRData:
    """RDATA of an NB record: zero or more :class:`NbEntry` (RFC 1002 §4.2.2)."""

    entries: tuple[NbEntry, ...] = ()

    def __post_init__(self) -> None:
        if len(self.entries) * 6 > 0xFFFF:
            raise UsageError("too many NB entries")


@dataclass(frozen=True)
class NodeName:
    """One 18-byte NODE_NAME entry of a node status answer (RFC 1002 §4.2.18)."""

    name: str
    suffix: int
    flags: NameFlags = NameFlags.ACT
    node_type: NodeType = NodeType.B

    def __post_init__(self) -> None:
        NetbiosName(self.name, self.suffix)  # same rules as a name
        _check_uint(int(self.flags), 16, "node name flags")
        if int(self.flags) & NB_ONT_MASK:
            raise UsageError("node name flags carry ONT bits: use node_type")

    @property
    def group(self) -> bool:
        return NameFlags.GROUP in self.flags


#: RFC 1002 §4.2.18 STATISTICS: UNIT_ID (6 bytes) then 40 bytes of counters. nmbd
#: sends all zeros; so do we (the MAC of the edge is nobody's business).
ZERO_STATISTICS = bytes(46)


@dataclass(frozen=True)
class NodeStatusRData:
    """RDATA of an NBSTAT answer (RFC 1002 §4.2.18)::

        NUM_NAMES(8) | NODE_NAME_ARRAY (18 bytes each) | STATISTICS

    ``statistics`` is kept whole (46 bytes from RFC-conforming senders; some send
    fewer, so any length is accepted); :attr:`unit_id` is its first 6 bytes.
    """

    names: tuple[NodeName, ...]
    statistics: bytes = ZERO_STATISTICS

    def __post_init__(self) -> None:
        if len(self.names) > 255:
            raise UsageError("a node status answer lists at most 255 names")
        if 1 + 18 * len(self.names) + len(self.statistics) > 0xFFFF:
            raise UsageError("node status RDATA too long")

    @property
    def unit_id(self) -> bytes:
        return self.statistics[:6]


@dataclass(frozen=True)
class RawRData:
    """RDATA kept as bytes: NULL records, WACK's copied flags, unknown types."""

    data: bytes = b""

    def __post_init__(self) -> None:
        if len(self.data) > 0xFFFF:
            raise UsageError("RDATA too long")


RData = NbRData | NodeStatusRData | RawRData


@dataclass(frozen=True)
class Question:
    """RFC 1002 §4.2.1.2 question entry: QUESTION_NAME, QUESTION_TYPE, QUESTION_CLASS."""

    name: NetbiosName
    qtype: int = RRType.NB
    qclass: int = CLASS_IN

    def __post_init__(self) -> None:
        _check_uint(self.qtype, 16, "question type")
        _check_uint(self.qclass, 16, "question class")


@dataclass(frozen=True)
class ResourceRecord:
    """RFC 1002 §4.2.1.3 resource record: RR_NAME, RR_TYPE, RR_CLASS, TTL, RDLENGTH, RDATA."""

    name: NetbiosName
    rtype: int
    ttl: int
    rdata: RData
    rclass: int = CLASS_IN

    def __post_init__(self) -> None:
        _check_uint(self.rtype, 16, "RR type")
        _check_uint(self.rclass, 16, "RR class")
        _check_uint(self.ttl, 32, "TTL")


@dataclass(frozen=True)
class NbnsPacket:
    """One name service packet (RFC 1002 §4.2.1).

    ``flags`` holds the NM_FLAGS bits, ``rcode`` the 4-bit RCODE (unknown values
    are kept as ints). The four record sections are tuples; counts are derived.
    """

    trn_id: int
    opcode: Opcode
    response: bool = False
    flags: NmFlags = NmFlags(0)
    rcode: int = 0
    questions: tuple[Question, ...] = ()
    answers: tuple[ResourceRecord, ...] = ()
    authorities: tuple[ResourceRecord, ...] = ()
    additionals: tuple[ResourceRecord, ...] = ()

    def __post_init__(self) -> None:
        _check_uint(self.trn_id, 16, "transaction id")
        _check_uint(self.rcode, 4, "rcode")
        if int(self.flags) & ~0x0790:
            raise UsageError("NM_FLAGS has bits outside AA TC RD RA B")
        for section in (self.questions, self.answers, self.authorities, self.additionals):
            if len(section) > 0xFFFF:
                raise UsageError("section too long")

    @property
    def broadcast(self) -> bool:
        return NmFlags.B in self.flags

    @property
    def question(self) -> Question | None:
        return self.questions[0] if self.questions else None


# -- decoding ------------------------------------------------------------------------


@decoder(PROTOCOL)
def decode(data: bytes) -> NbnsPacket:
    """Decode one UDP payload; raises :class:`DecodeError` and nothing else."""
    if len(data) > MAX_UDP_PAYLOAD:
        raise DecodeError(PROTOCOL, "larger than a UDP datagram", 0)
    buf = Buffer(data, PROTOCOL)
    trn_id = buf.pull_uint16()
    word = buf.pull_uint16()
    qd, an, ns, ar = (buf.pull_uint16() for _ in range(4))
    try:
        opcode = Opcode((word >> 11) & 0xF)
    except ValueError:
        raise DecodeError(PROTOCOL, f"unknown opcode {(word >> 11) & 0xF}", 2) from None
    # Each question is at least 2 + 4 bytes, each record at least 2 + 10: reject
    # counts the payload cannot hold before building anything.
    if qd * 6 + (an + ns + ar) * 12 > buf.remaining:
        raise DecodeError(PROTOCOL, "record counts exceed the packet", 4)
    questions = tuple(_pull_question(buf) for _ in range(qd))
    answers = tuple(_pull_rr(buf) for _ in range(an))
    authorities = tuple(_pull_rr(buf) for _ in range(ns))
    additionals = tuple(_pull_rr(buf) for _ in range(ar))
    buf.finish()
    return NbnsPacket(
        trn_id=trn_id,
        opcode=opcode,
        response=bool(word & 0x8000),
        flags=NmFlags(word & 0x0790),
        rcode=word & 0x000F,
        questions=questions,
        answers=answers,
        authorities=authorities,
        additionals=additionals,
    )


def _pull_question(buf: Buffer) -> Question:
    name = pull_name(buf)
    return Question(name, buf.pull_uint16(), buf.pull_uint16())


def _pull_rr(buf: Buffer) -> ResourceRecord:
    name = pull_name(buf)
    rtype = buf.pull_uint16()
    rclass = buf.pull_uint16()
    ttl = buf.pull_uint32()
    rdlength = buf.pull_uint16()
    body = buf.pull_bytes(rdlength)
    rdata: RData
    if rtype == RRType.NB and rdlength % 6 == 0:
        sub = Buffer(body, PROTOCOL)
        entries = []
        while not sub.eof():
            flags = sub.pull_uint16()
            entries.append(
                NbEntry(
                    IPv4Address(sub.pull_bytes(4)),
                    group=bool(flags & NB_FLAG_GROUP),
                    node_type=NodeType(flags & NB_ONT_MASK),
                    reserved=flags & 0x1FFF,
                )
            )
        rdata = NbRData(tuple(entries))
    elif rtype == RRType.NBSTAT and rdlength > 0:
        rdata = _pull_node_status(Buffer(body, PROTOCOL))
    else:
        rdata = RawRData(body)
    return ResourceRecord(name, rtype, ttl, rdata, rclass)


def _pull_node_status(sub: Buffer) -> NodeStatusRData:
    # RFC 1002 §4.2.18:
    #   NUM_NAMES(8) | NODE_NAME_ARRAY: { NAME(15 bytes + type byte) NAME_FLAGS(16) }*
    #   | STATISTICS (UNIT_ID(48) JUMPERS(8) TEST_RESULT(8) VERSION_NUMBER(16) ...)
    count = sub.pull_uint8()
    names = []
    for _ in range(count):
        raw = sub.pull_bytes(16)
        flags = sub.pull_uint16()
        n = _name_from_raw16(raw, "")
        names.append(
            NodeName(
                n.name,
                n.suffix,
                NameFlags(flags & ~NB_ONT_MASK),  # reserved bits kept, as in NbEntry
                NodeType(flags & NB_ONT_MASK),
            )
        )
    return NodeStatusRData(tuple(names), sub.pull_rest())


# -- encoding ------------------------------------------------------------------------


def encode(packet: NbnsPacket) -> bytes:
    """Encode a packet. An RR name equal to the first question's name is written as
    the pointer ``0xC00C`` (what nmbd's ``build_nmb()`` does for registration,
    refresh and release requests; RFC 1002 §4.2.2 shows it)."""
    buf = Buffer(protocol=PROTOCOL)
    buf.push_uint16(packet.trn_id)
    word = (
        (0x8000 if packet.response else 0)
        | (int(packet.opcode) << 11)
        | int(packet.flags)
        | packet.rcode
    )
    buf.push_uint16(word)
    for section in (packet.questions, packet.answers, packet.authorities, packet.additionals):
        buf.push_uint16(len(section))
    for q in packet.questions:
        push_name(buf, q.name)
        buf.push_uint16(q.qtype)
        buf.push_uint16(q.qclass)
    qname = packet.questions[0].name if packet.questions else None
    for section in (packet.answers, packet.authorities, packet.additionals):
        for rr in section:
            if qname is not None and rr.name == qname:
                buf.push_uint16(0xC00C)
            else:
                push_name(buf, rr.name)
            buf.push_uint16(rr.rtype)
            buf.push_uint16(rr.rclass)
            buf.push_uint32(rr.ttl)
            body = _encode_rdata(rr.rdata)
            buf.push_uint16(len(body))
            buf.push_bytes(body)
    return buf.getvalue()


def _encode_rdata(rdata: RData) -> bytes:
    out = Buffer(protocol=PROTOCOL)
    if isinstance(rdata, NbRData):
        for e in rdata.entries:
            out.push_uint16(e.flags)
            out.push_bytes(e.address.packed)
    elif isinstance(rdata, NodeStatusRData):
        out.push_uint8(len(rdata.names))
        for n in rdata.names:
            out.push_bytes(NetbiosName(n.name, n.suffix).raw16())
            out.push_uint16(int(n.flags) | int(n.node_type))
        out.push_bytes(rdata.statistics)
    else:
        out.push_bytes(rdata.data)
    return out.getvalue()


# -- builders: the packets a B-node sends ---------------------------------------------


def name_query_request(trn_id: int, name: NetbiosName, *, broadcast: bool) -> NbnsPacket:
    """RFC 1002 §4.2.12 NAME QUERY REQUEST (RD set, B when broadcast)."""
    return NbnsPacket(
        trn_id,
        Opcode.QUERY,
        flags=NmFlags.RD | (NmFlags.B if broadcast else NmFlags(0)),
        questions=(Question(name, RRType.NB),),
    )


def positive_query_response(
    request: NbnsPacket,
    name: NetbiosName,
    entries: Sequence[NbEntry],
    ttl: int = DEFAULT_ANSWER_TTL,
) -> NbnsPacket:
    """RFC 1002 §4.2.13 POSITIVE NAME QUERY RESPONSE: flags word 0x8580 as nmbd sends
    it (R, AA, RD, RA), no question, one NB answer for the question's name."""
    return NbnsPacket(
        request.trn_id,
        Opcode.QUERY,
        response=True,
        flags=NmFlags.AA | NmFlags.RD | NmFlags.RA,
        answers=(ResourceRecord(name, RRType.NB, ttl, NbRData(tuple(entries))),),
    )


def negative_query_response(request: NbnsPacket, name: NetbiosName) -> NbnsPacket:
    """RFC 1002 §4.2.14 NEGATIVE NAME QUERY RESPONSE: NAM_ERR, RR type NULL,
    RDLENGTH 0. Unicast only: never send it to a broadcast query."""
    return NbnsPacket(
        request.trn_id,
        Opcode.QUERY,
        response=True,
        flags=NmFlags.AA | NmFlags.RD | NmFlags.RA,
        rcode=Rcode.NAM_ERR,
        answers=(ResourceRecord(name, RRType.NULL, 0, RawRData()),),
    )


def node_status_request(trn_id: int, name: NetbiosName | None = None) -> NbnsPacket:
    """RFC 1002 §4.2.17 NODE STATUS REQUEST, by default for the wildcard ``*<00>``."""
    return NbnsPacket(
        trn_id,
        Opcode.QUERY,
        questions=(Question(name or NetbiosName("*", 0), RRType.NBSTAT),),
    )


def node_status_response(
    request: NbnsPacket,
    name: NetbiosName,
    names: Sequence[NodeName],
    statistics: bytes = ZERO_STATISTICS,
) -> NbnsPacket:
    """RFC 1002 §4.2.18 NODE STATUS RESPONSE as nmbd builds it: AA only, TTL 0, the
    question name in the answer."""
    return NbnsPacket(
        request.trn_id,
        Opcode.QUERY,
        response=True,
        flags=NmFlags.AA,
        answers=(
            ResourceRecord(name, RRType.NBSTAT, 0, NodeStatusRData(tuple(names), statistics)),
        ),
    )


def _name_request(
    trn_id: int,
    opcode: Opcode,
    flags: NmFlags,
    name: NetbiosName,
    address: IPv4Address,
    *,
    group: bool,
    ttl: int,
    node_type: NodeType,
) -> NbnsPacket:
    entry = NbEntry(address, group=group, node_type=node_type)
    return NbnsPacket(
        trn_id,
        opcode,
        flags=flags,
        questions=(Question(name, RRType.NB),),
        additionals=(ResourceRecord(name, RRType.NB, ttl, NbRData((entry,))),),
    )


def registration_request(
    trn_id: int,
    name: NetbiosName,
    address: IPv4Address,
    *,
    group: bool = False,
    ttl: int = INFINITE_TTL,
    broadcast: bool = True,
    node_type: NodeType = NodeType.B,
) -> NbnsPacket:
    """RFC 1002 §4.2.2 NAME REGISTRATION REQUEST: RD set, B when broadcast, the
    question plus an additional NB record pointing back at it (0xC00C)."""
    flags = NmFlags.RD | (NmFlags.B if broadcast else NmFlags(0))
    return _name_request(
        trn_id,
        Opcode.REGISTRATION,
        flags,
        name,
        address,
        group=group,
        ttl=ttl,
        node_type=node_type,
    )


def release_request(
    trn_id: int,
    name: NetbiosName,
    address: IPv4Address,
    *,
    group: bool = False,
    broadcast: bool = True,
    node_type: NodeType = NodeType.B,
) -> NbnsPacket:
    """RFC 1002 §4.2.9 NAME RELEASE REQUEST: RD clear (nmbd), B when broadcast."""
    flags = NmFlags.B if broadcast else NmFlags(0)
    return _name_request(
        trn_id,
        Opcode.RELEASE,
        flags,
        name,
        address,
        group=group,
        ttl=0,
        node_type=node_type,
    )


def refresh_request(
    trn_id: int,
    name: NetbiosName,
    address: IPv4Address,
    *,
    ttl: int,
    group: bool = False,
    node_type: NodeType = NodeType.H,
) -> NbnsPacket:
    """RFC 1002 §4.2.4 NAME REFRESH REQUEST, unicast to a WINS server (B clear)."""
    return _name_request(
        trn_id,
        Opcode.REFRESH,
        NmFlags.RD,
        name,
        address,
        group=group,
        ttl=ttl,
        node_type=node_type,
    )


def negative_registration_response(request: NbnsPacket, rcode: Rcode = Rcode.ACT_ERR) -> NbnsPacket:
    """RFC 1002 §4.2.6 NEGATIVE NAME REGISTRATION RESPONSE, the defence of a name:
    ACT_ERR by default, answer = the request's additional record (nmbd copies it).
    A refresh is answered with the refresh opcode (smbtorture ``nbt.register.
    refresh_own`` matches it), anything else with REGISTRATION."""
    if not request.additionals:
        raise UsageError("a registration request carries its record in ADDITIONAL")
    rr = request.additionals[0]
    refresh = request.opcode in (Opcode.REFRESH, Opcode.REFRESH_ALT)
    return NbnsPacket(
        request.trn_id,
        request.opcode if refresh else Opcode.REGISTRATION,
        response=True,
        flags=NmFlags.AA | NmFlags.RD | NmFlags.RA,
        rcode=rcode,
        answers=(ResourceRecord(rr.name, RRType.NB, 0, rr.rdata),),
    )


def wack_response(request: NbnsPacket, ttl: int) -> NbnsPacket:
    """RFC 1002 §4.2.16 WAIT FOR ACKNOWLEDGEMENT: RDATA = the request's 16-bit flags."""
    name = request.questions[0].name if request.questions else NetbiosName("*", 0)
    word = (int(request.opcode) << 11) | int(request.flags) | request.rcode
    return NbnsPacket(
        request.trn_id,
        Opcode.WACK,
        response=True,
        flags=NmFlags.AA,
        answers=(ResourceRecord(name, RRType.NB, ttl, RawRData(word.to_bytes(2, "big"))),),
    )


__all__ = [
    "CLASS_IN",
    "DEFAULT_ANSWER_TTL",
    "INFINITE_TTL",
    "NameFlags",
    "NbEntry",
    "NbRData",
    "NbnsPacket",
    "NetbiosName",
    "NmFlags",
    "NodeName",
    "NodeStatusRData",
    "NodeType",
    "Opcode",
    "Question",
    "RData",
    "RRType",
    "RawRData",
    "Rcode",
    "ResourceRecord",
    "ZERO_STATISTICS",
    "decode",
    "encode",
]
