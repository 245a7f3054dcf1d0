"""``spokeshare bench wan``: what an office feels across the WAN, against stunnel and direct.

One lab (:class:`~spokeshare.lab.topology.Lab`, office ``nyc``, ``direct_route=True``)
and, side by side in the same run, over the same emulated link, three ways for
``nyc-pc`` to reach HQ's ``smbd``:

``direct``
    SMB straight to ``198.19.0.1:445``: the edge host only forwards IP. No encryption;
    the floor any tunnel can only add to.
``stunnel``
    The traditional answer: ``stunnel4`` in client mode on ``nyc-edge`` (plain TCP in on
    ``198.18.11.1:4450``, TLS out) and in server mode in ``hq`` (TLS in on
    ``198.19.0.1:4451``, plain TCP to ``198.19.0.1:445``). TLS 1.3 only, ECDSA P-256
    certificates from a throwaway CA, verification on both sides (``verifyChain``,
    ``requireCert`` at HQ, ``checkHost`` at the office), ``TCP_NODELAY`` on every socket.
``spokeshare``
    The edge on ``198.18.11.1:445`` and the hub, both started by the lab's hooks
    (:mod:`spokeshare.lab.spokes`) with the real CLI; the edge keeps its warm pool.

Each contender also carries a TCP echo service (a small threaded server run in
``hq``): direct on ``198.19.0.1:7007``, stunnel through a second service pair, and
spokeshare through a hub service ``echo`` that the edge presents on a second LAN
address (``GLOBAL-ECHO``, ``198.18.11.4:445``).

The link is changed live (:meth:`Lab.wan`) between measures, in ascending RTT so that
no established connection sees its RTT jump by more than the kernel's minimum RTO.

What is measured (:data:`MEASURES`):

- new TCP connection to the first byte of the answer to an SMB2 NEGOTIATE written right
  after connect (MS-SMB2 2.2.3), and the wall time of ``smbclient //H/share -N -c ls``,
  both also in RTTs;
- round trips of 1 KiB request/response on an established connection, and what they
  add over the link's own RTT;
- ``smbclient`` get and put of one large file, MB/s: unlimited link, 100 Mbit/s, and
  0.5 % loss; every transfer is checked byte for byte;
- a folder of small files: ``mput`` to HQ, list it, ``mget`` it back (checked);
- 50 ``smbclient`` sessions started at once, a small get each: total time, failures.

Probes that must run in ``nyc-pc`` (the SMB2 first-answer timer, the echo round trips,
the raw TCP ceiling) are this module run as a program in that namespace
(``python bench/wan.py connect|echo|sink ...``); they print one JSON line.

Only one lab can exist on a machine (host names are fixed), so :func:`bench_lab` holds
an exclusive ``flock`` on :data:`LOCK_PATH` from before ``up()`` until after ``down()``,
and waits for a lab built by someone not using the lock to go away.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    # Run as a file (python bench/wan.py, the probes in the lab's hosts): the bench
    # package is this checkout's.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    MiB,
    StunnelService,
    machine_facts,
    pct,
    ratio,
    recv_exact,
    replace_block,
    rss_kib,
    say,
    stunnel_config,
    tool_version,
    write_stunnel_pki,
)
from spokeshare.errors import SpokeshareError  # noqa: E402
from spokeshare.lab import netns, services, spokes  # noqa: E402
from spokeshare.lab.netns import LabError  # noqa: E402
from spokeshare.lab.topology import HQ, Lab  # noqa: E402
from spokeshare.lab.wire import LinkSettings  # noqa: E402

OFFICE = "nyc"
PC = f"{OFFICE}-pc"
EDGE = f"{OFFICE}-edge"
HQ_IP = "198.19.0.1"
EDGE_IP = "198.18.11.1"
ECHO_NAME_IP = "198.18.11.4"
SHARE = services.SHARE
RTTS: tuple[float, ...] = (0.0, 50.0, 100.0, 200.0)
CONTENDERS = ("direct", "stunnel", "spokeshare")

#: HQ-side helper servers (this module, ``serve``): echo, and a sink for the raw ceiling.
ECHO_PORT = 7007
SINK_PORT = 7010
#: stunnel: office side accepts SMB on 4450 and echo on 7008; HQ side on 4451 and 7009.
STUNNEL_SMB_LAN, STUNNEL_SMB_HQ = 4450, 4451
STUNNEL_ECHO_LAN, STUNNEL_ECHO_HQ = 7008, 7009
STUNNEL_HUB_NAME = "hq.stunnel.lab"
STUNNEL = "stunnel4"

#: Beside the lab's owner file (topology.OWNER_FILE): machine-wide on a machine, and
#: private to each lab test worker (tests/lab/netns-worker mounts its own /run/spokeshare).
LOCK_PATH = Path("/run/spokeshare/lab.lock")
#: This file, run in the lab's hosts for the probes and the HQ helpers.
SCRIPT = Path(__file__).resolve()
#: How long to wait for a lab built without the lock to disappear.
FOREIGN_LAB_WAIT = 600.0
MSG = 1024
BEGIN = "<!-- wan:begin -->"
END = "<!-- wan:end -->"

EDGE_NAMES: list[spokes.NameSpec] = [
    (spokes.VIRTUAL_NAME, "smb", ""),
    ("GLOBAL-ECHO", "echo", ECHO_NAME_IP),
]


class BenchError(SpokeshareError):
    """A measure could not be taken (a tool failed, bytes differed, a server did not start)."""


# -- plans -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes, sample counts and which RTTs each measure runs at."""

    name: str
    file_size: int
    folder_files: int
    folder_file_size: int
    connect_samples: int
    ls_samples: int
    echo_count: int
    #: Echo round trips stop early after this many seconds per contender and RTT.
    echo_budget_s: float
    concurrency: int
    small_file_size: int
    #: A single transfer is stopped after this many seconds; the rate so far is reported.
    transfer_cap_s: float
    rtts: dict[str, tuple[float, ...]]
    ceiling_bytes: int


#: The plan's groups of measures, each run at its own RTTs (``Plan.rtts``).
GROUPS = ("connect", "ls", "echo", "bulk", "bulk_100mbit", "bulk_loss", "folder", "concurrency")


def _rtts(
    default: tuple[float, ...] = RTTS, **over: tuple[float, ...]
) -> dict[str, tuple[float, ...]]:
    """Every group at ``default``, but those named in ``over``."""
    return {m: over.get(m, default) for m in GROUPS}


PLANS: dict[str, Plan] = {
    # Full sizes. The folder costs ~3-4 RTT per file per contender and direction: at
    # 100 ms that is about 3 minutes per contender and direction.
    "full": Plan(
        "full",
        256 * MiB,
        500,
        4096,
        20,
        5,
        200,
        10.0,
        50,
        16384,
        120.0,
        _rtts(bulk_100mbit=(100.0, 200.0), bulk_loss=(100.0, 200.0), folder=(0.0, 50.0, 100.0)),
        512 * MiB,
    ),
    # Under five minutes: the cheap measures at every RTT, the heavy ones where they
    # tell most (a folder of files costs ~3 RTT per file per contender and direction).
    "quick": Plan(
        "quick",
        64 * MiB,
        100,
        4096,
        5,
        2,
        30,
        3.0,
        50,
        16384,
        30.0,
        _rtts(
            bulk=(0.0, 100.0),
            bulk_100mbit=(100.0,),
            bulk_loss=(100.0,),
            folder=(0.0,),
            concurrency=(100.0,),
        ),
        128 * MiB,
    ),
    # The smoke test's: tiny sizes, one RTT.
    "smoke": Plan(
        "smoke",
        1 * MiB,
        5,
        4096,
        2,
        1,
        5,
        2.0,
        4,
        4096,
        30.0,
        _rtts((20.0,)),
        4 * MiB,
    ),
}


@dataclasses.dataclass(frozen=True)
class Measure:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    how: str
    in_rtts: bool = False
    #: Also show the value minus the link's RTT.
    added: bool = False


MEASURES: tuple[Measure, ...] = (
    Measure(
        "connect",
        "New connection to the first SMB answer",
        "ms",
        False,
        "median time from `connect()` to the first byte of the answer to an SMB2 "
        "NEGOTIATE written right after it (probe in nyc-pc)",
        in_rtts=True,
    ),
    Measure(
        "ls",
        "New connection to a listed share",
        "ms",
        False,
        "median wall time of `smbclient //HOST/share -N -c ls` in nyc-pc (includes "
        "starting smbclient, a constant)",
        in_rtts=True,
    ),
    Measure(
        "echo",
        "1 KiB request/response on an established connection",
        "ms",
        False,
        "median round trip of 1 KiB written and echoed back by a TCP echo server at HQ; "
        "(+x) is the excess over the link's set RTT, part of which the emulator itself adds "
        "(see direct); the last column is the excess over the same link crossed directly",
        added=True,
    ),
    Measure("get", "smbclient get, unlimited link", "MB/s", True, "`get` of the large file"),
    Measure("put", "smbclient put, unlimited link", "MB/s", True, "`put` of the large file"),
    Measure(
        "get_100mbit",
        "smbclient get, link limited to 100 Mbit/s",
        "MB/s",
        True,
        "`get` of the large file, the emulator serialising at 100 Mbit/s each way "
        "(12.5 MB/s ceiling)",
    ),
    Measure(
        "put_100mbit",
        "smbclient put, link limited to 100 Mbit/s",
        "MB/s",
        True,
        "`put` of the large file at 100 Mbit/s",
    ),
    Measure(
        "get_loss",
        "smbclient get, 0.5 % loss",
        "MB/s",
        True,
        "`get` of the large file, 0.5 % of frames lost each way, no rate limit",
    ),
    Measure(
        "put_loss",
        "smbclient put, 0.5 % loss",
        "MB/s",
        True,
        "`put` of the large file at 0.5 % loss",
    ),
    Measure(
        "mput",
        "Folder of small files to HQ (mput)",
        "s",
        False,
        "`mput *` of the folder into a new directory at HQ, one smbclient run",
    ),
    Measure(
        "dir_ls",
        "Listing the folder",
        "ms",
        False,
        "`cd DIR; ls` of that directory, one smbclient run",
    ),
    Measure(
        "mget",
        "Folder of small files back (mget)",
        "s",
        False,
        "`mget *` of that directory into an empty local one",
    ),
    Measure(
        "concurrency",
        "50 PCs at once",
        "s",
        False,
        "`smbclient` sessions started together, a small `get` each: time until the last "
        "finished (failures noted)",
    ),
)
MEASURE = {m.key: m for m in MEASURES}


@dataclasses.dataclass
class Cell:
    """One contender's result for one measure at one RTT."""

    value: float | None
    samples: list[float] = dataclasses.field(default_factory=list)
    note: str = ""


#: measure -> contender -> RTT -> cell
Results = dict[str, dict[str, dict[float, Cell]]]


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    host: str
    smb_port: int
    echo_host: str
    echo_port: int


def contenders() -> dict[str, Contender]:
    return {
        "direct": Contender("direct", HQ_IP, 445, HQ_IP, ECHO_PORT),
        "stunnel": Contender("stunnel", EDGE_IP, STUNNEL_SMB_LAN, EDGE_IP, STUNNEL_ECHO_LAN),
        "spokeshare": Contender("spokeshare", EDGE_IP, 445, ECHO_NAME_IP, 445),
    }


# -- SMB2 NEGOTIATE (MS-SMB2) -----------------------------------------------------------

#: MS-SMB2 2.2.1.2 SMB2 Packet Header - SYNC: ProtocolId, StructureSize (64), CreditCharge,
#: Status, Command, CreditRequest, Flags, NextCommand, MessageId, Reserved, TreeId,
#: SessionId, Signature.
SMB2_HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")
#: MS-SMB2 2.2.3 NEGOTIATE Request: StructureSize (36), DialectCount, SecurityMode,
#: Reserved, Capabilities, ClientGuid, ClientStartTime; then the dialects.
SMB2_NEGOTIATE = struct.Struct("<HHHHI16sQ")
#: SMB 2.0.2, 2.1, 3.0, 3.0.2 (3.1.1 would need negotiate contexts, 2.2.3.1).
DIALECTS = (0x0202, 0x0210, 0x0300, 0x0302)
SMB2_MAGIC = b"\xfeSMB"


def smb2_negotiate_request() -> bytes:
    """An SMB2 NEGOTIATE in its Direct TCP frame (MS-SMB2 2.1: a zero byte, 24-bit length)."""
    header = SMB2_HEADER.pack(SMB2_MAGIC, 64, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, bytes(16))
    body = SMB2_NEGOTIATE.pack(36, len(DIALECTS), 1, 0, 0, os.urandom(16), 0)
    msg = header + body + struct.pack(f"<{len(DIALECTS)}H", *DIALECTS)
    return struct.pack(">I", len(msg)) + msg


def check_negotiate_response(msg: bytes) -> None:
    """Raise unless ``msg`` (without its 4-byte frame) is a successful NEGOTIATE response."""
    if len(msg) < SMB2_HEADER.size or msg[:4] != SMB2_MAGIC:
        raise BenchError(f"not an SMB2 answer: {msg[:8].hex()}")
    status, command = struct.unpack_from("<IH", msg, 8)
    if command != 0 or status != 0:
        raise BenchError(f"SMB2 answer: command {command:#x} status {status:#010x}")


# -- probes, run inside nyc-pc ---------------------------------------------------------


def probe_connect(host: str, port: int, count: int, gap: float) -> list[float]:
    """Seconds from ``connect()`` to the first byte of the SMB2 NEGOTIATE answer."""
    out = []
    for _ in range(count):
        req = smb2_negotiate_request()
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=30) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(req)
            first = s.recv(1)
            t1 = time.perf_counter()
            if not first:
                raise BenchError(f"{host}:{port} closed before answering")
            frame = first + recv_exact(s, 3)
            check_negotiate_response(recv_exact(s, int.from_bytes(frame[1:], "big")))
        out.append(t1 - t0)
        time.sleep(gap)
    return out


def probe_echo(host: str, port: int, count: int, budget_s: float, warm: int = 3) -> list[float]:
    """Seconds per 1 KiB round trip on one established connection (echo checked)."""
    out: list[float] = []
    with socket.create_connection((host, port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + budget_s
        for i in range(warm + count):
            msg = os.urandom(MSG)
            t0 = time.perf_counter()
            s.sendall(msg)
            back = recv_exact(s, MSG)
            t1 = time.perf_counter()
            if back != msg:
                raise BenchError("echo answered different bytes")
            if i >= warm:
                out.append(t1 - t0)
                if time.monotonic() > deadline and len(out) >= 5:
                    break
    return out


def probe_sink(host: str, port: int, nbytes: int) -> float:
    """Seconds to send ``nbytes`` to the sink and hear its count back (bytes/s ceiling)."""
    chunk = bytes(MiB)
    with socket.create_connection((host, port), timeout=60) as s:
        t0 = time.perf_counter()
        left = nbytes
        while left > 0:
            left -= s.send(memoryview(chunk)[: min(left, MiB)])
        s.shutdown(socket.SHUT_WR)
        got = int.from_bytes(recv_exact(s, 8), "big")
        t1 = time.perf_counter()
    if got != nbytes:
        raise BenchError(f"sink counted {got} of {nbytes} bytes")
    return t1 - t0


# -- servers, run inside hq ---------------------------------------------------------------


def _serve(host: str, port: int, handle: Callable[[socket.socket], None]) -> threading.Thread:
    ls = socket.create_server((host, port), backlog=256, reuse_port=False)

    def accept_loop() -> None:
        while True:
            conn, _ = ls.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept_loop, daemon=True)
    t.start()
    return t


def _echo(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(ConnectionError):
            while data := conn.recv(65536):
                conn.sendall(data)


def _sink(conn: socket.socket) -> None:
    with conn:
        buf = bytearray(MiB)
        total = 0
        with contextlib.suppress(ConnectionError):
            while k := conn.recv_into(buf):
                total += k
            conn.sendall(total.to_bytes(8, "big"))


def serve(host: str) -> None:
    """The HQ helpers: echo on :data:`ECHO_PORT`, sink on :data:`SINK_PORT`; forever."""
    _serve(host, ECHO_PORT, _echo)
    _serve(host, SINK_PORT, _sink)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def _program(argv: Sequence[str]) -> int:
    """``python bench/wan.py``: the probes and servers the bench runs in the lab's hosts."""
    p = argparse.ArgumentParser(prog="python bench/wan.py")
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("serve")
    s.add_argument("host")
    for name in ("connect", "echo", "sink"):
        s = sub.add_parser(name)
        s.add_argument("host")
        s.add_argument("port", type=int)
        s.add_argument("n", type=int)
        s.add_argument("--gap", type=float, default=0.0)
        s.add_argument("--budget", type=float, default=60.0)
    a = p.parse_args(argv)
    if a.what == "serve":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        serve(a.host)
        return 0
    result: Any
    if a.what == "connect":
        result = probe_connect(a.host, a.port, a.n, a.gap)
    elif a.what == "echo":
        result = probe_echo(a.host, a.port, a.n, a.budget)
    else:
        result = probe_sink(a.host, a.port, a.n)
    print(json.dumps(result))
    return 0


# -- the lab ---------------------------------------------------------------------------


@contextlib.contextmanager
def lab_lock(hosts: Sequence[str], wait_s: float = FOREIGN_LAB_WAIT) -> Iterator[None]:
    """Hold the machine's lab lock; then wait for any lab built without it to go away."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another lab to finish (lock {LOCK_PATH})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        deadline = time.monotonic() + wait_s
        said = False
        while busy := [h for h in hosts if netns.namespace_exists(h)]:
            if time.monotonic() > deadline:
                raise LabError(
                    f"a lab built without {LOCK_PATH} is still up after {wait_s:.0f} s "
                    f"(namespaces {', '.join(busy)}); not touching it"
                )
            if not said:
                say(f"another lab is up (namespaces {', '.join(busy)}); waiting for it to go")
                said = True
            time.sleep(2)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_stunnel_configs(d: Path) -> tuple[Path, Path]:
    """A throwaway CA, HQ's and the office's certificates, and both stunnel configs."""
    write_stunnel_pki(d, STUNNEL_HUB_NAME, [HQ_IP], OFFICE)
    svcs = [
        StunnelService(svc, f"{EDGE_IP}:{lan}", f"{HQ_IP}:{hq_port}", f"{HQ_IP}:{backend}")
        for svc, lan, hq_port, backend in (
            ("smb", STUNNEL_SMB_LAN, STUNNEL_SMB_HQ, 445),
            ("echo", STUNNEL_ECHO_LAN, STUNNEL_ECHO_HQ, ECHO_PORT),
        )
    ]
    (d / "hq.conf").write_text(stunnel_config(d, "hq", svcs, STUNNEL_HUB_NAME))
    # info level logs whether each TLS session was resumed (a line per connection)
    office = stunnel_config(d, "office", svcs, STUNNEL_HUB_NAME, extra_global=["debug = info"])
    (d / "office.conf").write_text(office)
    return d / "hq.conf", d / "office.conf"


def start_extras(lab: Lab) -> None:
    """The HQ echo/sink server and the stunnel pair, spawned (recorded) in the lab."""
    lab.spawn(HQ, [sys.executable, str(SCRIPT), "serve", HQ_IP], "bench-serve")
    hq_conf, office_conf = write_stunnel_configs(lab.host_dir(HQ) / "stunnel")
    lab.spawn(HQ, [STUNNEL, str(hq_conf)], "stunnel-hq")
    lab.spawn(EDGE, [STUNNEL, str(office_conf)], "stunnel-office")
    for host, port, addr, what in (
        (HQ, ECHO_PORT, HQ_IP, "echo server"),
        (HQ, SINK_PORT, HQ_IP, "sink server"),
        (HQ, STUNNEL_SMB_HQ, HQ_IP, "stunnel at HQ"),
        (HQ, STUNNEL_ECHO_HQ, HQ_IP, "stunnel at HQ (echo)"),
        (EDGE, STUNNEL_SMB_LAN, EDGE_IP, "stunnel at the office"),
        (EDGE, STUNNEL_ECHO_LAN, EDGE_IP, "stunnel at the office (echo)"),
    ):
        services.wait_for(what, functools.partial(services.listening, host, port, addr), 20)


@contextlib.contextmanager
def bench_lab() -> Iterator[Lab]:
    """The bench's lab, up, with stunnel and the helpers; locked, and always taken down."""
    state = Path(tempfile.mkdtemp(prefix="ss-bench-wan-"))
    state.chmod(0o755)
    lab = Lab(
        state,
        [OFFICE],
        LinkSettings(),
        direct_route=True,
        start_hub=functools.partial(
            spokes.start_hub, extra_services={"echo": f"{HQ_IP}:{ECHO_PORT}"}
        ),
        start_edge=functools.partial(spokes.start_edge, names=EDGE_NAMES),
    )
    try:
        with lab_lock(lab.hosts):
            try:
                lab.up()
                start_extras(lab)
                yield lab
            finally:
                lab.down()
    finally:
        shutil.rmtree(state, ignore_errors=True)


# -- running things in the lab ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    rc: int
    seconds: float
    out: str
    timed_out: bool


def run_in(lab: Lab, host: str, argv: Sequence[str], timeout: float) -> Run:
    """Run ``argv`` in ``host``, timed; stopped by its PID after ``timeout`` seconds."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        netns.exec_argv(host, argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = p.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        p.kill()  # ``ip netns exec`` execs the tool: this PID is the tool
        out, _ = p.communicate()
        timed_out = True
    return Run(p.returncode, time.perf_counter() - t0, out.decode(errors="replace"), timed_out)


def probe(lab: Lab, *args: str | int | float, timeout: float = 600) -> Any:
    argv = [sys.executable, str(SCRIPT), *map(str, args)]
    r = run_in(lab, PC, argv, timeout)
    if r.rc != 0 or r.timed_out:
        raise BenchError(f"probe {' '.join(map(str, args))}: {r.out.strip()[-500:]}")
    return json.loads(r.out.strip().splitlines()[-1])


def smbclient(lab: Lab, c: Contender, command: str, timeout: float = 300) -> Run:
    argv = ["smbclient", f"//{c.host}/{SHARE}", "-N", "-p", str(c.smb_port), "-c", command]
    return run_in(lab, PC, argv, timeout)


def _check(r: Run, what: str) -> None:
    if r.rc != 0 or r.timed_out or "NT_STATUS_" in r.out:
        raise BenchError(f"{what}: rc={r.rc} timed_out={r.timed_out}: {r.out.strip()[-500:]}")


def set_link(lab: Lab, rtt_ms: float, rate_mbit: float = 0.0, loss_pct: float = 0.0) -> None:
    """Change the WAN live; let frames in flight land and forget cached path metrics."""
    lab.wan(OFFICE, rtt_ms=rtt_ms, rate_mbit=rate_mbit, loss_pct=loss_pct, jitter_ms=0.0)
    for host in (HQ, EDGE, PC):
        lab.exec(host, ["ip", "tcp_metrics", "flush", "all"], capture_output=True)
    time.sleep(0.3 + 3 * rtt_ms / 1000)


# -- the measures ---------------------------------------------------------------------------


@dataclasses.dataclass
class Bench:
    """One run: the lab, the plan, the files, and what was measured so far."""

    lab: Lab
    plan: Plan
    work: Path  # nyc-pc's local files (the PC shares the machine's filesystem)
    results: Results = dataclasses.field(default_factory=dict)
    progress: Callable[[str], None] = say

    @property
    def hq_share(self) -> Path:
        return self.lab.host_dir(HQ) / "samba" / SHARE

    def record(self, key: str, c: str, rtt: float, cell: Cell) -> None:
        self.results.setdefault(key, {}).setdefault(c, {})[rtt] = cell


def prepare(lab: Lab, plan: Plan) -> Bench:
    """The large file and the small one at HQ, the local folder in the PC."""
    work = lab.host_dir(PC) / "bench"
    work.mkdir(parents=True, exist_ok=True)
    b = Bench(lab, plan, work)
    _random_file(b.hq_share / "big.bin", plan.file_size)
    _random_file(b.hq_share / "small.bin", plan.small_file_size)
    _random_file(work / "big.bin", plan.file_size)
    folder = work / "folder"
    folder.mkdir(exist_ok=True)
    for i in range(plan.folder_files):
        (folder / f"f{i:04d}.bin").write_bytes(os.urandom(plan.folder_file_size))
    for p in b.hq_share.iterdir():
        p.chmod(0o666)
    return b


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def _same(a: Path, b: Path) -> bool:
    return (
        a.exists()
        and b.exists()
        and a.stat().st_size == b.stat().st_size
        and (_digest(a) == _digest(b))
    )


def measure_connect(b: Bench, c: Contender, rtt: float) -> Cell:
    gap = 0.05 + 2 * rtt / 1000  # let the pool replace the tunnel just used
    s = probe(b.lab, "connect", c.host, c.smb_port, b.plan.connect_samples, "--gap", gap)
    ms = [x * 1000 for x in s]
    return Cell(statistics.median(ms), ms)


def measure_ls(b: Bench, c: Contender, rtt: float) -> Cell:
    ms = []
    for _ in range(b.plan.ls_samples):
        r = smbclient(b.lab, c, "ls")
        _check(r, f"{c.name}: ls")
        if "big.bin" not in r.out:
            raise BenchError(f"{c.name}: ls did not list big.bin: {r.out[-300:]}")
        ms.append(r.seconds * 1000)
    return Cell(statistics.median(ms), ms)


def measure_echo(b: Bench, c: Contender, rtt: float) -> Cell:
    s = probe(
        b.lab, "echo", c.echo_host, c.echo_port, b.plan.echo_count, "--budget", b.plan.echo_budget_s
    )
    ms = [x * 1000 for x in s]
    return Cell(statistics.median(ms), ms, f"p90 {pct(ms, 0.9):.2f} ms, n={len(ms)}")


_RATE = re.compile(r"\(average ([0-9.]+) KiloBytes/sec\)")


def _transfer_cell(r: Run, got: Path, want: Path, size: int) -> Cell:
    """MB/s (10^6 bytes) of a transfer: smbclient's own average when it finished (transfer
    only, no session set-up), else the bytes that arrived over the wall time."""
    if r.timed_out:
        have = got.stat().st_size if got.exists() else 0
        return Cell(
            have / r.seconds / 1e6,
            note=f"stopped after {r.seconds:.0f} s, {have / MiB:.0f} of {size / MiB:.0f} MiB",
        )
    _check(r, "transfer")
    if not _same(got, want):
        raise BenchError(f"transferred file {got} differs from {want}")
    m = _RATE.findall(r.out)
    rate = float(m[-1]) * 1024 / 1e6 if m else size / r.seconds / 1e6
    return Cell(rate, note=f"wall {r.seconds:.1f} s")


def measure_get(b: Bench, c: Contender, rtt: float) -> Cell:
    local = b.work / f"got-{c.name}.bin"
    local.unlink(missing_ok=True)
    r = smbclient(b.lab, c, f"get big.bin {local}", timeout=b.plan.transfer_cap_s)
    cell = _transfer_cell(r, local, b.hq_share / "big.bin", b.plan.file_size)
    local.unlink(missing_ok=True)
    return cell


def measure_put(b: Bench, c: Contender, rtt: float) -> Cell:
    remote = b.hq_share / f"put-{c.name}.bin"
    remote.unlink(missing_ok=True)
    r = smbclient(
        b.lab, c, f"put {b.work / 'big.bin'} put-{c.name}.bin", timeout=b.plan.transfer_cap_s
    )
    cell = _transfer_cell(r, remote, b.work / "big.bin", b.plan.file_size)
    remote.unlink(missing_ok=True)
    return cell


def measure_folder(b: Bench, c: Contender, rtt: float) -> dict[str, Cell]:
    """mput, listing, mget of the folder; every file checked byte for byte."""
    name = f"folder-{c.name}-{int(rtt)}"
    remote = b.hq_share / name
    back = b.work / f"back-{c.name}"
    shutil.rmtree(remote, ignore_errors=True)
    shutil.rmtree(back, ignore_errors=True)
    back.mkdir()
    src = b.work / "folder"
    n = b.plan.folder_files
    timeout = 60 + n * (0.05 + 10 * rtt / 1000)
    r_put = smbclient(b.lab, c, f"prompt; lcd {src}; mkdir {name}; cd {name}; mput *", timeout)
    _check(r_put, f"{c.name}: mput")
    r_ls = smbclient(b.lab, c, f"cd {name}; ls", timeout)
    _check(r_ls, f"{c.name}: ls of the folder")
    listed = len(re.findall(r"^\s+f\d{4}\.bin\s", r_ls.out, re.M))
    r_get = smbclient(b.lab, c, f"prompt; lcd {back}; cd {name}; mget *", timeout)
    _check(r_get, f"{c.name}: mget")
    for f in src.iterdir():
        if not (_same(f, remote / f.name) and _same(f, back / f.name)):
            raise BenchError(f"{c.name}: folder file {f.name} differs after mput/mget")
    if listed != n:
        raise BenchError(f"{c.name}: listing showed {listed} of {n} files")
    shutil.rmtree(remote, ignore_errors=True)
    shutil.rmtree(back, ignore_errors=True)
    return {
        "mput": Cell(r_put.seconds),
        "dir_ls": Cell(r_ls.seconds * 1000),
        "mget": Cell(r_get.seconds),
    }


def measure_concurrency(b: Bench, c: Contender, rtt: float) -> Cell:
    """N smbclient sessions started together, each getting the small file (checked)."""
    n = b.plan.concurrency
    d = b.work / f"conc-{c.name}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    procs = []
    t0 = time.perf_counter()
    for i in range(n):
        argv = [
            "smbclient",
            f"//{c.host}/{SHARE}",
            "-N",
            "-p",
            str(c.smb_port),
            "-c",
            f"get small.bin {d / f's{i}.bin'}",
        ]
        procs.append(
            subprocess.Popen(
                netns.exec_argv(PC, argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    failures: list[str] = []
    deadline = time.monotonic() + 120 + 20 * rtt / 1000 * n
    for i, p in enumerate(procs):
        try:
            out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            failures.append("timed out")
            continue
        text = out.decode(errors="replace")
        if p.returncode != 0 or "NT_STATUS_" in text:
            failures.append(text.strip().splitlines()[-1] if text.strip() else f"rc {p.returncode}")
        elif not _same(d / f"s{i}.bin", b.hq_share / "small.bin"):
            failures.append("file differs")
    total = time.perf_counter() - t0
    shutil.rmtree(d, ignore_errors=True)
    note = f"{len(failures)} of {n} failed" + (f" ({failures[0]})" if failures else "")
    return Cell(total, note=note if failures else f"0 of {n} failed")


def measure_ceiling(b: Bench) -> dict[str, float]:
    """Raw TCP, one flow nyc-pc -> HQ straight across the emulator at RTT 0: MB/s."""
    set_link(b.lab, 0.0)
    n = b.plan.ceiling_bytes
    secs = float(probe(b.lab, "sink", HQ_IP, SINK_PORT, n))
    return {"raw_tcp_mb_s": n / secs / 1e6}


# -- the run ---------------------------------------------------------------------------------


def run_all(b: Bench) -> None:
    """Every measure of the plan, RTT by RTT in ascending order, contenders side by side."""
    plan = b.plan
    cs = contenders()
    all_rtts = sorted({r for rs in plan.rtts.values() for r in rs})
    t0 = time.monotonic()

    def each(
        key: str,
        rtt: float,
        fn: Callable[[Bench, Contender, float], Cell],
        settings: dict[str, float] | None = None,
    ) -> None:
        if rtt not in plan.rtts[key.split(":")[0]]:
            return
        set_link(b.lab, rtt, **(settings or {}))
        for name, c in cs.items():
            try:
                cell = fn(b, c, rtt)
            except BenchError as exc:
                cell = Cell(None, note=str(exc)[:300])
            b.record(key.split(":")[-1], name, rtt, cell)
            shown = "-" if cell.value is None else f"{cell.value:.2f}"
            b.progress(
                f"[{time.monotonic() - t0:6.0f}s] RTT {rtt:>3.0f} ms  "
                f"{key.split(':')[-1]:<12} {name:<10} {shown:>9} {cell.note}"
            )

    for rtt in all_rtts:
        each("connect", rtt, measure_connect)
        each("ls", rtt, measure_ls)
        each("echo", rtt, measure_echo)
        each("bulk:get", rtt, measure_get)
        each("bulk:put", rtt, measure_put)
        each("bulk_100mbit:get_100mbit", rtt, measure_get, {"rate_mbit": 100.0})
        each("bulk_100mbit:put_100mbit", rtt, measure_put, {"rate_mbit": 100.0})
        each("bulk_loss:get_loss", rtt, measure_get, {"loss_pct": 0.5})
        each("bulk_loss:put_loss", rtt, measure_put, {"loss_pct": 0.5})
        if rtt in plan.rtts["folder"]:
            set_link(b.lab, rtt)
            for name, c in cs.items():
                try:
                    cells = measure_folder(b, c, rtt)
                except BenchError as exc:
                    cells = {k: Cell(None, note=str(exc)[:300]) for k in ("mput", "dir_ls", "mget")}
                for k, cell in cells.items():
                    b.record(k, name, rtt, cell)
                shown = " ".join(
                    f"{k}={v.value:.2f}" if v.value is not None else f"{k}=-"
                    for k, v in cells.items()
                )
                b.progress(
                    f"[{time.monotonic() - t0:6.0f}s] RTT {rtt:>3.0f} ms  "
                    f"folder       {name:<10} {shown}"
                )
        each("concurrency", rtt, measure_concurrency)
    set_link(b.lab, 0.0)


# -- the report --------------------------------------------------------------------------


def wan_facts() -> dict[str, str]:
    """The machine (:func:`bench.common.machine_facts`), smbclient, the lab's TCP."""
    cc = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    return {
        **machine_facts(),
        "smbclient": tool_version(["smbclient", "--version"], r"Version \S+"),
        "TCP congestion control": f"{cc} (every namespace; spokeshare's WAN sockets ask for bbr)",
    }


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "failed"
    if unit == "MB/s":
        return f"{v:.1f}"
    if unit == "s":
        return f"{v:.2f}"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _cell_text(m: Measure, cell: Cell | None, rtt: float, files: int = 0) -> str:
    if cell is None:
        return "-"
    text = _fmt(cell.value, m.unit)
    if cell.value is not None and rtt > 0 and m.in_rtts:
        text += f" ({cell.value / rtt:.2f} RTT)"
    if cell.value is not None and rtt > 0 and m.key in ("mput", "mget") and files:
        text += f" ({cell.value * 1000 / rtt / files:.1f} RTT/file)"
    if cell.value is not None and m.added:
        text += f" (+{cell.value - rtt:.2f})"
    if cell.note and (cell.value is None or m.key == "concurrency" or "stopped" in cell.note):
        text += f" [{cell.note}]"
    return text


def table(m: Measure, rows: dict[str, dict[float, Cell]], files: int = 0) -> list[str]:
    rtts = sorted({r for per in rows.values() for r in per})
    head = (
        f"| RTT | direct {m.unit} | stunnel {m.unit} | spokeshare {m.unit} "
        "| spokeshare/stunnel | spokeshare/direct |"
    )
    rule = "|---:|---:|---:|---:|---:|---:|"
    if m.added:  # what the tunnel adds over the same link crossed directly
        head += " spokeshare - direct |"
        rule += "---:|"
    out = [head, rule]
    for rtt in rtts:
        cells = {c: rows.get(c, {}).get(rtt) for c in CONTENDERS}
        vals = {c: (cell.value if cell else None) for c, cell in cells.items()}
        out.append(
            f"| {rtt:.0f} ms | "
            + " | ".join(_cell_text(m, cells[c], rtt, files) for c in CONTENDERS)
            + f" | {ratio(vals['spokeshare'], vals['stunnel'])}"
            + f" | {ratio(vals['spokeshare'], vals['direct'])} |"
            + (f" {_diff(vals['spokeshare'], vals['direct'])} |" if m.added else "")
        )
    return out


def _diff(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a - b:+.2f} ms"


def plot(m: Measure, rows: dict[str, dict[float, Cell]], path: Path) -> bool:
    """Value vs RTT per contender, as a PNG; False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {
        c: sorted((r, cell.value) for r, cell in rows.get(c, {}).items() if cell.value is not None)
        for c in CONTENDERS
    }
    if not any(series.values()):
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for c, marker in zip(CONTENDERS, ("o", "s", "^"), strict=True):
        pts = series[c]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=c)
    if m.in_rtts or m.added:
        xs = sorted({p[0] for pts in series.values() for p in pts})
        ax.plot(xs, xs, linestyle=":", color="grey", label="1 RTT")
    ax.set_xlabel("link RTT (ms)")
    ax.set_ylabel(m.unit)
    ax.set_title(m.title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


CEILING_CONTEXT = """\
The emulator's own ceiling (docs/lab.md, "Accuracy and ceiling"): one Python forwarder
process per office link, about 310 MB/s (~2.5 Gbit/s) of one TCP flow and ~244 000 small
packets/s at RTT 0 on an idle machine, ~220 MB/s when other suites load it. Results near
those figures measure the emulator, not the contenders."""


def render(
    b: Bench,
    facts: dict[str, str],
    extra: dict[str, float],
    elapsed: float,
    img_dir: Path,
    out: Path,
) -> str:
    plan = b.plan
    lines = [
        BEGIN,
        "## Across the WAN (lab)",
        "",
        f"Generated by `spokeshare bench wan{' --quick' if plan.name == 'quick' else ''}` "
        f"on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {plan.name} mode, "
        f"{elapsed / 60:.1f} minutes. Office `nyc` in the lab (docs/lab.md), "
        "`direct_route`; the PC `nyc-pc` talks to HQ three ways, in the same run over the "
        "same emulated link, changed live between measures:",
        "",
        "- **direct**: SMB straight to HQ's smbd (`198.19.0.1:445`), the edge host only "
        "routing; no encryption.",
        "- **stunnel**: `stunnel4` client mode on `nyc-edge` (`198.18.11.1:4450`), server "
        "mode at HQ, TLS 1.3 only, ECDSA P-256 from a throwaway CA, both sides verified, "
        "`TCP_NODELAY`; session resumption on (stunnel's default).",
        "- **spokeshare**: the edge at `198.18.11.1:445` with its warm pool "
        "(`min_idle = 4`) and the hub, both the real CLI.",
        "",
        "Ratios are spokeshare's value over the other's: for times lower is better, for "
        'MB/s higher is better. Times "in RTT" divide by the link\'s set RTT.',
        "",
        "### Machine and lab",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        f"| large file | {plan.file_size // MiB} MiB of random bytes |",
        f"| folder | {plan.folder_files} files of {plan.folder_file_size // 1024} KiB |",
        f"| samples | first answer: median of {plan.connect_samples}; share listed: "
        f"median of {plan.ls_samples}; 1 KiB round trips: median of up to "
        f"{plan.echo_count} |",
        f"| transfers | one each, byte-checked; stopped after {plan.transfer_cap_s:.0f} s "
        "(the rate so far is shown) |",
        "| WAN | user-space emulator (docs/lab.md): delay RTT/2 each way, no jitter; "
        "rate limit with a one-BDP drop-tail queue |",
    ]
    if "raw_tcp_mb_s" in extra:
        lines.append(
            f"| raw TCP, one flow nyc-pc to HQ, RTT 0, this run | "
            f"{extra['raw_tcp_mb_s']:.0f} MB/s (the emulator's ceiling here) |"
        )
    lines += ["", CEILING_CONTEXT, ""]
    for m in MEASURES:
        rows = b.results.get(m.key)
        if not rows:
            continue
        lines += [f"### {m.title}", "", m.how[0].upper() + m.how[1:] + ".", ""]
        lines += table(m, rows, plan.folder_files)
        img = img_dir / f"wan-{m.key.replace('_', '-')}.png"
        if plot(m, rows, img):
            rel = os.path.relpath(img, out.parent)
            lines += ["", f"![{m.title} vs RTT]({rel})"]
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_block(out: Path, block: str) -> None:
    """Replace the ``wan`` block of ``out`` (creating the file), leaving the rest alone."""
    replace_block(out, BEGIN, END, block)


def _results_json(results: Results) -> dict[str, Any]:
    return {
        k: {
            c: {str(r): dataclasses.asdict(cell) for r, cell in per.items()}
            for c, per in rows.items()
        }
        for k, rows in results.items()
    }


# -- WAN outages (``--outages``): open files across a blip -----------------------------

OUTAGE_BEGIN = "<!-- outage:begin -->"
OUTAGE_END = "<!-- outage:end -->"
#: The link during an outage run: a WAN an office might have.
OUTAGE_RTT_MS = 50.0
OUTAGE_RATE_MBIT = 100.0
OUTAGE_FILE_SIZE = 128 * MiB
#: The link goes down once this many bytes of the file have arrived (two seconds' worth).
OUTAGE_AFTER_BYTES = int(2 * OUTAGE_RATE_MBIT * 1e6 / 8)
#: smbclient's request timeout (``-t``), as in the issue's report: long enough that the
#: tunnel, not the client, decides whether a transfer survives.
OUTAGE_CLIENT_TIMEOUT_S = 120
#: Bytes the PC must receive after link-up for the transfer to count as moving again
#: (far above the ARP and keepalive traffic of an idle LAN).
MOVING_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class OutageResult:
    contender: str
    outage_s: float
    survived: bool
    #: Seconds from link-up to the PC receiving MOVING_BYTES again (None: never).
    resume_s: float | None
    note: str = ""
    #: spokeshare only: growth of hub + edge RSS (MiB) from link-down to the link's return.
    stalled_rss_mib: float | None = None
    #: The run that measured it (its date and arguments; "" in files written before).
    run: str = ""


def outage_runs(results: Sequence[OutageResult], earlier: Sequence[str]) -> list[str]:
    """The runs the table's ``results`` come from, oldest first: each result's own
    ``run``; ``earlier`` (the file's list) stands for results that name none. A run
    whose every result has been measured again is no longer listed."""
    out: list[str] = []
    for r in results:
        for run in [r.run] if r.run else earlier:
            if run not in out:
                out.append(run)
    return out


def _rx_bytes(pid: int, ifname: str) -> int:
    """Bytes received on ``ifname`` in the network namespace of process ``pid``."""
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == ifname:
                return int(rest.split()[0])
    raise BenchError(f"no interface {ifname} in process {pid}'s namespace")


def measure_outage(
    lab: Lab, work: Path, share: Path, c: Contender, outage_s: float
) -> OutageResult:
    """One ``smbclient -t 120 get`` of the large file; the WAN down ``outage_s`` seconds
    two seconds' worth of bytes into it; survived = exit 0 and identical bytes."""
    from spokeshare.lab.topology import LAN_IFNAME

    # Every contender starts from a settled lab: the edge connected to the hub again
    # after the previous outage (the next outage is measured, not that reconnection).
    services.wait_for("nyc heard at the hub", functools.partial(_office_fresh, lab), 90)
    local = work / f"outage-{c.name}.bin"
    local.unlink(missing_ok=True)
    argv = ["smbclient", f"//{c.host}/{SHARE}", "-N", "-p", str(c.smb_port),
            "-t", str(OUTAGE_CLIENT_TIMEOUT_S), "-c", f"get big.bin {local}"]  # fmt: skip
    p = subprocess.Popen(
        netns.exec_argv(PC, argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    resume: float | None = None
    try:
        deadline = time.monotonic() + 60
        while not (local.exists() and local.stat().st_size >= OUTAGE_AFTER_BYTES):
            if p.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{c.name}: the transfer did not get going")
            time.sleep(0.005)
        relays = [lab.hub_pid, lab.edge_pids.get(OFFICE)] if c.name == "spokeshare" else []
        rss0 = _rss_mib(relays)
        lab.wan(OFFICE, up=False)
        try:
            time.sleep(outage_s)  # the outage itself
            before = _rx_bytes(p.pid, LAN_IFNAME)
            grown = _rss_mib(relays) - rss0 if relays else None
        finally:
            lab.wan(OFFICE, up=True)
        up_at = time.monotonic()
        while p.poll() is None and time.monotonic() - up_at < OUTAGE_CLIENT_TIMEOUT_S + 60:
            if _rx_bytes(p.pid, LAN_IFNAME) - before >= MOVING_BYTES:
                resume = time.monotonic() - up_at
                break
            time.sleep(0.002)
        out, _ = p.communicate(timeout=OUTAGE_CLIENT_TIMEOUT_S + 120)
    finally:
        if p.poll() is None:
            p.kill()  # ``ip netns exec`` execs the tool: this PID is smbclient
            p.wait()
    text = out.decode(errors="replace")
    survived = p.returncode == 0 and _same(local, share / "big.bin")
    local.unlink(missing_ok=True)
    if survived:
        note = ""
    else:
        errors = re.findall(r"NT_STATUS_\w+", text)
        note = errors[-1] if errors else f"exit {p.returncode}"
    return OutageResult(c.name, outage_s, survived, resume, note, grown)


def _office_fresh(lab: Lab) -> bool:
    """The hub heard nyc's control channel within the last 3 s (a control channel left
    over from before an outage stays "connected" at the hub for three heartbeats)."""
    offices = spokes.hub_status(lab).get("offices", {})
    office = offices.get(OFFICE, {}) if isinstance(offices, dict) else {}
    seen = office.get("last_seen") if isinstance(office, dict) else None
    return bool(office.get("connected")) and isinstance(seen, float) and time.time() - seen < 3


def _rss_mib(pids: Sequence[int | None]) -> float:
    if any(pid is None for pid in pids):
        raise BenchError("a relay process is not known")
    return sum(rss_kib(pid) for pid in pids if pid is not None) / 1024


def _outage_json_path(out: Path) -> Path:
    return out.with_name("benchmarks-outage.json")


def render_outages(results: list[OutageResult], facts: dict[str, str], when: str) -> str:
    """The docs section: for each outage, whether each contender's transfer survived
    and how long after link-up its bytes moved again; the longest survived."""
    names = [c for c in CONTENDERS if any(r.contender == c for r in results)]
    outages = sorted({r.outage_s for r in results})
    by = {(r.contender, r.outage_s): r for r in results}

    def cell(r: OutageResult | None) -> str:
        if r is None:
            return "-"
        if not r.survived:
            moved = f", after moving {r.resume_s:.2f} s after link-up" if r.resume_s else ""
            return f"**cut** ({r.note or 'failed'}{moved})"
        return (
            f"survived, moving {r.resume_s:.2f} s after link-up"
            if r.resume_s is not None
            else "survived"
        )

    lines = [
        OUTAGE_BEGIN,
        "### WAN outage in the middle of a transfer",
        "",
        f"Generated by `spokeshare bench wan --outages` ({when}) on {facts['CPU']}, "
        f"{facts['cores']} cores, {facts.get('memory', '?')}, kernel {facts['kernel']}, "
        f"smbclient {facts.get('smbclient', '?')}, {facts.get('stunnel', '?')}; "
        "spokeshare with its defaults (`[sockets] stream_user_timeout = 120`, "
        "`rto_max = 1`), stunnel with its own. "
        f"`smbclient -t {OUTAGE_CLIENT_TIMEOUT_S} get` of {OUTAGE_FILE_SIZE // MiB} MiB of "
        f"random bytes from HQ to `nyc-pc`, link {OUTAGE_RTT_MS:.0f} ms RTT and "
        f"{OUTAGE_RATE_MBIT:.0f} Mbit/s; the WAN goes down (every frame dropped) once "
        f"{OUTAGE_AFTER_BYTES // 1_000_000} MB have arrived and comes back after the outage. "
        "Survived: smbclient exits 0 and the file is identical (SHA-256). Moving again: "
        f"time from link-up until the PC's LAN interface has received {MOVING_BYTES // 1024} "
        "KiB more (read from the PC's namespace every 2 ms). Rerun (root, takes the lab "
        "lock): `spokeshare bench wan --outages 12,45 [--contenders direct,stunnel,"
        "spokeshare]`; each run's results replace those of the same outage and contender "
        "in `docs/benchmarks-outage.json`, so long outages can run on their own.",
        "",
        "| outage | " + " | ".join(names) + " | spokeshare / direct (moving again) |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    for o in outages:
        row = [cell(by.get((n, o))) for n in names]
        d, s = by.get(("direct", o)), by.get(("spokeshare", o))
        ratio = (
            f"{s.resume_s / d.resume_s:.2f}"
            if d and s and d.resume_s and s.resume_s is not None
            else "-"
        )
        lines.append(f"| {o:.0f} s | " + " | ".join(row) + f" | {ratio} |")
    longest = []
    for n in names:
        ok = [o for o in outages if (r := by.get((n, o))) is not None and r.survived]
        cut = [o for o in outages if (r := by.get((n, o))) is not None and not r.survived]
        first_cut = min(cut, default=None)
        below = max((o for o in ok if first_cut is None or o < first_cut), default=0.0)
        if first_cut is None:
            longest.append(f"{n}: at least {below:.0f} s")
        else:
            longest.append(f"{n}: {below:.0f} s (cut at {first_cut:.0f} s)")
    stalled = [r.stalled_rss_mib for r in results if r.stalled_rss_mib is not None]
    lines += ["", "Longest outage survived: " + "; ".join(longest) + "."]
    if stalled:
        lines += [
            "",
            "Memory while stalled: the RSS of spokeshare's hub and edge together changed "
            f"by at most {max(stalled):+.1f} MiB over an outage (backpressure: each side stops "
            "reading once its write buffer holds 512 KiB; the rest waits in the "
            "kernel's socket buffers and in the PC's and smbd's own TCP windows).",
        ]
    lines += ["", OUTAGE_END]
    return "\n".join(lines) + "\n"


def write_outage_block(out: Path, block: str) -> None:
    replace_block(out, OUTAGE_BEGIN, OUTAGE_END, block)


def run_outages(a: argparse.Namespace, out: Path) -> int:
    """Only the outage measurement: each listed outage for each contender. Results
    merge with earlier runs' (``docs/benchmarks-outage.json``), so long outages can be
    measured in runs of their own and the lab lock is never held for long."""
    outages = [float(x) for x in a.outages.split(",") if x.strip()]
    names = [n.strip() for n in (a.contenders or ",".join(CONTENDERS)).split(",")]
    unknown = set(names) - set(CONTENDERS)
    if unknown or not outages or any(o <= 0 for o in outages):
        print(
            f"spokeshare bench wan: bad --outages/--contenders ({sorted(unknown)})", file=sys.stderr
        )
        return 2
    store = _outage_json_path(out)
    saved = json.loads(store.read_text()) if store.exists() else {"results": []}
    results = [OutageResult(**r) for r in saved["results"]]
    t0 = time.monotonic()
    say("bench wan --outages: building the lab")
    with bench_lab() as lab:
        work = lab.host_dir(PC) / "bench"
        work.mkdir(parents=True, exist_ok=True)
        share = lab.host_dir(HQ) / "samba" / SHARE
        _random_file(share / "big.bin", OUTAGE_FILE_SIZE)
        (share / "big.bin").chmod(0o666)
        set_link(lab, OUTAGE_RTT_MS, rate_mbit=OUTAGE_RATE_MBIT)
        measured = []
        for o in outages:
            for n in names:
                r = measure_outage(lab, work, share, contenders()[n], o)
                say(f"[{time.monotonic() - t0:6.0f}s] outage {o:.0f} s {n}: {r}")
                measured.append(r)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    this_run = f"{when} (--outages {a.outages} --contenders {','.join(names)})"
    for r in measured:
        results = [x for x in results if (x.contender, x.outage_s) != (r.contender, r.outage_s)]
        results.append(dataclasses.replace(r, run=this_run))
    runs = outage_runs(results, saved.get("runs", []))
    store.write_text(
        json.dumps(
            {"when": when, "runs": runs, "results": [dataclasses.asdict(r) for r in results]},
            indent=1,
        )
    )
    write_outage_block(out, render_outages(results, wan_facts(), "; ".join(runs)))
    say(f"wrote {out} and {store}")
    return 0


# -- the command -----------------------------------------------------------------------


def _default_out() -> Path:
    return Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def run_wan(a: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print(
            "spokeshare bench wan: needs root (the lab builds network namespaces)", file=sys.stderr
        )
        return 1
    plan = PLANS["quick" if a.quick else "full"]
    out = Path(a.out) if a.out else _default_out()
    if a.outages:
        return run_outages(a, out)
    img_dir = Path(a.img_dir) if a.img_dir else out.parent / "img"
    t0 = time.monotonic()
    say(f"bench wan ({plan.name}): building the lab")
    with bench_lab() as lab:
        say(f"[{time.monotonic() - t0:6.0f}s] lab up; preparing files")
        b = prepare(lab, plan)
        extra = measure_ceiling(b)
        say(f"[{time.monotonic() - t0:6.0f}s] raw TCP ceiling {extra['raw_tcp_mb_s']:.0f} MB/s")
        run_all(b)
        stunnel_log = lab.logs_dir / "stunnel-office.log"
        resumed = (
            stunnel_log.read_text(errors="replace").count("previous session reused")
            if (stunnel_log.exists())
            else 0
        )
    elapsed = time.monotonic() - t0
    say(f"bench wan: {elapsed / 60:.1f} minutes; stunnel resumed {resumed} TLS sessions")
    facts = wan_facts()
    block = render(b, facts, extra, elapsed, img_dir, out)
    write_block(out, block)
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "plan": plan.name,
                    "elapsed_s": elapsed,
                    "extra": extra,
                    "facts": facts,
                    "stunnel_resumed": resumed,
                    "results": _results_json(b.results),
                },
                indent=1,
            )
        )
    say(f"wrote {out} and plots in {img_dir}")
    return 0


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` (with ``wan``) to ``subparsers``; ``wan`` carries ``func=run_wan``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="benchmarks (writes docs/benchmarks.md)",
        description="Benchmarks of spokeshare against what a user would pick instead.",
    )
    sub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    w = sub.add_parser(
        "wan",
        help="across the lab's WAN: direct SMB, a stunnel pair and spokeshare side by side",
        description="Build the lab (office nyc, needs root; see docs/lab.md) and measure,\n"
        "at RTT 0, 50, 100 and 200 ms, direct SMB to HQ, a stunnel pair (TLS 1.3) and\n"
        "spokeshare's edge and hub: new connection to the first SMB answer and to a\n"
        "listed share, 1 KiB round trips, smbclient get/put of a large file (unlimited,\n"
        "100 Mbit/s, 0.5 % loss), a folder of small files, 50 clients at once.\n"
        "Writes the section between <!-- wan:begin --> and <!-- wan:end --> of the\n"
        "output file (the rest is kept) and PNG plots beside it in img/.\n"
        "Takes the lab lock /run/spokeshare/lab.lock. Quick mode: under 5 minutes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w.add_argument(
        "--quick", action="store_true", help="64 MiB file, 100 files, heavy measures at fewer RTTs"
    )
    w.add_argument(
        "--out",
        metavar="FILE",
        help="markdown file to update (default: the repository's docs/benchmarks.md)",
    )
    w.add_argument("--img-dir", metavar="DIR", help="where the plots go (default OUT's dir/img)")
    w.add_argument("--json", metavar="FILE", help="also write every sample as JSON")
    w.add_argument(
        "--outages",
        metavar="SECONDS,...",
        help="only the WAN outage measurement: a large get with the WAN down this long "
        "mid-transfer, per contender (section <!-- outage:begin -->; results merge with "
        "earlier runs' in benchmarks-outage.json beside OUT)",
    )
    w.add_argument(
        "--contenders",
        metavar="NAME,...",
        help="with --outages: which of direct, stunnel, spokeshare (default all)",
    )
    w.set_defaults(func=run_wan)
    return p


if __name__ == "__main__":
    sys.exit(_program(sys.argv[1:]))
