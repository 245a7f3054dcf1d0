"""Relay correctness through a real edge and hub on loopback (ghostunnel's scenarios)."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time

from tests.helpers import Backend, LoopThread, Stack, echo, open_fds, recv_all, wait_for


def _ended_ok(stack: Stack) -> int:
    """Streams the hub ended with result ok, over its offices (OfficeStatistics)."""
    offices = stack.hub.offices.values()
    return stack.lt.call(lambda: sum(o.statistics().streams_ended.get("ok", 0) for o in offices))


def test_one_byte_at_a_time(stack: Stack) -> None:
    payload = os.urandom(4096)
    before = _ended_ok(stack)
    with stack.connect() as s:
        got = bytearray()
        for b in payload:
            s.sendall(bytes([b]))
        s.shutdown(socket.SHUT_WR)
        got += recv_all(s)
    assert bytes(got) == payload
    wait_for(lambda: _ended_ok(stack) == before + 1, what="the stream counted ok at the hub")


def test_prime_sized_chunks(stack: Stack) -> None:
    payload = os.urandom(3_000_017)
    primes = [1, 2, 3, 5, 7, 13, 31, 127, 1021, 8191, 65521, 131071]
    with stack.connect() as s:
        reader = threading.Thread(target=lambda: got.extend(recv_all(s)))
        got = bytearray()
        reader.start()
        pos, i = 0, 0
        while pos < len(payload):
            n = primes[i % len(primes)]
            s.sendall(payload[pos : pos + n])
            pos, i = pos + n, i + 1
        s.shutdown(socket.SHUT_WR)
        reader.join(60)
    assert bytes(got) == payload


def test_ping_pong_small(stack: Stack) -> None:
    with stack.connect() as s:
        for i in range(200):
            s.sendall(bytes([i % 256]))
            assert s.recv(1) == bytes([i % 256])
    # Every read of both ends went through its daemon's one read buffer: none was
    # given away (nothing kept a view) and none was allocated for a read without
    # application data (the pool's handshakes), which would cost 256 KiB each time.
    assert stack.lt.call(lambda: (stack.edge.reads.replaced, stack.hub.reads.replaced)) == (0, 0)


def test_full_duplex_sha256(deployment, loop_thread: LoopThread) -> None:  # type: ignore[no-untyped-def]
    """Backend streams 32 MiB down while the client streams 32 MiB up, at once."""
    size = 32 << 20
    down = os.urandom(size)
    up_digest: list[str] = []

    def handler(conn: socket.socket) -> None:
        h = hashlib.sha256()

        def send_down() -> None:
            conn.sendall(down)
            conn.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send_down)
        t.start()
        while d := conn.recv(1 << 20):
            h.update(d)
        up_digest.append(h.hexdigest())
        t.join()

    backend = Backend(handler)
    deployment.set_backend("smb", backend.port)
    st = Stack(deployment, loop_thread).start()
    try:
        up = os.urandom(size)
        with st.connect(timeout=60) as s:
            got = bytearray()
            r = threading.Thread(target=lambda: got.extend(recv_all(s)))
            r.start()
            s.sendall(up)
            s.shutdown(socket.SHUT_WR)
            r.join(120)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(down).hexdigest()
        wait_for(lambda: up_digest, what="backend digest")
        assert up_digest[0] == hashlib.sha256(up).hexdigest()
    finally:
        st.close()
        backend.close()


def test_half_close_late_answer(deployment, loop_thread: LoopThread) -> None:  # type: ignore[no-untyped-def]
    """The client stops sending; the backend answers 2 s later; the answer arrives whole."""

    def handler(conn: socket.socket) -> None:
        req = recv_all(conn)  # until the client's FIN arrives through the tunnel
        time.sleep(2)  # the scenario itself: a backend that answers late
        conn.sendall(b"answer:" + hashlib.sha256(req).digest())

    backend = Backend(handler)
    deployment.set_backend("smb", backend.port)
    st = Stack(deployment, loop_thread).start()
    try:
        req = os.urandom(100_000)
        with st.connect() as s:
            s.sendall(req)
            s.shutdown(socket.SHUT_WR)
            got = recv_all(s)
        assert got == b"answer:" + hashlib.sha256(req).digest()
    finally:
        st.close()
        backend.close()


def _rst(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_client_reset_reaches_backend(deployment, loop_thread: LoopThread) -> None:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def handler(conn: socket.socket) -> None:
        try:
            conn.recv(10)
            conn.recv(10)
            seen.append("eof")
        except ConnectionResetError:
            seen.append("reset")

    backend = Backend(handler)
    deployment.set_backend("smb", backend.port)
    st = Stack(deployment, loop_thread).start()
    try:
        s = st.connect()
        s.sendall(b"x")
        wait_for(lambda: backend.accepted, what="backend connection")
        _rst(s)
        wait_for(lambda: seen, what="backend to see the client's end")
        assert seen == ["reset"]
    finally:
        st.close()
        backend.close()


def test_backend_reset_reaches_client(deployment, loop_thread: LoopThread) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket) -> None:
        conn.recv(10)
        _rst(conn)

    backend = Backend(handler)
    deployment.set_backend("smb", backend.port)
    st = Stack(deployment, loop_thread).start()
    try:
        with st.connect() as s:
            s.sendall(b"x")
            try:
                data = s.recv(10)
                outcome = "eof" if data == b"" else "data"
            except ConnectionResetError:
                outcome = "reset"
        assert outcome == "reset"
    finally:
        st.close()
        backend.close()


def test_backend_down_then_flapping_then_recovers(deployment, loop_thread: LoopThread) -> None:  # type: ignore[no-untyped-def]
    # Reserve a port with nothing listening on it: connections are refused.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    deployment.set_backend("smb", port)
    st = Stack(deployment, loop_thread).start()
    try:
        with st.connect() as s:
            s.sendall(b"hello")
            assert recv_all(s) == b""  # closed: the hub answered BACKEND_DOWN
        assert st.lt.call(lambda: st.edge.streams_failed) >= 1
        # counted by status at both ends
        refused = st.lt.call(st.edge.statistics).refused
        assert refused == {"BACKEND_DOWN": 1}
        assert st.lt.call(lambda: st.hub.statistics().offices["nyc"].refused) == refused
        # Now a backend that resets every connection on accept.
        holder.close()
        flappy = Backend(lambda c: _rst(c), port=port)
        with st.connect() as s:
            s.sendall(b"hello")
            try:
                out = recv_all(s)
            except ConnectionResetError:
                out = b""
            assert out == b""
        flappy.close()
        good = Backend(echo, port=port)
        try:
            with st.connect() as s:
                s.sendall(b"back again")
                s.shutdown(socket.SHUT_WR)
                assert recv_all(s) == b"back again"
        finally:
            good.close()
    finally:
        st.close()


def test_slow_reader_memory_bounded(deployment, loop_thread: LoopThread) -> None:  # type: ignore[no-untyped-def]
    """A client that does not read while the backend pushes 64 MiB: buffers stay bounded."""
    size = 64 << 20
    blob = os.urandom(size)
    sent = threading.Event()

    def handler(conn: socket.socket) -> None:
        assert conn.recv(2) == b"go"
        conn.sendall(blob)
        sent.set()

    backend = Backend(handler)
    deployment.set_backend("smb", backend.port)
    st = Stack(deployment, loop_thread).start()
    try:
        s = st.connect(timeout=60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"go")
        wait_for(lambda: backend.accepted, what="backend connection")
        # Let the pipeline fill up: the backend's sendall blocks once every buffer on
        # the way is full. Then look at the user-space buffers on both sides.
        deadline = time.monotonic() + 3
        peak = 0
        while time.monotonic() < deadline:
            peak = max(peak, st.lt.call(lambda: _buffered(st)))
            time.sleep(0.05)
        assert not sent.is_set(), "the whole blob fit into buffers: backpressure not exercised"
        assert peak <= 4 * (1 << 20), f"{peak} bytes buffered in user space"
        got = recv_all(s, size)
        s.close()
        assert got == blob
        # The edge's client side kept views of the shared read buffer (uvloop does not
        # copy what it could not send at once): each time the buffer was given away.
        assert st.lt.call(lambda: st.edge.reads.replaced) > 0
    finally:
        st.close()
        backend.close()


def _buffered(st: Stack) -> int:
    total = 0
    for office in st.hub.offices.values():
        for t in office.tunnels:
            if t.splice is not None:
                total += (
                    t.splice.plain.get_write_buffer_size() + t.splice.tunnel.get_write_buffer_size()
                )
    for c in st.edge.clients:
        if c.splice is not None:
            total += (
                c.splice.plain.get_write_buffer_size() + c.splice.tunnel.get_write_buffer_size()
            )
    return total


def test_connection_churn_leaves_nothing_behind(stack: Stack) -> None:
    def settled() -> tuple[int, int, int]:
        return stack.lt.call(
            lambda: (
                len(
                    [
                        t
                        for o in stack.hub.offices.values()
                        for t in o.tunnels
                        if t.state.value in ("relaying", "connecting")
                    ]
                ),
                len(stack.edge.clients),
                len(stack.edge.waiters),
            )
        )

    def tasks() -> int:
        import asyncio

        return stack.lt.call(lambda: len(asyncio.all_tasks()))

    wait_for(lambda: settled() == (0, 0, 0), what="idle stack")
    fds0, tasks0 = open_fds(), tasks()
    for i in range(2000):
        with stack.connect() as s:
            s.sendall(b"%d" % i)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"%d" % i
    wait_for(lambda: settled() == (0, 0, 0), what="all streams finished")
    # The pool refills to its target; fds and tasks return to where they were.
    min_idle = stack.edge.cfg.pool.min_idle
    wait_for(
        lambda: stack.lt.call(
            lambda: len(stack.edge.idle) >= min_idle and stack.edge.connecting == 0
        ),
        what="pool refilled",
    )
    wait_for(
        lambda: open_fds() <= fds0 + 2 and tasks() <= tasks0,
        timeout=15,
        what=f"fds back to {fds0} (now {open_fds()}) and tasks to {tasks0} (now {tasks()})",
    )
    assert stack.lt.call(lambda: stack.edge.streams_failed) == 0


def test_burst_of_clients_beyond_the_warm_pool(stack: Stack) -> None:
    """60 clients at once against a pool of 2: the pool dials for the waiters, none fail."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> bytes:
        with stack.connect() as s:
            s.sendall(b"client %d" % i)
            s.shutdown(socket.SHUT_WR)
            return recv_all(s)

    with ThreadPoolExecutor(60) as pool:
        got = list(pool.map(one, range(60)))
    assert got == [b"client %d" % i for i in range(60)]
    assert stack.lt.call(lambda: stack.edge.streams_failed) == 0
