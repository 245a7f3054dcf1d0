"""The tunnel's wire protocol, sans-IO: stream-open header, status, frames, control.

Every tunnel is one TLS 1.3 connection (ALPN ``spokeshare/1``, or
``spokeshare/1+reuse``) carrying one stream at a time: a LAN client's TCP connection,
or the edge's control channel. Under ``spokeshare/1+reuse`` a stream that ended
cleanly is followed by the hub's END frame and the tunnel carries the next stream. The layout is
documented byte by byte in docs/protocol.md; this module is its executable form.

Edge -> hub, first bytes on a tunnel (the *open header*)::

     0                   1                   2                   3
    +-------+-------+---------------+---------------------------------
    |version| kind  | body length   | body (body length bytes)
    +-------+-------+---------------+---------------------------------
    body, kind STREAM:  u8 service length, service (ASCII), u8 address family
                        (0 none, 4 IPv4, 6 IPv6), address (0/4/16 bytes), u16 port,
                        then optionally the edge's own address and port the client
                        connected to, in the same family/address/port form
    body, kind CONTROL: u8 version-string length, edge software version (ASCII)

Hub -> edge, first bytes on a tunnel (the *status*)::

    +-------+-------+---------------+-----------------------
    |version|status | reason length | reason (UTF-8)
    +-------+-------+---------------+-----------------------

After the status (and only if it is OK) both directions carry *frames*::

    +-------+-----------------------+-----------------
    | type  |   length (24 bits)    | payload
    +-------+-----------------------+-----------------

DATA frames carry the client's bytes; EOF (length 0) says the sender will send no more
(TCP half-close, which TLS transports cannot express); CONTROL frames carry one
control message each (UTF-8 JSON, bounded) on the control channel only. A tunnel that
ends without an EOF in each direction is an abortive close: the peer resets its side.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from spokeshare.buffer import Buffer
from spokeshare.errors import DecodeError, UsageError

#: ALPN protocol id; the number is the wire version below.
ALPN = "spokeshare/1"
#: ALPN id of wire version 1 with sequential reuse (docs/protocol.md, "Sequential
#: reuse"): same layouts, plus the END frame the hub sends when a tunnel whose stream
#: ended cleanly waits for the next open header. Both ends offer it first and
#: :data:`ALPN` second; a peer that knows only :data:`ALPN` agrees on that.
ALPN_REUSE = "spokeshare/1+reuse"
#: What each end offers, most preferred first (the hub's order decides: RFC 7301 §3.2).
ALPNS = (ALPN_REUSE, ALPN)
VERSION = 1
#: Longest open-header body we accept; anything longer is an attack or a bug.
MAX_HEADER_BODY = 512
MAX_REASON = 200
MAX_SERVICE_NAME = 32
MAX_VERSION_STRING = 64
#: Longest frame payload we accept; senders split larger writes.
MAX_FRAME = 1 << 20
#: Longest control message.
MAX_CONTROL = 4096

_SERVICE_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_PROTO = "tunnel"


class Kind(enum.IntEnum):
    STREAM = 1
    CONTROL = 2


class Status(enum.IntEnum):
    """Answers to an open header (docs/protocol.md, "Status codes")."""

    OK = 0
    UNKNOWN_SERVICE = 1
    NOT_ALLOWED = 2
    BACKEND_DOWN = 3
    BAD_HEADER = 4
    UNSUPPORTED_VERSION = 5
    REVOKED = 6
    BUSY = 7
    SHUTTING_DOWN = 8


class FrameType(enum.IntEnum):
    DATA = 0
    EOF = 1
    CONTROL = 2
    #: Hub -> edge, on a tunnel that agreed on :data:`ALPN_REUSE` only: both EOFs have
    #: passed and the hub waits for the next open header on this tunnel.
    END = 3


def valid_service_name(name: str) -> bool:
    return bool(_SERVICE_RE.match(name))


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Edge asks the hub for a stream to ``service`` on behalf of a LAN client."""

    service: str
    client_host: str = ""
    client_port: int = 0
    #: The edge address and port the client connected to (empty/0: not sent). The hub's
    #: IPP handling builds the Host cupsd sees from them (docs/protocol.md).
    local_host: str = ""
    local_port: int = 0

    def __post_init__(self) -> None:
        if not valid_service_name(self.service):
            raise UsageError(f"invalid service name {self.service!r}")
        for host in (self.client_host, self.local_host):
            if host:
                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    raise UsageError(f"host {host!r} is not an IP address") from None
        if not 0 <= self.client_port <= 0xFFFF or not 0 <= self.local_port <= 0xFFFF:
            raise UsageError("client port out of range")


@dataclass(frozen=True, slots=True)
class OpenControl:
    """Edge opens its control channel; says which software it runs."""

    edge_version: str

    def __post_init__(self) -> None:
        if len(self.edge_version) > MAX_VERSION_STRING or not self.edge_version.isascii():
            raise UsageError("edge version string too long or not ASCII")


OpenHeader = OpenStream | OpenControl


@dataclass(frozen=True, slots=True)
class StatusReply:
    status: Status
    reason: str = ""

    def __post_init__(self) -> None:
        if len(self.reason.encode()) > MAX_REASON:
            raise UsageError("status reason too long")


# -- open header ---------------------------------------------------------------------


def encode_open(header: OpenHeader) -> bytes:
    body = Buffer(protocol=_PROTO)
    if isinstance(header, OpenStream):
        kind = Kind.STREAM
        name = header.service.encode("ascii")
        body.push_uint8(len(name))
        body.push_bytes(name)
        _push_address(body, header.client_host, header.client_port)
        if header.local_host or header.local_port:
            _push_address(body, header.local_host, header.local_port)
    else:
        kind = Kind.CONTROL
        v = header.edge_version.encode("ascii")
        body.push_uint8(len(v))
        body.push_bytes(v)
    raw = body.getvalue()
    out = Buffer(protocol=_PROTO)
    out.push_uint8(VERSION)
    out.push_uint8(kind)
    out.push_uint16(len(raw))
    out.push_bytes(raw)
    return out.getvalue()


def _push_address(body: Buffer, host: str, port: int) -> None:
    if host:
        addr = ipaddress.ip_address(host)
        body.push_uint8(addr.version)
        body.push_bytes(addr.packed)
    else:
        body.push_uint8(0)
    body.push_uint16(port)


def _pull_address(buf: Buffer) -> tuple[str, int]:
    family = buf.pull_uint8()
    if family == 0:
        host = ""
    elif family == 4:
        host = str(ipaddress.IPv4Address(buf.pull_bytes(4)))
    elif family == 6:
        host = str(ipaddress.IPv6Address(buf.pull_bytes(16)))
    else:
        raise buf.error(f"unknown address family {family}")
    return host, buf.pull_uint16()


class UnsupportedVersion(DecodeError):
    """The open header names a wire version this hub does not speak."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(_PROTO, f"unsupported wire version {version}", 0)


def parse_open(data: bytes | bytearray) -> tuple[OpenHeader, int] | None:
    """Parse an open header from the start of ``data``.

    Returns ``(header, consumed)``, or None when more bytes are needed. Raises
    :class:`UnsupportedVersion` or :class:`DecodeError` for bytes that can never
    become a valid header (so a slow or oversized header is refused early).
    """
    if len(data) < 1:
        return None
    if data[0] != VERSION:
        raise UnsupportedVersion(data[0])
    if len(data) < 4:
        return None
    kind = data[1]
    body_len = int.from_bytes(data[2:4], "big")
    if kind not in (Kind.STREAM, Kind.CONTROL):
        raise DecodeError(_PROTO, f"unknown header kind {kind}", 1)
    if body_len > MAX_HEADER_BODY:
        raise DecodeError(_PROTO, f"header body of {body_len} bytes exceeds {MAX_HEADER_BODY}", 2)
    if len(data) < 4 + body_len:
        return None
    buf = Buffer(bytes(data[4 : 4 + body_len]), protocol=_PROTO)
    header: OpenHeader
    try:
        if kind == Kind.STREAM:
            name = buf.pull_bytes(buf.pull_uint8())
            try:
                service = name.decode("ascii")
            except UnicodeDecodeError:
                raise buf.error("service name is not ASCII") from None
            host, port = _pull_address(buf)
            # Headers of edges before the local address was added end here.
            local_host, local_port = ("", 0) if buf.eof() else _pull_address(buf)
            buf.finish()
            if not valid_service_name(service):
                raise buf.error(f"invalid service name {service!r}")
            header = OpenStream(service, host, port, local_host, local_port)
        else:
            v = buf.pull_bytes(buf.pull_uint8())
            buf.finish()
            if not v.isascii():
                raise buf.error("edge version is not ASCII")
            header = OpenControl(v.decode("ascii"))
    except DecodeError:
        raise
    except (ValueError, UsageError) as exc:  # a value OpenStream/OpenControl refuse
        raise DecodeError(_PROTO, str(exc)) from None
    return header, 4 + body_len


# -- status ----------------------------------------------------------------------------


def encode_status(reply: StatusReply) -> bytes:
    reason = reply.reason.encode()
    return bytes([VERSION, reply.status]) + len(reason).to_bytes(2, "big") + reason


def parse_status(data: bytes | bytearray) -> tuple[StatusReply, int] | None:
    """Parse a status from the start of ``data``; None when more bytes are needed."""
    if len(data) < 4:
        return None
    if data[0] != VERSION:
        raise DecodeError(_PROTO, f"status has wire version {data[0]}", 0)
    try:
        status = Status(data[1])
    except ValueError:
        raise DecodeError(_PROTO, f"unknown status {data[1]}", 1) from None
    n = int.from_bytes(data[2:4], "big")
    if n > MAX_REASON:
        raise DecodeError(_PROTO, f"status reason of {n} bytes exceeds {MAX_REASON}", 2)
    if len(data) < 4 + n:
        return None
    try:
        reason = bytes(data[4 : 4 + n]).decode()
    except UnicodeDecodeError:
        raise DecodeError(_PROTO, "status reason is not UTF-8", 4) from None
    return StatusReply(status, reason), 4 + n


# -- frames ----------------------------------------------------------------------------


_FRAME_WORD = struct.Struct(">I")


def frame_header(ftype: FrameType, length: int) -> bytes:
    return _FRAME_WORD.pack((ftype << 24) | length)


#: The header of a DATA frame of ``length`` bytes (type 0: the word is the length).
data_header = _FRAME_WORD.pack


EOF_FRAME = frame_header(FrameType.EOF, 0)
END_FRAME = frame_header(FrameType.END, 0)


@dataclass(frozen=True, slots=True)
class DataReceived:
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class EofReceived:
    pass


@dataclass(frozen=True, slots=True)
class ControlReceived:
    message: dict[str, Any]


FrameEvent = DataReceived | EofReceived | ControlReceived


@dataclass(slots=True)
class FrameReader:
    """Incremental frame decoder. ``feed`` returns the events the bytes complete.

    DATA payloads are delivered as they arrive (a frame split across reads yields
    several DataReceived events), so the relay never waits for a whole frame.

    Bytes after the EOF frame are a :class:`DecodeError`, unless ``keep_after_eof``:
    then they are kept, unparsed, in ``after_eof`` for the tunnel's owner (on a reuse
    tunnel the hub's END frame follows its EOF; docs/protocol.md, "Sequential reuse").
    """

    allow_control: bool = False
    keep_after_eof: bool = False
    after_eof: bytearray = field(default_factory=bytearray)
    _partial: bytearray = field(default_factory=bytearray)
    _left: int = 0
    _control: bool = False
    _eof: bool = False

    @property
    def eof(self) -> bool:
        """The EOF frame has been read."""
        return self._eof

    def payloads(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """The DATA payload pieces ``data`` completes, as views of ``data`` (no copy);
        an EOF frame among them sets :attr:`eof`. What :meth:`feed` reports as
        DataReceived and EofReceived events, without an object per event: the relay's
        hot path. Raises :class:`DecodeError` as :meth:`feed` does, and UsageError on a
        reader that allows CONTROL frames (use :meth:`feed` there).

        The views alias ``data``: a caller that reuses its read buffer consumes them
        (or copies them) before the next read.
        """
        if self.allow_control:
            raise UsageError("payloads() is for stream readers; control readers use feed()")
        out: list[memoryview] = []
        view = memoryview(data)
        pos, end = 0, len(view)
        left = self._left
        while pos < end:
            if left:
                take = left if left <= end - pos else end - pos
                out.append(view[pos : pos + take])
                pos += take
                left -= take
                continue
            if self._eof:
                self._left = 0
                if self.keep_after_eof:
                    self.after_eof += view[pos:]
                    return out
                raise DecodeError(_PROTO, "bytes after EOF frame", pos)
            if not self._partial and end - pos >= 4:
                word = _FRAME_WORD.unpack_from(view, pos)[0]  # the usual case
                pos += 4
            else:
                need = 4 - len(self._partial)
                self._partial += view[pos : pos + need]
                pos += min(need, end - pos)
                if len(self._partial) < 4:
                    break
                word = _FRAME_WORD.unpack_from(self._partial)[0]
                self._partial.clear()
            if word <= MAX_FRAME:  # type DATA (0) and a length we accept
                if not word:
                    raise DecodeError(_PROTO, "data frame of 0 bytes", pos)
                left = word
            elif word >> 24 == FrameType.EOF:
                if word & 0xFFFFFF:
                    raise DecodeError(_PROTO, "EOF frame with a payload", pos)
                self._eof = True
            elif word >> 24 == FrameType.DATA:
                raise DecodeError(_PROTO, f"data frame of {word} bytes", pos)
            else:
                raise DecodeError(_PROTO, f"unexpected frame type {word >> 24}", pos)
        self._left = left
        return out

    def feed(self, data: bytes | memoryview) -> list[FrameEvent]:
        if not self.allow_control:
            eof = self._eof
            events: list[FrameEvent] = [DataReceived(p) for p in self.payloads(data)]
            if self._eof and not eof:
                events.append(EofReceived())
            return events
        events = []
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                chunk = view[pos : pos + take]
                pos += take
                self._left -= take
                if self._control:
                    self._partial += chunk
                    if not self._left:
                        events.append(ControlReceived(_parse_control(bytes(self._partial))))
                        self._partial.clear()
                else:
                    events.append(DataReceived(chunk))
                continue
            if self._eof:
                if self.keep_after_eof:
                    self.after_eof += view[pos:]
                    break
                raise DecodeError(_PROTO, "bytes after EOF frame", pos)
            if not self._partial and end - pos >= 4:
                word = int.from_bytes(view[pos : pos + 4], "big")  # the usual case
                pos += 4
            else:
                need = 4 - len(self._partial)
                self._partial += view[pos : pos + need]
                pos += min(need, end - pos)
                if len(self._partial) < 4:
                    break
                word = int.from_bytes(self._partial, "big")
                self._partial.clear()
            ftype, length = word >> 24, word & 0xFFFFFF
            if ftype == FrameType.DATA:
                if length > MAX_FRAME or length == 0:
                    raise DecodeError(_PROTO, f"data frame of {length} bytes", pos)
                self._left, self._control = length, False
            elif ftype == FrameType.EOF:
                if length:
                    raise DecodeError(_PROTO, "EOF frame with a payload", pos)
                self._eof = True
                events.append(EofReceived())
            elif ftype == FrameType.CONTROL and self.allow_control:
                if length > MAX_CONTROL or length == 0:
                    raise DecodeError(_PROTO, f"control frame of {length} bytes", pos)
                self._left, self._control = length, True
            else:
                raise DecodeError(_PROTO, f"unexpected frame type {ftype}", pos)
        return events


def encode_control(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    if len(payload) > MAX_CONTROL:
        raise UsageError("control message too long")
    return frame_header(FrameType.CONTROL, len(payload)) + payload


def _parse_control(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # RecursionError: arrays nested deeper than the interpreter's recursion limit
        raise DecodeError(_PROTO, "control message is not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("t"), str):
        raise DecodeError(_PROTO, "control message is not an object with a type")
    return value
