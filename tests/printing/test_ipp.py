"""IPP codec (RFC 8010 section 3): captured CUPS bytes both ways, worked examples, fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spokeshare.errors import DecodeError, UsageError
from spokeshare.lan import NEED_DATA
from spokeshare.printing import ipp
from spokeshare.printing.ipp import (
    Attribute,
    AttributeGroup,
    GroupTag,
    IppMessage,
    IppValue,
    Operation,
    Tag,
)
from tests.strategies import mutated_any

VECTORS = Path(__file__).parent / "vectors"
CAPTURED = sorted(VECTORS.glob("*.bin"))


def vector(prefix: str) -> bytes:
    (path,) = VECTORS.glob(prefix + "*.bin")
    return path.read_bytes()


@pytest.mark.parametrize("path", CAPTURED, ids=lambda p: p.name)
def test_captured_reencodes_byte_for_byte(path: Path) -> None:
    data = path.read_bytes()
    msg = ipp.decode(data)
    assert ipp.encode(msg) == data
    # and the streaming form agrees on where the document begins
    got = ipp.decode_prefix(data)
    assert got is not NEED_DATA
    prefix, offset = got
    assert data[offset:] == msg.data
    assert prefix.groups == msg.groups


def test_captured_get_printer_attributes_request() -> None:
    msg = ipp.decode(vector("01-"))
    assert msg.version == (2, 0)
    assert msg.code == Operation.GET_PRINTER_ATTRIBUTES
    uri = msg.operation("printer-uri")
    assert uri is not None and uri.value_tag == Tag.URI
    assert uri.string().startswith("ipp://127.0.0.1:")
    assert uri.string().endswith("/printers/vec-laser")
    assert msg.operation("attributes-charset") == Attribute.of(
        "attributes-charset", Tag.CHARSET, "utf-8"
    )


def test_captured_printer_attributes_typed_values() -> None:
    msg = ipp.decode(vector("02-"))
    assert msg.code == ipp.Status.SUCCESSFUL_OK
    printer = msg.group(GroupTag.PRINTER)
    assert printer is not None
    name = printer.get("printer-name")
    assert name is not None and name.string() == "vec-laser"
    info = printer.get("printer-info")
    assert info is not None and info.string() == "Vector laser"
    state = printer.get("printer-state")
    assert state is not None and state.value_tag == Tag.ENUM and state.integer() == 3  # idle
    accepting = printer.get("printer-is-accepting-jobs")
    assert accepting is not None and accepting.boolean() is True
    formats = printer.get("document-format-supported")
    assert formats is not None and len(formats.values) > 1  # a 1setOf
    assert "application/octet-stream" in formats.strings()
    copies = printer.get("copies-supported")
    assert copies is not None and ipp.read_range(copies.values[0])[0] == 1
    uris = printer.get("printer-uri-supported")
    assert uris is not None and all(u.startswith("ipp") for u in uris.strings())


def test_captured_cups_get_printers_lists_the_queue() -> None:
    req = ipp.decode(vector("03-"))
    assert req.code == Operation.CUPS_GET_PRINTERS
    resp = ipp.decode(vector("04-"))
    names = [g.get("printer-name") for g in resp.groups_of(GroupTag.PRINTER)]
    assert [n.string() for n in names if n] == ["vec-laser"]


def test_captured_print_job_keeps_collection_and_document() -> None:
    msg = ipp.decode(vector("05-"))
    job = msg.group(GroupTag.JOB)
    assert job is not None
    media_col = job.get("media-col")
    assert media_col is not None and media_col.value_tag == Tag.BEG_COLLECTION
    # members end with the collection's own endCollection (0x37, empty name and value)
    assert media_col.values[0].data.endswith(b"\x37\x00\x00\x00\x00")
    assert msg.data == b"A page printed by the IPP vector capture.\n"
    quality = job.get("print-quality")
    assert quality is not None and quality.integer() == 5


def test_captured_job_uri_and_get_job_attributes() -> None:
    job_uri = ipp.decode(vector("08-")).group(GroupTag.JOB)
    assert job_uri is not None
    uri = job_uri.get("job-uri")
    assert uri is not None and "/jobs/" in uri.string()
    req = ipp.decode(vector("09-"))
    target = req.operation("job-uri")
    assert target is not None and target.string() == uri.string()


# -- worked examples both ways (RFC 8010 3.1 layout) ----------------------------------

HEADER = bytes.fromhex("0101 000b 00000007")
CHARSET = b"\x47\x00\x12attributes-charset\x00\x05utf-8"
LANGUAGE = b"\x48\x00\x1battributes-natural-language\x00\x02en"

EXAMPLES: list[tuple[str, IppMessage, bytes]] = [
    (
        "get-printer-attributes with a 1setOf",
        ipp.get_printer_attributes(
            "ipp://198.18.1.1:631/printers/a", 7, requested=["printer-name", "printer-state"]
        ),
        HEADER
        + b"\x01"
        + CHARSET
        + LANGUAGE
        + b"\x45\x00\x0bprinter-uri\x00\x1fipp://198.18.1.1:631/printers/a"
        + b"\x44\x00\x14requested-attributes\x00\x0cprinter-name"
        + b"\x44\x00\x00\x00\x0dprinter-state"
        + b"\x03",
    ),
    (
        "out-of-band and empty group",
        IppMessage(
            (1, 1),
            0x0000,
            2,
            (
                AttributeGroup(GroupTag.OPERATION, ()),
                AttributeGroup(
                    GroupTag.PRINTER, (Attribute("printer-info", (IppValue(Tag.NO_VALUE, b""),)),)
                ),
            ),
        ),
        bytes.fromhex("0101 0000 00000002") + b"\x01\x04\x13\x00\x0cprinter-info\x00\x00\x03",
    ),
]


@pytest.mark.parametrize(("label", "msg", "wire"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_examples_both_ways(label: str, msg: IppMessage, wire: bytes) -> None:
    assert ipp.encode(msg) == wire
    assert ipp.decode(wire) == msg


def test_cups_get_printers_builder() -> None:
    msg = ipp.decode(ipp.encode(ipp.cups_get_printers(3, ["printer-name"])))
    assert msg.code == 0x4002 and msg.request_id == 3
    req = msg.operation("requested-attributes")
    assert req is not None and req.strings() == ["printer-name"]


def test_response_builder_carries_status_message() -> None:
    req = ipp.get_printer_attributes("ipp://x/printers/a", 9)
    resp = ipp.decode(ipp.encode(ipp.response(req, ipp.Status.CLIENT_ERROR_NOT_POSSIBLE, "no")))
    assert resp.code == 0x0404 and resp.request_id == 9
    msg = resp.operation("status-message")
    assert msg is not None and msg.string() == "no"


def test_with_language_text() -> None:
    v = IppValue(Tag.TEXT_WITH_LANGUAGE, b"\x00\x02de\x00\x05Hallo")
    assert ipp.read_string(v) == "Hallo"
    with pytest.raises(DecodeError):
        ipp.read_string(IppValue(Tag.TEXT_WITH_LANGUAGE, b"\x00\x09de\x00\x05Hallo"))


def test_resolution() -> None:
    v = IppValue(Tag.RESOLUTION, bytes.fromhex("0000012c 0000012c 03"))
    assert ipp.read_resolution(v) == (300, 300, 3)


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "wire"),
    [
        ("empty", b""),
        ("header only", HEADER),
        ("no end tag", HEADER + b"\x01" + CHARSET),
        ("reserved delimiter 0x00", HEADER + b"\x00\x03"),
        ("value before a group", HEADER + CHARSET + b"\x03"),
        ("additional value first", HEADER + b"\x01\x44\x00\x00\x00\x01x\x03"),
        ("value overruns", HEADER + b"\x01\x44\x00\x01a\x00\x09ab\x03"),
        ("name over 32767", HEADER + b"\x01\x44\x80\x00" + b"a" * 0x8000 + b"\x00\x00\x03"),
        ("endCollection outside", HEADER + b"\x01\x37\x00\x00\x00\x00\x03"),
        ("unterminated collection", HEADER + b"\x01\x34\x00\x01c\x00\x00\x4a\x00\x00\x00\x01m\x03"),
        ("non-ASCII name", HEADER + b"\x01\x44\x00\x01\xff\x00\x01a\x03"),
    ],
)
def test_refused(label: str, wire: bytes) -> None:
    with pytest.raises(DecodeError):
        ipp.decode(wire)


def test_collection_depth_bounded() -> None:
    deep = b"\x34\x00\x00\x00\x00" * (ipp.MAX_COLLECTION_DEPTH + 1)
    wire = HEADER + b"\x01\x34\x00\x01c\x00\x00" + b"\x4a\x00\x00\x00\x01m" + deep + b"\x03"
    with pytest.raises(DecodeError, match="deep"):
        ipp.decode(wire)


def test_limit_bounds_the_attribute_part_not_the_document() -> None:
    data = vector("07-")
    msg = ipp.decode(data)
    attrs_len = len(data) - len(msg.data)
    assert ipp.decode(data, limit=attrs_len) == msg
    with pytest.raises(DecodeError, match="exceed"):
        ipp.decode(data, limit=attrs_len - 1)


def test_prefix_needs_more_then_succeeds() -> None:
    data = vector("05-")
    msg = ipp.decode(data)
    end = len(data) - len(msg.data)
    for cut in (0, 1, 8, 9, end - 1):
        assert ipp.decode_prefix(data[:cut]) is NEED_DATA
    got = ipp.decode_prefix(data[:end])
    assert got is not NEED_DATA
    prefix, offset = got
    assert offset == end and prefix.groups == msg.groups


def test_builders_refuse_misuse() -> None:
    with pytest.raises(UsageError):
        Attribute("x", ())
    with pytest.raises(UsageError):
        IppValue(0x03, b"")
    with pytest.raises(UsageError):
        AttributeGroup(GroupTag.END)
    with pytest.raises(UsageError):
        Attribute.of("x", Tag.KEYWORD, 5)


# -- properties -------------------------------------------------------------------------

_names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
_plain_tags = st.sampled_from(
    [t for t in Tag if t not in (Tag.BEG_COLLECTION, Tag.END_COLLECTION, Tag.MEMBER_ATTR_NAME)]
)
_values = st.builds(IppValue, _plain_tags, st.binary(max_size=40))
_collection = st.just(
    IppValue(
        Tag.BEG_COLLECTION,
        b"\x4a\x00\x00\x00\x01m\x21\x00\x00\x00\x04\x00\x00\x00\x01\x37\x00\x00\x00\x00",
    )
)
_attributes = st.builds(
    Attribute, _names, st.lists(st.one_of(_values, _collection), min_size=1, max_size=4).map(tuple)
)
_group_tags = st.sampled_from([t for t in GroupTag if t != GroupTag.END])
_groups = st.builds(AttributeGroup, _group_tags, st.lists(_attributes, max_size=5).map(tuple))
_messages = st.builds(
    IppMessage,
    st.tuples(st.integers(0, 255), st.integers(0, 255)),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.lists(_groups, max_size=4).map(tuple),
    st.binary(max_size=30),
)


@given(_messages)
def test_encode_decode_roundtrip(msg: IppMessage) -> None:
    assert ipp.decode(ipp.encode(msg)) == msg


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=400)
@given(mutated_any([p.read_bytes() for p in CAPTURED]))
def test_mutated_captures_decode_or_fail_cleanly(data: bytes) -> None:
    try:
        ipp.decode_prefix(data)
    except DecodeError:
        pass
    try:
        msg = ipp.decode(data)
    except DecodeError:
        return
    # whatever decodes can be read with the typed readers without a foreign error
    for g in msg.groups:
        for a in g.attributes:
            for v in a.values:
                for read in (ipp.read_string, ipp.read_integer, ipp.read_boolean,
                             ipp.read_resolution, ipp.read_range):  # fmt: skip
                    try:
                        read(v)
                    except DecodeError:
                        pass
