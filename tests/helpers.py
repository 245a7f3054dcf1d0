"""Shared test machinery: a deployment on disk, hub and edge in a loop thread, backends.

The hub and edge under test run in-process on a uvloop event loop in a background
thread (so tests can read their statistics and the loop's tasks), while clients and
backends are plain blocking sockets in the test's own threads: independent of the
code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from spokeshare import bundle, enrollment, logfmt
from spokeshare.config import EdgeConfig, HubConfig, PoolConfig, load_edge, load_hub

T = TypeVar("T")


def logged(caplog: Any, event: str) -> list[dict[str, str]]:
    """The fields of every ``event`` line (spokeshare.logfmt) that ``caplog`` (pytest's
    LogCaptureFixture) captured, in order."""
    return logfmt.find("\n".join(r.getMessage() for r in caplog.records), event)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(
    cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", interval: float = 0.01
) -> Any:
    """Poll ``cond`` every ``interval`` s until it returns something truthy; fail after
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class LoopThread:
    """A uvloop event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10) -> T:
        async def wrap() -> T:
            return fn()

        return self.run(wrap(), timeout)

    def close(self) -> None:
        """Cancel and await what is left on the loop, then stop it; raises when a task
        left over ended with an exception other than its cancellation."""

        async def cancel_rest() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            results = await asyncio.gather(*rest, return_exceptions=True)
            failed = [
                (t, r)
                for t, r in zip(rest, results, strict=True)
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
            ]
            if failed:
                raise AssertionError(f"tasks left on the loop failed: {failed!r}")

        try:
            self.run(cancel_rest(), 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@dataclasses.dataclass
class Deployment:
    dir: Path
    bundles: dict[str, Path]
    hub_port: int

    def add_office(self, name: str, services: list[str] | None = None, **kw: Any) -> Path:
        out = self.dir.parent / f"{name}.bundle"
        enrollment.add_office(self.dir, name, services, out, **kw)
        self.bundles[name] = out
        return out

    def hub_config(self, check_backends: bool = False, **limits: Any) -> HubConfig:
        """hub.toml, with fast heartbeats; the start-up probe of SMB backends and the
        periodic probe of backends that are up are off unless asked for (test
        backends count their connections)."""
        limits.setdefault("backend_check_interval", 0.0)
        cfg = load_hub(self.dir / "hub.toml")
        return dataclasses.replace(
            cfg,
            heartbeat_interval=0.5,
            check_backends=check_backends,
            limits=dataclasses.replace(cfg.limits, **limits),
        )

    def set_backend(self, service: str, port: int) -> None:
        text = (self.dir / "hub.toml").read_text()
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.strip() == f"[services.{service}]":
                lines[i + 1] = f'backend = "127.0.0.1:{port}"'
                break
        else:
            lines += [f"[services.{service}]", f'backend = "127.0.0.1:{port}"']
        (self.dir / "hub.toml").write_text("\n".join(lines) + "\n")

    def set_backends(self, service: str, addresses: list[str], balance: str = "order") -> None:
        """Give ``service`` several backends (``HOST:PORT``, in order) in hub.toml."""
        text = (self.dir / "hub.toml").read_text()
        lines = text.splitlines()
        listed = ", ".join(f'"{a}"' for a in addresses)
        new = [f"backends = [{listed}]", f'balance = "{balance}"']
        for i, line in enumerate(lines):
            if line.strip() == f"[services.{service}]":
                lines[i + 1 : i + 2] = new
                break
        else:
            lines += [f"[services.{service}]", *new]
        (self.dir / "hub.toml").write_text("\n".join(lines) + "\n")


def make_deployment(root: Path, services: dict[str, int] | None = None) -> Deployment:
    hub_port = free_port()
    svc = {name: f"127.0.0.1:{port}" for name, port in (services or {}).items()}
    enrollment.init(
        root / "hq",
        "hub.test",
        [f"127.0.0.1:{hub_port}"],
        svc,
        state_dir=root / "hq-state",
        listen=[f"127.0.0.1:{hub_port}"],
    )
    dep = Deployment(root / "hq", {}, hub_port)
    dep.add_office("nyc")
    return dep


def edge_config(bundle_path: Path, ports: dict[str, int], **pool: Any) -> EdgeConfig:
    cfg = load_edge(
        None,
        {
            "bundle": str(bundle_path),
            "lan_address": "127.0.0.1",
            "ports": {"smb": 0, "ipp": 0, "lpd": 0, "raw": 0, **ports},
        },
    )
    pool_cfg = dataclasses.replace(PoolConfig(min_idle=2, open_timeout=1.0), **pool)
    # The NetBIOS session answerer on a port of its own: 139 on loopback is shared by
    # every edge on this machine, and a second one logs the port as taken.
    netbios = dataclasses.replace(cfg.netbios, session_port=free_port())
    return dataclasses.replace(cfg, pool=pool_cfg, hub_dead_after=1.5, netbios=netbios)


class Stack:
    """A hub and one edge, running in a LoopThread."""

    def __init__(
        self,
        dep: Deployment,
        lt: LoopThread,
        office: str = "nyc",
        edge_ports: dict[str, int] | None = None,
        hub_limits: dict[str, Any] | None = None,
        pool: dict[str, Any] | None = None,
    ) -> None:
        from spokeshare.tunnel.edge import Edge
        from spokeshare.tunnel.hub import Hub

        self.dep, self.lt = dep, lt
        self.edge_ports = edge_ports or {"smb": free_port()}
        self.hub = Hub(dep.hub_config(**(hub_limits or {})), dep.dir)
        b = bundle.read(dep.bundles[office])
        self.edge = Edge(edge_config(dep.bundles[office], self.edge_ports, **(pool or {})), b)

    def start_hub(self) -> None:
        self.lt.run(self.hub.start())

    def start_edge(self, wait_ready: bool = True) -> None:
        self.lt.run(self.edge.start())
        if wait_ready:
            wait_for(
                lambda: self.lt.call(
                    lambda: (
                        self.edge.hub_state.value == "up"
                        and len(self.edge.idle) >= self.edge.cfg.pool.min_idle
                    )
                ),
                what="edge connected with a warm pool",
            )

    def start(self) -> Stack:
        self.start_hub()
        self.start_edge()
        return self

    def stop_hub(self) -> None:
        self.lt.run(self.hub.close())

    def close(self) -> None:
        """Close the edge, then the hub (also when the edge's close fails)."""
        try:
            self.lt.run(self.edge.close())
        finally:
            self.lt.run(self.hub.close())

    @property
    def port(self) -> int:
        return self.edge_ports["smb"]

    def connect(self, service: str = "smb", timeout: float = 10) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.edge_ports[service]), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s


class Backend:
    """A threaded TCP server on loopback (``host``, any of 127.0.0.0/8) running
    ``handler(conn)`` per connection."""

    def __init__(
        self, handler: Callable[[socket.socket], None], port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.handler = handler
        self.host = host
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(512)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.handler(conn)
        except OSError as exc:
            self.errors.append(exc)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


def echo(conn: socket.socket) -> None:
    while data := conn.recv(1 << 16):
        conn.sendall(data)


def recv_all(s: socket.socket, limit: int = 1 << 31) -> bytes:
    out = bytearray()
    while len(out) < limit:
        d = s.recv(1 << 20)
        if not d:
            break
        out += d
    return bytes(out)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def process(argv: list[str], **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process in its own session; terminate it by PID on exit, kill if it lingers."""
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
