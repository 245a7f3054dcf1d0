"""The NetBIOS session answerer (lan/nbss_answer.py) in front of a real edge and hub on
loopback: the session request is answered by the edge, what follows is relayed to the
called name's hub service (an echo backend here), and what LAN clients get wrong is
closed and counted. Requests are raw bytes as a PC sends them (RFC 1002 §4.3.2)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import pytest

from spokeshare.config import NetbiosConfig, VirtualName
from spokeshare.tunnel.edge import Edge
from tests.helpers import Deployment, LoopThread, Stack, free_port, recv_all, wait_for


def _nb_name(name: str, suffix: int) -> bytes:
    raw = name.upper().ljust(15).encode() + bytes([suffix])
    return b"\x20" + bytes(b for c in raw for b in (0x41 + (c >> 4), 0x41 + (c & 0xF))) + b"\0"


def _request(called: str) -> bytes:
    return b"\x81\x00\x00\x44" + _nb_name(called, 0x20) + _nb_name("NYC-PC", 0x00)


KEEP_ALIVE = b"\x85\x00\x00\x00"
POSITIVE = bytes.fromhex("82000000")
NOT_LISTENING_ON_CALLED_NAME = bytes.fromhex("8300000182")
#: A SESSION MESSAGE (type 0) of 5 bytes, standing in for an SMB request.
MESSAGE = b"\x00\x00\x00\x05hello"


@pytest.fixture
def nbss(deployment: Deployment, loop_thread: LoopThread) -> Iterator[tuple[Stack, int]]:
    s = Stack(deployment, loop_thread)
    port = free_port()
    cfg = dataclasses.replace(
        s.edge.cfg,
        names=(VirtualName("GLOBAL-NFS", "smb", port=0),),
        netbios=NetbiosConfig(session_port=port),
    )
    s.edge = Edge(cfg, s.edge.bundle)
    s.start()
    yield s, port
    s.close()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _counts(s: Stack) -> dict[str, int]:
    return s.lt.call(lambda: dict(s.edge.session_log.counts))


def test_request_and_smb_in_one_write_are_answered_then_relayed(
    nbss: tuple[Stack, int],
) -> None:
    s, port = nbss
    with _connect(port) as c:
        c.sendall(KEEP_ALIVE + _request("GLOBAL-NFS") + MESSAGE)
        assert c.recv(4) == POSITIVE
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == MESSAGE  # the echo backend, through the tunnel
    assert _counts(s) == {}


def test_request_then_smb_in_later_writes(nbss: tuple[Stack, int]) -> None:
    s, port = nbss
    with _connect(port) as c:
        request = _request("global-nfs")
        c.sendall(request[:10])
        c.sendall(request[10:])
        assert c.recv(4) == POSITIVE
        c.sendall(MESSAGE)
        got = b""
        while len(got) < len(MESSAGE):
            got += c.recv(64)
        assert got == MESSAGE


def test_other_names_refused_and_counted(nbss: tuple[Stack, int]) -> None:
    s, port = nbss
    with _connect(port) as c:
        c.sendall(_request("ELSEWHERE"))
        assert recv_all(c) == NOT_LISTENING_ON_CALLED_NAME  # and then closed
    assert _counts(s) == {"netbios_sessions_refused": 1}


@pytest.mark.parametrize(
    "sent",
    [
        MESSAGE,  # SMB before any session request
        b"\x81\x00\x00\x01\x00",  # a request too short to hold two names
        b"\x81\x00",  # half a header, then EOF
    ],
)
def test_bad_first_bytes_close_and_count(nbss: tuple[Stack, int], sent: bytes) -> None:
    s, port = nbss
    with _connect(port) as c:
        c.sendall(sent)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    wait_for(lambda: _counts(s) == {"netbios_sessions_dropped": 1}, what="drop counted")
