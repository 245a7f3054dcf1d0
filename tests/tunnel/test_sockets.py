"""WAN socket options: short user timeout in the pool, long one while carrying a stream,
and the retransmission backoff capped (TCP_RTO_MAX_MS where the kernel has it)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from spokeshare.config import SocketConfig
from spokeshare.tunnel.sockets import (
    TCP_RTO_MAX_MS,
    TCP_THIN_LINEAR_TIMEOUTS,
    TCP_USER_TIMEOUT,
    cap_rto,
    carry_stream,
    tune_wan,
)
from tests.helpers import Stack


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        yield s


def user_timeout(s: socket.socket) -> int:
    return s.getsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT)


def test_stream_gets_the_long_timeout_and_gives_it_back(sock: socket.socket) -> None:
    cfg = SocketConfig(user_timeout=10.0, stream_user_timeout=120.0)
    tune_wan(sock, cfg)
    assert user_timeout(sock) == 10_000
    carry_stream(sock, cfg, True)
    assert user_timeout(sock) == 120_000
    carry_stream(sock, cfg, False)
    assert user_timeout(sock) == 10_000


def test_rto_capped(sock: socket.socket) -> None:
    mode = cap_rto(sock, SocketConfig(rto_max=2.0))
    if mode == "rto_max":
        assert sock.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS) == 2000
    else:  # a kernel before 6.15
        assert mode == "thin_linear"
        assert sock.getsockopt(socket.IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS) == 1


def test_rto_left_alone_when_off(sock: socket.socket) -> None:
    assert cap_rto(sock, SocketConfig(rto_max=0.0)) == ""


def test_closed_or_foreign_sockets_are_ignored() -> None:
    cfg = SocketConfig()
    carry_stream(None, cfg, True)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.close()
    carry_stream(s, cfg, True)  # no error: the stream's end is handled elsewhere
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
        carry_stream(u, cfg, True)
        assert tune_wan(u, cfg) == ""


def test_tunnels_carrying_a_stream_have_the_long_timeout(stack: Stack) -> None:
    """Real edge and hub on loopback: a tunnel handed to a client switches to the stream
    timeout at both ends; idle pool tunnels and the control channel keep the short one."""
    from spokeshare.tunnel.edge import TunnelState as EdgeState
    from spokeshare.tunnel.hub import TunnelState as HubState

    def timeouts() -> tuple[set[int], set[int], set[int], set[int]]:
        def of(t: Any) -> int:
            return user_timeout(t.transport.get_extra_info("socket"))

        edge, hub = stack.edge, stack.hub
        busy_edge = {of(t) for t in edge.clients}
        idle_edge = {of(t) for t in edge.idle} | ({of(edge.control)} if edge.control else set())
        tunnels = [t for o in hub.offices.values() for t in o.tunnels]
        busy_hub = {of(t) for t in tunnels if t.state is HubState.RELAYING}
        idle_hub = {of(t) for t in tunnels if t.state is not HubState.RELAYING}
        assert all(t.state is EdgeState.RELAYING for t in edge.clients)
        return busy_edge, idle_edge, busy_hub, idle_hub

    def backoff_caps() -> set[tuple[str, int]]:
        """How every tunnel socket at both ends bounds its retransmission backoff."""
        edge, hub = stack.edge, stack.hub
        tunnels: list[Any] = [*edge.clients, *edge.idle, edge.control]
        tunnels += [t for o in hub.offices.values() for t in o.tunnels]
        return {rto_cap(t.transport.get_extra_info("socket")) for t in tunnels if t is not None}

    with stack.connect() as c:
        c.sendall(b"hello")
        assert c.recv(5) == b"hello"  # the stream runs end to end
        busy_edge, idle_edge, busy_hub, idle_hub = stack.lt.call(timeouts)
        caps = stack.lt.call(backoff_caps)
    assert busy_edge == {120_000} and busy_hub == {120_000}
    assert idle_edge == {10_000} and idle_hub == {10_000}
    # The default rto_max (1 s) on every tunnel, busy or idle, at both ends: after a WAN
    # outage a tunnel retries within a second of the link's return, not after TCP's
    # doubled backoff ([sockets] rto_max; docs/benchmarks.md, the outage table).
    assert caps == {("rto_max", 1000)} or caps == {("thin_linear", 1)}, caps


def rto_cap(sock: socket.socket) -> tuple[str, int]:
    """("rto_max", TCP_RTO_MAX_MS) on Linux 6.15+, else ("thin_linear", the flag)."""
    try:
        return "rto_max", sock.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS)
    except OSError:
        return "thin_linear", sock.getsockopt(socket.IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS)
