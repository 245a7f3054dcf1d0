"""DNS-SD records for HQ's printers, built from their IPP attributes (sans-IO).

What an office PC needs to find a printer driverless (IPP Everywhere, AirPrint,
Mopria) is what HQ's CUPS would publish if the printer stood on the office LAN
(CUPS ``scheduler/dirsvc.c`` ``dnssdRegisterPrinter()`` and ``dnssdBuildTxtRecord()``,
PAPPL ``pappl/dnssd.c``). Per printer the edge publishes:

- ``<instance>._ipp._tcp.local.`` SRV to a name the edge answers for, on the edge's
  IPP port, with subtypes ``_universal._sub._ipp._tcp`` (AirPrint, iOS) and
  ``_print._sub._ipp._tcp`` (IPP Everywhere), and the TXT record below;
- ``<instance>._printer._tcp.local.`` with port 0 and no TXT (CUPS and PAPPL reserve
  the name this way without offering LPD), or the office's LPD port when it has one,
  with the same TXT except ``rp`` = the LPD queue (the printer-name).

Instance name (RFC 6763 section 4.1.1): ``printer-info``, else ``printer-name`` (CUPS
appends `` @ <computer>``; the edge stands in for HQ, so the plain name is kept), in
Unicode NFC, ASCII control characters removed, at most 63 octets of UTF-8 cut on a
character boundary. A ``.`` is legal in an instance name but has to be escaped in the
DNS presentation form, which the responder library does not do, so it becomes ``-``.

TXT keys, in CUPS's order, each only when its source attribute is there (nothing
invented: CUPS itself falls back to ``Unknown`` or ``application/postscript``; the edge
leaves such a key out):

======================  ===============================================================
``txtvers``, ``qtotal``  ``1`` (dirsvc.c; one queue per service)
``rp``                   path of ``printer-uri-supported`` without its ``/``
                         (``printers/NAME``), else ``printers/`` + ``printer-name``
``ty``                   ``printer-make-and-model``
``adminurl``             ``http://HOST:PORT/`` + rp, when CUPS reports ``printer-more-info``
                         (the page CUPS names there, reached through the edge)
``note``                 ``printer-location`` (when not empty)
``priority``             ``0`` (dirsvc.c)
``product``              ``(`` ``printer-make-and-model`` ``)`` (PAPPL; CUPS takes the
                         PPD's ``*Product``, which IPP does not carry)
``pdl``                  the formats of ``document-format-supported`` that CUPS lists
                         (``application/pdf``, ``application/postscript``, ``image/jpeg``,
                         ``image/png``, ``image/pwg-raster``, ``image/urf``), in its order
``UUID``                 ``printer-uuid`` without ``urn:uuid:``
``URF``                  ``urf-supported``, comma-joined
``kind``                 ``printer-kind``, comma-joined (PAPPL)
``Fax``, ``rfo``         ``T`` and rp when ``printer-type`` has the fax bit (0x40000)
``Color``, ``Duplex``    ``T`` when CUPS's ``printer-type`` has the colour (0x8) / duplex
                         (0x10) bit, as dirsvc.c; without ``printer-type``: ``T``/``F``
                         from ``color-supported`` / ``sides-supported`` (PAPPL)
``Staple``, ``Copies``,  ``T`` for the ``printer-type`` bits 0x20, 0x40, 0x80, 0x100,
``Collate``, ``Punch``,  0x400, 0x800 and 0x4000000 (multi-function), as dirsvc.c
``Bind``, ``Sort``,
``Scan``
``printer-type``         ``0x%X`` of ``printer-type`` without the bits CUPS adds only in
                         IPP answers (default, rejecting, not-shared), plus remote (0x2)
======================  ===============================================================

``TLS``, ``air`` and ``mopria-certified`` are left out: they describe the server that
answers, and the edge's IPP port is plain IPP relayed through the tunnel.

Bounds (RFC 6763 section 6.1 and 6.2): every ``key=value`` string is at most 255 octets
(free text is cut on a character boundary, lists lose whole items, never half a
keyword); the whole TXT record is at most :data:`MAX_TXT` (8,900) octets. Values lose
ASCII control characters. Everything here is pure: no sockets, clocks or logging.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from spokeshare.errors import DecodeError, UsageError

PROTOCOL = "dnssd-printer"

IPP_TYPE = "_ipp._tcp.local."
PRINTER_TYPE = "_printer._tcp.local."
#: CUPS's default BrowseDNSSDSubTypes without ``_cups`` (CUPS-to-CUPS browsing only).
SUBTYPES = ("_universal", "_print")

#: RFC 6763 section 4.1.1: an instance name is at most 63 octets of UTF-8.
MAX_INSTANCE = 63
#: RFC 6763 section 6.1: one TXT string is a length octet and at most 255 octets.
MAX_TXT_STRING = 255
#: RFC 6763 section 6.2: a TXT record should stay below 1300 octets and must not pass
#: 8,900 (what fits a 9,000-octet Ethernet jumbo frame with headers).
MAX_TXT = 8900
#: CUPS: a printer name is 1-127 printable characters, none of space / \\ ? ' " #.
MAX_PRINTER_NAME = 127

#: cups/cups.h cups_ptype_e bits.
CUPS_PRINTER_CLASS = 0x1
CUPS_PRINTER_REMOTE = 0x2
CUPS_PRINTER_COLOR = 0x8
CUPS_PRINTER_DUPLEX = 0x10
CUPS_PRINTER_FAX = 0x40000
CUPS_PRINTER_DEFAULT = 0x20000
CUPS_PRINTER_REJECTING = 0x80000
CUPS_PRINTER_NOT_SHARED = 0x200000
#: dirsvc.c: capability bits published as ``KEY=T`` when set, in its order.
CUPS_CAPABILITY_KEYS = (
    ("Color", CUPS_PRINTER_COLOR),
    ("Duplex", CUPS_PRINTER_DUPLEX),
    ("Staple", 0x20),
    ("Copies", 0x40),
    ("Collate", 0x80),
    ("Punch", 0x100),
    ("Bind", 0x400),
    ("Sort", 0x800),
    ("Scan", 0x4000000),  # CUPS_PRINTER_MFP
)
#: Bits CUPS adds to ``printer-type`` only in IPP answers (ipp.c copy_printer_attrs()),
#: not in the TXT record (dirsvc.c uses the printer's own type).
_IPP_ONLY_BITS = CUPS_PRINTER_DEFAULT | CUPS_PRINTER_REJECTING | CUPS_PRINTER_NOT_SHARED

#: scheduler/printers.c cupsdSetPrinterAttrs(): the formats CUPS puts in ``pdl``.
CUPS_PDL_FORMATS = frozenset(
    {
        "application/pdf",
        "application/postscript",
        "image/jpeg",
        "image/png",
        "image/pwg-raster",
        "image/urf",
    }
)

#: The IPP attributes the records are built from (ask for these in Get-Printers).
REQUESTED_ATTRIBUTES = (
    "printer-name",
    "printer-info",
    "printer-location",
    "printer-make-and-model",
    "printer-uri-supported",
    "printer-more-info",
    "printer-uuid",
    "printer-type",
    "printer-is-shared",
    "printer-kind",
    "document-format-supported",
    "urf-supported",
    "color-supported",
    "sides-supported",
)

#: One attribute's values as the IPP codec decodes them (text, keyword, uri, enum...).
Value = str | int | bool | bytes
PrinterAttributes = Mapping[str, Sequence[Value]]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PRINTER_NAME_BAD = re.compile(r"[\x00-\x20\x7f/\\?'\"#]")
_KEYWORD = re.compile(r"^[\x21-\x2b\x2d-\x7e]{1,254}$")  # printable ASCII, no comma
_RP = re.compile(r"^(printers|classes)/[^/?#\s]{1,400}$")


class PrinterRecordError(DecodeError):
    """A printer's attributes cannot make a DNS-SD service (e.g. no usable name).

    ``printer`` is the printer's name as far as it is known ("" when not).
    """

    def __init__(self, printer: str, reason: str) -> None:
        super().__init__(PROTOCOL, reason)
        self.printer = printer


@dataclass(frozen=True)
class PrinterService:
    """The DNS-SD records of one printer, ready for an mDNS responder.

    ``printer`` is CUPS's queue name (identity across syncs), ``instance`` the DNS-SD
    instance name (at most 63 octets, no control characters, no ``.``), ``txt`` the
    ordered key/value pairs, ``port`` the IPP port, ``lpd_port`` the ``_printer._tcp``
    port (0: placeholder).
    """

    printer: str
    instance: str
    rp: str
    txt: tuple[tuple[str, str], ...]
    port: int
    lpd_port: int = 0

    def __post_init__(self) -> None:
        if not self.instance or len(self.instance.encode()) > MAX_INSTANCE:
            raise PrinterRecordError(self.printer, "instance name empty or over 63 octets")
        if len(encode_txt(self.txt)) > MAX_TXT:
            raise PrinterRecordError(self.printer, "TXT record over 8,900 octets")

    @property
    def properties(self) -> dict[str, str]:
        """The TXT pairs as an ordered dict (python-zeroconf ``ServiceInfo.properties``)."""
        return dict(self.txt)

    @property
    def lpd_txt(self) -> tuple[tuple[str, str], ...]:
        """TXT of ``_printer._tcp``: none for the port-0 placeholder (as CUPS); with a
        real LPD port the same keys, ``rp`` naming the LPD queue (an LPD client's ``rp``
        is the queue name, Apple's Bonjour Printing Specification; cups-lpd serves each
        CUPS queue under its printer-name)."""
        if self.lpd_port == 0:
            return ()
        return tuple((k, self.printer if k == "rp" else v) for k, v in self.txt)

    def renamed(self, instance: str) -> PrinterService:
        return PrinterService(self.printer, instance, self.rp, self.txt, self.port, self.lpd_port)


def encode_txt(pairs: Iterable[tuple[str, str]]) -> bytes:
    """RFC 6763 section 6: length-prefixed ``key=value`` strings (an empty record is one
    empty string, section 6.1). Raises :class:`PrinterRecordError` for a string over 255."""
    out = bytearray()
    for key, value in pairs:
        raw = f"{key}={value}".encode()
        if len(raw) > MAX_TXT_STRING:
            raise PrinterRecordError("", f"TXT string {key!r} over 255 octets")
        out.append(len(raw))
        out += raw
    return bytes(out) or b"\x00"


# -- reading attributes --------------------------------------------------------------------


def _strings(attrs: PrinterAttributes, name: str) -> list[str]:
    out: list[str] = []
    for v in attrs.get(name, ()):
        if isinstance(v, bytes):
            out.append(v.decode("utf-8", "replace"))
        elif isinstance(v, str):
            out.append(v)
    return out


def _string(attrs: PrinterAttributes, name: str) -> str | None:
    values = _strings(attrs, name)
    return values[0] if values else None


def _integer(attrs: PrinterAttributes, name: str) -> int | None:
    for v in attrs.get(name, ()):
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _boolean(attrs: PrinterAttributes, name: str) -> bool | None:
    for v in attrs.get(name, ()):
        if isinstance(v, bool):
            return v
    return None


def _clean(text: str) -> str:
    """NFC, control characters removed, unencodable code points replaced, trimmed."""
    text = unicodedata.normalize("NFC", _CONTROL.sub("", text))
    return text.encode("utf-8", "replace").decode().strip()


def _cut(text: str, octets: int) -> str:
    """``text`` cut to at most ``octets`` octets of UTF-8 on a character boundary."""
    raw = text.encode()
    if len(raw) <= octets:
        return text
    return raw[:octets].decode("utf-8", "ignore")


# -- names ---------------------------------------------------------------------------------


def instance_name(text: str) -> str:
    """An RFC 6763 4.1.1 instance name from free text ("" when nothing usable is left)."""
    cleaned = _clean(text).replace(".", "-")
    return _cut(cleaned, MAX_INSTANCE).strip()


def alternative_name(instance: str, n: int) -> str:
    """The ``n``-th name to try after a conflict (RFC 6762 section 9): ``Name (n)``, the
    base cut so the whole stays within 63 octets (as CUPS and mDNSResponder rename)."""
    if n < 2:
        raise UsageError("alternatives start at 2")
    suffix = f" ({n})"
    base = re.sub(r" \(\d+\)$", "", instance)
    return _cut(base, MAX_INSTANCE - len(suffix.encode())).rstrip() + suffix


def _printer_name(attrs: PrinterAttributes) -> str:
    name = _string(attrs, "printer-name")
    if name is None:
        raise PrinterRecordError("", "no printer-name")
    if not name or len(name.encode()) > MAX_PRINTER_NAME or _PRINTER_NAME_BAD.search(name):
        raise PrinterRecordError(_cut(_clean(name), 40), "printer-name is not a CUPS queue name")
    return name


def _rp(attrs: PrinterAttributes, name: str) -> str:
    for uri in _strings(attrs, "printer-uri-supported"):
        try:
            path = urlsplit(uri).path
        except ValueError:
            continue
        rp = path.lstrip("/")
        if _RP.match(rp) and unquote(rp.split("/", 1)[1]) == name:
            return rp
    ptype = _integer(attrs, "printer-type") or 0
    kind = "classes" if ptype & CUPS_PRINTER_CLASS else "printers"
    return f"{kind}/{quote(name, safe='')}"


# -- TXT -----------------------------------------------------------------------------------


def _text_pair(key: str, value: str) -> tuple[str, str]:
    room = MAX_TXT_STRING - len(key) - 1
    return key, _cut(_clean(value), room).rstrip()


def _list_pair(key: str, items: Iterable[str]) -> tuple[str, str] | None:
    room = MAX_TXT_STRING - len(key) - 1
    kept: list[str] = []
    used = 0
    for item in items:
        if not _KEYWORD.match(item) or item in kept:
            continue
        add = len(item) + (1 if kept else 0)
        if used + add > room:
            break
        kept.append(item)
        used += add
    return (key, ",".join(kept)) if kept else None


def txt_pairs(
    attrs: PrinterAttributes, rp: str, admin_host: str, port: int
) -> tuple[tuple[str, str], ...]:
    """The TXT key/value pairs for one printer (see the module table)."""
    pairs: list[tuple[str, str]] = [("txtvers", "1"), ("qtotal", "1"), ("rp", rp)]
    make_model = _string(attrs, "printer-make-and-model")
    if make_model is not None and _clean(make_model):
        pairs.append(_text_pair("ty", make_model))
    if _string(attrs, "printer-more-info") is not None:
        host = _cut(_clean(admin_host), 200)
        pairs.append(_text_pair("adminurl", f"http://{host}:{port}/{rp}"))
    location = _string(attrs, "printer-location")
    if location is not None and _clean(location):
        pairs.append(_text_pair("note", location))
    pairs.append(("priority", "0"))
    if make_model is not None and _clean(make_model):
        inner = _cut(_clean(make_model), MAX_TXT_STRING - len("product=()"))
        pairs.append(("product", f"({inner})"))
    formats = [f.lower() for f in _strings(attrs, "document-format-supported")]
    pdl = _list_pair("pdl", (f for f in formats if f in CUPS_PDL_FORMATS))
    if pdl is not None:
        pairs.append(pdl)
    printer_uuid = _string(attrs, "printer-uuid")
    if printer_uuid is not None and printer_uuid.lower().startswith("urn:uuid:"):
        try:
            pairs.append(("UUID", str(uuid.UUID(printer_uuid[9:]))))
        except ValueError:
            pass
    urf = _list_pair("URF", _strings(attrs, "urf-supported"))
    if urf is not None:
        pairs.append(urf)
    kind = _list_pair("kind", _strings(attrs, "printer-kind"))
    if kind is not None:
        pairs.append(kind)
    ptype = _integer(attrs, "printer-type")
    if ptype is not None:
        if ptype & CUPS_PRINTER_FAX:
            pairs += [("Fax", "T"), ("rfo", rp)]
        pairs += [(key, "T") for key, bit in CUPS_CAPABILITY_KEYS if ptype & bit]
        txt_type = ((ptype & 0xFFFFFFFF) & ~_IPP_ONLY_BITS) | CUPS_PRINTER_REMOTE
        pairs.append(("printer-type", f"0x{txt_type:X}"))
    else:
        color = _boolean(attrs, "color-supported")
        if color is not None:
            pairs.append(("Color", "T" if color else "F"))
        sides = _strings(attrs, "sides-supported")
        if sides:
            two = any(s.startswith("two-sided") for s in sides)
            pairs.append(("Duplex", "T" if two else "F"))
    return tuple(pairs)


# -- one printer, and a whole answer -------------------------------------------------------


def printer_service(
    attrs: PrinterAttributes, admin_host: str, port: int, lpd_port: int = 0
) -> PrinterService:
    """The DNS-SD service of one printer from its IPP attributes.

    ``admin_host`` is the host name the edge answers for (``NAME.local.``), ``port``
    the edge's IPP port, ``lpd_port`` the ``_printer._tcp`` port (0: placeholder).
    Raises :class:`PrinterRecordError` (only) when the attributes cannot name a printer.
    """
    name = _printer_name(attrs)
    info = _string(attrs, "printer-info")
    instance = instance_name(info) if info is not None else ""
    if not instance:
        instance = instance_name(name)
    if not instance:
        raise PrinterRecordError(name, "no usable instance name")
    rp = _rp(attrs, name)
    return PrinterService(name, instance, rp, txt_pairs(attrs, rp, admin_host, port), port,
                          lpd_port)  # fmt: skip


@dataclass(frozen=True)
class Skipped:
    """A printer left out of the answer, and why (for one log line)."""

    printer: str
    reason: str


def printer_services(
    printers: Iterable[PrinterAttributes], admin_host: str, port: int, lpd_port: int = 0
) -> tuple[tuple[PrinterService, ...], tuple[Skipped, ...]]:
    """Services for every usable, shared printer of a Get-Printers answer.

    A printer that cannot be described, or that says ``printer-is-shared`` false, is
    skipped (the others stay). Two printers whose instance names collide get
    ``Name (2)``... in answer order, so each keeps a stable, unique name.
    """
    services: list[PrinterService] = []
    skipped: list[Skipped] = []
    taken: set[str] = set()
    queues: set[str] = set()
    for attrs in printers:
        try:
            svc = printer_service(attrs, admin_host, port, lpd_port)
        except PrinterRecordError as exc:
            skipped.append(Skipped(exc.printer, exc.reason))
            continue
        if _boolean(attrs, "printer-is-shared") is False:
            skipped.append(Skipped(svc.printer, "not shared"))
            continue
        if svc.printer in queues:
            skipped.append(Skipped(svc.printer, "listed twice"))
            continue
        queues.add(svc.printer)
        instance, n = svc.instance, 1
        while instance.casefold() in taken:
            n += 1
            instance = alternative_name(svc.instance, n)
        taken.add(instance.casefold())
        services.append(svc if instance == svc.instance else svc.renamed(instance))
    return tuple(services), tuple(skipped)


# -- keeping the LAN in step with HQ -------------------------------------------------------


@dataclass(frozen=True)
class SyncPlan:
    """What to change on the LAN: ``remove`` (queue names: goodbyes first), then ``add``
    (probe and announce) and ``update`` (same name, new TXT or port: re-announce)."""

    remove: tuple[str, ...] = ()
    add: tuple[PrinterService, ...] = ()
    update: tuple[PrinterService, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.remove or self.add or self.update)


def plan_sync(current: Mapping[str, PrinterService], desired: Iterable[PrinterService]) -> SyncPlan:
    """From what is advertised (``current``, by queue name, as built before any LAN
    rename) to what HQ has now (``desired``).

    A queue gone from ``desired`` is removed; a queue whose instance name changed (a
    new ``printer-info`` at HQ) is removed and added under its new name (RFC 6763
    names are identities: clients must see the old one leave); a queue whose TXT or
    ports changed is updated in place.
    """
    want = {s.printer: s for s in desired}
    remove: list[str] = []
    add: list[PrinterService] = []
    update: list[PrinterService] = []
    for printer, was in current.items():
        wanted = want.get(printer)
        if wanted is None or wanted.instance != was.instance:
            remove.append(printer)
    for printer, new in want.items():
        old = current.get(printer)
        if old is None or new.instance != old.instance:
            add.append(new)
        elif new != old:
            update.append(new)
    return SyncPlan(tuple(remove), tuple(add), tuple(update))


# -- conflicts after publication (RFC 6762 section 9) ---------------------------------------

#: One record's data as compared for conflicts: ("SRV", target lower-cased, port) or
#: ("TXT", the TXT record's octets).
RecordData = tuple[str, str, int] | tuple[str, bytes]


def conflicts(
    ours: Mapping[str, Iterable[RecordData]], heard: Iterable[tuple[str, RecordData]]
) -> set[str]:
    """The names we hold that another host now claims (RFC 6762 section 9).

    ``ours`` maps each service instance name we publish (lower-cased, as DNS compares
    names, RFC 6762 section 16) to every SRV and TXT data we have announced for it;
    ``heard`` is (lower-cased name, data) of the SRV/TXT answers just received (not
    goodbyes). A heard record for one of our names whose data is none of ours is a
    conflict: these records are unique to their owner (section 2), so another host is
    announcing our instance name. Our own announcements, looped back or late after an
    update, carry data we announced and are not conflicts.
    """
    out: set[str] = set()
    for name, data in heard:
        held = ours.get(name)
        if held is not None and data not in set(held):
            out.add(name)
    return out
