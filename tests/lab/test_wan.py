"""The forwarder: its control protocol in memory, and real TAP links between namespaces."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare.lab import netns
from spokeshare.lab.wan import Forwarder, WanEnd, WanLink
from spokeshare.lab.wire import LinkSettings


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fwd = Forwarder(r1, r2, ctl, LinkSettings(rtt_ms=10), seed=1)
    yield fwd
    ctl.close()
    for fd in (r1, w1, r2, w2):
        os.close(fd)


def test_control_set_changes_only_named_fields(forwarder: Forwarder) -> None:
    reply = forwarder.handle(b'{"cmd": "set", "loss_pct": 2.5}\n')
    assert reply["ok"] is True
    assert reply["settings"] == LinkSettings(rtt_ms=10, loss_pct=2.5).to_dict()
    assert forwarder.b_to_a.settings == forwarder.a_to_b.settings
    reply = forwarder.handle(b'{"cmd": "set", "up": false}')
    assert forwarder.a_to_b.settings == LinkSettings(rtt_ms=10, loss_pct=2.5, up=False)


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1]",
        b'{"cmd": "reboot"}',
        b'{"cmd": "set", "rtt_ms": -5}',
        b'{"cmd": "set", "speed": 5}',
        b'{"cmd": "set", "up": "yes"}',
    ],
)
def test_control_rejects_bad_requests(forwarder: Forwarder, line: bytes) -> None:
    before = forwarder.a_to_b.settings
    reply = forwarder.handle(line)
    assert reply["ok"] is False and isinstance(reply["error"], str)
    assert forwarder.a_to_b.settings == before


def test_control_stats_shape(forwarder: Forwarder) -> None:
    reply = forwarder.stats()
    assert set(reply) == {"ok", "settings", "a_to_b", "b_to_a", "write_errors"}
    json.dumps(reply)


# --- real links ---------------------------------------------------------------------------

A, B = "sswt-a", "sswt-b"
A_IP, B_IP = "198.19.250.1", "198.19.250.2"


@pytest.fixture
def link(namespaces: netns.StateRegistry, tmp_path: Path) -> Iterator[WanLink]:
    for ns in (A, B):
        namespaces.add("namespaces", ns)
        netns.create_namespace(ns)
    wan = WanLink(
        "sswt",
        WanEnd(A, "wan0", f"{A_IP}/30"),
        WanEnd(B, "wan0", f"{B_IP}/30"),
        tmp_path / "wan.sock",
        LinkSettings(),
        tap_names=("sswt-ta", "sswt-tb"),
        log_path=tmp_path / "wan.log",
        registry=namespaces,
    )
    wan.start()
    yield wan
    wan.stop()


def ping(ns: str, dst: str, count: int = 1, interval: float = 0.2) -> tuple[bool, list[float]]:
    proc = netns.run_in(
        ns, ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", dst], check=False
    )
    times = [float(t) for t in re.findall(r"time=([\d.]+) ms", proc.stdout.decode())]
    return proc.returncode == 0, times


def wait_until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.lab
def test_link_carries_and_delays(link: WanLink) -> None:
    ok, _ = ping(A, B_IP)
    assert ok
    link.set(rtt_ms=40)
    ok, times = ping(A, B_IP, count=3)
    assert ok and min(times) >= 40.0
    stats = link.stats()
    assert stats["settings"] == LinkSettings(rtt_ms=40).to_dict()
    a_to_b = stats["a_to_b"]
    assert isinstance(a_to_b, dict) and a_to_b["delivered"] >= 4


@pytest.mark.lab
def test_link_down_then_up(link: WanLink) -> None:
    link.set(up=False)
    ok, _ = ping(A, B_IP)
    assert not ok
    stats = link.stats()["a_to_b"]
    assert isinstance(stats, dict) and stats["down"] >= 1
    link.set(up=True)
    assert wait_until(lambda: ping(A, B_IP)[0], timeout=10)


@pytest.mark.lab
def test_stop_removes_taps_and_process(link: WanLink, namespaces: netns.StateRegistry) -> None:
    pid = link.pid
    assert pid is not None
    link.stop()
    assert not netns.pid_alive(pid, None)
    assert wait_until(lambda: not netns.link_exists("wan0", A), timeout=5)
    assert not any(p["pid"] == pid for p in namespaces.processes())


SINK = r"""
import socket, sys, time
kind, port = sys.argv[1], int(sys.argv[2])
if kind == "tcp":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(1); print("ready", flush=True)
    c, _ = s.accept(); n = 0; t0 = None
    while True:
        b = c.recv(1 << 20)
        if not b: break
        if t0 is None: t0 = time.monotonic()
        n += len(b)
    print(n, time.monotonic() - t0, flush=True)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    s.bind(("0.0.0.0", port)); s.settimeout(1.0); print("ready", flush=True)
    n = 0; t0 = t1 = None
    while True:
        try: s.recv(2048)
        except socket.timeout:
            if t0 is not None: break
            continue
        t1 = time.monotonic(); t0 = t0 or t1; n += 1
    print(n, t1 - t0, flush=True)
"""

SOURCE = r"""
import socket, sys, time
kind, host, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
end = time.monotonic() + seconds
if kind == "tcp":
    c = socket.create_connection((host, port)); buf = b"x" * (1 << 16)
    while time.monotonic() < end: c.sendall(buf)
    c.close()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); buf = b"x" * 64; n = 0
    while time.monotonic() < end:
        for _ in range(100): s.sendto(buf, (host, port))
        n += 100
    print(n, flush=True)
"""


def _measure(kind: str, seconds: float = 3.0) -> tuple[int, float, str]:
    sink = subprocess.Popen(
        netns.exec_argv(B, [sys.executable, "-c", SINK, kind, "5201"]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == "ready"
        src = netns.run_in(
            A, [sys.executable, "-c", SOURCE, kind, B_IP, "5201", str(seconds)], timeout=60
        )
        count, elapsed = sink.communicate(timeout=30)[0].split()
        return int(count), float(elapsed), src.stdout.decode().strip()
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()


@pytest.mark.lab
@pytest.mark.slow
def test_measure_capacity(link: WanLink, capsys: pytest.CaptureFixture[str]) -> None:
    """What the emulator carries at RTT 0 (numbers for docs/lab.md; no assertion on them)."""
    nbytes, elapsed, _ = _measure("tcp")
    stats = link.stats()["a_to_b"]
    assert isinstance(stats, dict)
    frames = stats["delivered"]
    received, span, sent = _measure("udp")
    with capsys.disabled():
        print(
            f"\nTCP bulk: {nbytes / elapsed / 1e6:.1f} MB/s "
            f"({nbytes * 8 / elapsed / 1e6:.0f} Mbit/s), {frames / elapsed:.0f} frames/s one way"
            f"\nUDP 64 B: sent {int(sent) / 3:.0f}/s, "
            f"received {received / span if span else 0:.0f} packets/s"
        )
    assert nbytes > 0 and received > 0
