#!/usr/bin/env python3
"""One hub's capacity on loopback: idle tunnels and their memory, stream opens per second
while holding them (against a stunnel pair), and 10 vs 1,000 enrolled offices.

Usage (from anywhere; root is fine, nothing privileged is needed)::

    .venv/bin/python bench/capacity.py            # full: 10,000 idle tunnels, 1,000 offices
    .venv/bin/python bench/capacity.py --quick    # under 2 minutes: 1,000 tunnels
    .venv/bin/python bench/capacity.py --smoke    # tiny sizes: checks the machinery only
    .venv/bin/python bench/capacity.py --write    # also replace the block in docs/benchmarks.md
    .venv/bin/python bench/capacity.py --hubs 1,2,3   # instead: 1, 2, 3 hubs side by side

What is measured (issue 14's hub capacity targets), all on 127.0.0.1, each process
started here in its own session and stopped by its PID:

``idle``
    One hub (``spokeshare hub``, the CLI) and several real edges (``spokeshare edge``), each
    an office of its own whose warm pool is raised to ``min_idle = max_idle =`` its share
    of the total, so that no office passes the hub's ``limits.max_tunnels_per_office``
    (4,096). The hub's RSS is read before the first edge and once every pool is full; the
    growth over the tunnels it holds is given per 1,000 tunnels. The stunnel pair has no
    pool: its nearest equivalent, idle relayed connections (a thread each per side), is
    measured with up to 1,000 of them and given per 1,000 too.
``opens``
    While the hub holds those idle tunnels: ``clients`` processes, each looping connect,
    a 16-byte echo through the relay to a backend, close, for a fixed time; through one
    more edge (its pool at the defaults) and through the stunnel pair, one after the other.
    Opens per second, and CPU of each side read from /proc: opens per second per hub core
    is opens / the hub's CPU seconds. With ``py-spy`` installed (the dev extra), a further
    window is profiled and the hub's top functions listed (not during the measured window).
``offices``
    A deployment with 10, then 1,000 enrolled offices: the time of ``spokeshare office
    add`` (the CLI, a new process each, so Python's start is in it; ``spokeshare --version``
    is given as that floor), of ``office list``, and the TLS handshakes per second the
    hub completes (its own counter in its status file) from client processes that
    connect with an office's certificate and close after the handshake.

``--hubs 1,2,3`` (instead of the above; its own block in docs/benchmarks.md)
    For each count N in turn: one deployment directory whose bundles list N hubs, each
    a ``spokeshare hub`` process on its own address (127.0.0.2, .3, ...) with its own
    hub.toml, as docs/scale-out.md's hub hosts; the same offices (real edges, each its
    own office, each spreading its warm pool over the N hubs) and the same load: the
    tunnels each hub holds and its RSS, then client processes looping opens over all
    the edges for a fixed window, with the CPU of every hub and edge and the machine's
    busy cores over it, and each hub's own stream and handshake counters. On a machine
    with fewer cores than processes, the hubs share its cores: per hub core-second is
    the figure to compare, the total rate measures the machine. Full: 8 offices of
    1,250 tunnels (10,000 in all), 16 clients, 20 s, about 4 minutes; ``--quick``: 4 of
    250, 16 clients, 5 s, about 1 minute.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import importlib.metadata
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    # Run as a file (python bench/capacity.py): the bench package is this checkout's.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import tunnel  # noqa: E402
from bench.common import (  # noqa: E402
    ROOT,
    STUNNEL,
    check_alive,
    cpu_seconds,
    fork_workers,
    free_port,
    listening,
    loopback_parser,
    machine_facts,
    median,
    process,
    ratio,
    recv_exact,
    replace_block,
    rss_kib,
    say,
    wait_until,
)

BEGIN = "<!-- bench/capacity.py: generated section begins -->"
END = "<!-- bench/capacity.py: generated section ends -->"
HEADING = "## Hub capacity on loopback"
HUBS_BEGIN = "<!-- bench/capacity.py --hubs: generated section begins -->"
HUBS_END = "<!-- bench/capacity.py --hubs: generated section ends -->"
ECHO = 16  # bytes echoed per opened stream
PY_SPY = Path(sys.executable).parent / "py-spy"


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    idle_tunnels: int  # idle tunnels the hub holds (all edges together)
    per_edge: int  # of which one edge (office) holds at most this many
    stunnel_idle: int  # idle relayed connections through stunnel
    clients: int  # processes looping connect, echo, close
    opens_s: float  # seconds each opens window lasts
    offices: tuple[int, ...]  # registry sizes compared
    add_samples: int  # CLI ``office add`` runs timed at each size
    handshake_clients: int
    handshake_s: float
    profile_s: float  # py-spy window on the hub (0: none)


PLANS = {
    "full": Plan("full", 10_000, 2_500, 1_000, 16, 20.0, (10, 1_000), 5, 4, 10.0, 10.0),
    "quick": Plan("quick", 1_000, 500, 200, 16, 6.0, (10, 1_000), 2, 4, 4.0, 4.0),
    "smoke": Plan("smoke", 8, 4, 4, 2, 1.0, (2, 4), 1, 1, 1.0, 0.0),
}


# -- the deployment ----------------------------------------------------------------------


def enrol(dep: tunnel.Deployment, names: list[str]) -> list[float]:
    """Enrol ``names`` in process (the enrollment module ``office add`` runs); the
    seconds each took. Bundles go to DIR/bundles/NAME.bundle."""
    from spokeshare import enrollment

    out = dep.dir / "bundles"
    out.mkdir(exist_ok=True)
    took = []
    for name in names:
        t0 = time.perf_counter()
        enrollment.add_office(dep.dir, name, ["bench"], out / f"{name}.bundle")
        took.append(time.perf_counter() - t0)
    return took


def bundle_of(dep: tunnel.Deployment, office: str) -> Path:
    return dep.dir / "bundles" / f"{office}.bundle"


def offices_status(dep: tunnel.Deployment) -> dict[str, Any]:
    st = tunnel.hub_status(dep, 0) or {}
    offices = st.get("offices", {})
    return offices if isinstance(offices, dict) else {}


def pools_full(deps: list[tunnel.Deployment], want: dict[str, int]) -> bool:
    """Each office ``o`` of ``want`` has its control channel on one of the hubs ``deps``
    and holds ``want[o]`` idle tunnels over them all, spread so that each hub has its
    even share less one (and at least one when there are as many tunnels as hubs)."""
    per_hub = [offices_status(d) for d in deps]
    for o, n in want.items():
        idle = [int(h.get(o, {}).get("idle_tunnels", 0)) for h in per_hub]
        floor = max(1 if n >= len(deps) else 0, n // len(deps) - 1)
        connected = any(h.get(o, {}).get("connected") for h in per_hub)
        if not connected or sum(idle) < n or min(idle) < floor:
            return False
    return True


@dataclasses.dataclass
class Edge:
    office: str
    port: int
    pid: int


@contextlib.contextmanager
def edge(
    tmp: Path,
    dep: tunnel.Deployment,
    office: str,
    pool: int | None,
    reuse: bool = True,
    spare: int = 0,
) -> Iterator[Edge]:
    """``spokeshare edge`` for ``office`` (its own state dir); ``pool`` tunnels idle
    (``min_idle = pool``, ``max_idle = pool + spare``), or the defaults when None;
    ``reuse`` False sets ``[pool] reuse = false`` (one stream per tunnel, as before
    sequential reuse)."""
    d = tmp / f"edge-{office}"
    d.mkdir(exist_ok=True)
    port = free_port()
    cfg = tunnel.edge_toml(
        d, dataclasses.replace(dep, bundle=bundle_of(dep, office)), port, 4, office
    )
    if pool is not None:
        text = cfg.read_text()
        start = text.index("[pool]")
        end = text.find("\n[", start + 1)
        tail = text[end:] if end != -1 else "\n"
        cfg.write_text(
            text[:start]
            + f"[pool]\nmin_idle = {pool}\nmax_idle = {pool + spare}\nmax_age = 3600\n"
            + tail
        )
    if not reuse:
        cfg.write_text(cfg.read_text().replace("[pool]\n", "[pool]\nreuse = false\n", 1))
    log = tmp / f"edge-{office}.log"
    with process([*tunnel.spokeshare_cmd(), "edge", "--config", str(cfg)], log) as p:
        wait_until(
            lambda: check_alive(p, f"edge {office}", log) and listening(port),
            30,
            f"edge {office} to listen",
        )
        yield Edge(office, port, p.pid)


@contextlib.contextmanager
def hub(tmp: Path, dep: tunnel.Deployment, tag: str, config: Path | None = None) -> Iterator[int]:
    """``spokeshare hub --dir`` the deployment (``--config`` one hub's own hub.toml when
    given); its PID once it has written a status of its own, which it does only after
    binding its listeners."""
    log = tmp / f"hub-{tag}.log"
    argv = [*tunnel.spokeshare_cmd(), "hub", "--dir", str(dep.dir)]
    if config is not None:
        argv += ["--config", str(config)]
    with process(argv, log) as p:
        wait_until(
            lambda: (
                check_alive(p, f"hub {tag}", log)
                and (tunnel.hub_status(dep, p.pid) or {}).get("pid") == p.pid
            ),
            30,
            f"hub {tag} to listen",
        )
        yield p.pid


def deployment(tmp: Path, backend_port: int, idle_minutes: float = 60) -> tunnel.Deployment:
    """``spokeshare init`` + office ``bench``; tunnels may idle ``idle_minutes`` at the hub."""
    dep = tunnel.make_deployment(tmp, backend_port)
    long_idle(dep.dir / "hub.toml", idle_minutes)
    return dep


def long_idle(toml: Path, idle_minutes: float) -> None:
    """Let tunnels idle ``idle_minutes`` at the hub of ``toml`` (``[limits]
    idle_timeout``), so that none is replaced while measured."""
    text = toml.read_text()
    limits = f"idle_timeout = {idle_minutes * 60:.0f}\n"
    if "[limits]" in text:
        text = text.replace("[limits]\n", f"[limits]\n{limits}")
    else:
        text = text.rstrip("\n") + f"\n\n[limits]\n{limits}"
    toml.write_text(text)


# -- load generators ---------------------------------------------------------------------


def _open_loop(ports: tuple[int, ...], seconds: float, barrier: Any, q: Any) -> None:
    """Connect, 16-byte echo through the backend's ``E``, close; until ``seconds`` pass.
    Each connection to the next of ``ports`` in turn (from one that depends on the PID,
    so that clients started together spread over them)."""
    os.setsid()
    msg = tunnel.REQ.pack(b"E", 0)
    payload = os.urandom(ECHO)
    n = failed = 0
    first = os.getpid()
    try:
        barrier.wait(60)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            port = ports[(first + n + failed) % len(ports)]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    s.sendall(msg + payload)
                    if recv_exact(s, ECHO) != payload:
                        raise ConnectionError("echo answered other bytes")
                n += 1
            except OSError:
                failed += 1
        q.put(("ok", n, failed))
    except BaseException as exc:  # reported to the parent, which raises it
        q.put(("error", repr(exc), 0))


def _handshake_loop(port: int, bundles: list[str], seconds: float, barrier: Any, q: Any) -> None:
    """TLS handshakes with the offices' certificates (in turn) to the hub; close each."""
    from spokeshare import bundle
    from spokeshare.tunnel import tls

    os.setsid()
    try:
        ctxs = []
        for path in bundles:
            b = bundle.read(Path(path))
            ctxs.append((tls.client_context(b.ca_pem, b.cert_pem, b.key_pem), b.hub_name))
        n = failed = 0
        barrier.wait(60)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ctx, name = ctxs[n % len(ctxs)]
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                with ctx.wrap_socket(raw, server_hostname=name):
                    pass
                n += 1
            except (OSError, ssl.SSLError):
                failed += 1
        q.put(("ok", n, failed))
    except BaseException as exc:  # reported to the parent, which raises it
        q.put(("error", repr(exc), 0))


def load(
    target: Callable[..., None], args: tuple[Any, ...], workers: int, pids: list[int]
) -> dict[str, Any]:
    """``workers`` processes running ``target``; their counts summed, with the wall time
    and the CPU seconds of ``pids`` over the same window."""
    run = fork_workers(target, args, workers, pids, "load generator")
    done = sum(r[0] for r in run.results)
    return {
        "count": done,
        "failed": sum(r[1] for r in run.results),
        "wall": run.wall,
        "per_s": done / run.wall,
        "cpu": run.cpu,
    }


# -- py-spy --------------------------------------------------------------------------------


def profiled(
    pid: int, seconds: float, out: Path, during: Callable[[], object]
) -> dict[str, Any] | None:
    """py-spy on ``pid`` for ``seconds`` while ``during()`` runs: the functions where it
    spent most samples (self), and the share inclusive of ``do_handshake``; None without
    py-spy."""
    if not PY_SPY.exists() or seconds <= 0:
        return None
    argv = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(max(1, seconds))),
            "--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking"]  # fmt: skip
    spy = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        during()
        text, _ = spy.communicate(timeout=seconds + 60)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    if spy.returncode != 0 or not out.exists():
        return {"error": text.decode(errors="replace").strip()[-300:]}
    self_n: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        self_n[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            incl[f] += n
    if not total:
        return {"error": "no samples"}
    hs = sum(v for k, v in incl.items() if "do_handshake" in k.split(" ")[0])
    return {
        "samples": total,
        "top_self": [(k, v / total) for k, v in self_n.most_common(8)],
        "do_handshake_inclusive": hs / total,
    }


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` as ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    file = where.split(":")[0].rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({file})" if file else name


# -- the measures --------------------------------------------------------------------------


def measure_idle_and_opens(tmp: Path, plan: Plan, backend_port: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    dep = deployment(tmp / "idle", backend_port)
    n_edges = -(-plan.idle_tunnels // plan.per_edge)
    shares = [
        plan.idle_tunnels // n_edges + (i < plan.idle_tunnels % n_edges) for i in range(n_edges)
    ]
    names = [f"idle{i + 1}" for i in range(n_edges)]
    enrol(dep, [*names, "load", "plain"])
    with contextlib.ExitStack() as stack:
        hub_pid = stack.enter_context(hub(tmp, dep, "idle"))
        time.sleep(1.0)  # the hub's first status write and heap settle
        rss0 = rss_kib(hub_pid)
        t0 = time.monotonic()
        edges = [
            stack.enter_context(edge(tmp, dep, o, s)) for o, s in zip(names, shares, strict=True)
        ]
        want = dict(zip(names, shares, strict=True))
        wait_until(
            functools.partial(pools_full, [dep], want),
            60 + plan.idle_tunnels / 20,
            "every pool full",
        )
        fill_s = time.monotonic() - t0
        time.sleep(2.0)
        held = sum(offices_status(dep)[o].get("idle_tunnels", 0) for o in names)
        rss1 = rss_kib(hub_pid)
        res["idle"] = {
            "tunnels": held,
            "edges": n_edges,
            "per_edge": shares,
            "fill_s": fill_s,
            "hub_rss_kib": [rss0, rss1],
            "hub_kib_per_1000": (rss1 - rss0) / held * 1000,
            "edges_rss_kib": [rss_kib(e.pid) for e in edges],
        }
        say(
            f"  idle: {held} tunnels from {n_edges} edges in {fill_s:.0f} s; hub RSS "
            f"{rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MiB "
            f"({res['idle']['hub_kib_per_1000'] / 1024:.1f} MiB per 1,000)"
        )
        # stream opens while holding them, then through stunnel
        ld = stack.enter_context(edge(tmp, dep, "load", None))
        wait_until(functools.partial(pools_full, [dep], {"load": 4}), 60, "the load edge's pool")
        sp = load(_open_loop, ((ld.port,), plan.opens_s), plan.clients, [ld.pid, hub_pid])
        still = sum(offices_status(dep)[o].get("idle_tunnels", 0) for o in names)
        res["opens_spokeshare"] = {**sp, "idle_held_after": still}
        say(
            f"  opens spokeshare: {sp['per_s']:.0f}/s, {sp['failed']} failed; edge "
            f"{sp['cpu'][0] / sp['wall']:.2f} core, hub {sp['cpu'][1] / sp['wall']:.2f} core"
        )
        # A further window under the same load, profiled (its rate is not reported).
        res["profile"] = profiled(
            hub_pid,
            plan.profile_s,
            tmp / "hub.pyspy",
            functools.partial(load, _open_loop, ((ld.port,), plan.profile_s), plan.clients, []),
        )
        # The same through an edge that does not offer sequential reuse: one stream per
        # tunnel, a full TLS handshake each (what every edge did before reuse).
        pl = stack.enter_context(edge(tmp, dep, "plain", None, reuse=False))
        wait_until(functools.partial(pools_full, [dep], {"plain": 4}), 60, "the plain edge's pool")
        np_ = load(_open_loop, ((pl.port,), plan.opens_s), plan.clients, [pl.pid, hub_pid])
        res["opens_spokeshare_noreuse"] = np_
        say(
            f"  opens spokeshare without reuse: {np_['per_s']:.0f}/s, {np_['failed']} failed; "
            f"edge {np_['cpu'][0] / np_['wall']:.2f} core, "
            f"hub {np_['cpu'][1] / np_['wall']:.2f} core"
        )
    with tunnel.stunnel_pair(tmp, backend_port, "capacity") as st:
        st_res = load(
            _open_loop, ((st.port,), plan.opens_s), plan.clients, [st.office_pid, st.hq_pid]
        )
        res["opens_stunnel"] = st_res
        say(
            f"  opens stunnel: {st_res['per_s']:.0f}/s, {st_res['failed']} failed; office "
            f"{st_res['cpu'][0] / st_res['wall']:.2f} core, "
            f"HQ {st_res['cpu'][1] / st_res['wall']:.2f} core"
        )
        before = rss_kib(st.hq_pid)
        socks = tunnel.hold_connections(st.port, plan.stunnel_idle)
        try:
            time.sleep(1.0)
            after = rss_kib(st.hq_pid)
        finally:
            for s in socks:
                s.close()
        res["idle_stunnel"] = {
            "connections": plan.stunnel_idle,
            "hq_rss_kib": [before, after],
            "hq_kib_per_1000": (after - before) / plan.stunnel_idle * 1000,
        }
    return res


def cli_seconds(argv: list[str]) -> float:
    """Wall seconds of one ``spokeshare`` command (a new process); it must succeed."""
    t0 = time.perf_counter()
    subprocess.run(
        [*tunnel.spokeshare_cmd(), *argv], check=True, stdout=subprocess.DEVNULL, cwd=ROOT
    )
    return time.perf_counter() - t0


def _settled_status(dep: tunnel.Deployment, after: float) -> dict[str, Any] | None:
    """The hub's status written after ``after`` with no handshake in progress (every
    handshake a client completed is then in its counter)."""
    st = tunnel.hub_status(dep, 0)
    if st is None or float(st.get("time", 0.0)) <= after:
        return None
    return st if st.get("handshakes_in_progress", 0) == 0 else None


def handshake_rate(
    dep: tunnel.Deployment, hub_pid: int, plan: Plan, offices: list[str]
) -> dict[str, Any]:
    """TLS handshakes the hub completed per second (the difference of its own counter,
    read from status files written before and after the load) while the clients loop."""

    def count() -> int:
        now = time.time()
        st = wait_until(functools.partial(_settled_status, dep, now), 10, "the hub's status")
        return int(st["handshakes"])

    bundles = [str(bundle_of(dep, o)) for o in offices]
    h0 = count()
    r = load(
        _handshake_loop,
        (dep.hub_port, bundles, plan.handshake_s),
        plan.handshake_clients,
        [hub_pid],
    )
    done = count() - h0
    return {
        "hub_handshakes": done,
        "per_s": done / r["wall"],
        "client_count": r["count"],
        "failed": r["failed"],
        "hub_cpu_s": r["cpu"][0],
        "wall": r["wall"],
    }


def measure_offices(tmp: Path, plan: Plan, backend_port: int) -> dict[str, Any]:
    """For each registry size: CLI ``office add`` (timed), ``office list``, handshakes/s."""
    from spokeshare import enrollment

    res: dict[str, Any] = {"cli_floor_s": median([cli_seconds(["--version"]) for _ in range(3)])}
    dep = deployment(tmp / "offices", backend_port)
    res["sizes"] = {}
    extra = 0
    for size in plan.offices:
        have = len(enrollment.load_registry(dep.dir))
        names = [f"o{i:04d}" for i in range(have, size)]
        took = enrol(dep, names)
        adds = []
        for _ in range(plan.add_samples):
            extra += 1
            name = f"cli{extra:03d}"
            out = tmp / f"{name}.bundle"
            adds.append(
                cli_seconds(
                    [
                        "office",
                        "add",
                        name,
                        "--dir",
                        str(dep.dir),
                        "--services",
                        "bench",
                        "--out",
                        str(out),
                    ]  # fmt: skip
                )
            )
        enrolled = len(enrollment.load_registry(dep.dir))
        with hub(tmp, dep, f"offices-{size}") as hub_pid:
            lists = [cli_seconds(["office", "list", "--dir", str(dep.dir)]) for _ in range(3)]
            hs = handshake_rate(dep, hub_pid, plan, names[-4:] if names else [])
            rss = rss_kib(hub_pid)
        res["sizes"][str(size)] = {
            "enrolled": enrolled,
            "office_add_cli_s": adds,
            "office_add_inprocess_last_s": took[-10:],
            "office_list_cli_s": lists,
            "handshakes": hs,
            "hub_rss_kib": rss,
        }
        say(
            f"  {enrolled} offices: office add {median(adds):.2f} s (CLI), office list "
            f"{median(lists):.2f} s, {hs['per_s']:.0f} handshakes/s at the hub "
            f"({hs['hub_cpu_s'] / hs['wall']:.2f} core)"
        )
    return res


# -- several hubs side by side ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HubsPlan:
    """``--hubs``: the same offices and load against each count of hubs in turn."""

    name: str
    offices: int  # edges, each an office of its own
    pool: int  # min_idle = max_idle of each edge, spread by it over the hubs
    clients: int  # processes looping connect, echo, close over all the edges
    opens_s: float  # seconds the opens window lasts


HUBS_PLANS = {
    "full": HubsPlan("full", 8, 1_250, 16, 20.0),
    "quick": HubsPlan("quick", 4, 250, 16, 5.0),
    "smoke": HubsPlan("smoke", 2, 4, 2, 1.0),
}


def _free_port_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def hubs_deployment(
    tmp: Path, backend_port: int, count: int, idle_minutes: float = 60
) -> list[tunnel.Deployment]:
    """One deployment directory (``tmp``/hq) whose bundles list ``count`` hubs, hub ``i``
    on 127.0.0.(2+i) with its own ``hub-I.toml`` beside the directory (its listen
    address, state directory and ``[hub] name``), as an operator's hub hosts have; each
    hub's view of it (shared directory, own state directory and port)."""
    from spokeshare import config, enrollment

    tmp.mkdir(parents=True, exist_ok=True)
    d = tmp / "hq"
    hosts = [f"127.0.0.{2 + i}" for i in range(count)]
    ports = [_free_port_on(h) for h in hosts]
    enrollment.init(
        d, "hub.bench", [f"{h}:{p}" for h, p in zip(hosts, ports, strict=True)],
        {"bench": f"127.0.0.1:{backend_port}"}, state_dir=tmp / "hq-state",
    )  # fmt: skip
    views = []
    for i, (host, port) in enumerate(zip(hosts, ports, strict=True)):
        state = tmp / f"state-hub{i}"
        text = config.render_hub_toml([(host, port)], {"bench": ("127.0.0.1", backend_port)}, state)
        toml = tmp / f"hub-{i}.toml"
        toml.write_text(text.replace("[hub]\n", f'[hub]\nname = "hub{i}"\n', 1))
        long_idle(toml, idle_minutes)
        views.append(tunnel.Deployment(d, state, d / "bundles" / "none", port))
    return views


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle since boot (/proc/stat, every
    core: user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _hub_counters(dep: tunnel.Deployment, after: float) -> tuple[int, int] | None:
    """The streams the hub has carried in all (its offices' ``streams_total``) and the
    TLS handshakes it has completed, from a status it wrote after ``after`` (unix
    seconds); None until it has."""
    st = tunnel.hub_status(dep, 0)
    if st is None or float(st.get("time", 0.0)) <= after:
        return None
    streams = sum(int(o.get("streams_total", 0)) for o in st.get("offices", {}).values())
    return streams, int(st.get("handshakes", 0))


def hub_counters(deps: list[tunnel.Deployment]) -> list[tuple[int, int]]:
    """:func:`_hub_counters` of each hub, from statuses written from now on."""
    now = time.time()
    return [
        wait_until(functools.partial(_hub_counters, d, now), 10, "the hub's status") for d in deps
    ]


def idle_per_hub(deps: list[tunnel.Deployment], offices: list[str]) -> list[int]:
    """The idle tunnels each hub holds of ``offices``, from its status."""
    out = []
    for d in deps:
        st = offices_status(d)
        out.append(sum(int(st.get(o, {}).get("idle_tunnels", 0)) for o in offices))
    return out


def measure_hub_count(tmp: Path, plan: HubsPlan, count: int, backend_port: int) -> dict[str, Any]:
    """``count`` hubs (real ``spokeshare hub`` processes, one deployment directory) and
    ``plan.offices`` edges (real ``spokeshare edge``, an office each, every bundle
    listing all the hubs) holding ``plan.pool`` tunnels each: what each hub holds and
    its RSS; then ``plan.clients`` processes looping opens over all the edges, with the
    CPU seconds of every hub and edge over the same window."""
    views = hubs_deployment(tmp, backend_port, count)
    names = [f"office{i + 1}" for i in range(plan.offices)]
    enrol(views[0], names)
    with contextlib.ExitStack() as stack:
        pids = [
            stack.enter_context(hub(tmp, v, f"{count}-{i}", tmp / f"hub-{i}.toml"))
            for i, v in enumerate(views)
        ]
        time.sleep(1.0)  # the hubs' heaps settle after their first status write
        rss0 = [rss_kib(p) for p in pids]
        t0 = time.monotonic()
        # max_idle leaves room for every client at once: a tunnel whose stream ended
        # cleanly goes back to the pool (sequential reuse) instead of being closed
        edges = [
            stack.enter_context(edge(tmp, views[0], o, plan.pool, spare=plan.clients))
            for o in names
        ]
        total = plan.offices * plan.pool
        wait_until(
            functools.partial(pools_full, views, dict.fromkeys(names, plan.pool)),
            60 + total / 20,
            f"every pool full over {count} hubs",
        )
        fill_s = time.monotonic() - t0
        idle0, t1 = [cpu_seconds(p) for p in pids], time.monotonic()
        time.sleep(2.0)
        idle_cores = [
            (cpu_seconds(p) - c) / (time.monotonic() - t1) for p, c in zip(pids, idle0, strict=True)
        ]
        held = idle_per_hub(views, names)
        rss1 = [rss_kib(p) for p in pids]
        counters0 = hub_counters(views)
        edge_pids = [e.pid for e in edges]
        busy0, w0 = busy_seconds(), time.monotonic()
        r = load(
            _open_loop,
            (tuple(e.port for e in edges), plan.opens_s),
            plan.clients,
            [*pids, *edge_pids],
        )
        busy = (busy_seconds() - busy0) / (time.monotonic() - w0)
        counted = [
            (b[0] - a[0], b[1] - a[1]) for a, b in zip(counters0, hub_counters(views), strict=True)
        ]
        res = {
            "hubs": count,
            "tunnels": held,
            "fill_s": fill_s,
            "hub_idle_cores": idle_cores,
            "hub_rss_kib": [list(x) for x in zip(rss0, rss1, strict=True)],
            "edges_rss_kib": [rss_kib(p) for p in edge_pids],
            "opens": r["count"],
            "failed": r["failed"],
            "wall": r["wall"],
            "per_s": r["per_s"],
            "hub_cpu_s": r["cpu"][:count],
            "edge_cpu_s": r["cpu"][count:],
            "busy_cores": busy,
            "streams_per_hub": [c[0] for c in counted],
            "handshakes_per_hub": [c[1] for c in counted],
            "idle_held_after": idle_per_hub(views, names),
        }
    hub_cores = sum(res["hub_cpu_s"]) / res["wall"]
    say(
        f"  {count} hub(s): {sum(held)} tunnels ({', '.join(map(str, held))}) in {fill_s:.0f} s; "
        f"{res['per_s']:.0f} opens/s, {res['failed']} failed; hubs {hub_cores:.2f} core, "
        f"edges {sum(res['edge_cpu_s']) / res['wall']:.2f} core"
    )
    return res


def measure_hubs(tmp: Path, plan: HubsPlan, counts: list[int], backend_port: int) -> dict[str, Any]:
    runs = []
    for n in counts:
        say(f"capacity: {n} hub(s), {plan.offices} offices of {plan.pool} tunnels")
        runs.append(measure_hub_count(tmp / f"hubs-{n}", plan, n, backend_port))
    return {"runs": runs}


# -- the report ----------------------------------------------------------------------------


def machine_rows(facts: dict[str, str], res: dict[str, Any]) -> list[str]:
    """The machine table and the load averages at the run's start and end."""
    (a1, a5, a15), (b1, b5, b15) = res["loadavg"]
    return [
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        f"| load average (1 min) at start / end | {a1:.2f} / {b1:.2f} |",
        f"| load average (5, 15 min) at start / end | {a5:.2f}, {a15:.2f} / {b5:.2f}, {b15:.2f} |",
        "",
    ]


def render(facts: dict[str, str], plan: Plan, res: dict[str, Any]) -> str:
    """The generated Markdown block (markers included)."""
    L = [BEGIN, f"Run: `{plan.name}` plan, {res['when']}, {res['elapsed_s'] / 60:.1f} minutes.", ""]
    L += machine_rows(facts, res)
    idle, sti = res["idle"], res["idle_stunnel"]
    L += [
        f"### Idle tunnels held by one hub ({idle['tunnels']:,} from {idle['edges']} edges)",
        "",
        f"Each edge is an office of its own with `min_idle = max_idle = "
        f"{max(idle['per_edge'])}` (below the hub's 4,096 tunnels per office); filling "
        f"every pool took {idle['fill_s']:.0f} s. stunnel has no pool: its figure is idle "
        f"relayed connections ({sti['connections']:,} held), HQ side only.",
        "",
        "| | hub (HQ side) RSS | per 1,000 idle | target |",
        "|---|---|---|---|",
    ]
    r0, r1 = idle["hub_rss_kib"]
    per = idle["hub_kib_per_1000"]
    at_10k = r0 + per * 10
    L.append(
        f"| spokeshare hub | {r0 / 1024:.0f} MiB empty, {r1 / 1024:.0f} MiB holding "
        f"{idle['tunnels']:,} | {per / 1024:.1f} MiB | 10,000 within 1 GiB: "
        f"{at_10k / 1024:.0f} MiB {'(measured)' if idle['tunnels'] >= 10_000 else '(extrapolated)'}"
        f" {'met' if at_10k <= 1024 * 1024 else 'MISSED'} |"
    )
    s0, s1 = sti["hq_rss_kib"]
    L.append(
        f"| stunnel, HQ side | {s0 / 1024:.0f} MiB, {s1 / 1024:.0f} MiB holding "
        f"{sti['connections']:,} | {sti['hq_kib_per_1000'] / 1024:.1f} MiB | |"
    )
    L.append(f"| spokeshare/stunnel | | {ratio(per, sti['hq_kib_per_1000'])} | |")
    edges = idle["edges_rss_kib"]
    L += [
        "",
        f"The edges' RSS holding their pools: {', '.join(f'{e / 1024:.0f}' for e in edges)} MiB.",
        "",
    ]
    sp, st = res["opens_spokeshare"], res["opens_stunnel"]
    L += [
        f"### Stream opens per second while the hub holds them ({plan.clients} clients, "
        f"{plan.opens_s:.0f} s each)",
        "",
        f"Each client loops: connect, {ECHO}-byte echo through the relay to the backend, "
        "close. spokeshare through one more edge with the default pool (`min_idle = 4`, "
        "`max_connecting = 8`): every stream takes a pooled tunnel, which goes back to the "
        "pool when the stream has ended cleanly (sequential reuse, docs/protocol.md); then "
        "through another edge with `[pool] reuse = false`, one stream per tunnel and a "
        "full TLS handshake each (every edge before reuse); the stunnel pair with its "
        "defaults (the office side resumes TLS sessions).",
        "",
        "| | opens/s | failed | office side, cores | HQ side, cores "
        "| opens per HQ-side core-second |",
        "|---|---|---|---|---|---|",
    ]
    per_core: dict[str, float] = {}
    rows = [("stunnel", st), ("spokeshare", sp)]
    nr = res.get("opens_spokeshare_noreuse")
    if nr is not None:
        rows.append(("spokeshare, `reuse = false`", nr))
    for label, r in rows:
        office_c, hq_c = (c / r["wall"] for c in r["cpu"])
        per_core[label] = r["count"] / r["cpu"][1] if r["cpu"][1] else 0.0
        L.append(
            f"| {label} | {r['per_s']:.0f} | {r['failed']} | {office_c:.2f} | {hq_c:.2f} | "
            f"{per_core[label]:.0f} |"
        )
    L.append(
        f"| spokeshare/stunnel | **{ratio(sp['per_s'], st['per_s'])}** | | | | "
        f"**{ratio(per_core['spokeshare'], per_core['stunnel'])}** |"
    )
    if nr is not None:
        off = per_core["spokeshare, `reuse = false`"]
        L.append(
            f"| spokeshare `reuse = false`/stunnel | {ratio(nr['per_s'], st['per_s'])} | | | | "
            f"{ratio(off, per_core['stunnel'])} |"
        )
    L.append("")
    L.append(
        f"Target: at least 1,000 opens per second per hub core: "
        f"{per_core['spokeshare']:.0f} per hub core-second, "
        f"{'met' if per_core['spokeshare'] >= 1000 else 'MISSED'}. Idle tunnels still held "
        f"after the opens: {sp['idle_held_after']:,}."
    )
    prof = res.get("profile")
    if prof and "top_self" in prof:
        L += [
            "",
            f"py-spy on the hub under the same load ({prof['samples']} samples, "
            f"`--nonblocking`): {prof['do_handshake_inclusive'] * 100:.0f}% of samples are "
            "inside `do_handshake`. Top functions by own time (uvloop's own C code, the "
            "polling and socket calls, shows as the frame that runs the loop, "
            "`Runner.run`):",
            "",
            "| function | share of samples |",
            "|---|---|",
            *(f"| `{name}` | {share * 100:.1f}% |" for name, share in prof["top_self"]),
        ]
    elif prof:
        L += ["", f"py-spy failed: {prof.get('error')}"]
    off = res["offices"]
    L += [
        "",
        "### Enrolled offices",
        "",
        f"`office add` and `office list` are the CLI, a new process each; "
        f"`spokeshare --version` alone takes {off['cli_floor_s']:.2f} s here (Python's "
        "start and imports). Handshakes: clients connect with an office's certificate and "
        "close once the handshake is done; the hub's own counter.",
        "",
        "| offices enrolled | office add (CLI, median) "
        "| office add (in process, median of last 10) "
        "| office list (CLI, median of 3) | handshakes/s at the hub | hub cores | "
        "handshakes per hub core-second |",
        "|---|---|---|---|---|---|---|",
    ]
    rates = []
    for _size, v in off["sizes"].items():
        hs = v["handshakes"]
        per_cs = hs["hub_handshakes"] / hs["hub_cpu_s"] if hs["hub_cpu_s"] else 0.0
        rates.append(hs["per_s"])
        inproc = v["office_add_inprocess_last_s"]
        L.append(
            f"| {v['enrolled']:,} | {median(v['office_add_cli_s']):.2f} s | "
            f"{(median(inproc) * 1000 if inproc else 0):.0f} ms | "
            f"{median(v['office_list_cli_s']):.2f} s | {hs['per_s']:.0f} | "
            f"{hs['hub_cpu_s'] / hs['wall']:.2f} | {per_cs:.0f} |"
        )
    if len(rates) >= 2:
        L += ["", f"Handshakes/s, largest registry over smallest: {ratio(rates[-1], rates[0])}."]
    L.append(END)
    return "\n".join(L) + "\n"


def render_hubs(facts: dict[str, str], plan: HubsPlan, res: dict[str, Any]) -> str:
    """The generated Markdown block of ``--hubs`` (its own markers included)."""
    runs = res["hubs"]["runs"]
    counts = ", ".join(str(r["hubs"]) for r in runs)
    L = [
        HUBS_BEGIN,
        f"Run: `{plan.name}` plan, hubs {counts}, {res['when']}, "
        f"{res['elapsed_s'] / 60:.1f} minutes.",
        "",
        *machine_rows(facts, res),
        f"### Tunnels held: {plan.offices} offices of {plan.pool:,} idle tunnels each",
        "",
        f"Each edge has `min_idle = {plan.pool}`, `max_idle = {plan.pool + plan.clients}` "
        "(room for every client at once, so that a tunnel whose stream ended cleanly goes "
        "back to the pool) and spreads its pool over the hubs its bundle lists; each hub's "
        "count is its own status file's. RSS per hub: before the first edge, then holding "
        "the pools. Idle CPU: each hub's over 2 s holding them, no stream open.",
        "",
        "| hubs | tunnels held in all | per hub | hub RSS, empty / holding (MiB, each hub) "
        "| hub RSS per 1,000 tunnels it holds | idle CPU, cores (each hub) | pools filled in |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        held = r["tunnels"]
        rss = r["hub_rss_kib"]
        growth = sum(b - a for a, b in rss) / max(1, sum(held)) * 1000
        L.append(
            f"| {r['hubs']} | {sum(held):,} | {', '.join(f'{h:,}' for h in held)} | "
            f"{', '.join(f'{a / 1024:.0f} / {b / 1024:.0f}' for a, b in rss)} | "
            f"{growth / 1024:.1f} MiB | {', '.join(f'{c:.2f}' for c in r['hub_idle_cores'])} | "
            f"{r['fill_s']:.0f} s |"
        )
    edges = [e for r in runs for e in r["edges_rss_kib"]]
    L += [
        "",
        f"Each edge's RSS holding its pool: {min(edges) / 1024:.0f} to "
        f"{max(edges) / 1024:.0f} MiB.",
        "",
        f"### Stream opens over all the offices ({plan.clients} clients, "
        f"{plan.opens_s:.0f} s per count of hubs)",
        "",
        f"Each client loops: connect to the next edge in turn, {ECHO}-byte echo through the "
        "relay to the backend, close. CPU from /proc over the same window, of every hub and "
        "every edge; the machine's busy cores from /proc/stat (clients and backend "
        "included). Opens per hub core-second: all the opens / the hubs' CPU seconds in all. "
        "Opens and TLS handshakes per hub: the difference of each hub's own counters "
        "(status files written before and after the window, so a second either side).",
        "",
        "| hubs | opens/s in all | failed | each hub, cores | hubs in all, cores "
        "| edges in all, cores | machine busy, cores | opens per hub core-second "
        "| opens carried, each hub | handshakes, each hub | idle tunnels after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        wall = r["wall"]
        hub_cs = sum(r["hub_cpu_s"])
        per_core = r["opens"] / hub_cs if hub_cs else 0.0
        r["per_hub_core_s"] = per_core
        L.append(
            f"| {r['hubs']} | {r['per_s']:.0f} | {r['failed']} | "
            f"{', '.join(f'{c / wall:.2f}' for c in r['hub_cpu_s'])} | {hub_cs / wall:.2f} | "
            f"{sum(r['edge_cpu_s']) / wall:.2f} | {r['busy_cores']:.2f} | {per_core:.0f} | "
            f"{', '.join(f'{n:,}' for n in r['streams_per_hub'])} | "
            f"{', '.join(f'{n:,}' for n in r['handshakes_per_hub'])} | "
            f"{sum(r['idle_held_after']):,} |"
        )
    one = next((r for r in runs if r["hubs"] == 1), None)
    if one is not None:
        for r in runs:
            if r is not one:
                L.append(
                    f"| {r['hubs']} / 1 | **{ratio(r['per_s'], one['per_s'])}** | | | "
                    f"{ratio(sum(r['hub_cpu_s']), sum(one['hub_cpu_s']))} | | | "
                    f"**{ratio(r['per_hub_core_s'], one['per_hub_core_s'])}** | | | |"
                )
    L.append(HUBS_END)
    return "\n".join(L) + "\n"


def code_version() -> str:
    """The commit of the spokeshare code the hub and edges run, ``+changes`` when its
    spokeshare/ differs from that commit."""
    import spokeshare

    src = Path(spokeshare.__file__).resolve().parent.parent
    git = ["git", "-C", str(src)]
    rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if rev.returncode != 0:
        return f"{src} (not a git checkout)"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "spokeshare"], capture_output=True, text=True
    ).stdout.strip()
    return f"commit {rev.stdout.strip()}" + (" +changes in spokeshare/" if dirty else "")


def run(plan: Plan, write: Path | None, json_out: Path | None, keep: bool) -> int:
    if not os.path.exists(STUNNEL):
        say(f"capacity: {STUNNEL} not found (Debian package stunnel4)")
        return 2

    def measure(tmp: Path, backend_port: int, res: dict[str, Any]) -> None:
        say(f"capacity: {plan.name} plan; idle tunnels and stream opens")
        res.update(measure_idle_and_opens(tmp, plan, backend_port))
        say("capacity: enrolled offices")
        res["offices"] = measure_offices(tmp, plan, backend_port)

    body = functools.partial(render, plan=plan)
    return session(plan, measure, body, (BEGIN, END, HEADING), write, json_out, keep)


def run_hubs(
    plan: HubsPlan, counts: list[int], write: Path | None, json_out: Path | None, keep: bool
) -> int:
    """``--hubs``: :func:`measure_hubs` for each of ``counts`` in one run."""

    def measure(tmp: Path, backend_port: int, res: dict[str, Any]) -> None:
        res["hubs"] = measure_hubs(tmp, plan, counts, backend_port)

    body = functools.partial(render_hubs, plan=plan)
    return session(plan, measure, body, (HUBS_BEGIN, HUBS_END, HEADING), write, json_out, keep)


def session(
    plan: Plan | HubsPlan,
    measure: Callable[[Path, int, dict[str, Any]], None],
    body: Callable[..., str],
    block: tuple[str, str, str],
    write: Path | None,
    json_out: Path | None,
    keep: bool,
) -> int:
    """What every run does around its measures: the machine, the load averages at start
    and end, a temporary directory and the backend; then ``body(facts, res=...)``
    printed, the raw results as JSON, and the block (``begin, end, heading``) written."""
    facts = {
        **machine_facts(),
        "uvloop": importlib.metadata.version("uvloop"),
        "spokeshare measured": code_version(),
    }
    res: dict[str, Any] = {
        "plan": dataclasses.asdict(plan),
        "facts": facts,
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    load0 = os.getloadavg()
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="spokeshare-capacity-"))
    try:
        with tunnel.backend(tmp) as backend_port:
            measure(tmp, backend_port, res)
    finally:
        if keep:
            say(f"capacity: logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    res["elapsed_s"] = time.monotonic() - t0
    res["loadavg"] = [load0, os.getloadavg()]
    res["load"] = (load0[0], res["loadavg"][1][0])
    text = body(facts, res=res)
    print(text)
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))
    if write:
        replace_block(write, block[0], block[1], text, heading=block[2])
        say(f"capacity: wrote {write}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = loopback_parser(
        __doc__.split("\n\n")[0] if __doc__ else None, "1,000 idle tunnels (under 2 minutes)"
    )
    p.add_argument(
        "--hubs",
        metavar="N,N,...",
        help="instead: the same offices and load against each count of hubs in turn, "
        "side by side (e.g. 1,2,3)",
    )
    a = p.parse_args(argv)
    size = "smoke" if a.smoke else "quick" if a.quick else "full"
    write = Path(a.write) if a.write else None
    json_out = Path(a.json) if a.json else None
    if a.hubs is not None:
        try:
            counts = [int(n) for n in a.hubs.split(",")]
        except ValueError:
            counts = []
        if not counts or not all(1 <= n <= 8 for n in counts):
            p.error(f"--hubs takes counts of hubs from 1 to 8, comma separated, not {a.hubs!r}")
        return run_hubs(HUBS_PLANS[size], counts, write, json_out, a.keep)
    return run(PLANS[size], write, json_out, a.keep)


if __name__ == "__main__":
    sys.exit(main())
