"""HQ's printers as CUPS answers for them, and as CUPS itself publishes them
(spokeshare.printing.hq_printers with .dnssd).

``vectors_dnssd/`` holds, captured from the lab's HQ cupsd (Debian 12, CUPS 2.4.2,
stock cupsd.conf plus ``cupsctl --share-printers --remote-any``, the lab's queues) by
``vectors_dnssd/capture.py``:

- ``get-printers.bin``: cupsd's CUPS-Get-Printers answer to a remote client;
- ``avahi-browse.txt``: ``avahi-browse -rpt _ipp._tcp`` / ``_printer._tcp`` while the
  same cupsd published its queues through avahi-daemon.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings

from spokeshare.errors import DecodeError
from spokeshare.printing import hq_printers, ipp
from spokeshare.printing.dnssd import PrinterService, printer_services
from tests.printing.test_dnssd import check_bounded
from tests.strategies import mutated

VECTORS = Path(__file__).parent / "vectors_dnssd"
GET_PRINTERS = (VECTORS / "get-printers.bin").read_bytes()

#: Keys CUPS publishes about itself that the edge leaves out: it offers plain IPP
#: (no TLS), asks for no authentication and certifies nothing.
SERVER_KEYS = {"TLS", "air", "mopria-certified"}


def avahi_unescape(name: str) -> str:
    """avahi-browse -p escapes with \\DDD (decimal)."""
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), name)


def cups_published() -> dict[str, tuple[str, int, dict[str, str]]]:
    """Instance name -> (service type, port, TXT) as CUPS published them."""
    out: dict[str, tuple[str, int, dict[str, str]]] = {}
    for line in (VECTORS / "avahi-browse.txt").read_text().splitlines():
        if not line.startswith("="):
            continue
        fields = line.split(";", 9)
        txt = dict(pair.split("=", 1) for pair in re.findall(r'"((?:[^"\\]|\\.)*)"', fields[9]))
        out[f"{avahi_unescape(fields[3])}|{fields[4]}"] = (fields[4], int(fields[8]), txt)
    return out


def hq_services() -> tuple[PrinterService, ...]:
    services, skipped = printer_services(
        hq_printers.parse_get_printers(GET_PRINTERS), "hq.local.", 631
    )
    assert skipped == ()
    return services


# -- against CUPS ------------------------------------------------------------------------


def test_captured_answer_lists_the_shared_queues_only() -> None:
    names = [p["printer-name"][0] for p in hq_printers.parse_get_printers(GET_PRINTERS)]
    assert sorted(names) == ["hq-color", "hq-laser"]  # hq-private is not shared


@pytest.mark.parametrize("printer", ["hq-laser", "hq-color"])
def test_txt_is_what_cups_publishes(printer: str) -> None:
    svc = next(s for s in hq_services() if s.printer == printer)
    published = cups_published()
    key = f"{svc.instance} @ hq|Internet Printer"  # CUPS adds " @ <computer name>"
    assert key in published, sorted(published)
    _, port, cups_txt = published[key]
    ours = dict(svc.txt)
    assert port == svc.port == 631
    for name, value in cups_txt.items():
        if name in SERVER_KEYS:
            assert name not in ours
        elif name == "product":
            # CUPS takes the PPD's *Product; IPP carries only the make and model.
            assert value.startswith("(") and ours[name] == f"({ours['ty']})"
        elif name == "adminurl":
            # CUPS's listeners offer TLS (https); the edge's port is plain IPP.
            assert value.split("://", 1)[1] == ours[name].split("://", 1)[1]
        else:
            assert ours.get(name) == value, name
    assert set(ours) - set(cups_txt) == set()  # nothing CUPS did not publish


def test_printer_placeholder_is_port_zero_as_cups() -> None:
    placeholders = [v for k, v in cups_published().items() if k.endswith("|UNIX Printer")]
    assert len(placeholders) == 2 and all(port == 0 for _, port, _ in placeholders)
    assert all(s.lpd_port == 0 for s in hq_services())


@settings(max_examples=300, deadline=None)
@given(mutated(GET_PRINTERS))
def test_mutated_answers_parse_or_raise_decode_error(body: bytes) -> None:
    try:
        printers = hq_printers.parse_get_printers(body)
    except DecodeError:
        return
    services, _ = printer_services(printers, "E.local.", 631)
    for s in services:
        check_bounded(s)


def test_error_status_is_a_decode_error_and_not_found_is_empty() -> None:
    request = ipp.cups_get_printers(7)
    assert hq_printers.parse_get_printers(ipp.encode(ipp.response(request, 0x0406))) == []
    with pytest.raises(DecodeError):
        hq_printers.parse_get_printers(ipp.encode(ipp.response(request, 0x0401)))
    with pytest.raises(DecodeError):
        hq_printers.parse_get_printers(b"HTTP/1.1 400 Bad Request\r\n\r\n")
