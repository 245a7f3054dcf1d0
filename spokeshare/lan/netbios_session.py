"""NetBIOS session service (nbss, RFC 1002 §4.3; TCP 139) framing. Sans-IO.

A client calling by NetBIOS name opens TCP 139 and sends a SESSION REQUEST naming
the called and calling names; the server answers with a POSITIVE SESSION RESPONSE
(then SMB flows in SESSION MESSAGEs) or a NEGATIVE SESSION RESPONSE with an error
code. Either side may send SESSION KEEP ALIVE at any time.

Every packet has the same 4-byte header (RFC 1002 §4.3.1)::

                        1 1 1 1 1 1 1 1 1 1 2 2 2 2 2 2 2 2 2 2 3 3
    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |      TYPE     |     FLAGS     |            LENGTH             |
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

FLAGS bit 7 (0x01) is E, the length extension, giving a 17-bit LENGTH. For SESSION
MESSAGEs carrying SMB, Samba and Windows use the whole FLAGS byte as the high byte
of a 24-bit length (as on TCP 445, [MS-SMB2] §2.1); :class:`SessionReader` accepts
that for messages only.

:func:`decode` takes exactly one packet; :class:`SessionReader` cuts a byte stream
into packets and answers :data:`NEED_DATA` until a whole one has arrived.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address

from spokeshare.buffer import Buffer
from spokeshare.errors import DecodeError, UsageError, decoder
from spokeshare.lan import NEED_DATA as NEED_DATA
from spokeshare.lan import NeedData as NeedData
from spokeshare.lan.netbios import NetbiosName, pull_name, push_name

PROTOCOL = "nbss"

#: RFC 1002 §6: the session service port.
SESSION_PORT = 139
#: RFC 1002 §4.3.1: LENGTH is 17 bits for every packet type.
MAX_RFC_LENGTH = 0x1FFFF
#: Session messages may use a 24-bit length (see the module docstring).
MAX_MESSAGE_LENGTH = 0xFFFFFF


class PacketType(enum.IntEnum):
    """RFC 1002 §4.3.1 TYPE values."""

    SESSION_MESSAGE = 0x00
    SESSION_REQUEST = 0x81
    POSITIVE_SESSION_RESPONSE = 0x82
    NEGATIVE_SESSION_RESPONSE = 0x83
    RETARGET_SESSION_RESPONSE = 0x84
    SESSION_KEEP_ALIVE = 0x85


class SessionError(enum.IntEnum):
    """RFC 1002 §4.3.4 NEGATIVE SESSION RESPONSE error codes."""

    NOT_LISTENING_ON_CALLED_NAME = 0x80
    NOT_LISTENING_FOR_CALLING_NAME = 0x81
    CALLED_NAME_NOT_PRESENT = 0x82
    INSUFFICIENT_RESOURCES = 0x83
    UNSPECIFIED_ERROR = 0x8F


@dataclass(frozen=True)
class SessionRequest:
    """RFC 1002 §4.3.2: CALLED NAME then CALLING NAME, each a full encoded name."""

    called: NetbiosName
    calling: NetbiosName


@dataclass(frozen=True)
class PositiveSessionResponse:
    """RFC 1002 §4.3.3: header only, LENGTH 0."""


@dataclass(frozen=True)
class NegativeSessionResponse:
    """RFC 1002 §4.3.4: one ERROR_CODE byte."""

    error: int = SessionError.CALLED_NAME_NOT_PRESENT

    def __post_init__(self) -> None:
        if not 0 <= self.error <= 0xFF:
            raise UsageError("session error code must fit in a byte")


@dataclass(frozen=True)
class RetargetSessionResponse:
    """RFC 1002 §4.3.5: RETARGET_IP_ADDRESS(32) RETARGET_PORT(16)."""

    address: IPv4Address
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise UsageError("port must fit in 16 bits")


@dataclass(frozen=True)
class SessionKeepAlive:
    """RFC 1002 §4.3.7: header only, LENGTH 0."""


@dataclass(frozen=True)
class SessionMessage:
    """RFC 1002 §4.3.6: the user data (SMB) of one message."""

    payload: bytes

    def __post_init__(self) -> None:
        if len(self.payload) > MAX_MESSAGE_LENGTH:
            raise UsageError("session message longer than 24 bits of length")


SessionPacket = (
    SessionRequest
    | PositiveSessionResponse
    | NegativeSessionResponse
    | RetargetSessionResponse
    | SessionKeepAlive
    | SessionMessage
)


@decoder(PROTOCOL)
def parse_header(header: bytes) -> tuple[int, int]:
    """Return (TYPE, LENGTH) from the 4-byte header; checks FLAGS (RFC 1002 §4.3.1).

    SESSION MESSAGE takes FLAGS as the top byte of a 24-bit length; other types
    allow only the E bit.
    """
    buf = Buffer(header, PROTOCOL)
    ptype = buf.pull_uint8()
    flags = buf.pull_uint8()
    length = buf.pull_uint16()
    buf.finish()
    if ptype not in PacketType.__members__.values():
        raise DecodeError(PROTOCOL, f"unknown packet type 0x{ptype:02x}", 0)
    if ptype == PacketType.SESSION_MESSAGE:
        return ptype, (flags << 16) | length
    if flags & 0xFE:
        raise DecodeError(PROTOCOL, "reserved FLAGS bits set", 1)
    return ptype, ((flags & 0x01) << 16) | length


@decoder(PROTOCOL)
def decode(data: bytes) -> SessionPacket:
    """Decode exactly one session packet (header included)."""
    if len(data) < 4:
        raise DecodeError(PROTOCOL, f"needs 4 header bytes, got {len(data)}", 0)
    ptype, length = parse_header(data[:4])
    if len(data) - 4 != length:
        raise DecodeError(PROTOCOL, f"LENGTH {length} but {len(data) - 4} bytes follow", 2)
    buf = Buffer(data, PROTOCOL)
    buf.seek(4)
    packet: SessionPacket
    if ptype == PacketType.SESSION_MESSAGE:
        packet = SessionMessage(buf.pull_rest())
    elif ptype == PacketType.SESSION_REQUEST:
        called = pull_name(buf, allow_pointers=False)
        calling = pull_name(buf, allow_pointers=False)
        packet = SessionRequest(called, calling)
    elif ptype == PacketType.POSITIVE_SESSION_RESPONSE:
        packet = PositiveSessionResponse()
    elif ptype == PacketType.NEGATIVE_SESSION_RESPONSE:
        packet = NegativeSessionResponse(buf.pull_uint8())
    elif ptype == PacketType.RETARGET_SESSION_RESPONSE:
        packet = RetargetSessionResponse(IPv4Address(buf.pull_bytes(4)), buf.pull_uint16())
    else:
        packet = SessionKeepAlive()
    buf.finish()
    return packet


def encode(packet: SessionPacket) -> bytes:
    """Encode one session packet with its header."""
    body = Buffer(protocol=PROTOCOL)
    if isinstance(packet, SessionMessage):
        ptype = PacketType.SESSION_MESSAGE
        body.push_bytes(packet.payload)
    elif isinstance(packet, SessionRequest):
        ptype = PacketType.SESSION_REQUEST
        push_name(body, packet.called)
        push_name(body, packet.calling)
    elif isinstance(packet, PositiveSessionResponse):
        ptype = PacketType.POSITIVE_SESSION_RESPONSE
    elif isinstance(packet, NegativeSessionResponse):
        ptype = PacketType.NEGATIVE_SESSION_RESPONSE
        body.push_uint8(packet.error)
    elif isinstance(packet, RetargetSessionResponse):
        ptype = PacketType.RETARGET_SESSION_RESPONSE
        body.push_bytes(packet.address.packed)
        body.push_uint16(packet.port)
    else:
        ptype = PacketType.SESSION_KEEP_ALIVE
    payload = body.getvalue()
    n = len(payload)
    if ptype != PacketType.SESSION_MESSAGE and n > MAX_RFC_LENGTH:
        raise UsageError("session packet longer than 17 bits of length")
    out = Buffer(protocol=PROTOCOL)
    out.push_uint8(ptype)
    out.push_uint8(n >> 16)
    out.push_uint16(n & 0xFFFF)
    out.push_bytes(payload)
    return out.getvalue()


class SessionReader:
    """Cuts a TCP byte stream into session packets.

    ``feed()`` the bytes as they arrive, then call :meth:`next_packet` until it
    returns :data:`NEED_DATA`. A bad header raises :class:`DecodeError` (the
    connection should then be closed: the stream cannot be resynchronised).
    ``max_length`` bounds what is buffered for one packet (backpressure against a
    peer announcing a huge message).
    """

    def __init__(self, max_length: int = MAX_RFC_LENGTH) -> None:
        self._buf = bytearray()
        self._max = max_length

    def __repr__(self) -> str:
        return f"<SessionReader buffered={len(self._buf)}>"

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_packet(self) -> SessionPacket | NeedData:
        if len(self._buf) < 4:
            return NEED_DATA
        _, length = parse_header(bytes(self._buf[:4]))
        if length > self._max:
            raise DecodeError(PROTOCOL, f"packet of {length} bytes exceeds {self._max}", 2)
        if len(self._buf) < 4 + length:
            return NEED_DATA
        frame = bytes(self._buf[: 4 + length])
        del self._buf[: 4 + length]
        return decode(frame)

    def take_rest(self) -> bytes:
        """Hand over whatever is buffered (e.g. to relay it once the session is up)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


#: RFC 1002 §4.3.2 leaves the called name to the server; ``*SMBSERVER<20>`` is the
#: generic name SMB clients (smbclient, the Linux kernel's cifs) call when the real one
#: is refused or unknown ([MS-CIFS] §3.2.4.2.2 "*SMBSERVER").
SMBSERVER_NAME = "*SMBSERVER"
#: The 8-character form Windows XP-era redirectors send for the same generic call.
SMBSERV_NAME = "*SMBSERV"
#: Every generic called name a server answers as if its own name had been called.
GENERIC_NAMES = frozenset({SMBSERVER_NAME, SMBSERV_NAME})
#: The server-service suffix: a file server is called as NAME<20> (lan-presence.md §1.7).
SERVER_SUFFIX = 0x20


@dataclass(frozen=True)
class SessionDecision:
    """What to answer a SESSION REQUEST: ``response`` to send, and for a positive
    answer the virtual name the session belongs to (which hub service to relay to)."""

    response: PositiveSessionResponse | NegativeSessionResponse
    virtual_name: str | None = None


def answer_session_request(
    request: SessionRequest,
    names: tuple[str, ...] | list[str],
    *,
    smbserver_name: str | None = None,
) -> SessionDecision:
    """Decide the answer to a session request, for a server owning ``names``.

    - ``NAME<20>`` for one of ``names`` (case-insensitive): positive.
    - one of ``names`` with another suffix: NEGATIVE, 0x80 "not listening on called
      name" (the name is ours, no service listens on it; RFC 1002 §4.3.4).
    - ``*SMBSERVER<20>`` or ``*SMBSERV<20>`` (:data:`GENERIC_NAMES`): positive for
      ``smbserver_name`` when one is given (the caller gives one only when every name
      served at the called address stands for the same hub service), otherwise 0x82.
    - anything else: NEGATIVE, 0x82 "called name not present".
    """
    called = request.called
    wanted = called.name.upper()
    by_upper = {n.upper(): n for n in names}
    if wanted in GENERIC_NAMES and called.suffix == SERVER_SUFFIX and smbserver_name:
        return SessionDecision(PositiveSessionResponse(), smbserver_name)
    if wanted in by_upper:
        if called.suffix == SERVER_SUFFIX:
            return SessionDecision(PositiveSessionResponse(), by_upper[wanted])
        return SessionDecision(NegativeSessionResponse(SessionError.NOT_LISTENING_ON_CALLED_NAME))
    return SessionDecision(NegativeSessionResponse(SessionError.CALLED_NAME_NOT_PRESENT))
