"""Several backends for one service through a real edge and hub on loopback: a backend
that refuses or does not answer is skipped, the same stream goes on to the next with
its bytes intact, and a backend that comes back is used again."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spokeshare import logfmt, stats
from tests.helpers import Backend, LoopThread, Stack, free_port, make_deployment, recv_all, wait_for

#: Short enough that a test does not wait long for a backend that never answers.
LIMITS = {"backend_connect_timeout": 1.0, "backend_probe_initial": 0.1, "backend_probe_max": 0.4}
#: The client's wait for the hub's answer: roomy, so that only the backend choice
#: decides whether a stream goes through, not how busy this machine is.
POOL = {"open_timeout": 10.0}


def tagged(tag: bytes) -> Callable[[socket.socket], None]:
    """A backend that says who it is, then echoes."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(tag)
        while data := conn.recv(1 << 16):
            conn.sendall(data)

    return handler


def closed_port(host: str) -> int:
    """A port on ``host`` nobody listens on: a connect there is refused (RST)."""
    return free_port(host)


@contextlib.contextmanager
def unanswering(host: str) -> Iterator[int]:
    """A listening socket on ``host`` whose accept queue is full: the kernel drops
    further SYNs (tcp_conn_request: ``sk_acceptq_is_full``), so a connect to it gets
    no answer at all, as from a host whose address moved away."""
    lsock = socket.socket()
    lsock.bind((host, 0))
    lsock.listen(0)
    port = int(lsock.getsockname()[1])
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                f.connect((host, port))
            fillers.append(f)
        # The precondition, checked: a new connect is not answered.
        with socket.socket() as probe:
            probe.settimeout(0.5)
            with pytest.raises(TimeoutError):
                probe.connect((host, port))
        yield port
    finally:
        for f in fillers:
            f.close()
        lsock.close()


def backend_stats(st: Stack) -> dict[str, stats.BackendStatistics]:
    return st.lt.call(st.hub.backend_statistics)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, str]]:
    out = []
    for r in caplog.records:
        if r.name == "spokeshare.hub" and r.getMessage().startswith(name + " "):
            fields = logfmt.parse(r.getMessage())[1]
            if fields.get("service") == "smb":  # (the deployment's ipp is not used here)
                out.append(fields)
    return out


def exchange(st: Stack, payload: bytes, tag_len: int = 1) -> tuple[bytes, bytes]:
    """One client connection: (the backend's tag, what came back after it)."""
    with st.connect() as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = recv_all(s)
    return got[:tag_len], got[tag_len:]


@pytest.fixture
def stack_of(tmp_path: Path, loop_thread: LoopThread) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(addresses: list[str], balance: str = "order", **limits: float) -> Stack:
        dep = make_deployment(tmp_path / f"d{len(made)}", {"smb": free_port()})
        dep.set_backends("smb", addresses, balance)
        st = Stack(dep, loop_thread, hub_limits={**LIMITS, **limits}, pool=POOL)
        made.append(st)
        return st.start()

    yield make
    for st in made:
        st.close()


def test_a_refusing_backend_is_skipped_and_the_stream_goes_through_the_next(
    stack_of: Callable[..., Stack], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "spokeshare.hub")
    good = Backend(tagged(b"B"), host="127.0.0.3")
    try:
        refusing = f"127.0.0.2:{closed_port('127.0.0.2')}"
        st = stack_of([refusing, f"127.0.0.3:{good.port}"])
        payload = os.urandom(1 << 20)
        tag, back = exchange(st, payload)
        assert tag == b"B"
        assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
        down = backend_stats(st)[f"smb {refusing}"]
        assert not down.up and down.failures >= 1 and down.last_error
        (line,) = [e for e in events(caplog, "backend down") if e["backend"] == refusing][:1]
        assert line["service"] == "smb" and line["reason"] == down.last_error
        # The next connection is not made to try it first: it goes straight to B.
        tag, back = exchange(st, b"second")
        assert (tag, back) == (b"B", b"second")
        ok = backend_stats(st)[f"smb 127.0.0.3:{good.port}"]
        assert ok.up and ok.streams == 2
        assert backend_stats(st)[f"smb {refusing}"].streams == 0
    finally:
        good.close()


def test_a_backend_that_does_not_answer_is_skipped_and_marked_down(
    stack_of: Callable[..., Stack], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "spokeshare.hub")
    good = Backend(tagged(b"B"), host="127.0.0.5")
    try:
        with unanswering("127.0.0.4") as port:
            silent = f"127.0.0.4:{port}"
            st = stack_of([silent, f"127.0.0.5:{good.port}"])
            payload = os.urandom(256 << 10)
            tag, back = exchange(st, payload)
            assert tag == b"B" and back == payload  # not made to wait for the silent one
            wait_for(
                lambda: not backend_stats(st)[f"smb {silent}"].up,
                what="the silent backend marked down at its connect timeout",
            )
            assert "no answer within" in backend_stats(st)[f"smb {silent}"].last_error
            assert [e["backend"] for e in events(caplog, "backend down")][:1] == [silent]
            tag, back = exchange(st, b"again")
            assert (tag, back) == (b"B", b"again")
            assert backend_stats(st)[f"smb {silent}"].streams == 0
    finally:
        good.close()


def test_a_backend_that_comes_back_is_used_again(
    stack_of: Callable[..., Stack], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "spokeshare.hub")
    port_a = closed_port("127.0.0.6")
    b = Backend(tagged(b"B"), host="127.0.0.7")
    a: Backend | None = None
    try:
        first = f"127.0.0.6:{port_a}"
        st = stack_of([first, f"127.0.0.7:{b.port}"])
        assert exchange(st, b"x") == (b"B", b"x")
        assert not backend_stats(st)[f"smb {first}"].up
        a = Backend(tagged(b"A"), port=port_a, host="127.0.0.6")  # it comes back
        wait_for(lambda: backend_stats(st)[f"smb {first}"].up, what="probe finds A up")
        (up,) = [e for e in events(caplog, "backend up") if e["backend"] == first]
        assert up["via"] == "probe" and float(up["down_s"]) >= 0
        # Listed first and up again: new streams go to it (order).
        assert exchange(st, b"y") == (b"A", b"y")
        assert exchange(st, b"z") == (b"A", b"z")
    finally:
        b.close()
        if a is not None:
            a.close()


def test_every_backend_down_refuses_backend_down_and_then_recovers(
    stack_of: Callable[..., Stack],
) -> None:
    """None answers: the client's connection is closed (BACKEND_DOWN); once one is
    back, the next connection goes through."""
    p1, p2 = closed_port("127.0.0.8"), closed_port("127.0.0.9")
    st = stack_of([f"127.0.0.8:{p1}", f"127.0.0.9:{p2}"])
    with st.connect() as s:
        s.sendall(b"hello")
        assert recv_all(s) == b""
    snap = backend_stats(st)
    assert not snap[f"smb 127.0.0.8:{p1}"].up and not snap[f"smb 127.0.0.9:{p2}"].up
    back = Backend(tagged(b"2"), port=p2, host="127.0.0.9")
    try:
        # Tried as the last resort even before its probe says so: it serves.
        wait_for(lambda: exchange(st, b"q") == (b"2", b"q"), what="a stream through 2")
    finally:
        back.close()


def test_round_robin_spreads_streams_and_skips_the_down_one(
    stack_of: Callable[..., Stack],
) -> None:
    b1, b2 = Backend(tagged(b"1"), host="127.0.0.10"), Backend(tagged(b"2"), host="127.0.0.11")
    try:
        dead = f"127.0.0.12:{closed_port('127.0.0.12')}"
        st = stack_of(
            [f"127.0.0.10:{b1.port}", dead, f"127.0.0.11:{b2.port}"], balance="round-robin"
        )
        tags = [exchange(st, b"p")[0] for _ in range(8)]
        assert set(tags) == {b"1", b"2"}
        assert backend_stats(st)[f"smb {dead}"].streams == 0
    finally:
        b1.close()
        b2.close()


def test_an_up_backend_that_goes_away_is_seen_by_the_check_and_reported(
    stack_of: Callable[..., Stack], caplog: pytest.LogCaptureFixture
) -> None:
    """No client needs to find it: the periodic check of up backends sees a backend
    whose address stopped answering, and /metrics and the status report it."""
    caplog.set_level(logging.INFO, "spokeshare.hub")
    good = Backend(tagged(b"G"), host="127.0.0.13")
    leaving = Backend(tagged(b"L"), host="127.0.0.14")
    try:
        gone = f"127.0.0.14:{leaving.port}"
        st = stack_of([f"127.0.0.13:{good.port}", gone], backend_check_interval=0.2)
        assert exchange(st, b"m") == (b"G", b"m")
        wait_for(lambda: leaving.accepted, what="a check of the second backend")
        assert backend_stats(st)[f"smb {gone}"].up
        leaving.close()  # its address no longer answers
        wait_for(lambda: not backend_stats(st)[f"smb {gone}"].up, what="the check sees it")
        assert [e["backend"] for e in events(caplog, "backend down")] == [gone]
        snap = st.lt.call(st.hub.statistics)
        text = stats.render_metrics(snap)
        first = f'service="smb",backend="127.0.0.13:{good.port}"'
        assert f"spokeshare_backend_up{{{first}}} 1\n" in text
        assert f"spokeshare_backend_streams_total{{{first}}} 1\n" in text
        assert f'spokeshare_backend_up{{service="smb",backend="{gone}"}} 0\n' in text
        assert stats.to_json(snap)["backends"][f"smb {gone}"]["up"] is False
    finally:
        good.close()
        leaving.close()
