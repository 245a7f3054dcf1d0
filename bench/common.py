"""What the benchmarks share: processes stopped by PID, timing statistics, /proc readings,
the stunnel pair's certificates and configuration, the machine description every table
names, and the generated blocks of docs/benchmarks.md.

Used by :mod:`bench.tunnel` (loopback), :mod:`bench.capacity` (one hub's capacity, on
loopback) and :mod:`bench.wan` (across the lab's WAN). Nothing here is imported by the
hub or the edge.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing as mp
import os
import platform
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: The checkout's root (bench/ is part of the source tree, not of the installed package).
ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
STUNNEL = "/usr/bin/stunnel4"


def say(msg: str) -> None:
    """A progress line on stderr (the tables go to stdout or the docs)."""
    print(msg, file=sys.stderr, flush=True)


# -- sockets ---------------------------------------------------------------------------


def recv_exact(s: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``s``; ConnectionError if it closes first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = s.recv_into(view[got:])
        if not k:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (read from /proc, no connection)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(
            line.split()[1] == want and line.split()[3] == "0A" for line in f.readlines()[1:]
        )


# -- statistics ------------------------------------------------------------------------


def pct(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank; ValueError when empty."""
    if not samples:
        raise ValueError("no samples")
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``1.23x``; ``-`` when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


# -- processes (by PID) ------------------------------------------------------------------


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``cond`` every 20 ms until it returns something true; RuntimeError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def process(
    argv: list[str], log: Path, pass_fds: tuple[int, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session, output to ``log``, run from the checkout's root;
    stopped by its PID on exit."""
    with open(log, "ab") as out:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=pass_fds,
            cwd=ROOT,
        )
    try:
        yield p
    finally:
        stop(p)


def stop(p: subprocess.Popen[bytes]) -> None:
    """SIGTERM to ``p``'s PID, SIGKILL if it has not exited 10 s later."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def check_alive(p: subprocess.Popen[bytes], what: str, log: Path) -> bool:
    """True while ``p`` runs (to chain with ``and``); RuntimeError with its log's end once
    it has exited."""
    if p.poll() is not None:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{what} exited with {p.returncode}; its log ends:\n{tail}")
    return True


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a whole process (all its threads, live and exited)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class WorkerRun:
    """What :func:`fork_workers` gathered: each worker's result tuple (without its
    ``"ok"``), the wall time from the start signal to the last result, and the CPU
    seconds each watched process spent meanwhile."""

    results: list[tuple[Any, ...]]
    wall: float
    cpu: list[float]


def fork_workers(
    target: Callable[..., None], args: tuple[Any, ...], workers: int, pids: list[int], what: str
) -> WorkerRun:
    """Run ``target(*args, barrier, queue)`` in ``workers`` forked processes, released
    together by the barrier; each puts ``("ok", ...)`` or ``("error", text)`` on the queue.
    RuntimeError naming ``what`` if any failed. Workers still alive at the end are
    killed by PID."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(workers + 1)
    q = ctx.SimpleQueue()
    procs = [ctx.Process(target=target, args=(*args, barrier, q)) for _ in range(workers)]
    try:
        for p in procs:
            p.start()
        barrier.wait(60)
        cpu0 = [cpu_seconds(pid) for pid in pids]
        t0 = time.perf_counter()
        out = [q.get() for _ in procs]
        wall = time.perf_counter() - t0
        cpu1 = [cpu_seconds(pid) for pid in pids]
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGKILL)
                p.join(5)
    errors = [o[1] for o in out if o[0] != "ok"]
    if errors:
        raise RuntimeError(f"{what}: {errors[0]}")
    cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    return WorkerRun([tuple(o[1:]) for o in out], wall, cpu)


# -- the machine -----------------------------------------------------------------------


def tool_version(argv: list[str], pattern: str) -> str:
    """The first match of ``pattern`` in what ``argv`` prints; ``?`` if it cannot run."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(pattern, p.stdout + p.stderr)
    return m.group(0) if m else "?"


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def machine_facts() -> dict[str, str]:
    """Which machine a table comes from: CPU model (/proc/cpuinfo), cores, memory, kernel,
    Python and its OpenSSL, stunnel and its OpenSSL."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": f"{mem / (1 << 30):.1f} GiB",
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "OpenSSL (Python)": ssl.OPENSSL_VERSION,
        "stunnel": tool_version([STUNNEL, "-version"], r"stunnel \S+"),
        "OpenSSL (stunnel)": tool_version([STUNNEL, "-version"], r"OpenSSL \S+"),
    }


# -- stunnel -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StunnelService:
    """One service of a stunnel pair: the office side accepts plain TCP on
    ``office_accept`` and connects with TLS to ``hq_accept``, where the HQ side accepts
    and connects in plain TCP to ``backend`` (each HOST:PORT)."""

    name: str
    office_accept: str
    hq_accept: str
    backend: str


def write_stunnel_pki(d: Path, hub_name: str, hub_hosts: list[str], office: str) -> None:
    """A throwaway CA (two days) and ECDSA P-256 certificates for HQ's side (``hub_name``
    and ``hub_hosts``) and the office's, as ``ca.crt``, ``hq.crt``/``hq.key`` and
    ``office.crt``/``office.key`` in ``d``."""
    from spokeshare import pki

    d.mkdir(parents=True, exist_ok=True)
    ca = pki.make_ca("stunnel bench CA", days=2)
    hq = pki.issue_hub(ca, hub_name, hub_hosts, days=2)
    office_cert = pki.issue_office(ca, office, days=2)
    pki.write_public(d / "ca.crt", pki.cert_pem(ca.cert))
    for stem, issued in (("hq", hq), ("office", office_cert)):
        pki.write_public(d / f"{stem}.crt", pki.cert_pem(issued.cert))
        pki.write_private(d / f"{stem}.key", pki.key_pem(issued.key))


def stunnel_config(
    d: Path,
    side: str,
    services: Sequence[StunnelService],
    hub_name: str,
    extra_global: Sequence[str] = (),
) -> str:
    """The stunnel configuration of one side (``hq`` or ``office``) of the traditional
    pair: TLS 1.3 only, both sides verified against the CA in ``d`` (``verifyChain``,
    ``requireCert`` at HQ, ``checkHost`` at the office), ``TCP_NODELAY`` both ways
    (stunnel's default, said explicitly), foreground, no pid file, no syslog."""
    if side not in ("hq", "office"):
        raise ValueError(f"side is hq or office, not {side!r}")
    lines = [
        f"; {side} side of the stunnel pair",
        "foreground = yes",
        "pid =",
        "syslog = no",
        "socket = l:TCP_NODELAY=1",
        "socket = r:TCP_NODELAY=1",
        *extra_global,
    ]
    for svc in services:
        lines += ["", f"[{svc.name}]"]
        if side == "hq":
            lines += [f"accept = {svc.hq_accept}", f"connect = {svc.backend}"]
        else:
            lines += ["client = yes", f"accept = {svc.office_accept}", f"connect = {svc.hq_accept}"]
        lines += [
            f"cert = {d}/{side}.crt",
            f"key = {d}/{side}.key",
            f"CAfile = {d}/ca.crt",
            "verifyChain = yes",
            "sslVersionMin = TLSv1.3",
            "sslVersionMax = TLSv1.3",
            "requireCert = yes" if side == "hq" else f"checkHost = {hub_name}",
        ]
    return "\n".join(lines) + "\n"


# -- docs/benchmarks.md ------------------------------------------------------------------


def replace_block(path: Path, begin: str, end: str, block: str, heading: str = "") -> None:
    """Put ``block`` (which starts with ``begin`` and ends with ``end``) in ``path`` in place
    of the text between the same markers; without them, after ``heading`` (a line of the
    file) if given and present, else at the end. The rest of the file is kept; the file
    is created (``# Benchmarks``) if missing."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    block = block.rstrip("\n")
    start, stop_at = text.find(begin), text.find(end)
    if start != -1 and stop_at > start:
        text = text[:start] + block + text[stop_at + len(end) :]
    elif heading and f"\n{heading}\n" in f"\n{text}":
        head, rest = f"\n{text}".split(f"\n{heading}\n", 1)
        text = f"{head}\n{heading}\n\n{block}\n{rest}"[1:]
    else:
        if heading:
            block = f"{heading}\n\n{block}"
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def loopback_parser(description: str | None, quick_help: str) -> argparse.ArgumentParser:
    """The options the loopback benchmarks share: ``--quick``/``--smoke``, ``--write
    [FILE]`` (default docs/benchmarks.md), ``--json FILE``, ``--keep``."""
    p = argparse.ArgumentParser(description=description)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help=quick_help)
    size.add_argument("--smoke", action="store_true", help="tiny sizes: check the machinery")
    p.add_argument(
        "--write",
        nargs="?",
        const=str(ROOT / "docs" / "benchmarks.md"),
        metavar="FILE",
        help="update the generated section of FILE (default docs/benchmarks.md)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    return p
