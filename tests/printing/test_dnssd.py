"""DNS-SD records of HQ's printers (spokeshare.printing.dnssd): names, TXT rules,
the sync plan, and hostile attribute sets (the comparison with what CUPS itself
publishes is in test_hq_printers.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare.printing import dnssd
from spokeshare.printing.dnssd import (
    MAX_INSTANCE,
    MAX_TXT,
    MAX_TXT_STRING,
    PrinterRecordError,
    PrinterService,
    alternative_name,
    encode_txt,
    instance_name,
    plan_sync,
    printer_service,
    printer_services,
)

# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Office Laser", "Office Laser"),
        ("  Office\tLaser\x00\x7f ", "OfficeLaser"),
        ("Floor 2.West", "Floor 2-West"),
        ("Cafe\u0301", "Caf\u00e9"),  # NFC (RFC 6763 4.1.3)
        ("x" * 80, "x" * 63),
        ("\u00e9" * 40, "\u00e9" * 31),  # 62 octets: never half a character
        ("\x01\x02", ""),
    ],
)
def test_instance_name(text: str, expected: str) -> None:
    assert instance_name(text) == expected


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("Office Laser", 2, "Office Laser (2)"),
        ("Office Laser (2)", 3, "Office Laser (3)"),
        ("y" * 63, 2, "y" * 59 + " (2)"),
        ("y" * 63, 10, "y" * 58 + " (10)"),
    ],
)
def test_alternative_name(name: str, n: int, expected: str) -> None:
    assert alternative_name(name, n) == expected
    assert len(alternative_name(name, n).encode()) <= MAX_INSTANCE


def base(**extra: object) -> dict[str, tuple[object, ...]]:
    attrs: dict[str, tuple[object, ...]] = {"printer-name": ("q",)}
    attrs.update({k.replace("_", "-"): v for k, v in extra.items()})  # type: ignore[misc]
    return attrs


def txt(**extra: object) -> dict[str, str]:
    return dict(printer_service(base(**extra), "E.local.", 631).txt)  # type: ignore[arg-type]


def test_minimal_printer_has_only_what_is_known() -> None:
    assert txt() == {"txtvers": "1", "qtotal": "1", "rp": "printers/q", "priority": "0"}


def test_pdl_lists_only_supported_formats_cups_would_list() -> None:
    formats = ("application/octet-stream", "text/plain", "image/urf", "application/pdf")
    assert txt(document_format_supported=formats)["pdl"] == "image/urf,application/pdf"
    assert "pdl" not in txt(document_format_supported=("text/plain",))


def test_colour_and_duplex_without_printer_type_come_from_ipp() -> None:
    t = txt(color_supported=(False,), sides_supported=("one-sided", "two-sided-long-edge"))
    assert (t["Color"], t["Duplex"]) == ("F", "T")
    assert "printer-type" not in t


def test_printer_type_bits_as_dirsvc() -> None:
    # default (0x20000), rejecting (0x80000) and not-shared (0x200000) are IPP-only.
    t = txt(printer_type=(0x40000 | 0x20000 | 0x80000 | 0x200000 | 0x10 | 0x8 | 0x4,))
    assert t["printer-type"] == "0x4001E"
    assert (t["Fax"], t["rfo"], t["Color"], t["Duplex"]) == ("T", "printers/q", "T", "T")


def test_rp_from_uri_or_name() -> None:
    assert txt(printer_uri_supported=("ipp://h:631/classes/q",))["rp"] == "classes/q"
    # a URI naming another queue is not believed
    assert txt(printer_uri_supported=("ipp://h:631/printers/other",))["rp"] == "printers/q"
    assert txt(printer_type=(1,))["rp"] == "classes/q"


def test_uuid_only_when_it_is_one() -> None:
    assert txt(printer_uuid=("urn:uuid:4164E173-17c7-3639-4c33-e717b9212193",))["UUID"] == (
        "4164e173-17c7-3639-4c33-e717b9212193"
    )
    assert "UUID" not in txt(printer_uuid=("urn:uuid:nope",))


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({}, "no printer-name"),
        ({"printer-name": ("a/b",)}, "printer-name is not a CUPS queue name"),
        ({"printer-name": ("",)}, "printer-name is not a CUPS queue name"),
        ({"printer-name": (5,)}, "no printer-name"),
    ],
)
def test_unusable_printer_raises_the_documented_error(
    attrs: dict[str, tuple[object, ...]], reason: str
) -> None:
    with pytest.raises(PrinterRecordError) as info:
        printer_service(attrs, "E.local.", 631)  # type: ignore[arg-type]
    assert info.value.reason == reason


def test_services_skip_bad_and_unshared_printers_and_keep_the_rest() -> None:
    printers = [
        {"printer-name": ("a",), "printer-info": ("Laser",)},
        {"printer-info": ("no name",)},
        {"printer-name": ("b",), "printer-is-shared": (False,)},
        {"printer-name": ("c",), "printer-info": ("laser",)},  # same name, other case
        {"printer-name": ("a",)},
    ]
    services, skipped = printer_services(printers, "E.local.", 631)  # type: ignore[arg-type]
    assert [(s.printer, s.instance) for s in services] == [("a", "Laser"), ("c", "laser (2)")]
    assert [(s.printer, s.reason) for s in skipped] == [
        ("", "no printer-name"),
        ("b", "not shared"),
        ("a", "listed twice"),
    ]


def test_lpd_port_is_carried() -> None:
    svc = printer_service({"printer-name": ("q",)}, "E.local.", 631, lpd_port=515)
    assert svc.lpd_port == 515


# -- plan ----------------------------------------------------------------------------------


def svc(printer: str, instance: str, note: str = "") -> PrinterService:
    pairs = (("txtvers", "1"),) + ((("note", note),) if note else ())
    return PrinterService(printer, instance, f"printers/{printer}", pairs, 631)


def test_plan_adds_updates_renames_and_removes() -> None:
    current = {"a": svc("a", "A"), "b": svc("b", "B"), "c": svc("c", "C")}
    desired = [svc("a", "A"), svc("b", "B", note="moved"), svc("c", "C2"), svc("d", "D")]
    plan = plan_sync(current, desired)
    assert plan.remove == ("c",)
    assert [s.printer for s in plan.add] == ["c", "d"]
    assert [s.printer for s in plan.update] == ["b"]
    assert plan_sync({"a": svc("a", "A")}, [svc("a", "A")]).empty
    assert plan_sync(current, []).remove == ("a", "b", "c")


# -- hostile input ---------------------------------------------------------------------------

TEXT = st.one_of(
    st.text(max_size=600),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=40000),
    st.sampled_from(["", ".", "\\", "\x00", "a" * 300, "\u00e9" * 200, "urn:uuid:"]),
)
VALUE = st.one_of(TEXT, st.integers(-(2**31), 2**31 - 1), st.booleans(), st.binary(max_size=300))
ATTRS = st.dictionaries(
    st.sampled_from(dnssd.REQUESTED_ATTRIBUTES),
    st.lists(VALUE, max_size=400).map(tuple),
    max_size=len(dnssd.REQUESTED_ATTRIBUTES),
)


def check_bounded(s: PrinterService) -> None:
    raw = s.instance.encode()
    assert 0 < len(raw) <= MAX_INSTANCE
    assert not re.search(r"[\x00-\x1f\x7f.]", s.instance)
    wire = encode_txt(s.txt)
    assert len(wire) <= MAX_TXT
    for key, value in s.txt:
        assert len(f"{key}={value}".encode()) <= MAX_TXT_STRING
        assert not re.search(r"[\x00-\x1f\x7f]", value)


@settings(max_examples=300, deadline=None)
@given(ATTRS)
def test_hostile_attributes_are_bounded_or_refused(attrs: dict[str, tuple[object, ...]]) -> None:
    try:
        service = printer_service(attrs, "E.local.", 631)  # type: ignore[arg-type]
    except PrinterRecordError:
        return
    check_bounded(service)


@settings(max_examples=100, deadline=None)
@given(st.lists(ATTRS, max_size=12))
def test_hostile_answers_keep_good_printers(printers: list[dict[str, tuple[object, ...]]]) -> None:
    services, skipped = printer_services(printers, "E.local.", 631)  # type: ignore[arg-type]
    assert len(services) + len(skipped) == len(printers)
    assert len({s.instance.casefold() for s in services}) == len(services)
    for s in services:
        check_bounded(s)


def test_pure_modules_import_no_io() -> None:
    code = (
        "import sys, spokeshare.printing.dnssd, spokeshare.printing.hq_printers\n"
        "bad = [m for m in ('asyncio', 'socket', 'ssl', 'logging', 'selectors') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for mod in ("dnssd", "hq_printers"):
        src = (Path(dnssd.__file__).parent / f"{mod}.py").read_text()
        for banned in ("asyncio", "socket", "ssl", "logging", "time"):
            assert f"import {banned}\n" not in src and f"from {banned} " not in src


def test_lpd_record_names_the_queue_only_with_a_real_port() -> None:
    attrs = {"printer-name": ("q",), "printer-make-and-model": ("M",)}
    assert printer_service(attrs, "E.local.", 631).lpd_txt == ()
    lpd = printer_service(attrs, "E.local.", 631, lpd_port=515)
    assert dict(lpd.lpd_txt) == {**dict(lpd.txt), "rp": "q"}
    assert dict(lpd.txt)["rp"] == "printers/q"


def test_conflicts_only_other_data_for_names_we_hold() -> None:
    """RFC 6762 section 9: another host's SRV/TXT for our instance name is a conflict;
    our own data (looped back, or an older TXT of ours) and other names are not."""
    ours: dict[str, set[dnssd.RecordData]] = {
        "hq laser._ipp._tcp.local.": {
            ("SRV", "edge.local.", 631),
            ("TXT", b"\x05rp=a"),
            ("TXT", b"\x05rp=b"),
        }
    }
    name = "hq laser._ipp._tcp.local."
    assert dnssd.conflicts(ours, [(name, ("SRV", "edge.local.", 631))]) == set()
    assert dnssd.conflicts(ours, [(name, ("TXT", b"\x05rp=a"))]) == set()
    assert dnssd.conflicts(ours, [("mac._ipp._tcp.local.", ("SRV", "mac.local.", 631))]) == set()
    assert dnssd.conflicts(ours, [(name, ("SRV", "mac.local.", 631))]) == {name}
    assert dnssd.conflicts(ours, [(name, ("SRV", "edge.local.", 632))]) == {name}
    assert dnssd.conflicts(ours, [(name, ("TXT", b"\x05rp=c"))]) == {name}
