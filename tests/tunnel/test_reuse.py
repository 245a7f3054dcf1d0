"""Sequential reuse of a tunnel (docs/protocol.md, "Sequential reuse"): a real edge and
hub on loopback, and the wire seen by a raw TLS client with an office's identity."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from spokeshare import bundle, stats
from spokeshare.tunnel import tls, wire
from spokeshare.tunnel.edge import EdgeTunnel
from tests.helpers import Backend, Deployment, LoopThread, Stack, recv_all, wait_for


def down_for(up_digest: bytes, size: int) -> bytes:
    """The backend's answer to an upload whose SHA-256 is ``up_digest``: ``size`` bytes
    both ends can compute."""
    return random.Random(up_digest).randbytes(size)


def digest_backend(digests: list[bytes]) -> Backend:
    """Reads to the client's EOF, answers bytes derived from the upload's SHA-256 (the
    first 4 bytes of the upload say how many), then closes: a clean end each way."""

    def handler(conn: socket.socket) -> None:
        h = hashlib.sha256()
        head = b""
        while d := conn.recv(1 << 16):
            if len(head) < 4:
                head += d[: 4 - len(head)]
            h.update(d)
        digest = h.digest()
        digests.append(digest)
        conn.sendall(down_for(digest, struct.unpack("!I", head)[0]))

    return Backend(handler)


@contextlib.contextmanager
def serving(
    deployment: Deployment, loop_thread: LoopThread, backend: Backend
) -> Iterator[tuple[Stack, Backend]]:
    """A hub and edge with ``backend`` as their smb service; both closed after, also
    when the body raised."""
    deployment.set_backend("smb", backend.port)
    st = Stack(deployment, loop_thread).start()
    try:
        yield st, backend
    finally:
        st.close()
        backend.close()


@pytest.fixture
def digests() -> list[bytes]:
    return []


@pytest.fixture
def reuse_stack(
    deployment: Deployment, loop_thread: LoopThread, digests: list[bytes]
) -> Iterator[Stack]:
    with serving(deployment, loop_thread, digest_backend(digests)) as (st, _):
        yield st


def one_stream(st: Stack, up_size: int, down_size: int, seed: int) -> tuple[bytes, bytes]:
    """Upload ``up_size`` bytes and read the answer to EOF, both at once; returns the
    upload and what came back."""
    up = struct.pack("!I", down_size) + random.Random(seed).randbytes(max(0, up_size - 4))
    with st.connect(timeout=30) as s:
        got = bytearray()
        reader = threading.Thread(target=lambda: got.extend(recv_all(s)))
        reader.start()
        s.sendall(up)
        s.shutdown(socket.SHUT_WR)
        reader.join(60)
    return up, bytes(got)


def in_stream(st: Stack) -> EdgeTunnel:
    """The one tunnel carrying a client right now."""
    wait_for(lambda: st.lt.call(lambda: len(st.edge.clients)) == 1, what="a stream")
    (t,) = st.lt.call(lambda: list(st.edge.clients))
    return t


def back_in_pool(st: Stack, t: EdgeTunnel) -> bool:
    return bool(st.lt.call(lambda: t.state.value == "idle" and t in st.edge.idle))


def closed(st: Stack, t: EdgeTunnel) -> bool:
    return bool(st.lt.call(lambda: t.state.value == "closed" and t not in st.edge.idle))


def test_many_sequential_streams_over_few_tunnels_byte_exact(
    reuse_stack: Stack, digests: list[bytes]
) -> None:
    st = reuse_stack
    hs0 = st.lt.call(lambda: st.hub.handshakes)
    sizes = [(4, 0), (5, 1), (1000, 70_000), (300_000, 17), (65_536, 65_536), (4097, 250_001)]
    n = 48
    for i in range(n):
        up_size, down_size = sizes[i % len(sizes)]
        up, got = one_stream(st, up_size, down_size, i)
        digest = hashlib.sha256(up).digest()
        wait_for(lambda: len(digests) > i, what="the backend's digest")  # noqa: B023
        assert digests[i] == digest  # the upload arrived byte for byte
        assert hashlib.sha256(got).digest() == hashlib.sha256(down_for(digest, down_size)).digest()
    # Read as operators do: the statistics schema (edge status, hub status.json, /metrics).
    edge_stats, hub_stats = st.lt.call(lambda: (st.edge.statistics(), st.hub.statistics()))
    edge_reused, hub_reused = edge_stats.streams_reused, hub_stats.streams_reused
    hs, failed = hub_stats.handshakes, edge_stats.streams_failed
    assert f"spokeshare_hub_streams_reused_total {hub_reused}" in stats.render_metrics(hub_stats)
    assert failed == 0
    # The pool (min_idle 2) grows by a tunnel or two at the start; every other stream
    # rides on a tunnel that carried one before.
    assert edge_reused == hub_reused >= n - 4
    assert hs - hs0 <= 4
    busiest = st.lt.call(lambda: max(t.streams for t in st.edge.idle))
    assert busiest >= n // 4


@pytest.mark.parametrize("when", ["mid-stream", "after half-close"])
def test_a_stream_that_did_not_end_cleanly_never_reuses_its_tunnel(
    deployment: Deployment, loop_thread: LoopThread, when: str
) -> None:
    """The client resets its connection mid-stream, or after its FIN while the backend
    has not ended its side (a half-close that never completed): the tunnel is closed,
    never back in the pool."""
    release, done = threading.Event(), threading.Event()

    def handler(conn: socket.socket) -> None:
        while d := conn.recv(1 << 16):
            conn.sendall(d)
        # Our side stays open (the stream is half-closed); a late answer once released.
        release.wait(30)
        conn.sendall(b"late answer")
        done.wait(30)

    with serving(deployment, loop_thread, Backend(handler)) as (st, backend):
        try:
            s = st.connect()
            s.sendall(b"x" * 1000)
            assert len(s.recv(1000)) > 0
            t = in_stream(st)
            if when == "after half-close":
                s.shutdown(socket.SHUT_WR)
                wait_for(lambda: backend.accepted and st.lt.call(
                    lambda: t.splice is not None and t.splice.state.value == "sent-eof"
                ), what="the client's FIN through the tunnel")  # fmt: skip
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            # After its FIN the edge reads no more from the client: the reset shows when
            # the late answer is written to it.
            release.set()
            wait_for(lambda: closed(st, t), what="the tunnel to close")
            assert st.lt.call(lambda: t.streams) == 1
            # And the edge goes on serving, on other tunnels.
            done.set()
            with st.connect() as c:
                c.sendall(b"next")
                c.shutdown(socket.SHUT_WR)
                assert c.recv(4) == b"next"
        finally:
            release.set()
            done.set()


def test_backend_reset_never_reuses_its_tunnel(
    deployment: Deployment, loop_thread: LoopThread
) -> None:
    def handler(conn: socket.socket) -> None:
        conn.recv(100)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with serving(deployment, loop_thread, Backend(handler)) as (st, _):
        s = st.connect()
        s.sendall(b"hello")
        t = in_stream(st)
        with pytest.raises(ConnectionResetError):
            recv_all(s)
        s.close()
        wait_for(lambda: closed(st, t), what="the tunnel to close")


def test_half_close_client_first_then_reuse(
    deployment: Deployment, loop_thread: LoopThread
) -> None:
    """The client's FIN first; the backend answers after it, then closes."""

    def handler(conn: socket.socket) -> None:
        req = recv_all(conn)
        conn.sendall(b"answer:" + hashlib.sha256(req).digest())

    with serving(deployment, loop_thread, Backend(handler)) as (st, _):
        req = os.urandom(50_000)
        s = st.connect()
        s.sendall(req)
        t = in_stream(st)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"answer:" + hashlib.sha256(req).digest()
        s.close()
        wait_for(lambda: back_in_pool(st, t), what="the tunnel back in the pool")
        assert st.lt.call(lambda: t.streams) == 1


def test_half_close_backend_first_then_reuse(
    deployment: Deployment, loop_thread: LoopThread
) -> None:
    """The backend's FIN first (a greeting, then done sending); the client sends after
    it and closes last; the backend still receives every byte."""
    got: list[bytes] = []

    def handler(conn: socket.socket) -> None:
        conn.sendall(b"greeting")
        conn.shutdown(socket.SHUT_WR)
        got.append(recv_all(conn))

    with serving(deployment, loop_thread, Backend(handler)) as (st, _):
        body = os.urandom(200_000)
        s = st.connect()
        t = in_stream(st)
        assert recv_all(s) == b"greeting"  # to the backend's EOF
        s.sendall(body)
        s.close()
        wait_for(lambda: got, what="the backend to read to EOF")
        assert hashlib.sha256(got[0]).digest() == hashlib.sha256(body).digest()
        wait_for(lambda: back_in_pool(st, t), what="the tunnel back in the pool")


def test_hub_restart_while_reused_tunnels_sit_in_the_pool(
    reuse_stack: Stack, deployment: Deployment, loop_thread: LoopThread, digests: list[bytes]
) -> None:
    st = reuse_stack
    for i in range(6):
        one_stream(st, 100, 100, i)
    wait_for(
        lambda: st.lt.call(lambda: any(t.streams for t in st.edge.idle)),
        what="a reused tunnel idle in the pool",
    )
    reused = st.lt.call(lambda: [t for t in st.edge.idle if t.streams])
    st.stop_hub()
    wait_for(lambda: all(closed(st, t) for t in reused), what="the old hub's tunnels to close")
    from spokeshare.tunnel.hub import Hub

    st.hub = Hub(deployment.hub_config(), deployment.dir)
    st.start_hub()
    wait_for(
        lambda: st.lt.call(
            lambda: (
                st.edge.hub_state.value == "up" and len(st.edge.idle) >= st.edge.cfg.pool.min_idle
            )
        ),
        timeout=40,
        what="the edge back with a warm pool",
    )
    failed = st.lt.call(lambda: st.edge.streams_failed)
    for i in range(12):
        up, back = one_stream(st, 2000, 3000, 100 + i)
        assert back == down_for(hashlib.sha256(up).digest(), 3000)
    assert st.lt.call(lambda: (st.edge.streams_failed, st.hub.streams_reused >= 8)) == (
        failed,
        True,
    )


def _no_reuse_stack(dep: Deployment, lt: LoopThread, side: str) -> Stack:
    if side == "edge":
        return Stack(dep, lt, pool={"reuse": False})
    st = Stack(dep, lt)
    # A hub from before reuse: it offers and agrees on spokeshare/1 only.
    st.hub.ssl.set_alpn_protocols([wire.ALPN])
    return st


@pytest.mark.parametrize("side", ["hub", "edge"])
def test_a_peer_without_reuse_gets_one_stream_per_tunnel(
    deployment: Deployment, loop_thread: LoopThread, digests: list[bytes], side: str
) -> None:
    backend = digest_backend(digests)
    deployment.set_backend("smb", backend.port)
    st = _no_reuse_stack(deployment, loop_thread, side).start()
    try:
        hs0 = st.lt.call(lambda: st.hub.handshakes)
        for i in range(10):
            up, back = one_stream(st, 500, 700, i)
            assert back == down_for(hashlib.sha256(up).digest(), 700)
        idle: list[Any] = st.lt.call(lambda: st.edge.idle)
        assert not any(t.reuse for t in idle)
        assert st.lt.call(
            lambda: (st.edge.streams_reused, st.hub.streams_reused, st.edge.streams_failed)
        ) == (0, 0, 0)
        # Each stream took a tunnel that was then closed; the pool dialled replacements.
        wait_for(lambda: st.lt.call(lambda: st.hub.handshakes) - hs0 >= 10, what="handshakes")
    finally:
        st.close()
        backend.close()


# -- the wire, from a raw TLS client with an office's identity ------------------------


def raw_tunnel(dep: Deployment, alpns: list[str]) -> ssl.SSLSocket:
    b = bundle.read(dep.bundles["nyc"])
    ctx = tls.client_context(b.ca_pem, b.cert_pem, b.key_pem)
    ctx.set_alpn_protocols(alpns)
    raw = socket.create_connection(("127.0.0.1", dep.hub_port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=b.hub_name)


def read_exactly(s: ssl.SSLSocket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"closed after {buf!r}")
        buf += chunk
    return buf


def echo_once(s: ssl.SSLSocket, payload: bytes) -> bytes:
    """One stream on ``s``: header, DATA, EOF; then what the hub sends back up to and
    including its EOF frame (status, DATA echoed by the backend, EOF)."""
    s.sendall(
        wire.encode_open(wire.OpenStream("smb"))
        + wire.frame_header(wire.FrameType.DATA, len(payload))
        + payload
        + wire.EOF_FRAME
    )
    ok = wire.encode_status(wire.StatusReply(wire.Status.OK))
    assert read_exactly(s, len(ok)) == ok
    want = wire.frame_header(wire.FrameType.DATA, len(payload)) + payload
    got = b""
    while not got.endswith(wire.EOF_FRAME) or len(got) < len(want) + 4:
        got += read_exactly(s, 1)
    frames = wire.FrameReader()
    events = frames.feed(got)
    assert b"".join(bytes(e.data) for e in events if isinstance(e, wire.DataReceived)) == payload
    return got


def test_the_hub_sends_end_and_takes_the_next_header(stack: Stack) -> None:
    with raw_tunnel(stack.dep, list(wire.ALPNS)) as s:
        assert s.selected_alpn_protocol() == wire.ALPN_REUSE
        for i in range(5):
            echo_once(s, b"stream %d" % i)
            assert read_exactly(s, 4) == wire.END_FRAME  # then the hub waits
    wait_for(lambda: stack.lt.call(lambda: stack.hub.streams_reused) == 4, what="reused count")


def test_a_plain_version_tunnel_gets_no_end(stack: Stack) -> None:
    with raw_tunnel(stack.dep, [wire.ALPN]) as s:
        assert s.selected_alpn_protocol() == wire.ALPN
        echo_once(s, b"only one")
        assert s.recv(10) == b""  # close_notify: one stream per tunnel


def test_bytes_after_our_eof_before_end_close_the_tunnel(stack: Stack) -> None:
    """An edge that sends its next header without waiting for END is not served on
    that tunnel: the hub ends the stream and closes instead of reusing it."""
    with raw_tunnel(stack.dep, list(wire.ALPNS)) as s:
        s.sendall(
            wire.encode_open(wire.OpenStream("smb"))
            + wire.frame_header(wire.FrameType.DATA, 2)
            + b"hi"
            + wire.EOF_FRAME
            + wire.encode_open(wire.OpenStream("smb"))
        )
        rest = b""
        try:
            while chunk := s.recv(4096):
                rest += chunk
        except (ssl.SSLError, ConnectionResetError):
            pass
        ok = wire.encode_status(wire.StatusReply(wire.Status.OK))
        assert wire.END_FRAME not in rest[len(ok) :]
    assert stack.lt.call(lambda: stack.hub.streams_reused) == 0


def test_a_tunnel_dialled_before_a_renewal_is_not_reused(stack: Stack) -> None:
    """After the edge changes its certificate (here: its TLS context, as renewal does),
    a tunnel of the old one carries its stream to the end and is then closed; tunnels
    dialled from then on are reused."""
    old = stack.lt.call(lambda: stack.edge.idle)
    b = bundle.read(stack.dep.bundles["nyc"])
    new = tls.client_context(b.ca_pem, b.cert_pem, b.key_pem)
    stack.lt.call(lambda: setattr(stack.edge, "ssl", new))
    for i in range(len(old)):
        with stack.connect() as c:
            c.sendall(b"%d" % i)
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c) == b"%d" % i
    wait_for(lambda: all(closed(stack, t) for t in old), what="the old tunnels closed")
    assert stack.lt.call(lambda: max(t.streams for t in old)) == 1
    for i in range(6):
        with stack.connect() as c:
            c.sendall(b"again %d" % i)
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c) == b"again %d" % i
    assert stack.lt.call(lambda: stack.edge.streams_reused) >= 3
