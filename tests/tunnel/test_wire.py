"""The tunnel's wire codec: byte tables both ways, and properties on hostile input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare.errors import DecodeError, UsageError
from spokeshare.tunnel import wire
from spokeshare.tunnel.wire import (
    EOF_FRAME,
    ControlReceived,
    DataReceived,
    EofReceived,
    FrameReader,
    FrameType,
    OpenControl,
    OpenStream,
    Status,
    StatusReply,
)
from tests.strategies import mutated_any

# (message, bytes) pairs, as docs/protocol.md lays them out.
OPEN_TABLE = [
    (
        OpenStream("smb", "198.18.11.10", 49152),
        bytes.fromhex("01 01 000b 03 736d62 04 c6120b0a c000"),
    ),
    (OpenStream("ipp"), bytes.fromhex("01 01 0007 03 697070 00 0000")),
    (
        # with the edge address the client connected to (198.18.11.1:631), for IPP
        OpenStream("ipp", "198.18.11.10", 49152, "198.18.11.1", 631),
        bytes.fromhex("01 01 0012 03 697070 04 c6120b0a c000 04 c6120b01 0277"),
    ),
    (
        OpenStream("smb", "2001:db8::1", 445),
        bytes.fromhex("01 01 0017 03 736d62 06 20010db8000000000000000000000001 01bd"),
    ),
    (
        OpenControl("spokeshare/0.1.0"),
        bytes.fromhex("01 02 0011 10") + b"spokeshare/0.1.0",
    ),
]

STATUS_TABLE = [
    (StatusReply(Status.OK), bytes.fromhex("01 00 0000")),
    (
        StatusReply(Status.UNKNOWN_SERVICE, "no service 'x'"),
        bytes.fromhex("01 01 000e") + b"no service 'x'",
    ),
    (StatusReply(Status.REVOKED, "revoked"), bytes.fromhex("01 06 0007") + b"revoked"),
]


@pytest.mark.parametrize(("msg", "raw"), OPEN_TABLE)
def test_open_header_table(msg: wire.OpenHeader, raw: bytes) -> None:
    assert wire.encode_open(msg) == raw
    assert wire.parse_open(raw) == (msg, len(raw))
    # Any strict prefix needs more bytes; extra bytes after it are left alone.
    for cut in range(len(raw)):
        assert wire.parse_open(raw[:cut]) is None
    assert wire.parse_open(raw + b"client bytes") == (msg, len(raw))


@pytest.mark.parametrize(("msg", "raw"), STATUS_TABLE)
def test_status_table(msg: StatusReply, raw: bytes) -> None:
    assert wire.encode_status(msg) == raw
    assert wire.parse_status(raw) == (msg, len(raw))
    for cut in range(len(raw)):
        assert wire.parse_status(raw[:cut]) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (bytes.fromhex("02 01 0000"), "unsupported wire version 2"),
        (bytes.fromhex("01 07 0000"), "unknown header kind 7"),
        (bytes.fromhex("01 01 0201"), "exceeds 512"),
        (bytes.fromhex("01 01 0007 03 534d42 00 0000"), "invalid service name 'SMB'"),
        (bytes.fromhex("01 01 0007 03 736d62 05 0000"), "unknown address family 5"),
        (bytes.fromhex("01 01 000b 03 736d62 00 0000 00 0000 ff"), "1 trailing bytes"),
        (bytes.fromhex("01 01 0008 03 736d62 00 0000 ff"), "unknown address family 255"),
        (bytes.fromhex("01 01 0006 03 736d62 04 c6"), "needs 4 bytes"),
        (bytes.fromhex("01 01 0004 09 736d6200"), "needs 9 bytes"),
        (bytes.fromhex("01 02 0002 01 ff"), "not ASCII"),
    ],
)
def test_open_header_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        wire.parse_open(raw)


def test_unsupported_version_is_its_own_error() -> None:
    with pytest.raises(wire.UnsupportedVersion) as info:
        wire.parse_open(b"\x09")
    assert info.value.version == 9


def test_frames_table() -> None:
    r = FrameReader()
    data = wire.frame_header(FrameType.DATA, 5) + b"hello" + EOF_FRAME
    events = r.feed(data)
    assert [type(e) for e in events] == [DataReceived, EofReceived]
    assert bytes(events[0].data) == b"hello"  # type: ignore[union-attr]
    with pytest.raises(DecodeError, match="after EOF"):
        r.feed(b"\x00")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (wire.frame_header(FrameType.DATA, 0), "data frame of 0 bytes"),
        (wire.frame_header(FrameType.DATA, wire.MAX_FRAME + 1), "data frame of"),
        (wire.frame_header(FrameType.EOF, 1), "EOF frame with a payload"),
        (wire.frame_header(FrameType.CONTROL, 2), "unexpected frame type 2"),
        (bytes([9, 0, 0, 1]), "unexpected frame type 9"),
    ],
)
def test_frame_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        FrameReader().feed(raw)


def test_control_frames() -> None:
    r = FrameReader(allow_control=True)
    raw = wire.encode_control({"t": "ping", "seq": 7})
    assert r.feed(raw) == [ControlReceived({"t": "ping", "seq": 7})]
    for bad, reason in [
        (b"[1]", "not an object"),
        (b"{nope", "not JSON"),
        (json.dumps({"seq": 1}).encode(), "not an object with a type"),
    ]:
        with pytest.raises(DecodeError, match=reason):
            FrameReader(allow_control=True).feed(
                wire.frame_header(FrameType.CONTROL, len(bad)) + bad
            )
    with pytest.raises(DecodeError, match="control frame of"):
        FrameReader(allow_control=True).feed(
            wire.frame_header(FrameType.CONTROL, wire.MAX_CONTROL + 1)
        )


# -- properties ------------------------------------------------------------------------

services = st.from_regex(r"[a-z][a-z0-9-]{0,31}", fullmatch=True)
hosts = st.one_of(
    st.just(""),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@given(services, hosts, st.integers(0, 65535))
def test_open_stream_round_trip(service: str, host: str, port: int) -> None:
    msg = OpenStream(service, host, port)
    raw = wire.encode_open(msg)
    assert wire.parse_open(raw) == (msg, len(raw))


@given(st.binary(max_size=600))
@settings(max_examples=500)
def test_parse_open_never_raises_foreign(data: bytes) -> None:
    try:
        wire.parse_open(data)
    except DecodeError:
        pass


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_parse_status_never_raises_foreign(data: bytes) -> None:
    try:
        wire.parse_status(data)
    except DecodeError:
        pass


@given(mutated_any([raw for _, raw in OPEN_TABLE]))
def test_parse_open_mutated(raw: bytes) -> None:
    try:
        wire.parse_open(raw)
    except DecodeError:
        pass


@given(st.binary(max_size=2000), st.booleans())
@settings(max_examples=500)
def test_frame_reader_never_raises_foreign(data: bytes, control: bool) -> None:
    try:
        FrameReader(allow_control=control).feed(data)
    except DecodeError:
        pass


@given(
    st.lists(st.binary(min_size=1, max_size=3000), max_size=8),
    st.lists(st.integers(1, 5000), min_size=1, max_size=20),
)
def test_frames_split_anywhere(chunks: list[bytes], cuts: list[int]) -> None:
    """However the byte stream is split into reads, the payload and EOF come out whole."""
    stream = b"".join(wire.frame_header(FrameType.DATA, len(c)) + c for c in chunks) + EOF_FRAME
    r = FrameReader()
    out = bytearray()
    eofs = 0
    pos, i = 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        for ev in r.feed(stream[pos : pos + n]):
            if isinstance(ev, DataReceived):
                out += ev.data
            elif isinstance(ev, EofReceived):
                eofs += 1
        pos, i = pos + n, i + 1
    assert bytes(out) == b"".join(chunks)
    assert eofs == 1


@given(
    st.lists(st.binary(min_size=1, max_size=3000), max_size=8),
    st.booleans(),
    st.lists(st.integers(1, 5000), min_size=1, max_size=20),
    # no CONTROL frame (type 2) in the tail: only the control reader accepts those
    st.binary(max_size=6).filter(lambda b: not b or b[0] != FrameType.CONTROL),
)
def test_payloads_agree_with_the_control_readers_events(
    chunks: list[bytes], eof: bool, cuts: list[int], tail: bytes
) -> None:
    """payloads() (the relay's path) and feed() of a control reader (a separate loop)
    read any stream of DATA and EOF frames, split anywhere and maybe followed by junk,
    to the same payload bytes, the same EOF and the same error."""
    stream = b"".join(wire.frame_header(FrameType.DATA, len(c)) + c for c in chunks)
    stream += (EOF_FRAME if eof else b"") + tail

    def run(read: Any) -> tuple[bytes, bool, str]:
        out, pos, i = bytearray(), 0, 0
        try:
            while pos < len(stream):
                n = cuts[i % len(cuts)]
                out += read(stream[pos : pos + n])
                pos, i = pos + n, i + 1
        except DecodeError as exc:
            return bytes(out), False, exc.reason
        return bytes(out), True, ""

    stream_reader = FrameReader()
    control = FrameReader(allow_control=True)

    def by_events(data: bytes) -> bytes:
        evs = control.feed(data)
        return b"".join(bytes(e.data) for e in evs if isinstance(e, DataReceived))

    fast = run(lambda d: b"".join(stream_reader.payloads(d)))
    assert fast == run(by_events)
    assert stream_reader.eof == control.eof
    if fast[1]:
        assert fast[0] == b"".join(chunks)


def test_payloads_are_views_of_the_read_and_only_for_stream_readers() -> None:
    data = bytearray(wire.data_header(3) + b"abc" + wire.data_header(2) + b"de")
    parts = FrameReader().payloads(data)
    assert [bytes(p) for p in parts] == [b"abc", b"de"]
    assert all(p.obj is data for p in parts)  # no copy: the relay writes them as they are
    assert wire.data_header(3) == wire.frame_header(FrameType.DATA, 3)
    with pytest.raises(UsageError):
        FrameReader(allow_control=True).payloads(data)


def test_wire_module_is_pure() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import spokeshare.tunnel.wire, spokeshare.tunnel.pool;"
        "bad = {'asyncio', 'socket', 'ssl', 'logging'} & set(sys.modules);"
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- sequential reuse (docs/protocol.md, "Sequential reuse") ----------------------------


def test_end_frame_bytes_and_alpn_ids() -> None:
    assert wire.END_FRAME == bytes.fromhex("03000000")
    assert wire.ALPNS == ("spokeshare/1+reuse", "spokeshare/1")


def test_bytes_after_eof_are_refused_unless_kept() -> None:
    data = wire.frame_header(wire.FrameType.DATA, 2) + b"hi" + wire.EOF_FRAME + wire.END_FRAME
    with pytest.raises(DecodeError, match="after EOF"):
        wire.FrameReader().feed(data)
    r = wire.FrameReader(keep_after_eof=True)
    events = r.feed(data[:5])  # split anywhere: the same events and the same rest
    events += r.feed(data[5:9])
    events += r.feed(data[9:] + b"\x01")
    assert [type(e) for e in events] == [
        wire.DataReceived,
        wire.DataReceived,
        wire.EofReceived,
    ]
    assert b"".join(bytes(e.data) for e in events if isinstance(e, wire.DataReceived)) == b"hi"
    assert bytes(r.after_eof) == wire.END_FRAME + b"\x01"


def test_end_is_not_a_frame_a_stream_may_carry() -> None:
    with pytest.raises(DecodeError, match="unexpected frame type 3"):
        wire.FrameReader(keep_after_eof=True).feed(wire.END_FRAME)
