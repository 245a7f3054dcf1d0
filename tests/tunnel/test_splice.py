"""The relay's :class:`Splice` as transcripts: events in, the exact calls on both
transports out, in memory (mitmproxy's Playbook is the model). The same splice over real
sockets is in test_relay_e2e.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from spokeshare.errors import UsageError
from spokeshare.printing.hub_ipp import PrinterPolicy, StreamInfo
from spokeshare.printing.ipp_relay import IppFilter
from spokeshare.tunnel import wire
from spokeshare.tunnel.relay import (
    TRANSITIONS,
    Event,
    Forward,
    ReadBuffer,
    Splice,
    State,
    StreamFilter,
)
from spokeshare.tunnel.streamlog import Ending, Result

Call = tuple[str, str] | tuple[str, str, bytes]


class FakeTransport(asyncio.Transport):
    """Records every call the splice makes into the shared transcript ``calls``:
    ("write", side, bytes), ("eof" | "close" | "abort" | "pause" | "resume", side)."""

    def __init__(self, side: str, calls: list[Call]) -> None:
        super().__init__()
        self.side = side
        self.calls = calls
        self.closing = False
        #: What get_write_buffer_size() answers (bytes the transport could not send).
        self.buffered = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", self.side, bytes(data)))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(bytes(d) for d in list_of_data))

    def write_eof(self) -> None:
        self.calls.append(("eof", self.side))

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", self.side))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", self.side))

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.calls.append(("pause", self.side))

    def resume_reading(self) -> None:
        self.calls.append(("resume", self.side))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default  # no socket: abort_with_rst goes straight to abort()


class Playbook:
    """One splice between two fake transports; ``take()`` returns the calls made since
    the last ``take()``, ``done`` the splices ``on_done`` was called with."""

    def __init__(self, filter: StreamFilter | None = None) -> None:
        self.calls: list[Call] = []
        self.plain = FakeTransport("plain", self.calls)
        self.tunnel = FakeTransport("tunnel", self.calls)
        self.done: list[Splice] = []
        self.splice = Splice(self.plain, self.tunnel, self.done.append, filter)

    def take(self) -> list[Call]:
        out = list(self.calls)
        self.calls.clear()
        return out


def data(payload: bytes) -> bytes:
    """One DATA frame carrying ``payload``."""
    return wire.frame_header(wire.FrameType.DATA, len(payload)) + payload


EOF = wire.EOF_FRAME


# -- half-close, both orders -------------------------------------------------------------


def test_plain_eof_first_then_tunnel_eof() -> None:
    pb = Playbook()
    s = pb.splice
    s.plain_data(b"request")
    s.plain_eof_received()
    assert pb.take() == [("write", "tunnel", data(b"request")), ("write", "tunnel", EOF)]
    assert (s.state, s.result, pb.done) == (State.SENT_EOF, None, [])
    s.tunnel_data(data(b"answer"))  # the answer still flows after the client's FIN
    assert pb.take() == [("write", "plain", b"answer")]
    s.tunnel_data(EOF)
    assert pb.take() == [("close", "plain"), ("close", "tunnel")]
    assert s.state is State.DONE and s.result == Ending(Result.OK)
    assert pb.done == [s] and (s.up, s.down) == (7, 6)


def test_tunnel_eof_first_then_plain_eof() -> None:
    pb = Playbook()
    s = pb.splice
    s.tunnel_data(data(b"banner") + EOF)  # one read: a payload and the EOF frame
    assert pb.take() == [("write", "plain", b"banner"), ("eof", "plain")]
    assert s.state is State.GOT_EOF and not pb.done
    s.plain_data(b"late reply")  # the plain side still sends after its FIN came
    assert pb.take() == [("write", "tunnel", data(b"late reply"))]
    s.plain_eof_received()
    assert pb.take() == [("write", "tunnel", EOF), ("close", "plain"), ("close", "tunnel")]
    assert str(s.result) == "ok" and pb.done == [s]


def test_an_eof_frame_split_across_reads_and_repeated_eofs() -> None:
    pb = Playbook()
    s = pb.splice
    s.tunnel_data(data(b"xy")[:5])  # the header and one payload byte
    s.tunnel_data(data(b"xy")[5:] + EOF[:2])
    assert pb.take() == [("write", "plain", b"x"), ("write", "plain", b"y")]
    s.tunnel_data(EOF[2:])
    assert pb.take() == [("eof", "plain")]
    s.plain_eof_received()
    s.plain_eof_received()  # a second FIN event changes nothing
    s.plain_lost(None)  # the close that follows our own close()
    assert pb.take() == [("write", "tunnel", EOF), ("close", "plain"), ("close", "tunnel")]
    assert pb.done == [s]


def test_large_reads_become_frames_of_at_most_max_frame() -> None:
    pb = Playbook()
    big = bytes(range(256)) * ((wire.MAX_FRAME + 300) // 256)
    pb.splice.plain_data(big)
    assert pb.take() == [
        ("write", "tunnel", data(big[: wire.MAX_FRAME])),
        ("write", "tunnel", data(big[wire.MAX_FRAME :])),
    ]
    assert pb.splice.up == len(big)


# -- backpressure ------------------------------------------------------------------------


def test_plain_side_full_stops_reading_the_tunnel_until_it_drains() -> None:
    pb = Playbook()
    s = pb.splice
    s.plain_pause_writing()
    assert pb.take() == [("pause", "tunnel")]
    s.tunnel_data(data(b"in flight"))  # what was already read is still written
    assert pb.take() == [("write", "plain", b"in flight")]
    s.plain_resume_writing()
    assert pb.take() == [("resume", "tunnel")]


def test_tunnel_full_stops_reading_the_plain_side_until_it_drains() -> None:
    pb = Playbook()
    s = pb.splice
    s.tunnel_pause_writing()
    assert pb.take() == [("pause", "plain")]
    s.tunnel_resume_writing()
    assert pb.take() == [("resume", "plain")]


def test_no_reading_resumes_once_the_stream_is_done() -> None:
    pb = Playbook()
    s = pb.splice
    s.plain_pause_writing()
    s.tunnel_pause_writing()
    s.tunnel_lost(ConnectionResetError("gone"))
    pb.take()
    s.plain_resume_writing()
    s.tunnel_resume_writing()
    assert pb.take() == []


# -- failures ----------------------------------------------------------------------------


def test_abort_while_the_stream_is_opening() -> None:
    """The edge writes the client's first bytes before the hub's status (0-RTT); no
    status in time: the splice is aborted with nothing received from the tunnel."""
    pb = Playbook()
    s = pb.splice
    s.plain_data(b"NEGOTIATE")
    s.abort("hub did not answer in time")
    assert pb.take() == [
        ("write", "tunnel", data(b"NEGOTIATE")),
        ("abort", "tunnel"),
        ("abort", "plain"),
    ]
    assert s.result == Ending(Result.ABORTED, "hub did not answer in time")
    assert str(s.result) == "hub did not answer in time"
    s.tunnel_lost(None)  # the consequences of our own abort change nothing
    s.plain_lost(None)
    s.tunnel_data(data(b"too late"))
    assert pb.take() == [] and pb.done == [s]


def test_tunnel_lost_mid_stream_resets_the_plain_side() -> None:
    pb = Playbook()
    s = pb.splice
    s.plain_data(b"up")
    s.tunnel_data(data(b"down"))
    pb.take()
    s.tunnel_lost(ConnectionResetError("peer reset"))
    assert pb.take() == [("abort", "plain")]
    assert str(s.result) == "tunnel lost: peer reset" and pb.done == [s]


def test_tunnel_lost_after_our_eof_still_fails() -> None:
    pb = Playbook()
    s = pb.splice
    s.plain_eof_received()
    pb.take()
    s.tunnel_lost(None)
    assert pb.take() == [("abort", "plain")]
    assert str(s.result) == "tunnel lost"


@pytest.mark.parametrize(
    ("exc", "text"),
    [(ConnectionResetError("rst"), "plain side reset"), (None, "plain side closed without EOF")],
)
def test_plain_lost_mid_stream_drops_the_tunnel(exc: Exception | None, text: str) -> None:
    pb = Playbook()
    s = pb.splice
    s.tunnel_data(data(b"down"))
    pb.take()
    s.plain_lost(exc)
    assert pb.take() == [("abort", "tunnel")]
    assert str(s.result) == text and pb.done == [s]


def test_bad_frame_from_the_peer_aborts_both_sides() -> None:
    pb = Playbook()
    s = pb.splice
    s.tunnel_data(bytes([0x7F, 0, 0, 1]) + b"x")
    assert pb.take() == [("abort", "tunnel"), ("abort", "plain")]
    assert s.result is not None and s.result.kind is Result.BAD_FRAME
    assert str(s.result) == "bad frame from peer: unexpected frame type 127"


def test_bytes_after_the_eof_frame_are_a_bad_frame() -> None:
    pb = Playbook()
    s = pb.splice
    s.tunnel_data(EOF + data(b"x"))
    assert pb.take() == [("abort", "tunnel"), ("abort", "plain")]  # the read is refused whole
    assert s.result is not None and s.result.kind is Result.BAD_FRAME


def test_refused_stream_touches_no_transport() -> None:
    pb = Playbook()
    s = pb.splice
    s.plain_data(b"hello")
    pb.take()
    s.refused("NOT_ALLOWED")
    assert pb.take() == [] and pb.done == []
    assert str(s.result) == "refused: NOT_ALLOWED" and s.state is State.DONE


# -- the transition table ----------------------------------------------------------------


def test_every_transition_not_in_the_table_raises() -> None:
    for state in State:
        for event in Event:
            pb = Playbook()
            pb.splice.state = state
            if (state, event) in TRANSITIONS:
                assert pb.splice._move(event) is TRANSITIONS[(state, event)]
            else:
                with pytest.raises(UsageError):
                    pb.splice._move(event)
    assert not any(s is State.DONE for s, _ in TRANSITIONS)  # DONE is final


# -- a filter in between -----------------------------------------------------------------


class Upper:
    """A filter that upper-cases what the plain side sends, refuses (answers itself and
    ends the stream) a tunnel payload ``no``, and reads the tunnel only while
    ``open``."""

    def __init__(self) -> None:
        self.open = True
        self.plain_eofs = 0

    @property
    def reading_tunnel(self) -> bool:
        return self.open

    def plain_data(self, data: bytes) -> Forward:
        return Forward(to_tunnel=(data.upper(),))

    def plain_eof(self) -> Forward:
        self.plain_eofs += 1
        return Forward(end=True)

    def tunnel_data(self, data: bytes) -> Forward:
        if data == b"no":
            return Forward(to_tunnel=(b"refused",), end=True)
        return Forward(to_plain=(data,))

    def tunnel_eof(self) -> Forward:
        return Forward()


def test_filter_refusal_ends_the_stream_and_waits_for_the_peer_eof() -> None:
    pb = Playbook(Upper())
    s = pb.splice
    s.tunnel_data(data(b"yes"))
    assert pb.take() == [("write", "plain", b"yes"), ("resume", "tunnel")]
    s.tunnel_data(data(b"no"))
    assert pb.take() == [
        ("write", "tunnel", data(b"refused")),
        ("write", "tunnel", EOF),
        ("close", "plain"),
        ("resume", "tunnel"),  # only the peer's EOF frame is awaited
    ]
    assert s.state is State.ENDED and not pb.done
    s.plain_lost(None)  # our own close
    s.plain_lost(ConnectionResetError())  # or its RST while it flushed: ours too
    s.tunnel_data(data(b"dropped") + EOF)
    assert pb.take() == [("close", "plain"), ("close", "tunnel")]
    assert str(s.result) == "ok" and pb.done == [s] and s.down == 3 + 2 + 7


def test_filter_gets_the_plain_sides_clean_close_as_its_eof() -> None:
    f = Upper()
    pb = Playbook(f)
    s = pb.splice
    s.tunnel_data(EOF)
    assert s.state is State.GOT_EOF
    s.plain_data(b"answer")
    s.plain_lost(None)
    assert pb.take() == [
        ("resume", "tunnel"),
        ("write", "tunnel", data(b"ANSWER")),
        ("resume", "tunnel"),
        ("write", "tunnel", EOF),
        ("close", "plain"),
        ("close", "tunnel"),
    ]
    assert f.plain_eofs == 1 and str(s.result) == "ok"


def test_filter_decides_when_the_tunnel_is_read() -> None:
    f = Upper()
    pb = Playbook(f)
    s = pb.splice
    f.open = False
    s.tunnel_data(data(b"first"))
    assert pb.take() == [("write", "plain", b"first"), ("pause", "tunnel")]
    s.plain_pause_writing()
    f.open = True
    s.plain_data(b"x")  # the filter would read again, but the plain side is full
    assert pb.take() == [("pause", "tunnel"), ("write", "tunnel", data(b"X")), ("pause", "tunnel")]
    s.plain_resume_writing()
    assert pb.take() == [("resume", "tunnel")]


# -- the hub's IPP gate as the filter ----------------------------------------------------

INFO = StreamInfo("sf", "198.18.12.10:40000", "198.18.12.1", 631)


def test_ipp_gate_refuses_a_printer_the_office_was_not_given() -> None:
    """An office limited to hq-laser asks for hq-color: the hub answers 403 itself and
    cupsd (the plain side) gets nothing."""
    refused: list[str] = []
    pb = Playbook(IppFilter(INFO, lambda: PrinterPolicy.of(["hq-laser"]), refused.append))
    pb.splice.tunnel_data(data(b"GET /printers/hq-color HTTP/1.1\r\nHost: 198.18.12.1\r\n\r\n"))
    assert pb.take() == [
        ("write", "tunnel", data(FORBIDDEN_HEAD)),
        ("write", "tunnel", data(b"printer hq-color is not available to office sf\n")),
        ("resume", "tunnel"),  # the next request may come
    ]
    assert refused == ["printer"]  # what the hub counts per office (ipp_refused)


FORBIDDEN_HEAD = b"HTTP/1.1 403 \r\ncontent-type: text/plain\r\ncontent-length: 47\r\n\r\n"
GET_LASER = b"GET /printers/hq-laser HTTP/1.1\r\nHost: GLOBAL-NFS\r\n\r\n"


def test_ipp_gate_passes_a_request_and_its_answer_and_pauses_in_between() -> None:
    policy = [PrinterPolicy.of(["hq-laser"])]
    pb = Playbook(IppFilter(INFO, lambda: policy[0]))
    s = pb.splice
    s.tunnel_data(data(GET_LASER))
    assert pb.take() == [
        # Host: the edge's address the client connected to (cupsd refuses GLOBAL-NFS)
        ("write", "plain", b"GET /printers/hq-laser HTTP/1.1\r\nhost: 198.18.12.1:631\r\n\r\n"),
        ("pause", "tunnel"),  # the client waits for its answer: pipelined bytes wait too
    ]
    s.plain_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert pb.take() == [
        ("write", "tunnel", data(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")),
        ("write", "tunnel", data(b"ok")),
        ("resume", "tunnel"),
    ]
    policy[0] = PrinterPolicy.of(["hq-color"])  # the registry changed: applies at once
    s.tunnel_data(data(GET_LASER))
    assert pb.take() == [
        ("write", "tunnel", data(FORBIDDEN_HEAD)),
        ("write", "tunnel", data(b"printer hq-laser is not available to office sf\n")),
        ("resume", "tunnel"),
    ]
    up = [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"ok", FORBIDDEN_HEAD, b"x" * 47]
    assert (s.up, s.down) == (sum(map(len, up)), 2 * len(GET_LASER))


def test_read_buffer_is_given_away_when_a_view_of_it_is_kept() -> None:
    reads = ReadBuffer(64)
    first = reads.get()
    assert reads.get() is first  # a read with no application data in it: nothing changes
    first[:3] = b"abc"
    assert bytes(reads.filled(3)) == b"abc"
    reads.release(kept=False)
    assert reads.get() is first and reads.replaced == 0  # reused: nobody kept a view
    reads.filled(1)
    reads.release(kept=True)  # e.g. a transport could not send its view at once
    second = reads.get()
    assert second is not first and reads.replaced == 1 and len(second) == 64
    # Asked for while a read is still handled (re-entered): that read's views live on.
    reads.filled(1)
    assert reads.get() is not second and reads.replaced == 2


def test_a_read_with_several_frames_is_one_write_to_the_plain_side() -> None:
    pb = Playbook()
    data = b"".join(wire.frame_header(wire.FrameType.DATA, len(p)) + p for p in (b"ab", b"cde"))
    pb.splice.tunnel_data(data + wire.EOF_FRAME)
    assert pb.take() == [("write", "plain", b"abcde"), ("eof", "plain")]
    assert pb.splice.down == 5


def test_payloads_are_views_of_the_read_unless_the_plain_side_has_bytes_waiting() -> None:
    pb = Playbook()
    read = memoryview(bytearray(data(b"abc") + data(b"de")))
    sent: list[object] = []
    pb.plain.write = sent.append  # type: ignore[method-assign,assignment]
    pb.plain.writelines = lambda parts: sent.extend(parts)  # type: ignore[method-assign,assignment]
    pb.splice.tunnel_data(read)
    assert [bytes(p) for p in sent] == [b"abc", b"de"]  # type: ignore[call-overload]
    assert all(isinstance(p, memoryview) and p.obj is read.obj for p in sent)
    sent.clear()
    pb.plain.buffered = 10  # a slow reader: what we write now waits, so it is a copy
    pb.splice.tunnel_data(memoryview(bytearray(data(b"fg") + data(b"h"))))
    assert sent == [b"fgh"] and type(sent[0]) is bytes
    assert pb.splice.down == 8
