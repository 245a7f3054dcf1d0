"""Log lines: the key=value formatter and its inverse, and the stream line that the
edge and the hub both write for one stream, read back from a real edge and hub."""

from __future__ import annotations

import logging
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spokeshare.errors import DecodeError, UsageError
from spokeshare.logfmt import Line, find, logfmt, parse, value_text
from spokeshare.tunnel import streamlog
from spokeshare.tunnel.streamlog import Ending, Result
from tests.helpers import Stack, recv_all, wait_for

KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
EVENTS = st.lists(st.from_regex(r'[^\s="\x00-\x1f\x7f]{1,8}', fullmatch=True), min_size=1,
                  max_size=3).map(" ".join)  # fmt: skip
VALUES = st.one_of(st.text(max_size=40), st.integers(), st.booleans())


@given(EVENTS, st.dictionaries(KEYS, VALUES, max_size=8))
def test_parse_is_the_inverse(event: str, fields: dict[str, object]) -> None:
    line = logfmt(event, **fields)
    assert "\n" not in line and "\r" not in line
    want = {k: v if isinstance(v, str) else value_text(v) for k, v in fields.items()}
    assert parse(line) == (event, want)


@given(st.text(max_size=60))
def test_parse_rejects_or_reads(text: str) -> None:
    """Any text: an event and fields that format back to the same line, or DecodeError."""
    try:
        event, fields = parse(text)
    except DecodeError:
        return
    assert parse(logfmt(event, **fields)) == (event, fields)


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"office": "nyc", "to_hq": 12}, "stream office=nyc to_hq=12"),
        ({"duration_s": 0.41234}, "stream duration_s=0.412"),
        ({"reason": "no service 'x'"}, "stream reason=\"no service 'x'\""),
        ({"reason": ""}, 'stream reason=""'),
        ({"reason": 'a "b" = c\\'}, r'stream reason="a \"b\" = c\\"'),
        ({"reason": "two\nlines"}, r'stream reason="two\nlines"'),
        ({"ok": True, "status": None}, "stream ok=true"),
    ],
)
def test_formatted(fields: dict[str, object], text: str) -> None:
    assert logfmt("stream", **fields) == text
    assert str(Line("stream", **fields)) == text


@pytest.mark.parametrize(
    "bad",
    ["", "stream ", "stream a=1 b", 'stream a="x', r'stream a="\q"', "stream a=1 a=2",
     "stream A=1", "stream a=x=y", 'stream a=b"c', "=1"],
)  # fmt: skip
def test_parse_refuses(bad: str) -> None:
    with pytest.raises(DecodeError):
        parse(bad)


def test_bad_names_refused() -> None:
    with pytest.raises(UsageError):
        logfmt("stream", **{"To-hq": 1})
    with pytest.raises(UsageError):
        logfmt('bad "event"')


def test_find_skips_the_logging_prefix() -> None:
    log = (
        "2026-11-30 21:00:00,001 INFO spokeshare.hub.stream: stream office=nyc to_hq=3\n"
        "2026-11-30 21:00:00,002 INFO spokeshare.hub: listening address=127.0.0.1 port=1\n"
        "2026-11-30 21:00:00,003 DEBUG spokeshare.edge: cannot write /x: prose, not an event\n"
        'stream office=bos reason="a b"\n'
    )
    assert find(log, "stream") == [{"office": "nyc", "to_hq": "3"}, {"office": "bos",
                                                                      "reason": "a b"}]  # fmt: skip


@pytest.mark.parametrize(
    ("ending", "fields"),
    [
        (None, ("open", None, None)),
        (Ending(Result.OK), ("ok", None, None)),
        (Ending(Result.REFUSED, "NOT_ALLOWED"), ("refused", "NOT_ALLOWED", None)),
        (Ending(Result.TUNNEL_LOST, "timed out"), ("tunnel-lost", None, "timed out")),
        (Ending(Result.ABORTED, "hub shutting down"), ("aborted", None, "hub shutting down")),
    ],
)
def test_result_fields(ending: Ending | None, fields: tuple[str, str | None, str | None]) -> None:
    assert streamlog.result_fields(ending) == fields


STREAM_FIELDS = {"office", "client", "service", "to_hq", "to_office", "duration_s", "result"}


def test_both_ends_log_the_same_stream_alike(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """One stream through a real edge and hub on loopback: the two stream lines carry
    the same fields, and each direction's byte count is the same at both ends."""
    caplog.set_level(logging.INFO, logger="spokeshare")
    sent = b"q" * 70_001
    with stack.connect() as c:
        c.sendall(sent)
        c.shutdown(socket.SHUT_WR)
        # The echo backend sends everything back, then the hub adds nothing: the edge's
        # client reads exactly what it sent.
        assert recv_all(c) == sent
        host, port = c.getsockname()
        client = f"{host}:{port}"

    def lines(name: str) -> list[dict[str, str]]:
        text = "\n".join(r.getMessage() for r in caplog.records if r.name == name)
        return [f for f in find(text, "stream") if f.get("client") == client]

    edge = wait_for(lambda: lines("spokeshare.edge.stream"), what="the edge's stream line")
    hub = wait_for(lambda: lines("spokeshare.hub.stream"), what="the hub's stream line")
    assert len(edge) == len(hub) == 1
    e, h = edge[0], hub[0]
    assert set(e) == set(h) == STREAM_FIELDS
    for key in ("office", "client", "service", "result"):
        assert e[key] == h[key], key
    assert e["result"] == "ok" and e["office"] == "nyc" and e["service"] == "smb"
    assert e["to_hq"] == h["to_hq"] == str(len(sent))
    assert e["to_office"] == h["to_office"] == str(len(sent))
    assert float(e["duration_s"]) >= 0 and float(h["duration_s"]) >= 0
