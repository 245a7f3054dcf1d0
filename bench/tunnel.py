#!/usr/bin/env python3
"""The loopback tunnel benchmark: direct TCP, a stunnel pair and spokeshare, in one run.

Usage (from the repository root; root is fine, nothing privileged is needed)::

    .venv/bin/python bench/tunnel.py            # full run, a few minutes
    .venv/bin/python bench/tunnel.py --quick    # smaller sizes, about a minute
    .venv/bin/python bench/tunnel.py --smoke    # tiny sizes: checks the machinery only
    .venv/bin/python bench/tunnel.py --write docs/benchmarks.md   # also update the doc

Three paths to the same backend on 127.0.0.1:

- ``direct``: a TCP connection straight to the backend;
- ``stunnel``: two ``stunnel4`` processes the traditional way: client mode on the
  office side (plain TCP in, TLS out), server mode on the HQ side (TLS in, backend
  out); TLS 1.3 only, ECDSA P-256 certificates from a throwaway CA, both sides verified
  (``verifyChain``, ``requireCert`` at HQ, ``checkHost`` at the office);
- ``spokeshare``: ``spokeshare init`` and ``office add`` into a temporary directory,
  then ``spokeshare hub`` and ``spokeshare edge`` as separate processes (the real CLI,
  which runs uvloop), the edge listening on a loopback port.

The backend is a separate process (a thread per connection, blocking sockets) speaking a
9-byte request: an opcode and a big-endian u64. ``U n``: read n bytes, answer with the
u64 count. ``D n``: send n bytes with ``sendfile``. ``E``: echo until EOF. The load
generators are separate processes using ``sendfile`` and ``recv_into`` with 1 MiB
buffers, so neither end of the measurement is the bottleneck.

Measures: bulk throughput (1 and 8 streams, upload and download), round-trip time of a
1 KiB request/response on an established connection, time from a new TCP connection to
the first response byte, and memory per idle tunnel per side (spokeshare's warm pool on
uvloop through the real CLI and on the stdlib asyncio loop through a small in-process
harness, ``--serve``; idle relayed client connections for all).

Every process this script starts runs in its own session and is stopped by its PID.
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import importlib.metadata
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    # Run as a file (python bench/tunnel.py): the bench package is this checkout's.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    STUNNEL,
    MiB,
    StunnelService,
    check_alive,
    cpu_seconds,
    fork_workers,
    free_port,
    listening,
    loopback_parser,
    machine_facts,
    median,
    pct,
    process,
    ratio,
    recv_exact,
    replace_block,
    rss_kib,
    stunnel_config,
    threads,
    wait_until,
    write_stunnel_pki,
)

PATHS = ("direct", "stunnel", "spokeshare")
REQ = struct.Struct("!cQ")  # backend request: opcode, length
COUNT = struct.Struct("!Q")
MSG = 1024  # request/response size for the latency measures
BEGIN = "<!-- bench/tunnel.py: generated section begins -->"
END = "<!-- bench/tunnel.py: generated section ends -->"


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    bulk_1: int  # bytes moved by the single stream
    bulk_8: int  # bytes per stream with 8 streams
    repeats: int  # bulk runs per cell; the median is reported
    rtt_count: int
    connect_count: int
    connect_gap: float  # seconds between new connections
    idle_n: int  # idle tunnels / connections for the memory measure
    hub_workers: int = 1  # [hub] workers for the speed measures


PLANS = {
    "full": Plan("full", 512 * MiB, 128 * MiB, 3, 5000, 500, 0.01, 500),
    "quick": Plan("quick", 64 * MiB, 16 * MiB, 1, 1000, 200, 0.01, 200),
    "smoke": Plan("smoke", 1 * MiB, 256 * 1024, 1, 50, 10, 0.0, 10),
}


# -- small helpers ---------------------------------------------------------------------


def connect(port: int, timeout: float | None = 30.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def zero_file(size: int = 4 * MiB) -> int:
    """A memory-backed file of zeros to sendfile() from."""
    fd = os.memfd_create("bench-zeros")
    os.write(fd, bytes(size))
    return fd


def send_zeros(sock: socket.socket, fd: int, n: int, size: int = 4 * MiB) -> None:
    off = 0
    while n > 0:
        k = os.sendfile(sock.fileno(), fd, off, min(n, size - off))
        if k == 0:
            raise ConnectionError("sendfile sent nothing")
        n -= k
        off = (off + k) % size


def sink(sock: socket.socket, n: int) -> int:
    buf = bytearray(MiB)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view, min(MiB, n - got))
        if not k:
            break
        got += k
    return got


def alive_and_listening(p: subprocess.Popen[bytes], what: str, log: Path, port: int) -> bool:
    return check_alive(p, what, log) and listening(port)


# -- the backend (runs as ``--serve backend``) ------------------------------------------


def serve_backend(fd: int) -> None:
    lsock = socket.socket(fileno=fd)
    zeros = zero_file()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                op, n = REQ.unpack(recv_exact(conn, REQ.size))
                if op == b"U":
                    conn.sendall(COUNT.pack(sink(conn, n)))
                elif op == b"D":
                    send_zeros(conn, zeros, n)
                elif op == b"E":
                    while data := conn.recv(65536):
                        conn.sendall(data)
            except OSError:
                pass  # a client that goes away is not the backend's business here

    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


# -- spokeshare hub/edge on a chosen event loop (runs as ``--serve hub|edge``) ----------


def serve_spokeshare(role: str, loop_name: str, arg: str) -> None:
    """The hub or edge, as the CLI runs it, but on the event loop named (in-process)."""
    import asyncio
    import logging

    from spokeshare import bundle
    from spokeshare.config import load_edge, load_hub

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    main: Callable[[], Any]
    if role == "hub":
        from spokeshare.tunnel.hub import Hub

        d = Path(arg)
        hub = Hub(load_hub(d / "hub.toml"), d)
        main, halt = hub.serve_forever, hub.stop
    else:
        from spokeshare.edge_daemon import EdgeDaemon

        cfg = load_edge(Path(arg))
        daemon = EdgeDaemon(cfg, bundle.read(cfg.bundle))
        main, halt = daemon.run, daemon.stop

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, halt)
        await main()

    if loop_name == "uvloop":
        import uvloop

        uvloop.run(run())
    else:
        asyncio.run(run())


# -- load generators -------------------------------------------------------------------


def _bulk_worker(port: int, op: bytes, n: int, barrier: Any, q: Any) -> None:
    os.setsid()
    try:
        s = connect(port, timeout=None)
        zeros = zero_file() if op == b"U" else -1
        barrier.wait(60)
        t0 = time.perf_counter()
        if op == b"U":
            s.sendall(REQ.pack(b"U", n))
            send_zeros(s, zeros, n)
            got = COUNT.unpack(recv_exact(s, COUNT.size))[0]
        else:
            s.sendall(REQ.pack(b"D", n))
            got = sink(s, n)
        t1 = time.perf_counter()
        s.close()
        if got != n:
            raise ConnectionError(f"moved {got} of {n} bytes")
        q.put(("ok", t0, t1, n))
    except BaseException as exc:  # reported to the parent, which raises it
        q.put(("error", repr(exc), 0, 0))


def bulk(port: int, op: bytes, streams: int, n: int, pids: list[int]) -> dict[str, Any]:
    """``streams`` parallel transfers of ``n`` bytes each; aggregate bytes per second."""
    run = fork_workers(
        _bulk_worker, (port, op, n), streams, pids, f"bulk {op.decode()} x{streams} on port {port}"
    )
    start = min(r[0] for r in run.results)
    end = max(r[1] for r in run.results)
    total = sum(r[2] for r in run.results)
    return {
        "bytes": total,
        "seconds": end - start,
        "bps": total / (end - start),
        "cpu": run.cpu,
        "wall": run.wall,
    }


def rtt(port: int, count: int, warm: int = 200) -> list[float]:
    """Round-trip times (µs) of 1 KiB request/response on one established connection."""
    s = connect(port)
    s.sendall(REQ.pack(b"E", 0))
    msg = os.urandom(MSG)
    buf = bytearray(MSG)
    view = memoryview(buf)
    out = []
    for i in range(warm + count):
        t0 = time.perf_counter_ns()
        s.sendall(msg)
        got = 0
        while got < MSG:
            k = s.recv_into(view[got:])
            if not k:
                raise ConnectionError("echo connection closed")
            got += k
        t1 = time.perf_counter_ns()
        if i >= warm:
            out.append((t1 - t0) / 1000)
    s.close()
    return out


def first_byte(port: int, count: int, gap: float) -> list[float]:
    """Time (µs) from a new TCP connect to the first byte of the 1 KiB answer."""
    req = REQ.pack(b"E", 0) + os.urandom(MSG)
    out = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(req)
        if not s.recv(1):
            raise ConnectionError("closed before the first byte")
        t1 = time.perf_counter_ns()
        recv_exact(s, MSG - 1)
        s.close()
        out.append((t1 - t0) / 1000)
        if gap:
            time.sleep(gap)
    return out


def hold_connections(port: int, n: int) -> list[socket.socket]:
    """Open n connections through a path, one echo each so every hop is established."""
    socks = []
    for _ in range(n):
        s = connect(port)
        s.sendall(REQ.pack(b"E", 0) + b"x")
        recv_exact(s, 1)
        socks.append(s)
    return socks


# -- stunnel ---------------------------------------------------------------------------


@dataclasses.dataclass
class Relay:
    port: int  # where clients connect
    office_pid: int
    hq_pid: int


@contextlib.contextmanager
def stunnel_pair(tmp: Path, backend_port: int, tag: str) -> Iterator[Relay]:
    d = tmp / "stunnel"
    if not (d / "ca.crt").exists():
        write_stunnel_pki(d, "hub.bench", ["127.0.0.1"], "bench")
    hq_port, office_port = free_port(), free_port()
    svc = StunnelService(
        "bench", f"127.0.0.1:{office_port}", f"127.0.0.1:{hq_port}", f"127.0.0.1:{backend_port}"
    )
    for side in ("hq", "office"):
        (d / f"{side}.conf").write_text(stunnel_config(d, side, [svc], "hub.bench"))
    with contextlib.ExitStack() as stack:
        hq_log, office_log = tmp / f"stunnel-hq-{tag}.log", tmp / f"stunnel-office-{tag}.log"
        hq = stack.enter_context(process([STUNNEL, str(d / "hq.conf")], hq_log))
        office = stack.enter_context(process([STUNNEL, str(d / "office.conf")], office_log))
        for p, port, what, log in (
            (hq, hq_port, "stunnel HQ", hq_log),
            (office, office_port, "stunnel office", office_log),
        ):
            wait_until(
                functools.partial(alive_and_listening, p, what, log, port),
                15,
                f"{what} to listen",
            )
        yield Relay(office_port, office.pid, hq.pid)


# -- spokeshare ------------------------------------------------------------------------


def spokeshare_cmd() -> list[str]:
    script = Path(sys.executable).parent / "spokeshare"
    return [str(script)] if script.exists() else [sys.executable, "-m", "spokeshare.cli"]


@dataclasses.dataclass
class Deployment:
    dir: Path
    state: Path
    bundle: Path
    hub_port: int


def make_deployment(tmp: Path, backend_port: int, hub_workers: int = 1) -> Deployment:
    tmp.mkdir(parents=True, exist_ok=True)
    d, state, bundle = tmp / "hq", tmp / "hq-state", tmp / "bench.bundle"
    hub_port = free_port()
    cli = spokeshare_cmd()
    addr = f"127.0.0.1:{hub_port}"
    for argv in (
        [
            *cli,
            "init",
            "--dir",
            str(d),
            "--hub-name",
            "hub.bench",
            "--address",
            addr,
            "--listen",
            addr,
            "--service",
            f"bench=127.0.0.1:{backend_port}",
            "--state-dir",
            str(state),
        ],
        [
            *cli,
            "office",
            "add",
            "bench",
            "--dir",
            str(d),
            "--services",
            "bench",
            "--out",
            str(bundle),
        ],
    ):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=tmp)
    if hub_workers > 1:
        toml = d / "hub.toml"
        toml.write_text(toml.read_text().replace("[hub]\n", f"[hub]\nworkers = {hub_workers}\n"))
    return Deployment(d, state, bundle, hub_port)


def edge_toml(tmp: Path, dep: Deployment, port: int, min_idle: int, tag: str) -> Path:
    path = tmp / f"edge-{tag}.toml"
    path.write_text(
        f"""\
[edge]
bundle = "{dep.bundle}"
state_dir = "{tmp / "edge-state"}"

[lan]
address = "127.0.0.1"

[[names]]
name = "BENCH"
service = "bench"

[ports]
bench = {port}
smb = 0
ipp = 0
lpd = 0
raw = 0

[pool]
min_idle = {min_idle}
max_idle = {max(64, min_idle)}
{_lan_services_off()}"""
    )
    return path


def _lan_services_off() -> str:
    """TOML turning off the edge's LAN services other than the relay, as far as this
    version's config has them (the relay is what is measured; port 139 is privileged)."""
    from spokeshare import config

    out = []
    for table, cls_name, wanted in (
        ("netbios", "NetbiosConfig", {"enabled": "false", "session_port": "0"}),
        ("discovery", "DiscoveryConfig", {"wsd": "false", "mdns": "false", "llmnr": "false"}),
    ):
        cls = getattr(config, cls_name, None)
        if cls is None:
            continue
        have = {f.name for f in dataclasses.fields(cls)}
        keys = [f"{k} = {v}" for k, v in wanted.items() if k in have]
        if keys:
            out.append(f"\n[{table}]\n" + "\n".join(keys) + "\n")
    return "".join(out)


def hub_status(dep: Deployment, pid: int) -> dict[str, Any] | None:
    """The hub's status (its workers' merged when it runs several); this run's own
    state dir, so a fresh snapshot is this hub's."""
    from spokeshare import hubstatus, stats

    merged = hubstatus.merge(hubstatus.read_fresh(dep.state))
    return stats.to_json(merged) if merged is not None else None


def pool_ready(dep: Deployment, hub_pid: int, idle: int) -> bool:
    st = hub_status(dep, hub_pid)
    office = (st or {}).get("offices", {}).get("bench", {})
    return bool(office.get("connected")) and office.get("idle_tunnels", 0) >= idle


@contextlib.contextmanager
def spokeshare_hub(tmp: Path, dep: Deployment, loop: str, tag: str) -> Iterator[int]:
    log = tmp / f"hub-{tag}.log"
    if loop == "cli":
        argv = [*spokeshare_cmd(), "hub", "--dir", str(dep.dir)]
    else:
        argv = [sys.executable, __file__, "--serve", "hub", "--loop", loop, "--arg", str(dep.dir)]
    with process(argv, log) as p:
        wait_until(
            lambda: check_alive(p, "hub", log) and listening(dep.hub_port),
            20,
            "the hub to listen",
        )
        yield p.pid


@contextlib.contextmanager
def spokeshare_edge(
    tmp: Path, dep: Deployment, hub_pid: int, loop: str, min_idle: int, tag: str
) -> Iterator[Relay]:
    port = free_port()
    cfg = edge_toml(tmp, dep, port, min_idle, tag)
    log = tmp / f"edge-{tag}.log"
    if loop == "cli":
        argv = [*spokeshare_cmd(), "edge", "--config", str(cfg)]
    else:
        argv = [sys.executable, __file__, "--serve", "edge", "--loop", loop, "--arg", str(cfg)]
    with process(argv, log) as p:
        wait_until(
            lambda: (
                check_alive(p, "edge", log)
                and listening(port)
                and pool_ready(dep, hub_pid, min_idle)
            ),
            120,
            f"the edge's pool of {min_idle}",
        )
        yield Relay(port, p.pid, hub_pid)


# -- the measures ----------------------------------------------------------------------


def measure_speed(
    tmp: Path,
    plan: Plan,
    backend_port: int,
    say: Callable[[str], None],
    only: str | None = None,
) -> dict[str, Any]:
    """Bulk, round trip and new-connection cells; ``only`` ("bulk" or "rtt") runs just
    that group (``rtt``: the 1 KiB round trip and its relay CPU)."""
    res: dict[str, Any] = {"bulk": {}, "cpu": {}, "rtt": {}, "connect": {}}
    with contextlib.ExitStack() as stack:
        st = stack.enter_context(stunnel_pair(tmp, backend_port, "speed"))
        dep = make_deployment(tmp, backend_port, plan.hub_workers)
        hub_pid = stack.enter_context(spokeshare_hub(tmp, dep, "cli", "speed"))
        sp = stack.enter_context(spokeshare_edge(tmp, dep, hub_pid, "cli", 8, "speed"))
        ports = {"direct": backend_port, "stunnel": st.port, "spokeshare": sp.port}
        pids = {
            "direct": [],
            "stunnel": [st.office_pid, st.hq_pid],
            # the hub's own process, or its workers when it runs several
            "spokeshare": [sp.office_pid, *(hub_status(dep, hub_pid) or {}).get("pids", [hub_pid])],
        }
        for port in ports.values():  # warm every path (stunnel's session cache too)
            rtt(port, 10, warm=0)
        for rep in range(plan.repeats if only in (None, "bulk") else 0):
            order = PATHS[rep % 3 :] + PATHS[: rep % 3]
            for streams, n in ((1, plan.bulk_1), (8, plan.bulk_8)):
                for op, label in ((b"U", "upload"), (b"D", "download")):
                    key = f"{streams}x {label}"
                    for path in order:
                        r = bulk(ports[path], op, streams, n, pids[path])
                        res["bulk"].setdefault(key, {}).setdefault(path, []).append(r["bps"])
                        res["cpu"].setdefault(key, {}).setdefault(path, []).append(
                            [c / r["bytes"] * 1e9 for c in r["cpu"]]
                        )
                        say(
                            f"  bulk {key:<14} {path:<10} {r['bps'] / 1e6:8.0f} MB/s "
                            f"cpu s/GB {[round(c / r['bytes'] * 1e9, 2) for c in r['cpu']]}"
                        )
        # Latency measures in many short rounds, rotating the order, so that drift on a
        # shared machine lands on every path alike.
        rounds = max(1, min(20, plan.rtt_count // 250)) if only in (None, "rtt") else 0
        cpu = {p: 0.0 for p in PATHS}
        for rnd in range(rounds):
            for path in PATHS[rnd % 3 :] + PATHS[: rnd % 3]:
                c0 = sum(cpu_seconds(pid) for pid in pids[path])
                res["rtt"].setdefault(path, []).extend(
                    rtt(ports[path], plan.rtt_count // rounds, warm=50)
                )
                cpu[path] += sum(cpu_seconds(pid) for pid in pids[path]) - c0
        if rounds:
            res["rtt_cpu_us"] = {p: cpu[p] / len(res["rtt"][p]) * 1e6 for p in PATHS}
        rounds = max(1, min(10, plan.connect_count // 50)) if only in (None, "connect") else 0
        for rnd in range(rounds):
            for path in PATHS[rnd % 3 :] + PATHS[: rnd % 3]:
                res["connect"].setdefault(path, []).extend(
                    first_byte(ports[path], plan.connect_count // rounds, plan.connect_gap)
                )
        for path in PATHS if only is None else ():
            say(
                f"  rtt {path:<10} p50 {pct(res['rtt'][path], 0.5):7.1f} µs "
                f"p99 {pct(res['rtt'][path], 0.99):7.1f} µs; new connection to first byte "
                f"p50 {pct(res['connect'][path], 0.5):7.0f} µs "
                f"p99 {pct(res['connect'][path], 0.99):7.0f} µs"
            )
    return res


def measure_stunnel_memory(tmp: Path, plan: Plan, backend_port: int) -> dict[str, Any]:
    with stunnel_pair(tmp, backend_port, "memory") as st:
        rtt(st.port, 2, warm=0)
        time.sleep(0.5)
        before = (rss_kib(st.office_pid), rss_kib(st.hq_pid))
        socks = hold_connections(st.port, plan.idle_n)
        try:
            time.sleep(1.0)
            after = (rss_kib(st.office_pid), rss_kib(st.hq_pid))
            thr = (threads(st.office_pid), threads(st.hq_pid))
        finally:
            for s in socks:
                s.close()
    n = plan.idle_n
    return {
        "relayed": {"office": (after[0] - before[0]) / n, "hq": (after[1] - before[1]) / n},
        "threads": thr,
        "rss_kib": {"before": before, "after": after},
    }


def measure_spokeshare_memory(
    tmp: Path, plan: Plan, backend_port: int, loop: str
) -> dict[str, Any]:
    """Idle relayed connections, then the warm pool (each against a fresh hub)."""
    n = plan.idle_n
    dep = make_deployment(tmp / f"mem-{loop}", backend_port)
    out: dict[str, Any] = {"rss_kib": {}}
    with spokeshare_hub(tmp, dep, loop, f"mem-relayed-{loop}") as hub_pid:
        with spokeshare_edge(tmp, dep, hub_pid, loop, 1, f"mem-relayed-{loop}") as edge:
            rtt(edge.port, 2, warm=0)
            time.sleep(0.5)
            before = (rss_kib(edge.office_pid), rss_kib(hub_pid))
            socks = hold_connections(edge.port, n)
            try:
                time.sleep(1.0)
                after = (rss_kib(edge.office_pid), rss_kib(hub_pid))
            finally:
                for s in socks:
                    s.close()
    out["relayed"] = {"office": (after[0] - before[0]) / n, "hq": (after[1] - before[1]) / n}
    out["rss_kib"]["relayed"] = {"before": before, "after": after}
    with spokeshare_hub(tmp, dep, loop, f"mem-pool-{loop}") as hub_pid:
        with spokeshare_edge(tmp, dep, hub_pid, loop, 1, f"mem-pool1-{loop}") as edge:
            rtt(edge.port, 2, warm=0)
            time.sleep(1.0)
            before = (rss_kib(edge.office_pid), rss_kib(hub_pid))
        with spokeshare_edge(tmp, dep, hub_pid, loop, n, f"mem-pool-{loop}") as edge:
            time.sleep(1.0)
            after = (rss_kib(edge.office_pid), rss_kib(hub_pid))
    # control channel and one pooled tunnel in "before"; control and n pooled in "after"
    out["pool"] = {
        "office": (after[0] - before[0]) / (n - 1),
        "hq": (after[1] - before[1]) / (n - 1),
    }
    out["rss_kib"]["pool"] = {"before": before, "after": after}
    return out


# -- the report ------------------------------------------------------------------------


def summary(res: dict[str, Any]) -> str:
    """Plain text of the cells an ``--only`` run measured, with the ratios against
    stunnel (not a docs/benchmarks.md section: that needs every cell)."""
    sp = res["speed"]
    lines = [f"run {res['when']}, load average {res['load'][0]:.2f} / {res['load'][1]:.2f}"]
    for key, cells in sp["bulk"].items():
        b = {p: median(cells[p]) for p in PATHS}
        c = {p: median([sum(x) for x in sp["cpu"][key][p]]) for p in PATHS}
        lines.append(
            f"{key:<12} MB/s stunnel {b['stunnel'] / 1e6:6.0f} spokeshare "
            f"{b['spokeshare'] / 1e6:6.0f} = {ratio(b['spokeshare'], b['stunnel'])}; "
            f"cpu s/GB {c['stunnel']:.2f} vs {c['spokeshare']:.2f}"
        )
    if sp["rtt"]:
        r = sp["rtt"]
        for q in (0.5, 0.99):
            v = {p: pct(r[p], q) for p in PATHS}
            st, ss = v["stunnel"] - v["direct"], v["spokeshare"] - v["direct"]
            lines.append(
                f"rtt p{round(q * 100)}: direct {v['direct']:.1f} µs, added stunnel +{st:.1f} "
                f"spokeshare +{ss:.1f} = {ratio(ss, st)}"
            )
        cu = sp["rtt_cpu_us"]
        lines.append(
            f"relay cpu per round trip: stunnel {cu['stunnel']:.1f} µs, spokeshare "
            f"{cu['spokeshare']:.1f} µs = {ratio(cu['spokeshare'], cu['stunnel'])}"
        )
    if sp["connect"]:
        c = sp["connect"]
        for q in (0.5, 0.99):
            v = {p: pct(c[p], q) for p in PATHS}
            lines.append(
                f"new connection to first byte p{round(q * 100)}: direct {v['direct']:.0f} µs, "
                f"stunnel {v['stunnel']:.0f}, spokeshare {v['spokeshare']:.0f} = "
                f"{ratio(v['spokeshare'], v['stunnel'])}"
            )
    return "\n".join(lines)


def render(facts: dict[str, str], plan: Plan, res: dict[str, Any]) -> tuple[str, list[str]]:
    """The generated Markdown, and the target verdict lines."""
    L: list[str] = []
    verdicts: list[str] = []
    #: Issue 14's targets (relay efficiency), stricter, on the same cells.
    strict: list[str] = []

    def target(what: str, r: float | None, bound: float, at_most: bool) -> None:
        if r is None:
            strict.append(f"{what}: - (no figure)")
            return
        ok = r <= bound if at_most else r >= bound
        sign = "<=" if at_most else ">="
        strict.append(
            f"{what}: {r:.2f}x stunnel (target {sign} {bound}x): {'met' if ok else 'MISSED'}"
        )

    L.append(f"Run: `{plan.name}` plan, {res['when']}.")
    L.append("")
    L.append("| machine | |")
    L.append("|---|---|")
    for fact, value in facts.items():
        L.append(f"| {fact} | {value} |")
    L.append(
        f"| load average (1 min) at start / end | {res['load'][0]:.2f} / {res['load'][1]:.2f} |"
    )
    L.append("")
    sp = res["speed"]

    L.append(
        f"### Bulk throughput (median of {plan.repeats}; 1 stream moves "
        f"{plan.bulk_1 // MiB} MiB, each of 8 streams {plan.bulk_8 / MiB:g} MiB)"
    )
    L.append("")
    L.append("MB/s is 10^6 bytes per second of payload; Gbit/s in brackets.")
    L.append("")
    L.append("| | direct | stunnel | spokeshare | spokeshare/stunnel | spokeshare/direct |")
    L.append("|---|---|---|---|---|---|")
    for key, cells in sp["bulk"].items():
        m = {p: median(v) for p, v in cells.items()}
        row = " | ".join(f"{m[p] / 1e6:.0f} ({m[p] * 8 / 1e9:.2f})" for p in PATHS)
        r = m["spokeshare"] / m["stunnel"]
        L.append(f"| {key} | {row} | **{r:.2f}x** | {ratio(m['spokeshare'], m['direct'])} |")
        verdicts.append(
            f"throughput {key}: {r:.2f}x stunnel (target >= 1.0x): "
            f"{'met' if r >= 1.0 else 'MISSED'}"
        )
        target(f"throughput {key}", r, 1.3, at_most=False)
    L.append("")
    L.append("Relay CPU per GB moved (seconds; office side + HQ side):")
    L.append("")
    L.append("| | stunnel (office + HQ) | spokeshare (edge + hub) |")
    L.append("|---|---|---|")
    for key, cells in sp["cpu"].items():
        parts = []
        for p in ("stunnel", "spokeshare"):
            per = [median([c[i] for c in cells[p]]) for i in range(2)]
            parts.append(f"{per[0]:.2f} + {per[1]:.2f} = {sum(per):.2f}")
        L.append(f"| {key} | {parts[0]} | {parts[1]} |")
    L.append("")

    rtt = {p: sp["rtt"][p] for p in PATHS}
    L.append(
        f"### Round trip, 1 KiB request/response on an established connection "
        f"({len(rtt['direct'])} round trips, µs)"
    )
    L.append("")
    L.append("| | direct | stunnel | spokeshare | spokeshare/stunnel | spokeshare/direct |")
    L.append("|---|---|---|---|---|---|")
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        v = {p: pct(rtt[p], q) for p in PATHS}
        L.append(
            f"| {name} | {v['direct']:.1f} | {v['stunnel']:.1f} | {v['spokeshare']:.1f} | "
            f"{ratio(v['spokeshare'], v['stunnel'])} | {ratio(v['spokeshare'], v['direct'])} |"
        )
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        v = {p: pct(rtt[p], q) for p in PATHS}
        add_st, add_sp = v["stunnel"] - v["direct"], v["spokeshare"] - v["direct"]
        L.append(
            f"| added over direct, {name} | 0 | +{add_st:.1f} | +{add_sp:.1f} | "
            f"**{ratio(add_sp, add_st)}** | |"
        )
        verdicts.append(
            f"added round-trip latency {name}: +{add_sp:.1f} µs vs stunnel's "
            f"+{add_st:.1f} µs = {add_sp / add_st:.2f}x (target <= 1.0x): "
            f"{'met' if add_sp <= add_st else 'MISSED'}"
        )
        target(
            f"added round-trip latency {name}", add_sp / add_st if add_st > 0 else None, 0.8, True
        )
    cu = sp["rtt_cpu_us"]
    L.append(
        f"| relay CPU per round trip (both processes) | - | {cu['stunnel']:.1f} | "
        f"{cu['spokeshare']:.1f} | {ratio(cu['spokeshare'], cu['stunnel'])} | |"
    )
    L.append("")
    cpu_r = cu["spokeshare"] / cu["stunnel"] if cu["stunnel"] else None
    target("relay CPU per 1 KiB round trip (edge + hub)", cpu_r, 0.8, at_most=True)

    c = {p: sp["connect"][p] for p in PATHS}
    L.append(
        f"### New connection to first response byte ({len(c['direct'])} connections, "
        f"one every {plan.connect_gap * 1000:.0f} ms, µs)"
    )
    L.append("")
    L.append("| | direct | stunnel | spokeshare | spokeshare/stunnel | spokeshare/direct |")
    L.append("|---|---|---|---|---|---|")
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        v = {p: pct(c[p], q) for p in PATHS}
        L.append(
            f"| {name} | {v['direct']:.0f} | {v['stunnel']:.0f} | {v['spokeshare']:.0f} | "
            f"{ratio(v['spokeshare'], v['stunnel'])} | {ratio(v['spokeshare'], v['direct'])} |"
        )
        r1 = v["spokeshare"] / v["stunnel"] if v["stunnel"] else None
        target(f"new connection to first response byte {name}", r1, 0.5, at_most=True)
    L.append("")

    mem = res["memory"]
    n = plan.idle_n
    L.append(f"### Memory per idle tunnel, per side (RSS growth / {n}, KiB)")
    L.append("")
    L.append(
        "stunnel has no pool: its idle tunnel is an idle relayed connection (one thread "
        "per connection per side). spokeshare's idle tunnel is a warm-pool TLS connection "
        "(edge to hub); an idle relayed connection is a LAN client connection spliced to "
        "its tunnel (edge) and the tunnel spliced to the backend (hub)."
    )
    L.append("")
    L.append(
        "| | office side | HQ side | spokeshare/stunnel (worse side) | target <= 64 KiB/side |"
    )
    L.append("|---|---|---|---|---|")
    st_rel = mem["stunnel"]["relayed"]
    st_worst = max(st_rel.values())
    thr = mem["stunnel"]["threads"]
    L.append(
        f"| stunnel, idle relayed connection ({thr[0]} + {thr[1]} threads) | "
        f"{st_rel['office']:.1f} | {st_rel['hq']:.1f} | 1.00x | "
        f"{'met' if st_worst <= 64 else 'missed'} |"
    )
    rows = (
        ("cli", "spokeshare, uvloop (the CLI)"),
        ("asyncio", "spokeshare, stdlib asyncio (harness)"),
    )
    for loop, label in rows:
        for kind, what in (
            ("pool", "idle warm-pool tunnel"),
            ("relayed", "idle relayed connection"),
        ):
            v = mem[loop][kind]
            worst = max(v.values())
            ok = worst <= 64
            L.append(
                f"| {label}: {what} | {v['office']:.1f} | {v['hq']:.1f} | "
                f"{ratio(worst, st_worst)} | {'met' if ok else 'missed'} |"
            )
            if loop == "cli":
                verdicts.append(
                    f"memory, {what}: edge {v['office']:.1f} KiB, hub "
                    f"{v['hq']:.1f} KiB (target <= 64 KiB per side): "
                    f"{'met' if ok else 'MISSED'}"
                )
    L.append("")
    L.append("Targets (issue 2):")
    L.append("")
    for verdict in verdicts:
        L.append(f"- {verdict}")
    L.append("")
    L.append("Targets (issue 14, relay efficiency):")
    L.append("")
    for verdict in strict:
        L.append(f"- {verdict}")
    return "\n".join(L) + "\n", verdicts


def write_doc(path: Path, body: str) -> None:
    """Replace the generated block in ``path`` (creating the file/section if needed)."""
    replace_block(path, BEGIN, END, f"{BEGIN}\n{body}{END}\n", heading="## Tunnel on loopback")


# -- main ------------------------------------------------------------------------------


@contextlib.contextmanager
def backend(tmp: Path) -> Iterator[int]:
    """The backend (``--serve backend``) as a process of its own, stopped by its PID; its
    port on 127.0.0.1. The listening socket is made here and handed over, so it is ready
    before the process has started."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4096)
    port = int(lsock.getsockname()[1])
    argv = [sys.executable, __file__, "--serve", "backend", "--arg", str(lsock.fileno())]
    try:
        with process(argv, tmp / "backend.log", pass_fds=(lsock.fileno(),)):
            lsock.close()
            yield port
    finally:
        lsock.close()


def run(
    plan: Plan, write: Path | None, json_out: Path | None, keep: bool, only: str | None = None
) -> int:
    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if not os.path.exists(STUNNEL):
        say(f"bench: {STUNNEL} not found (Debian package stunnel4)")
        return 2
    facts = {**machine_facts(), "uvloop": importlib.metadata.version("uvloop")}
    res: dict[str, Any] = {
        "plan": dataclasses.asdict(plan),
        "facts": facts,
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    load0 = os.getloadavg()[0]
    tmpdir = tempfile.mkdtemp(prefix="spokeshare-bench-")
    tmp = Path(tmpdir)
    try:
        with backend(tmp) as backend_port:
            say(f"bench: {plan.name} plan; speed (direct, stunnel, spokeshare)")
            res["speed"] = measure_speed(tmp, plan, backend_port, say, only)
            if only is not None:
                return _finish_partial(res, load0, json_out)
            say("bench: memory, stunnel")
            res["memory"] = {"stunnel": measure_stunnel_memory(tmp, plan, backend_port)}
            for loop in ("cli", "asyncio"):
                say(f"bench: memory, spokeshare on {loop}")
                res["memory"][loop] = measure_spokeshare_memory(tmp, plan, backend_port, loop)
    finally:
        if keep:
            say(f"bench: logs kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    res["load"] = (load0, os.getloadavg()[0])
    body, verdicts = render(facts, plan, res)
    print(body)
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))
    if write:
        write_doc(write, body)
        say(f"bench: wrote {write}")
    return 0


def _finish_partial(res: dict[str, Any], load0: float, json_out: Path | None) -> int:
    res["load"] = (load0, os.getloadavg()[0])
    print(summary(res))
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = loopback_parser(
        __doc__.split("\n\n")[0] if __doc__ else None, "smaller sizes (about a minute)"
    )
    p.add_argument(
        "--hub-workers",
        type=int,
        default=1,
        metavar="N",
        help="run the hub as N worker processes for the speed measures",
    )
    p.add_argument(
        "--only",
        choices=("rtt", "bulk", "connect"),
        help="measure only the 1 KiB round trip and its relay CPU (rtt), only bulk "
        "throughput (bulk) or only new connection to first byte (connect), print a "
        "plain summary; cannot be combined with --write",
    )
    p.add_argument("--serve", choices=("backend", "hub", "edge"), help=argparse.SUPPRESS)
    p.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help=argparse.SUPPRESS
    )
    p.add_argument("--arg", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve == "backend":
        serve_backend(int(a.arg))
        return 0
    if a.serve:
        serve_spokeshare(a.serve, a.loop, a.arg)
        return 0
    plan = PLANS["smoke" if a.smoke else "quick" if a.quick else "full"]
    plan = dataclasses.replace(plan, hub_workers=a.hub_workers)
    if a.only and a.write:
        p.error("--only measures part of the table: --write needs a full run")
    return run(
        plan,
        Path(a.write) if a.write else None,
        Path(a.json) if a.json else None,
        a.keep,
        a.only,
    )


if __name__ == "__main__":
    sys.exit(main())
