"""SIGHUP reloads hub.toml in a running hub process, one worker or several: established
streams keep their backend and flow on byte-exact, new streams take the new services
and backends, a removed service is refused, and a bad file changes nothing but gets
one log line with the reason (per process)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spokeshare import bundle, hubstatus
from spokeshare.logfmt import find
from tests.helpers import (
    Backend,
    Deployment,
    LoopThread,
    edge_config,
    free_port,
    make_deployment,
    process,
    recv_all,
    wait_for,
)


def tagged(tag: bytes) -> Callable[[socket.socket], None]:
    """A backend that says who it is, then echoes."""

    def handler(conn: socket.socket) -> None:
        conn.sendall(tag)
        while data := conn.recv(1 << 16):
            conn.sendall(data)

    return handler


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    made = {tag: Backend(tagged(tag.encode())) for tag in ("A", "B", "C", "D")}
    yield made
    for b in made.values():
        b.close()


def hub_toml(dep: Deployment, workers: int, services: dict[str, int], extra: str = "") -> str:
    lines = [
        "[hub]",
        f'listen = ["127.0.0.1:{dep.hub_port}"]',
        f'state_dir = "{dep.dir.parent / "hq-state"}"',
        f"workers = {workers}",
        "heartbeat_interval = 0.5",
        "check_backends = false",
        "",
    ]
    for name, port in services.items():
        lines += [f"[services.{name}]", f'backend = "127.0.0.1:{port}"', ""]
    return "\n".join(lines) + extra


def read_exactly(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            break
        out += d
    return bytes(out)


def first_byte(port: int) -> bytes:
    """Open a client connection through the edge and read what the backend says first
    (b"" when the stream was refused)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        try:
            return c.recv(1)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.expect_errors  # hubs log the refused files at ERROR (in their own log)
def test_sighup_reloads_services_keeping_streams(
    tmp_path: Path, loop_thread: LoopThread, backends: dict[str, Backend], workers: int
) -> None:
    from spokeshare.tunnel.edge import Edge

    a, b, c, d = (backends[t].port for t in "ABCD")
    # Enrolled for the three services; the hub starts with "smb" and "old" only.
    dep = make_deployment(tmp_path, {"smb": a, "old": c, "extra": d})
    toml = dep.dir / "hub.toml"
    toml.write_text(hub_toml(dep, workers, {"smb": a, "old": c}))
    state = dep.dir.parent / "hq-state"
    logfile = tmp_path / "hub.log"

    def log_events(event: str) -> list[dict[str, str]]:
        return find(logfile.read_text(errors="replace"), event)

    ports = {"smb": free_port(), "old": free_port(), "extra": free_port()}
    with (
        open(logfile, "wb") as out,
        process(
            [sys.executable, "-m", "spokeshare", "hub", "--dir", str(dep.dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
        ) as hub,
    ):
        wait_for(lambda: len(hubstatus.read_fresh(state)) == workers, timeout=30,
                 what=f"{workers} hub process(es) writing their status")  # fmt: skip
        edge = Edge(
            edge_config(dep.bundles["nyc"], ports, min_idle=4), bundle.read(dep.bundles["nyc"])
        )
        loop_thread.run(edge.start())
        try:
            wait_for(lambda: loop_thread.call(lambda: edge.hub_state.value) == "up",
                     what="edge connected")  # fmt: skip
            assert first_byte(ports["old"]) == b"C"
            # An established stream on the old smb backend.
            held = socket.create_connection(("127.0.0.1", ports["smb"]), timeout=10)
            assert read_exactly(held, 1) == b"A"
            head = os.urandom(100_000)
            held.sendall(head)
            assert read_exactly(held, len(head)) == head

            # smb moves to B, "extra" is added, "old" removed; a new listen address
            # needs a restart and a limit changes.
            toml.write_text(
                hub_toml(dep, workers, {"smb": b, "extra": d}, "[limits]\nheader_timeout = 4.0\n")
                .replace(f"127.0.0.1:{dep.hub_port}", f"127.0.0.1:{free_port()}")
            )  # fmt: skip
            hub.send_signal(signal.SIGHUP)
            reloaded = wait_for(
                lambda: len(r := log_events("config reloaded")) == workers and r,
                what="every hub process logging its reload",
            )
            for line in reloaded:
                assert line["generation"] == "2" and line["services"] == "smb,extra"
                assert (line["added"], line["removed"], line["changed"]) == ("extra", "old", "smb")
                assert line["limits_changed"] == "header_timeout"
            pending = log_events("config not applied until restart")
            assert [p["keys"] for p in pending] == ["hub.listen"] * workers

            # The established stream flows on, byte-exact, still to A.
            for _ in range(10):
                chunk = os.urandom(65_536)
                held.sendall(chunk)
                assert read_exactly(held, len(chunk)) == chunk
            held.shutdown(socket.SHUT_WR)
            assert recv_all(held) == b""
            held.close()
            # New streams: the new backend, the added service; the removed one refused.
            for _ in range(2 * workers):
                assert first_byte(ports["smb"]) == b"B"
            assert first_byte(ports["extra"]) == b"D"
            assert first_byte(ports["old"]) == b""
            wait_for(
                lambda: any(
                    s["service"] == "old" and s.get("status") == "UNKNOWN_SERVICE"
                    for s in log_events("stream")
                ),
                what="the hub's stream line refusing the removed service",
            )

            # A file that is not TOML, then one with an unknown key: refused, one line
            # with the reason per process, the configuration in use kept.
            for n, (text, why) in enumerate(
                [("[hub\n", "not valid TOML"), (toml.read_text() + "foo = 1\n", "limits.foo")],
                start=1,
            ):
                toml.write_text(text)
                hub.send_signal(signal.SIGHUP)

                def refusals(n: int = n) -> list[dict[str, str]]:
                    found = log_events("config not reloaded")
                    return found if len(found) == n * workers else []

                refused = wait_for(refusals, what="every hub process refusing the bad file")
                for r in refused[-workers:]:
                    assert why in r["reason"] and r["generation"] == "2", r
                assert first_byte(ports["smb"]) == b"B"
                assert first_byte(ports["extra"]) == b"D"
                assert first_byte(ports["old"]) == b""
            assert len(log_events("config reloaded")) == workers
        finally:
            loop_thread.run(edge.close())
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(20) == 0
    # Only the stream on A started before the reload; everything after went to B.
    assert backends["A"].accepted == 1
