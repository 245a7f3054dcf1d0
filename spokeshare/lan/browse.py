"""NetBIOS datagram service (nbdgm, RFC 1002 §4.4; UDP 138) carrying browse
announcements (``\\MAILSLOT\\BROWSE``, MS-BRWS): codec. Sans-IO.

Three layers, each with its own decode/encode pair, and :func:`decode` /
:func:`encode` for the whole stack:

1. the NetBIOS datagram (RFC 1002 §4.4): :class:`Datagram`;
2. an SMB1 ``SMB_COM_TRANSACTION`` mailslot write (MS-MAIL §2.2.1, [MS-CIFS]
   §2.2.4.33): :class:`Mailslot`;
3. the browser frame (MS-BRWS §2.2): :class:`Announcement` (HostAnnouncement,
   LocalMasterAnnouncement, DomainAnnouncement share one layout),
   :class:`AnnouncementRequest`, or :class:`OtherBrowserMessage` for the opcodes
   the edge does not act on (elections, backup lists...).

The datagram header is big-endian (network order); the SMB and browser layers are
little-endian, as SMB is. Only :class:`~spokeshare.errors.DecodeError` escapes a
decoder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address

from spokeshare.buffer import Buffer
from spokeshare.errors import DecodeError, UsageError, decoder
from spokeshare.lan.netbios import MAX_UDP_PAYLOAD, NetbiosName, pull_name, push_name

PROTOCOL = "nbdgm"

#: RFC 1002 §6: the datagram service port (source and destination of announcements).
DATAGRAM_PORT = 138
#: MS-BRWS §2.2: the mailslot browser frames are written to.
BROWSE_MAILSLOT = "\\MAILSLOT\\BROWSE"
#: MS-BRWS §2.2.1: the comment is at most 43 bytes (nmbd truncates to this too).
MAX_COMMENT_LENGTH = 43
#: A bound of our own on a decoded comment or response name (MS-BRWS §2.2.1 allows 43
#: for a comment; 255 leaves room for what real servers send): longer is refused.
MAX_TEXT_LENGTH = 255
#: MS-BRWS §2.2.1: Signature of a HostAnnouncement ("MUST be set to 0xAA55").
ANNOUNCEMENT_SIGNATURE = 0xAA55
#: MS-BRWS §2.2.1: BrowserConfigVersionMajor / Minor (Samba sends 15.1).
BROWSER_VERSION_MAJOR = 0x0F
BROWSER_VERSION_MINOR = 0x01
#: OS version Samba announces (6.1), what Windows expects of a current server.
OS_VERSION_MAJOR = 6
OS_VERSION_MINOR = 1


class DatagramType(enum.IntEnum):
    """RFC 1002 §4.4.1 MSG_TYPE for the three data-carrying datagrams."""

    DIRECT_UNIQUE = 0x10
    DIRECT_GROUP = 0x11
    BROADCAST = 0x12


class DatagramFlags(enum.IntFlag):
    """RFC 1002 §4.4.1 FLAGS: M (more fragments) and F (first fragment).

    SNT, the source node type, is bits 2-3 (:class:`SourceNodeType`)."""

    MORE = 0x01
    FIRST = 0x02


class SourceNodeType(enum.IntEnum):
    """RFC 1002 §4.4.1 SNT: 00 B node, 01 P node, 10 M node, 11 NBDD."""

    B = 0
    P = 1
    M = 2
    NBDD = 3


class BrowserOpcode(enum.IntEnum):
    """MS-BRWS §2.2 browser frame opcodes."""

    HOST_ANNOUNCEMENT = 0x01
    ANNOUNCEMENT_REQUEST = 0x02
    REQUEST_ELECTION = 0x08
    GET_BACKUP_LIST_REQUEST = 0x09
    GET_BACKUP_LIST_RESPONSE = 0x0A
    BECOME_BACKUP = 0x0B
    DOMAIN_ANNOUNCEMENT = 0x0C
    MASTER_ANNOUNCEMENT = 0x0D
    RESET_STATE_REQUEST = 0x0E
    LOCAL_MASTER_ANNOUNCEMENT = 0x0F


#: Opcodes whose frame has the HostAnnouncement layout (MS-BRWS §2.2.1, §2.2.11, §2.2.12).
ANNOUNCEMENT_OPCODES = frozenset(
    {
        BrowserOpcode.HOST_ANNOUNCEMENT,
        BrowserOpcode.DOMAIN_ANNOUNCEMENT,
        BrowserOpcode.LOCAL_MASTER_ANNOUNCEMENT,
    }
)


class ServerType(enum.IntFlag):
    """MS-BRWS §2.2.1 / MS-RAP §5.1.1 SV_TYPE bits (Samba ``librpc/idl/misc.idl``)."""

    WORKSTATION = 0x00000001
    SERVER = 0x00000002
    SQLSERVER = 0x00000004
    DOMAIN_CTRL = 0x00000008
    DOMAIN_BAKCTRL = 0x00000010
    TIME_SOURCE = 0x00000020
    AFP = 0x00000040
    NOVELL = 0x00000080
    DOMAIN_MEMBER = 0x00000100
    PRINTQ_SERVER = 0x00000200
    DIALIN_SERVER = 0x00000400
    SERVER_UNIX = 0x00000800
    NT = 0x00001000
    WFW = 0x00002000
    SERVER_MFPN = 0x00004000
    SERVER_NT = 0x00008000
    POTENTIAL_BROWSER = 0x00010000
    BACKUP_BROWSER = 0x00020000
    MASTER_BROWSER = 0x00040000
    DOMAIN_MASTER = 0x00080000
    SERVER_OSF = 0x00100000
    SERVER_VMS = 0x00200000
    WIN95_PLUS = 0x00400000
    DFS_SERVER = 0x00800000
    ALTERNATE_XPORT = 0x20000000
    LOCAL_LIST_ONLY = 0x40000000
    DOMAIN_ENUM = 0x80000000


#: What Samba announces by default (``lp_default_server_announce()``): 0x00009A03,
#: which makes the local master browser list the name as a file server.
DEFAULT_SERVER_TYPE = (
    ServerType.WORKSTATION
    | ServerType.SERVER
    | ServerType.PRINTQ_SERVER
    | ServerType.SERVER_UNIX
    | ServerType.NT
    | ServerType.SERVER_NT
)


def _check_uint(value: int, bits: int, what: str) -> None:
    if not 0 <= value < (1 << bits):
        raise UsageError(f"{what} must fit in {bits} bits, got {value!r}")


def _check_text(value: str, limit: int, what: str) -> None:
    if any(ord(c) > 255 for c in value) or "\0" in value:
        raise UsageError(f"{what} must be latin-1 without NUL")
    if len(value) > limit:
        raise UsageError(f"{what} longer than {limit} bytes")


# -- layer 1: the NetBIOS datagram ---------------------------------------------------


@dataclass(frozen=True)
class Datagram:
    """A DIRECT_UNIQUE / DIRECT_GROUP / BROADCAST datagram (RFC 1002 §4.4.1, §4.4.2)."""

    msg_type: DatagramType
    dgm_id: int
    source_ip: IPv4Address
    source_name: NetbiosName
    destination_name: NetbiosName
    user_data: bytes
    source_port: int = DATAGRAM_PORT
    flags: DatagramFlags = DatagramFlags.FIRST
    node_type: SourceNodeType = SourceNodeType.B
    packet_offset: int = 0

    def __post_init__(self) -> None:
        _check_uint(self.dgm_id, 16, "DGM_ID")
        _check_uint(self.source_port, 16, "SOURCE_PORT")
        _check_uint(self.packet_offset, 16, "PACKET_OFFSET")
        names = sum(
            34 + (len(n.scope) + 1 if n.scope else 0)
            for n in (self.source_name, self.destination_name)
        )
        if names + len(self.user_data) > 0xFFFF:  # DGM_LENGTH is 16 bits
            raise UsageError("datagram too long")


@decoder(PROTOCOL)
def decode_datagram(data: bytes) -> Datagram:
    """Decode one UDP 138 payload carrying data (MSG_TYPE 0x10-0x12).

    RFC 1002 §4.4.2 DIRECT_UNIQUE, DIRECT_GROUP & BROADCAST DATAGRAM::

        MSG_TYPE(8) | FLAGS(8) | DGM_ID(16)
        SOURCE_IP(32)
        SOURCE_PORT(16) | DGM_LENGTH(16)
        PACKET_OFFSET(16) | SOURCE_NAME ...
        DESTINATION_NAME ... | USER_DATA ...

    DGM_LENGTH counts the bytes after PACKET_OFFSET (the two names and the data),
    as Samba's ``build_dgram()`` writes it; it must match the payload.
    """
    if len(data) > MAX_UDP_PAYLOAD:
        raise DecodeError(PROTOCOL, "larger than a UDP datagram", 0)
    buf = Buffer(data, PROTOCOL)
    msg_type = buf.pull_uint8()
    try:
        kind = DatagramType(msg_type)
    except ValueError:
        raise DecodeError(PROTOCOL, f"unsupported MSG_TYPE 0x{msg_type:02x}", 0) from None
    flags = buf.pull_uint8()
    if flags & 0xF0:
        raise DecodeError(PROTOCOL, "reserved FLAGS bits set", 1)
    dgm_id = buf.pull_uint16()
    source_ip = IPv4Address(buf.pull_bytes(4))
    source_port = buf.pull_uint16()
    dgm_length = buf.pull_uint16()
    packet_offset = buf.pull_uint16()
    if dgm_length != buf.remaining:
        raise DecodeError(PROTOCOL, f"DGM_LENGTH {dgm_length} but {buf.remaining} bytes follow", 10)
    source_name = pull_name(buf, allow_pointers=False)
    destination_name = pull_name(buf, allow_pointers=False)
    return Datagram(
        msg_type=kind,
        dgm_id=dgm_id,
        source_ip=source_ip,
        source_name=source_name,
        destination_name=destination_name,
        user_data=buf.pull_rest(),
        source_port=source_port,
        flags=DatagramFlags(flags & 0x03),
        node_type=SourceNodeType((flags >> 2) & 0x03),
        packet_offset=packet_offset,
    )


def encode_datagram(dgram: Datagram) -> bytes:
    """Encode a datagram; DGM_LENGTH is computed (see :func:`decode_datagram`)."""
    body = Buffer(protocol=PROTOCOL)
    push_name(body, dgram.source_name)
    push_name(body, dgram.destination_name)
    body.push_bytes(dgram.user_data)
    payload = body.getvalue()
    buf = Buffer(protocol=PROTOCOL)
    buf.push_uint8(int(dgram.msg_type))
    buf.push_uint8(int(dgram.flags) | (int(dgram.node_type) << 2))
    buf.push_uint16(dgram.dgm_id)
    buf.push_bytes(dgram.source_ip.packed)
    buf.push_uint16(dgram.source_port)
    buf.push_uint16(len(payload))
    buf.push_uint16(dgram.packet_offset)
    buf.push_bytes(payload)
    return buf.getvalue()


# -- layer 2: the SMB mailslot write -------------------------------------------------

_SMB_MAGIC = b"\xffSMB"
#: [MS-CIFS] §2.2.4.33 SMB_COM_TRANSACTION.
SMB_COM_TRANSACTION = 0x25
#: MS-MAIL §2.2.1: Setup[0] of a mailslot write.
MAILSLOT_WRITE = 1
#: MS-MAIL §2.2.1: class 2 = unreliable (broadcast) mailslot; priority is ignored.
MAILSLOT_CLASS_UNRELIABLE = 2
_SMB_HEADER_LEN = 32
_TRANS_WORDS = 17


@dataclass(frozen=True)
class Mailslot:
    """A mailslot write: SMB_COM_TRANSACTION with Setup = {1, priority, class}."""

    name: str
    data: bytes
    priority: int = 1
    mailslot_class: int = MAILSLOT_CLASS_UNRELIABLE

    def __post_init__(self) -> None:
        _check_text(self.name, 255, "mailslot name")
        _check_uint(self.priority, 16, "mailslot priority")
        _check_uint(self.mailslot_class, 16, "mailslot class")
        if len(self.data) > 0xFFFF - 200:
            raise UsageError("mailslot data too long")


@decoder(PROTOCOL)
def decode_mailslot(data: bytes) -> Mailslot:
    """Decode the SMB part of a mailslot datagram.

    [MS-CIFS] §2.2.3.1 SMB header (32 bytes: Protocol ``\\xffSMB``, Command, Status,
    Flags, Flags2, PIDHigh, SecurityFeatures, Reserved, TID, PIDLow, UID, MID),
    then §2.2.4.33.1 SMB_COM_TRANSACTION request, little-endian::

        WordCount(1) = 14 + SetupCount (17 for a mailslot)
        Words: TotalParameterCount TotalDataCount MaxParameterCount MaxDataCount
               MaxSetupCount(1) Reserved1(1) Flags Timeout(4) Reserved2
               ParameterCount ParameterOffset DataCount DataOffset
               SetupCount(1) Reserved3(1) Setup[SetupCount]
        ByteCount | Name (NUL-terminated) | pad | Parameters | Data

    DataOffset counts from the start of the SMB header. The header's other fields
    are not checked (nmbd writes zeros; others may not).
    """
    buf = Buffer(data, PROTOCOL)
    if buf.pull_bytes(4) != _SMB_MAGIC:
        raise DecodeError(PROTOCOL, "not an SMB1 message", 0)
    if buf.pull_uint8() != SMB_COM_TRANSACTION:
        raise DecodeError(PROTOCOL, "not SMB_COM_TRANSACTION", 4)
    buf.seek(_SMB_HEADER_LEN)
    word_count = buf.pull_uint8()
    if word_count < 14:
        raise DecodeError(PROTOCOL, f"WordCount {word_count} too small", _SMB_HEADER_LEN)
    words_at = buf.position
    buf.pull_bytes(2 * 11)  # TotalParam .. ParameterOffset: not needed for a mailslot
    data_count = buf.pull_uint16_le()
    data_offset = buf.pull_uint16_le()
    setup_count = buf.pull_uint8()
    buf.pull_uint8()
    if word_count != 14 + setup_count:
        raise DecodeError(PROTOCOL, "WordCount does not match SetupCount", words_at)
    setup = [buf.pull_uint16_le() for _ in range(setup_count)]
    if setup_count != 3 or setup[0] != MAILSLOT_WRITE:
        raise DecodeError(PROTOCOL, "transaction is not a mailslot write", words_at + 28)
    byte_count = buf.pull_uint16_le()
    bytes_at = buf.position
    if byte_count != buf.remaining:
        raise DecodeError(
            PROTOCOL, f"ByteCount {byte_count}, {buf.remaining} bytes follow", bytes_at - 2
        )
    area = buf.peek_bytes(byte_count)
    nul = area.find(b"\0")
    if nul < 0:
        raise DecodeError(PROTOCOL, "mailslot name not NUL-terminated", bytes_at)
    name = area[:nul].decode("latin-1")
    if not bytes_at + nul + 1 <= data_offset <= len(data) - data_count:
        raise DecodeError(PROTOCOL, "DataOffset/DataCount outside the message", words_at + 24)
    if data_offset + data_count != len(data):
        raise DecodeError(PROTOCOL, "bytes after the transaction data", data_offset)
    return Mailslot(name, data[data_offset:], priority=setup[1], mailslot_class=setup[2])


def encode_mailslot(msg: Mailslot) -> bytes:
    """Encode a mailslot write the way nmbd's ``send_mailslot()`` does: a zeroed SMB
    header, 17 words, DataOffset = 70 + len(name), no parameters, no padding."""
    name = msg.name.encode("latin-1") + b"\0"
    buf = Buffer(protocol=PROTOCOL)
    buf.push_bytes(_SMB_MAGIC)
    buf.push_uint8(SMB_COM_TRANSACTION)
    buf.push_bytes(bytes(_SMB_HEADER_LEN - 5))
    buf.push_uint8(_TRANS_WORDS)
    data_offset = _SMB_HEADER_LEN + 1 + 2 * _TRANS_WORDS + 2 + len(name)
    for word in (0, len(msg.data), 0, 0, 0, 0, 0, 0, 0, 0, 0, len(msg.data), data_offset):
        buf.push_uint16_le(word)  # MaxSetupCount/Reserved1 and Timeout are zero words
    buf.push_uint8(3)  # SetupCount
    buf.push_uint8(0)
    for word in (MAILSLOT_WRITE, msg.priority, msg.mailslot_class):
        buf.push_uint16_le(word)
    buf.push_uint16_le(len(name) + len(msg.data))
    buf.push_bytes(name)
    buf.push_bytes(msg.data)
    return buf.getvalue()


# -- layer 3: browser frames ---------------------------------------------------------


@dataclass(frozen=True)
class Announcement:
    """HostAnnouncement, LocalMasterAnnouncement or DomainAnnouncement.

    MS-BRWS §2.2.1 (little-endian)::

        Opcode(1) UpdateCount(1) Periodicity(4, ms) ServerName(16, NUL-padded)
        OSVersionMajor(1) OSVersionMinor(1) ServerType(4)
        BrowserConfigVersionMajor(1) BrowserConfigVersionMinor(1) Signature(2)
        Comment (NUL-terminated, < 43 bytes)

    For a DomainAnnouncement (§2.2.12) ``server_name`` is the workgroup and
    ``comment`` the name of its local master browser.
    """

    server_name: str
    server_type: int
    comment: str = ""
    periodicity_ms: int = 60_000
    opcode: BrowserOpcode = BrowserOpcode.HOST_ANNOUNCEMENT
    update_count: int = 0
    os_major: int = OS_VERSION_MAJOR
    os_minor: int = OS_VERSION_MINOR
    browser_major: int = BROWSER_VERSION_MAJOR
    browser_minor: int = BROWSER_VERSION_MINOR
    signature: int = ANNOUNCEMENT_SIGNATURE

    def __post_init__(self) -> None:
        if self.opcode not in ANNOUNCEMENT_OPCODES:
            raise UsageError(f"{self.opcode!r} is not an announcement")
        _check_text(self.server_name, 15, "server name")
        _check_text(self.comment, MAX_TEXT_LENGTH, "comment")
        _check_uint(self.server_type, 32, "server type")
        _check_uint(self.periodicity_ms, 32, "periodicity")
        for v in (
            self.update_count,
            self.os_major,
            self.os_minor,
            self.browser_major,
            self.browser_minor,
        ):
            _check_uint(v, 8, "announcement byte field")
        _check_uint(self.signature, 16, "signature")


@dataclass(frozen=True)
class AnnouncementRequest:
    """MS-BRWS §2.2.2: Opcode(1)=2, Unused(1), ResponseName (NUL-terminated)."""

    response_name: str
    unused: int = 0

    def __post_init__(self) -> None:
        _check_text(self.response_name, MAX_TEXT_LENGTH, "response name")
        _check_uint(self.unused, 8, "unused byte")


@dataclass(frozen=True)
class OtherBrowserMessage:
    """A browser frame the edge does not act on, kept as opcode + body."""

    opcode: int
    body: bytes

    def __post_init__(self) -> None:
        _check_uint(self.opcode, 8, "opcode")
        if self.opcode in ANNOUNCEMENT_OPCODES or self.opcode == BrowserOpcode.ANNOUNCEMENT_REQUEST:
            raise UsageError("use Announcement / AnnouncementRequest for this opcode")


BrowserMessage = Announcement | AnnouncementRequest | OtherBrowserMessage


def _pull_cstring(buf: Buffer, what: str) -> str:
    rest = buf.peek_bytes(buf.remaining)
    nul = rest.find(b"\0")
    if nul < 0:
        raise buf.error(f"{what} not NUL-terminated")
    value = buf.pull_bytes(nul).decode("latin-1")
    buf.pull_uint8()
    return value


@decoder(PROTOCOL)
def decode_browser_message(data: bytes) -> BrowserMessage:
    """Decode one MS-BRWS frame (the mailslot data)."""
    buf = Buffer(data, PROTOCOL)
    opcode = buf.pull_uint8()
    msg: BrowserMessage
    if opcode in ANNOUNCEMENT_OPCODES:
        update_count = buf.pull_uint8()
        periodicity = buf.pull_uint32_le()
        raw_name = buf.pull_bytes(16)
        nul = raw_name.find(b"\0")
        if nul < 0 or nul > 15:
            raise DecodeError(PROTOCOL, "server name not NUL-terminated", 6)
        os_major = buf.pull_uint8()
        os_minor = buf.pull_uint8()
        server_type = buf.pull_uint32_le()
        browser_major = buf.pull_uint8()
        browser_minor = buf.pull_uint8()
        signature = buf.pull_uint16_le()
        comment = _pull_cstring(buf, "comment")
        if len(comment) > MAX_TEXT_LENGTH:
            raise DecodeError(PROTOCOL, f"comment longer than {MAX_TEXT_LENGTH} bytes", 32)
        msg = Announcement(
            server_name=raw_name[:nul].decode("latin-1"),
            server_type=server_type,
            comment=comment,
            periodicity_ms=periodicity,
            opcode=BrowserOpcode(opcode),
            update_count=update_count,
            os_major=os_major,
            os_minor=os_minor,
            browser_major=browser_major,
            browser_minor=browser_minor,
            signature=signature,
        )
    elif opcode == BrowserOpcode.ANNOUNCEMENT_REQUEST:
        # MS-BRWS §2.2.2 says Unused(1) then a NUL-terminated ResponseName. nmbd's
        # broadcast_announce_request() puts its workgroup token in Unused, writes the
        # name one byte further on and drops the terminator (see the captured vector
        # 19-nmbd-udp138.bin): so take the rest, without NULs on either side.
        unused = buf.pull_uint8()
        rest = buf.pull_rest().strip(b"\0")
        if b"\0" in rest:
            raise DecodeError(PROTOCOL, "NUL inside the response name", 2)
        if len(rest) > MAX_TEXT_LENGTH:
            raise DecodeError(PROTOCOL, f"response name longer than {MAX_TEXT_LENGTH} bytes", 2)
        msg = AnnouncementRequest(rest.decode("latin-1"), unused)
    else:
        msg = OtherBrowserMessage(opcode, buf.pull_rest())
    buf.finish()
    return msg


def encode_browser_message(msg: BrowserMessage) -> bytes:
    """Encode one MS-BRWS frame (layouts in :class:`Announcement` and friends)."""
    buf = Buffer(protocol=PROTOCOL)
    if isinstance(msg, Announcement):
        buf.push_uint8(int(msg.opcode))
        buf.push_uint8(msg.update_count)
        buf.push_uint32_le(msg.periodicity_ms)
        buf.push_bytes(msg.server_name.encode("latin-1").ljust(16, b"\0"))
        buf.push_uint8(msg.os_major)
        buf.push_uint8(msg.os_minor)
        buf.push_uint32_le(msg.server_type)
        buf.push_uint8(msg.browser_major)
        buf.push_uint8(msg.browser_minor)
        buf.push_uint16_le(msg.signature)
        buf.push_bytes(msg.comment.encode("latin-1") + b"\0")
    elif isinstance(msg, AnnouncementRequest):
        buf.push_uint8(BrowserOpcode.ANNOUNCEMENT_REQUEST)
        buf.push_uint8(msg.unused)
        buf.push_bytes(msg.response_name.encode("latin-1") + b"\0")
    else:
        buf.push_uint8(msg.opcode)
        buf.push_bytes(msg.body)
    return buf.getvalue()


# -- the whole stack -----------------------------------------------------------------


@dataclass(frozen=True)
class BrowseDatagram:
    """A browser frame as it travels: datagram fields plus the decoded message.

    The mailslot is always ``\\MAILSLOT\\BROWSE``; ``datagram.user_data`` is ignored
    by :func:`encode` (it is rebuilt from ``message``).
    """

    datagram: Datagram
    message: BrowserMessage
    mailslot_priority: int = 1
    mailslot_class: int = MAILSLOT_CLASS_UNRELIABLE


@decoder(PROTOCOL)
def decode(data: bytes) -> BrowseDatagram:
    """Decode a UDP 138 payload that carries an MS-BRWS frame; anything else
    (other mailslots, fragments, non-SMB data) is a :class:`DecodeError`."""
    dgram = decode_datagram(data)
    if dgram.flags != DatagramFlags.FIRST or dgram.packet_offset != 0:
        raise DecodeError(PROTOCOL, "fragmented datagram", 1)
    slot = decode_mailslot(dgram.user_data)
    if slot.name.upper() != BROWSE_MAILSLOT:
        raise DecodeError(PROTOCOL, f"mailslot {slot.name!r} is not the browser's", 82)
    return BrowseDatagram(
        dgram, decode_browser_message(slot.data), slot.priority, slot.mailslot_class
    )


def encode(packet: BrowseDatagram) -> bytes:
    """Encode a browser frame with its mailslot and datagram wrapping."""
    slot = Mailslot(
        BROWSE_MAILSLOT,
        encode_browser_message(packet.message),
        packet.mailslot_priority,
        packet.mailslot_class,
    )
    d = packet.datagram
    return encode_datagram(
        Datagram(
            msg_type=d.msg_type,
            dgm_id=d.dgm_id,
            source_ip=d.source_ip,
            source_name=d.source_name,
            destination_name=d.destination_name,
            user_data=encode_mailslot(slot),
            source_port=d.source_port,
            flags=d.flags,
            node_type=d.node_type,
            packet_offset=d.packet_offset,
        )
    )


def host_announcement(
    dgm_id: int,
    source_ip: IPv4Address,
    server_name: str,
    workgroup: str,
    *,
    comment: str,
    server_type: int,
    periodicity_ms: int,
    update_count: int = 0,
    node_type: SourceNodeType = SourceNodeType.B,
) -> BrowseDatagram:
    """A HostAnnouncement from ``server_name<00>`` to ``workgroup<1D>`` (the local
    master browser), DIRECT_GROUP as nmbd sends it (lan-presence.md §2.1)."""
    return BrowseDatagram(
        Datagram(
            msg_type=DatagramType.DIRECT_GROUP,
            dgm_id=dgm_id,
            source_ip=source_ip,
            source_name=NetbiosName.create(server_name, 0x00),
            destination_name=NetbiosName.create(workgroup, 0x1D),
            user_data=b"",
            node_type=node_type,
        ),
        Announcement(
            server_name=server_name.upper(),
            server_type=server_type,
            comment=comment[:MAX_COMMENT_LENGTH],
            periodicity_ms=periodicity_ms,
            update_count=update_count,
        ),
    )
