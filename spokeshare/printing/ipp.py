"""IPP/1.1 message codec (RFC 8010 section 3), sans-IO.

An IPP message is the body of an HTTP POST with ``Content-Type: application/ipp``::

    version-number            2 bytes  major, minor            (RFC 8010 3.4.1)
    operation-id/status-code  2 bytes                          (3.4.2, 3.4.3)
    request-id                4 bytes                          (3.4.4)
    attribute-group*          begin-attribute-group-tag 1 byte, then attributes
    end-of-attributes-tag     1 byte  0x03                     (3.5.1)
    data                      the rest (a document for Print-Job)

    attribute-with-one-value  value-tag 1, name-length 2, name, value-length 2, value
    additional-value          value-tag 1, name-length 2 (= 0), value-length 2, value
                              (RFC 8010 3.1.4/3.1.5: further values of a 1setOf)

Tags 0x00-0x0F are delimiters (3.5.1), 0x10-0xFF value tags (3.5.2). Collections
(3.1.6) start with ``begCollection`` (0x34) and end with ``endCollection`` (0x37); this
codec keeps a collection value opaque: :class:`IppValue` with tag 0x34 and ``data`` the
raw encoded members up to and including the ``endCollection``, which re-encodes byte
for byte. Nesting is bounded (:data:`MAX_COLLECTION_DEPTH`).

Bounds: a name or value is at most :data:`MAX_FIELD` (32,767) octets, as CUPS's
``ippRead`` enforces; a message has at most :data:`MAX_ATTRIBUTES` attribute entries;
the attribute part of a message is at most ``limit`` octets (the caller's choice,
:data:`DEFAULT_LIMIT` by default). Bad bytes raise only
:class:`spokeshare.errors.DecodeError`; :func:`decode_prefix` returns
:data:`spokeshare.lan.NEED_DATA` when the attribute part is not complete yet (the
signal the LAN stream decoders return too).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from spokeshare.errors import DecodeError, UsageError
from spokeshare.lan import NEED_DATA, NeedData

PROTOCOL = "ipp"

#: RFC 8010 3.1.4: name-length and value-length are 16 bits; CUPS refuses 32,768 and up.
MAX_FIELD = 32767
#: Attribute entries (values included) in one message; CUPS answers stay far below.
MAX_ATTRIBUTES = 20000
#: Nested collections (RFC 8010 3.1.6) deeper than this are refused.
MAX_COLLECTION_DEPTH = 16
#: Default bound on the attribute part (everything before the document data).
DEFAULT_LIMIT = 4 * 1024 * 1024


class GroupTag(enum.IntEnum):
    """Delimiter tags, RFC 8010 3.5.1 (and the IANA IPP registry for 0x06-0x0A)."""

    OPERATION = 0x01
    JOB = 0x02
    END = 0x03
    PRINTER = 0x04
    UNSUPPORTED = 0x05
    SUBSCRIPTION = 0x06
    EVENT_NOTIFICATION = 0x07
    RESOURCE = 0x08
    DOCUMENT = 0x09
    SYSTEM = 0x0A


class Tag(enum.IntEnum):
    """Value tags, RFC 8010 3.5.2."""

    # out-of-band, 0x10-0x1F: value-length 0 (RFC 8010 3.8)
    UNSUPPORTED = 0x10
    UNKNOWN = 0x12
    NO_VALUE = 0x13
    NOT_SETTABLE = 0x15
    DELETE_ATTRIBUTE = 0x16
    ADMIN_DEFINE = 0x17
    # integer types
    INTEGER = 0x21
    BOOLEAN = 0x22
    ENUM = 0x23
    # octetString types
    OCTET_STRING = 0x30
    DATE_TIME = 0x31
    RESOLUTION = 0x32
    RANGE_OF_INTEGER = 0x33
    BEG_COLLECTION = 0x34
    TEXT_WITH_LANGUAGE = 0x35
    NAME_WITH_LANGUAGE = 0x36
    END_COLLECTION = 0x37
    # character-string types
    TEXT = 0x41
    NAME = 0x42
    KEYWORD = 0x44
    URI = 0x45
    URI_SCHEME = 0x46
    CHARSET = 0x47
    NATURAL_LANGUAGE = 0x48
    MIME_MEDIA_TYPE = 0x49
    MEMBER_ATTR_NAME = 0x4A
    # RFC 8010 3.5.2: the next four octets hold the real tag
    EXTENSION = 0x7F


class Operation(enum.IntEnum):
    """Operation ids used here: RFC 8011 5.4.15, CUPS's own from CUPS ``ipp.h``."""

    PRINT_JOB = 0x0002
    PRINT_URI = 0x0003
    VALIDATE_JOB = 0x0004
    CREATE_JOB = 0x0005
    SEND_DOCUMENT = 0x0006
    SEND_URI = 0x0007
    CANCEL_JOB = 0x0008
    GET_JOB_ATTRIBUTES = 0x0009
    GET_JOBS = 0x000A
    GET_PRINTER_ATTRIBUTES = 0x000B
    HOLD_JOB = 0x000C
    RELEASE_JOB = 0x000D
    RESTART_JOB = 0x000E
    PAUSE_PRINTER = 0x0010
    RESUME_PRINTER = 0x0011
    PURGE_JOBS = 0x0012
    CUPS_GET_DEFAULT = 0x4001
    CUPS_GET_PRINTERS = 0x4002
    CUPS_GET_CLASSES = 0x4005


class Status(enum.IntEnum):
    """Status codes used here, RFC 8011 appendix B."""

    SUCCESSFUL_OK = 0x0000
    CLIENT_ERROR_BAD_REQUEST = 0x0400
    CLIENT_ERROR_FORBIDDEN = 0x0401
    CLIENT_ERROR_NOT_POSSIBLE = 0x0404
    CLIENT_ERROR_NOT_FOUND = 0x0406
    SERVER_ERROR_INTERNAL_ERROR = 0x0500
    SERVER_ERROR_VERSION_NOT_SUPPORTED = 0x0503


OUT_OF_BAND = range(0x10, 0x20)
_CHAR_TAGS = frozenset(range(0x40, 0x60))
_DELIMITERS = range(0x00, 0x10)


@dataclass(frozen=True, slots=True)
class IppValue:
    """One value: its value tag and its raw octets (a collection: its encoded members)."""

    tag: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0x10 <= self.tag <= 0xFF:
            raise UsageError(f"value tag {self.tag:#x} is a delimiter or out of range")
        if len(self.data) > MAX_FIELD and self.tag != Tag.BEG_COLLECTION:
            raise UsageError(f"value of {len(self.data)} octets exceeds {MAX_FIELD}")


@dataclass(frozen=True, slots=True)
class Attribute:
    """An attribute: its name and one or more values (a 1setOf has several)."""

    name: str
    values: tuple[IppValue, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise UsageError(f"attribute {self.name!r} has no value")
        if not self.name or len(self.name.encode("utf-8")) > MAX_FIELD:
            raise UsageError("attribute name empty or too long")

    @classmethod
    def of(cls, name: str, tag: int, *values: bytes | str | int | bool) -> Attribute:
        """An attribute whose values all carry ``tag``, each encoded by :func:`encode_value`."""
        return cls(name, tuple(IppValue(tag, encode_value(tag, v)) for v in values))

    @property
    def value_tag(self) -> int:
        """The tag of the first value (all values share it in most attributes)."""
        return self.values[0].tag

    def strings(self) -> list[str]:
        """Every value read as a string (text, name, keyword, uri, ...); DecodeError if not."""
        return [read_string(v) for v in self.values]

    def string(self) -> str:
        return read_string(self.values[0])

    def integers(self) -> list[int]:
        """Every value read as integer or enum; DecodeError if not."""
        return [read_integer(v) for v in self.values]

    def integer(self) -> int:
        return read_integer(self.values[0])

    def boolean(self) -> bool:
        return read_boolean(self.values[0])


@dataclass(frozen=True, slots=True)
class AttributeGroup:
    """A group: its delimiter tag (:class:`GroupTag`) and its attributes, in order."""

    tag: int
    attributes: tuple[Attribute, ...] = ()

    def __post_init__(self) -> None:
        if not 0x01 <= self.tag <= 0x0F or self.tag == GroupTag.END:
            raise UsageError(f"group tag {self.tag:#x} is not a begin-attribute-group tag")

    def get(self, name: str) -> Attribute | None:
        """The first attribute called ``name``, or None."""
        for a in self.attributes:
            if a.name == name:
                return a
        return None


@dataclass(frozen=True, slots=True)
class IppMessage:
    """A request (``code`` = operation-id) or response (``code`` = status-code).

    ``version`` is (major, minor); ``request_id`` 1..2**31-1 in requests (RFC 8011
    4.1.2); ``data`` the octets after the end-of-attributes tag (a document).
    """

    version: tuple[int, int]
    code: int
    request_id: int
    groups: tuple[AttributeGroup, ...]
    data: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if not all(0 <= v <= 255 for v in self.version):
            raise UsageError(f"version {self.version} out of range")
        if not 0 <= self.code <= 0xFFFF or not 0 <= self.request_id <= 0xFFFFFFFF:
            raise UsageError("code or request-id out of range")

    def group(self, tag: int) -> AttributeGroup | None:
        """The first group with ``tag``, or None."""
        for g in self.groups:
            if g.tag == tag:
                return g
        return None

    def groups_of(self, tag: int) -> Iterator[AttributeGroup]:
        return (g for g in self.groups if g.tag == tag)

    def operation(self, name: str) -> Attribute | None:
        """An attribute of the operation group, or None."""
        g = self.group(GroupTag.OPERATION)
        return g.get(name) if g else None


# -- values --------------------------------------------------------------------------


def encode_value(tag: int, v: bytes | str | int | bool) -> bytes:
    """Octets of one value of ``tag``: ints as 4 octets (integer, enum), bools as 1
    (boolean), str as UTF-8, bytes as given. UsageError on a mismatch."""
    if isinstance(v, bytes):
        return v
    if isinstance(v, bool):
        if tag != Tag.BOOLEAN:
            raise UsageError(f"bool for tag {tag:#x}")
        return b"\x01" if v else b"\x00"
    if isinstance(v, int):
        if tag not in (Tag.INTEGER, Tag.ENUM):
            raise UsageError(f"int for tag {tag:#x}")
        return struct.pack(">i", v)
    if tag not in _CHAR_TAGS:
        raise UsageError(f"str for tag {tag:#x}")
    return v.encode("utf-8")


def read_string(v: IppValue) -> str:
    """text/name/keyword/uri/charset/... as str; the text part of ...WithLanguage.

    RFC 8011 5.1: UTF-8 for text and name, US-ASCII for the others. DecodeError when
    the tag is not a string type or the octets are not valid.
    """
    if v.tag in (Tag.TEXT_WITH_LANGUAGE, Tag.NAME_WITH_LANGUAGE):
        # RFC 8010 3.9: 2-octet language length, language, 2-octet text length, text
        d = v.data
        if len(d) < 4:
            raise DecodeError(PROTOCOL, "short ...WithLanguage value")
        ln = int.from_bytes(d[0:2], "big")
        if 2 + ln + 2 > len(d):
            raise DecodeError(PROTOCOL, "...WithLanguage language overruns the value")
        tn = int.from_bytes(d[2 + ln : 4 + ln], "big")
        if 4 + ln + tn != len(d):
            raise DecodeError(PROTOCOL, "...WithLanguage text length does not match")
        raw = d[4 + ln :]
    elif v.tag in _CHAR_TAGS:
        raw = v.data
    else:
        raise DecodeError(PROTOCOL, f"value tag {v.tag:#x} is not a string")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(PROTOCOL, "string value is not UTF-8") from e


def read_integer(v: IppValue) -> int:
    """integer or enum (RFC 8010 3.9: SIGNED-INTEGER, 4 octets)."""
    if v.tag not in (Tag.INTEGER, Tag.ENUM) or len(v.data) != 4:
        raise DecodeError(PROTOCOL, f"value tag {v.tag:#x}/{len(v.data)} octets is not an integer")
    return int(struct.unpack(">i", v.data)[0])


def read_boolean(v: IppValue) -> bool:
    """boolean (RFC 8010 3.9: one octet, 0x00 or 0x01)."""
    if v.tag != Tag.BOOLEAN or len(v.data) != 1 or v.data[0] > 1:
        raise DecodeError(PROTOCOL, "not a boolean")
    return v.data == b"\x01"


def read_resolution(v: IppValue) -> tuple[int, int, int]:
    """resolution (RFC 8010 3.9): (cross-feed, feed, units: 3 = dpi, 4 = dots/cm)."""
    if v.tag != Tag.RESOLUTION or len(v.data) != 9:
        raise DecodeError(PROTOCOL, "not a resolution")
    x, y, units = struct.unpack(">iib", v.data)
    return int(x), int(y), int(units)


def read_range(v: IppValue) -> tuple[int, int]:
    """rangeOfInteger (RFC 8010 3.9): (lower, upper)."""
    if v.tag != Tag.RANGE_OF_INTEGER or len(v.data) != 8:
        raise DecodeError(PROTOCOL, "not a rangeOfInteger")
    lo, hi = struct.unpack(">ii", v.data)
    return int(lo), int(hi)


# -- decoding ------------------------------------------------------------------------


class _Short(Exception):
    """Inside :func:`decode_prefix` only: the attribute part runs past the data so far."""


class _Cursor:
    """Reads ``data`` within ``limit`` octets; shortage is :class:`_Short` when partial."""

    __slots__ = ("data", "pos", "partial", "limit")

    def __init__(self, data: bytes, partial: bool, limit: int) -> None:
        self.data = data
        self.pos = 0
        self.partial = partial
        self.limit = limit

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > self.limit:
            raise DecodeError(PROTOCOL, f"attributes exceed {self.limit} octets", self.pos)
        if end > len(self.data):
            if self.partial:
                raise _Short
            raise DecodeError(
                PROTOCOL, f"needs {n} octets, {len(self.data) - self.pos} left", self.pos
            )
        v = self.data[self.pos : end]
        self.pos = end
        return v

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def field(self, what: str) -> bytes:
        n = self.u16()
        if n > MAX_FIELD:
            raise DecodeError(PROTOCOL, f"{what} length {n} exceeds {MAX_FIELD}", self.pos - 2)
        return self.take(n)


def _collection(c: _Cursor) -> bytes:
    """The members of a collection whose begCollection value was just read, through
    the matching endCollection (RFC 8010 3.1.6), as raw octets."""
    start = c.pos
    depth = 1
    while depth:
        tag = c.u8()
        if tag in _DELIMITERS:
            raise DecodeError(PROTOCOL, f"delimiter {tag:#x} inside a collection", c.pos - 1)
        if c.field("member name"):
            raise DecodeError(PROTOCOL, "collection member with a name", c.pos)
        value = c.field("member value")
        if tag == Tag.BEG_COLLECTION:
            if value:
                raise DecodeError(PROTOCOL, "begCollection with a value", c.pos)
            depth += 1
            if depth > MAX_COLLECTION_DEPTH:
                raise DecodeError(PROTOCOL, "collections nested too deep", c.pos)
        elif tag == Tag.END_COLLECTION:
            if value:
                raise DecodeError(PROTOCOL, "endCollection with a value", c.pos)
            depth -= 1
    return c.data[start : c.pos]


def _parse(c: _Cursor) -> IppMessage:
    major, minor = c.u8(), c.u8()
    code = c.u16()
    request_id = int.from_bytes(c.take(4), "big")
    groups: list[AttributeGroup] = []
    tag = c.u8()
    if tag not in _DELIMITERS:
        raise DecodeError(PROTOCOL, f"expected a group tag, got {tag:#x}", c.pos - 1)
    entries = 0
    while tag != GroupTag.END:
        if tag == 0x00:
            raise DecodeError(PROTOCOL, "reserved delimiter tag 0x00", c.pos - 1)
        group_tag = tag
        attrs: list[Attribute] = []
        name: str | None = None
        values: list[IppValue] = []
        while True:
            tag = c.u8()
            if tag in _DELIMITERS:
                break
            entries += 1
            if entries > MAX_ATTRIBUTES:
                raise DecodeError(PROTOCOL, f"more than {MAX_ATTRIBUTES} attributes", c.pos)
            raw_name = c.field("name")
            value = c.field("value")
            if tag == Tag.BEG_COLLECTION:
                if value:
                    raise DecodeError(PROTOCOL, "begCollection with a value", c.pos)
                value = _collection(c)
            elif tag == Tag.END_COLLECTION or tag == Tag.MEMBER_ATTR_NAME:
                raise DecodeError(PROTOCOL, f"tag {tag:#x} outside a collection", c.pos)
            if raw_name:
                if name is not None:
                    attrs.append(Attribute(name, tuple(values)))
                try:
                    name = raw_name.decode("ascii")
                except UnicodeDecodeError as e:
                    raise DecodeError(PROTOCOL, "attribute name is not ASCII", c.pos) from e
                values = []
            elif name is None:
                raise DecodeError(PROTOCOL, "additional value without an attribute", c.pos)
            values.append(IppValue(tag, value))
        if name is not None:
            attrs.append(Attribute(name, tuple(values)))
        groups.append(AttributeGroup(group_tag, tuple(attrs)))
    return IppMessage((major, minor), code, request_id, tuple(groups))


def decode(data: bytes, limit: int = DEFAULT_LIMIT) -> IppMessage:
    """A whole message; the octets after end-of-attributes become ``data``.

    DecodeError on bad or truncated bytes or an attribute part over ``limit`` octets.
    """
    c = _Cursor(bytes(data), partial=False, limit=limit)
    msg = _parse(c)
    rest = c.data[c.pos :]
    return IppMessage(msg.version, msg.code, msg.request_id, msg.groups, rest)


def decode_prefix(data: bytes, limit: int = DEFAULT_LIMIT) -> tuple[IppMessage, int] | NeedData:
    """The message at the start of ``data`` (``data`` field empty) and the offset where
    its document data begins, for a body that is still arriving.

    :data:`~spokeshare.lan.NEED_DATA` when the attribute part is incomplete;
    DecodeError on bad bytes or when the attribute part exceeds ``limit`` octets.
    """
    c = _Cursor(bytes(data), partial=True, limit=limit)
    try:
        msg = _parse(c)
    except _Short:
        return NEED_DATA
    return msg, c.pos


def _push_field(out: bytearray, b: bytes) -> None:
    if len(b) > MAX_FIELD:
        raise UsageError(f"field of {len(b)} octets exceeds {MAX_FIELD}")
    out += len(b).to_bytes(2, "big")
    out += b


def encode(msg: IppMessage) -> bytes:
    """The wire form of ``msg`` (RFC 8010 3.1.1), ``data`` appended."""
    out = bytearray()
    out += bytes(msg.version)
    out += msg.code.to_bytes(2, "big")
    out += msg.request_id.to_bytes(4, "big")
    for g in msg.groups:
        out.append(g.tag)
        for a in g.attributes:
            name = a.name.encode("ascii")
            for i, v in enumerate(a.values):
                out.append(v.tag)
                _push_field(out, name if i == 0 else b"")
                if v.tag == Tag.BEG_COLLECTION:
                    _push_field(out, b"")
                    out += v.data
                else:
                    _push_field(out, v.data)
    out.append(GroupTag.END)
    out += msg.data
    return bytes(out)


# -- building ------------------------------------------------------------------------


def operation_attributes(
    printer_uri: str | None = None,
    requesting_user: str | None = None,
    requested: Iterable[str] = (),
    language: str = "en",
) -> AttributeGroup:
    """The operation group every request starts with (RFC 8011 4.1.4: charset and
    natural language first, then target and the rest)."""
    attrs = [
        Attribute.of("attributes-charset", Tag.CHARSET, "utf-8"),
        Attribute.of("attributes-natural-language", Tag.NATURAL_LANGUAGE, language),
    ]
    if printer_uri is not None:
        attrs.append(Attribute.of("printer-uri", Tag.URI, printer_uri))
    if requesting_user is not None:
        attrs.append(Attribute.of("requesting-user-name", Tag.NAME, requesting_user))
    req = list(requested)
    if req:
        attrs.append(Attribute.of("requested-attributes", Tag.KEYWORD, *req))
    return AttributeGroup(GroupTag.OPERATION, tuple(attrs))


def get_printer_attributes(
    printer_uri: str, request_id: int = 1, requested: Iterable[str] = ()
) -> IppMessage:
    """A Get-Printer-Attributes request (RFC 8011 4.2.5), IPP/1.1."""
    return IppMessage(
        (1, 1),
        Operation.GET_PRINTER_ATTRIBUTES,
        request_id,
        (operation_attributes(printer_uri, requested=requested),),
    )


def cups_get_printers(request_id: int = 1, requested: Iterable[str] = ()) -> IppMessage:
    """A CUPS-Get-Printers request (CUPS IPP extension 0x4002; CUPS's ``spec-ipp``)."""
    return IppMessage(
        (1, 1),
        Operation.CUPS_GET_PRINTERS,
        request_id,
        (operation_attributes(requested=requested),),
    )


def response(
    request: IppMessage,
    status: int,
    message: str | None = None,
    extra: Iterable[AttributeGroup] = (),
) -> IppMessage:
    """A response to ``request`` with ``status`` and an optional ``status-message``
    (RFC 8011 4.1.6.2), in the request's version (1.1 if the request's is unknown)."""
    op = [
        Attribute.of("attributes-charset", Tag.CHARSET, "utf-8"),
        Attribute.of("attributes-natural-language", Tag.NATURAL_LANGUAGE, "en"),
    ]
    if message is not None:
        op.append(Attribute.of("status-message", Tag.TEXT, message[:255]))
    version = request.version if request.version[0] in (1, 2) else (1, 1)
    return IppMessage(
        version,
        status,
        request.request_id,
        (AttributeGroup(GroupTag.OPERATION, tuple(op)), *extra),
    )
