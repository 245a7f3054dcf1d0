"""Asking HQ's CUPS for its printers: the request, and reading the answer (sans-IO).

The edge sends CUPS-Get-Printers (CUPS IPP extension 0x4002, CUPS ``doc/spec-ipp``)
with ``requested-attributes`` = :data:`spokeshare.printing.dnssd.REQUESTED_ATTRIBUTES`,
as the body of an HTTP POST to ``/`` (RFC 8010 section 4), through the hub's ``ipp``
service. CUPS answers a remote client with its *shared* queues only
(``scheduler/ipp.c`` ``get_printers()``), one printer-attributes group per queue, and
``client-error-not-found`` when there is none.

:func:`parse_get_printers` turns the answer into one plain mapping per printer (name
to a tuple of ``str``/``int``/``bool``), the shape :mod:`spokeshare.printing.dnssd`
reads. A value that does not read as its tag says is dropped with its attribute, so a
hostile attribute costs that attribute, never the printer or the answer.
"""

from __future__ import annotations

from collections.abc import Iterable

from spokeshare.errors import DecodeError
from spokeshare.printing import dnssd, ipp

#: Bound on the answer's attribute part (a few KiB per queue in practice).
MAX_ANSWER = 1024 * 1024
#: RFC 8011 4.1.6.1 / CUPS: no printer matched (an empty list, not an error).
CLIENT_ERROR_NOT_FOUND = 0x0406

_INTEGER_TAGS = frozenset({ipp.Tag.INTEGER, ipp.Tag.ENUM})
_STRING_TAGS = frozenset(range(0x40, 0x60)) | {
    ipp.Tag.TEXT_WITH_LANGUAGE,
    ipp.Tag.NAME_WITH_LANGUAGE,
}

PrinterValues = dict[str, tuple[dnssd.Value, ...]]


def get_printers_request(request_id: int = 1) -> bytes:
    """The IPP body of CUPS-Get-Printers asking for what the DNS-SD records need."""
    return ipp.encode(ipp.cups_get_printers(request_id, dnssd.REQUESTED_ATTRIBUTES))


def _value(v: ipp.IppValue) -> dnssd.Value | None:
    try:
        if v.tag in _INTEGER_TAGS:
            return ipp.read_integer(v)
        if v.tag == ipp.Tag.BOOLEAN:
            return ipp.read_boolean(v)
        if v.tag in _STRING_TAGS:
            return ipp.read_string(v)
    except DecodeError:
        return None
    return None


def attributes_of(
    group: ipp.AttributeGroup, wanted: Iterable[str] = dnssd.REQUESTED_ATTRIBUTES
) -> PrinterValues:
    """One printer group as ``{name: values}``, only the ``wanted`` attributes, each
    kept only when every value reads as its tag says (first occurrence wins)."""
    keep = frozenset(wanted)
    out: PrinterValues = {}
    for attr in group.attributes:
        if attr.name not in keep or attr.name in out:
            continue
        values = [_value(v) for v in attr.values]
        if all(v is not None for v in values):
            out[attr.name] = tuple(v for v in values if v is not None)
    return out


def parse_get_printers(body: bytes) -> list[PrinterValues]:
    """The printers of a CUPS-Get-Printers answer, in answer order.

    Raises :class:`spokeshare.errors.DecodeError` for bytes that are not an IPP answer
    (bounded by :data:`MAX_ANSWER`) and for an error status other than not-found.
    """
    msg = ipp.decode(body, limit=MAX_ANSWER)
    if msg.code == CLIENT_ERROR_NOT_FOUND:
        return []
    if msg.code >= 0x0100:  # RFC 8011 4.1.6.1: 0x0000-0x00FF are successful-ok*
        raise DecodeError("ipp", f"CUPS-Get-Printers answered status 0x{msg.code:04x}")
    return [attributes_of(g) for g in msg.groups_of(ipp.GroupTag.PRINTER)]
