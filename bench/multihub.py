"""Two hubs, one office, a real WAN: what a hub failure costs new client connections.

The lab (run inside tests/lab/netns-worker, as root): an office namespace ``ssmh-edge``
and two hub hosts ``ssmh-hub0`` and ``ssmh-hub1``, each behind its own TAP WAN wire
(spokeshare.lab.wan) with the configured RTT, addresses from 198.19.251.0/24 (the
benchmarking range). Each hub host runs ``spokeshare hub`` on the shared deployment
directory and a TCP echo server as its backend; the office runs the edge (tunnel side
only) with a bundle listing both hubs. A probe in the office namespace opens new client
connections back to back (connect, 1000 bytes, their echo, close) and records each.

``python -m bench.multihub [--rtt-ms 100] [--seconds 6]`` measures, side by side in one
run: the healthy connection time; after hub 0's process is killed (SIGKILL: its
connections reset); after hub 0's host becomes unreachable (its WAN link dropped:
silence). For each failure: the longest time a connection started after it took, the
time from the failure to the first one that succeeded, and how many failed. The
issue's bound is 2 s + 2 RTT for the next new connection.

The module's ``echo``, ``edge`` and ``probe`` subcommands are what runs inside the
namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EDGE_NS = "ssmh-edge"
HUB_NS = ("ssmh-hub0", "ssmh-hub1")
#: (edge end, hub end) of each hub's WAN wire.
WAN = (("198.19.251.1/30", "198.19.251.2/30"), ("198.19.251.5/30", "198.19.251.6/30"))
HUB_PORT = 7443
BACKEND_PORT = 9445
EDGE_PORT = 8445
ROOT = Path(__file__).resolve().parent.parent


def _hub_ip(i: int) -> str:
    return WAN[i][1].split("/")[0]


# -- what runs inside the namespaces -----------------------------------------------------


def run_echo(port: int) -> None:
    """A threaded TCP echo server on ``port`` (the hub's backend)."""
    srv = socket.create_server(("127.0.0.1", port), backlog=256, reuse_port=False)

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def run_edge(bundle_path: Path, port: int) -> None:
    """The edge's tunnel side with stock settings, listening on 127.0.0.1:``port``."""
    from spokeshare import bundle
    from spokeshare.config import load_edge
    from spokeshare.tunnel.edge import Edge

    cfg = load_edge(
        None,
        {
            "bundle": str(bundle_path),
            "lan_address": "127.0.0.1",
            "ports": {"smb": port, "ipp": 0, "lpd": 0, "raw": 0},
            "netbios": {"enabled": False},
        },
    )

    async def main() -> None:
        edge = Edge(cfg, bundle.read(bundle_path))
        await edge.start()
        await asyncio.Event().wait()

    asyncio.run(main())


def one_connection(port: int, size: int = 1000, timeout: float = 10.0) -> tuple[bool, float]:
    """Connect, send ``size`` random bytes, read their echo; (intact, seconds)."""
    payload = os.urandom(size)
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := c.recv(65536):
                got += chunk
        return bytes(got) == payload, time.monotonic() - t0
    except OSError:
        return False, time.monotonic() - t0


def run_probe(port: int, seconds: float) -> None:
    """New connections back to back for ``seconds``; one JSON line per connection:
    ``{"start": unix seconds, "s": duration, "ok": intact}``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.time()
        ok, took = one_connection(port)
        print(json.dumps({"start": start, "s": took, "ok": ok}), flush=True)


# -- the lab -------------------------------------------------------------------------------


class TwoHubLab:
    """The topology of the module docstring, built in ``root``; torn down on close."""

    def __init__(self, root: Path, rtt_ms: float) -> None:
        from spokeshare.lab import netns

        self.root = root
        self.rtt_ms = rtt_ms
        self.registry = netns.StateRegistry(root / "state.json")
        self.links: list[Any] = []
        self.hub_pids: list[int] = []
        self.dir = root / "hq"

    def _spawn(self, ns: str, argv: list[str], what: str) -> int:
        from spokeshare.lab import services

        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return services.spawn(self.registry, ns, argv, what, self.root / f"{what}.log", env=env)

    def start(self) -> None:
        from spokeshare import enrollment
        from spokeshare.lab import netns, services
        from spokeshare.lab.wan import WanEnd, WanLink
        from spokeshare.lab.wire import LinkSettings

        for ns in (EDGE_NS, *HUB_NS):
            self.registry.add("namespaces", ns)
            netns.create_namespace(ns)
        for i, (edge_end, hub_end) in enumerate(WAN):
            link = WanLink(
                f"ssmh{i}",
                WanEnd(EDGE_NS, f"wan{i}", edge_end),
                WanEnd(HUB_NS[i], "wan0", hub_end),
                self.root / f"wan{i}.sock",
                LinkSettings(rtt_ms=self.rtt_ms),
                tap_names=(f"ssmh{i}-ta", f"ssmh{i}-tb"),
                log_path=self.root / f"wan{i}.log",
                registry=self.registry,
            )
            link.start()
            self.links.append(link)
        enrollment.init(
            self.dir,
            "hub.lab",
            [f"{_hub_ip(i)}:{HUB_PORT}" for i in range(2)],
            {"smb": f"127.0.0.1:{BACKEND_PORT}", "ipp": f"{_hub_ip(0)}:631"},
            state_dir=self.root / "hq-state",
        )
        out = self.root / "nyc.bundle"
        enrollment.add_office(self.dir, "nyc", ["smb"], out)
        for i in range(2):
            toml = (self.dir / "hub.toml").read_text()
            toml = toml.replace(
                f'listen = ["0.0.0.0:{HUB_PORT}"]',
                f'listen = ["{_hub_ip(i)}:{HUB_PORT}"]\nname = "hub{i}"\ncheck_backends = false',
            ).replace(f'state_dir = "{self.root / "hq-state"}"',
                      f'state_dir = "{self.root / f"state-hub{i}"}"')  # fmt: skip
            cfg = self.root / f"hub-{i}.toml"
            cfg.write_text(toml)
            py = sys.executable
            self._spawn(HUB_NS[i], [py, "-m", "bench.multihub", "echo"], f"echo{i}")
            argv = [py, "-m", "spokeshare", "hub", "--dir", str(self.dir), "--config", str(cfg)]
            self.hub_pids.append(self._spawn(HUB_NS[i], argv, f"hub{i}"))
            ns = HUB_NS[i]
            services.wait_for(f"hub {i}", lambda: services.listening(ns, HUB_PORT), 30)  # noqa: B023
        self._spawn(
            EDGE_NS, [sys.executable, "-m", "bench.multihub", "edge", str(out)], "edge"
        )
        services.wait_for("edge", lambda: services.listening(EDGE_NS, EDGE_PORT), 30)
        services.wait_for("a first connection", lambda: self.connect()[0], 60, interval=0.5)

    def connect(self) -> tuple[bool, float]:
        """One new client connection from the office namespace: (intact, seconds)."""
        from spokeshare.lab import netns

        proc = netns.run_in(
            EDGE_NS,
            [sys.executable, "-m", "bench.multihub", "connect"],
            check=False,
            timeout=60,
        )
        try:
            data = json.loads(proc.stdout.decode())
        except ValueError:
            return False, 0.0
        return bool(data["ok"]), float(data["s"])

    def probe(self, seconds: float) -> subprocess.Popen[bytes]:
        from spokeshare.lab import netns

        argv = [sys.executable, "-m", "bench.multihub", "probe", "--seconds", str(seconds)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.Popen(netns.exec_argv(EDGE_NS, argv), stdout=subprocess.PIPE, env=env)

    def kill_hub(self, i: int) -> None:
        """Hub ``i``'s process dies (SIGKILL by PID): its connections reset."""
        os.kill(self.hub_pids[i], signal.SIGKILL)

    def cut(self, i: int) -> None:
        """Hub ``i``'s host becomes unreachable: its WAN wire drops everything."""
        self.links[i].set(up=False)

    def close(self) -> None:
        for link in self.links:
            with contextlib.suppress(Exception):
                link.stop()
        self.registry.teardown()


@contextlib.contextmanager
def two_hub_lab(root: Path, rtt_ms: float = 100.0) -> Iterator[TwoHubLab]:
    lab = TwoHubLab(root, rtt_ms)
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


# -- the measurement -----------------------------------------------------------------------


def _after(lines: bytes, t_fail: float) -> dict[str, Any]:
    rows = [json.loads(x) for x in lines.decode().splitlines() if x.strip()]
    before = [r["s"] for r in rows if r["start"] + r["s"] < t_fail and r["ok"]]
    # every connection not finished when the failure struck (the one in flight too)
    after = [r for r in rows if r["start"] + r["s"] >= t_fail]
    first_ok = next((r for r in after if r["ok"]), None)
    return {
        "healthy_median_s": round(statistics.median(before), 3) if before else None,
        "after": len(after),
        "failed": sum(1 for r in after if not r["ok"]),
        "longest_s": round(max((r["s"] for r in after), default=0.0), 3),
        "first_ok_after_failure_s": (
            round(first_ok["start"] + first_ok["s"] - t_fail, 3) if first_ok else None
        ),
    }


def measure(kind: str, rtt_ms: float, seconds: float) -> dict[str, Any]:
    """One lab, one failure of ``kind`` ("process" or "host") of hub 0, one third into
    a probe of ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="ss-multihub-") as d, two_hub_lab(
        Path(d), rtt_ms
    ) as lab:
        probe = lab.probe(seconds)
        time.sleep(seconds / 3)  # the probe's healthy baseline runs meanwhile
        t_fail = time.time()
        (lab.kill_hub if kind == "process" else lab.cut)(0)
        out, _ = probe.communicate(timeout=seconds + 60)
        result = _after(out, t_fail)
    result["bound_s"] = round(2 + 2 * rtt_ms / 1000, 3)
    return result


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.multihub", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("echo")
    e = sub.add_parser("edge")
    e.add_argument("bundle")
    sub.add_parser("connect")
    pr = sub.add_parser("probe")
    pr.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--rtt-ms", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=6.0)
    a = p.parse_args(argv)
    if a.cmd == "echo":
        run_echo(BACKEND_PORT)
    elif a.cmd == "edge":
        run_edge(Path(a.bundle), EDGE_PORT)
    elif a.cmd == "connect":
        ok, took = one_connection(EDGE_PORT)
        print(json.dumps({"ok": ok, "s": took}))
    elif a.cmd == "probe":
        run_probe(EDGE_PORT, a.seconds)
    else:
        results = {kind: measure(kind, a.rtt_ms, a.seconds) for kind in ("process", "host")}
        print(json.dumps({
            "rtt_ms": a.rtt_ms,
            "machine": f"{_cpu()}, {os.cpu_count()} cores",
            "date": time.strftime("%Y-%m-%d"),
            "results": results,
        }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
