"""The WAN forwarder process and its parent-side handle, :class:`WanLink`.

The forwarder (``python -m spokeshare.lab.wan --fd-a N --fd-b M --control PATH``)
holds two TAP file descriptors (``IFF_TAP | IFF_NO_PI``) inherited from its parent.
Every Ethernet frame read from side A is offered to the A->B :class:`~.wire.Wire`
and written to side B when the wire says it is due, and the other way round.

Scheduling is a plain ``select(2)`` loop rather than asyncio on epoll: ``epoll_wait``
takes its timeout in whole milliseconds, ``select`` in microseconds, and the process
asks the kernel for 1 us timer slack (``PR_SET_TIMERSLACK``), so frames leave within
tens of microseconds of their due time instead of up to a millisecond late. Each
readable fd is drained (up to a batch) before the loop looks at the clock again.

Control channel: a unix stream socket (``--control``). A client connects, sends one
JSON object on one line, and reads one JSON line back, then the server closes:

- ``{"cmd": "set", "rtt_ms": 100, "loss_pct": 1, ...}``: change any of the
  :class:`~.wire.LinkSettings` fields (both directions); replies ``{"ok": true,
  "settings": {...}}``.
- ``{"cmd": "stats"}``: ``{"ok": true, "settings": {...}, "a_to_b": {...},
  "b_to_a": {...}, "write_errors": N}``.

Errors reply ``{"ok": false, "error": "..."}``. The process runs until SIGTERM
(or SIGINT); closing its TAP fds deletes the (non-persistent) TAP devices.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import json
import logging
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from spokeshare.lab import netns
from spokeshare.lab.wire import LinkSettings, Wire

log = logging.getLogger(__name__)

# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
# linux/prctl.h
PR_SET_TIMERSLACK = 29

#: Frames read from one fd before the loop re-checks timers (bounds added latency).
READ_BATCH = 64
#: Largest frame a TAP hands us (MTU 1500 + Ethernet header, with room to spare).
MAX_FRAME = 65536
#: A control request larger than this is refused.
MAX_CONTROL_LINE = 4096


def open_tap(name: str) -> int:
    """Create a non-persistent TAP device ``name`` in the caller's namespace; return its fd.

    The device exists as long as some process holds the fd (or its namespace lives).
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Forwarder:
    """The I/O shell around two :class:`Wire` instances."""

    def __init__(
        self, fd_a: int, fd_b: int, control: socket.socket, settings: LinkSettings, seed: int
    ) -> None:
        self.fd_a = fd_a
        self.fd_b = fd_b
        self.control = control
        rng = random.Random(seed)
        self.a_to_b: Wire[bytes] = Wire(settings, rng)
        self.b_to_a: Wire[bytes] = Wire(settings, rng)
        self.write_errors = 0
        self.running = True
        for fd in (fd_a, fd_b):
            os.set_blocking(fd, False)
        control.setblocking(False)

    def stop(self, *_: object) -> None:
        self.running = False

    def run(self) -> None:
        clock = time.monotonic
        fds = [self.fd_a, self.fd_b, self.control.fileno()]
        while self.running:
            now = clock()
            self._flush(now)
            deadlines = [d for d in (self.a_to_b.next_deadline(), self.b_to_a.next_deadline()) if d]
            timeout = max(0.0, min(deadlines) - now) if deadlines else 1.0
            try:
                readable, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                continue
            for fd in readable:
                if fd == self.fd_a:
                    self._read(self.fd_a, self.a_to_b)
                elif fd == self.fd_b:
                    self._read(self.fd_b, self.b_to_a)
                else:
                    self._accept_control()

    def _read(self, fd: int, wire: Wire[bytes]) -> None:
        clock = time.monotonic
        for _ in range(READ_BATCH):
            try:
                frame = os.read(fd, MAX_FRAME)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EBADFD:  # the TAP's namespace is gone
                    self.running = False
                    return
                raise
            if not frame:
                return
            wire.offer(frame, len(frame), clock())

    def _flush(self, now: float) -> None:
        for wire, fd in ((self.a_to_b, self.fd_b), (self.b_to_a, self.fd_a)):
            for frame in wire.pop_due(now):
                try:
                    os.write(fd, frame)
                except OSError:
                    # The receiving TAP is down or its queue is full: the frame is
                    # lost, as on a real interface.
                    self.write_errors += 1

    def _accept_control(self) -> None:
        try:
            conn, _ = self.control.accept()
        except BlockingIOError:
            return
        with conn:
            # A local, trusted peer sending one short line: a short blocking read is
            # fine, with a timeout so a stuck client cannot stall the link for long.
            conn.settimeout(0.5)
            try:
                data = b""
                while b"\n" not in data and len(data) < MAX_CONTROL_LINE:
                    chunk = conn.recv(MAX_CONTROL_LINE)
                    if not chunk:
                        break
                    data += chunk
                reply = self.handle(data)
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError as exc:
                log.warning("control connection failed: %s", exc)

    def handle(self, line: bytes) -> dict[str, object]:
        """Answer one control request."""
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            cmd = request.pop("cmd", None)
            if cmd == "set":
                LinkSettings.from_dict(request | {"up": True}).to_dict()  # types, names
                current = self.a_to_b.settings.to_dict()
                current.update(request)
                settings = LinkSettings.from_dict(current)
                self.a_to_b.configure(settings)
                self.b_to_a.configure(settings)
                log.info("settings now %s", settings)
                return {"ok": True, "settings": settings.to_dict()}
            if cmd == "stats":
                return self.stats()
            raise ValueError(f"unknown cmd {cmd!r}")
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}

    def stats(self) -> dict[str, object]:
        return {
            "ok": True,
            "settings": self.a_to_b.settings.to_dict(),
            "a_to_b": self.a_to_b.statistics().to_dict(),
            "b_to_a": self.b_to_a.statistics().to_dict(),
            "write_errors": self.write_errors,
        }


def _set_timer_slack(ns: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0) != 0:
        log.warning("PR_SET_TIMERSLACK failed: errno %s", ctypes.get_errno())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spokeshare.lab.wan",
        description="Forward Ethernet frames between two inherited TAP fds through an "
        "emulated WAN link (delay, jitter, loss, rate).",
    )
    parser.add_argument("--fd-a", type=int, required=True, help="TAP fd of side A")
    parser.add_argument("--fd-b", type=int, required=True, help="TAP fd of side B")
    parser.add_argument("--control", required=True, help="unix socket path to create")
    parser.add_argument("--settings", default="{}", help="initial settings as JSON")
    parser.add_argument("--seed", type=int, default=None, help="seed of the loss/jitter RNG")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = LinkSettings.from_dict(json.loads(args.settings))
    except ValueError as exc:
        print(f"wan: bad --settings: {exc}", file=sys.stderr)
        return 2
    path = Path(args.control)
    path.unlink(missing_ok=True)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(str(path))
    control.listen(8)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**63)
    fwd = Forwarder(args.fd_a, args.fd_b, control, settings, seed)
    signal.signal(signal.SIGTERM, fwd.stop)
    signal.signal(signal.SIGINT, fwd.stop)
    _set_timer_slack(1000)
    log.info("forwarding fd %s <-> fd %s, %s", args.fd_a, args.fd_b, settings)
    try:
        fwd.run()
    finally:
        control.close()
        path.unlink(missing_ok=True)
    return 0


# --- parent side ------------------------------------------------------------------


@dataclass(frozen=True)
class WanEnd:
    """One end of a WAN link: the namespace, the interface name in it, its address/prefix."""

    namespace: str
    ifname: str
    address: str  # "198.19.1.1/30"


def control_request(
    path: Path, request: dict[str, object], timeout: float = 5.0
) -> dict[str, object]:
    """Send one control request to a forwarder and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError(f"bad reply from {path}: {data!r}")
    return reply


class WanLink:
    """A running WAN link between two namespaces, seen from the process that built it.

    ``start()`` creates the two TAP devices (named ``tap_names`` in the root
    namespace), starts the forwarder with their fds, moves each TAP into its end's
    namespace under the end's interface name, addresses it and brings it up. The
    forwarder runs in its own session; it is recorded in ``registry`` (if given) by
    PID and start time so a later ``down`` can stop it after a crash.

    A link can be re-attached later (another process, e.g. ``lab wan``) from its
    control path alone: ``WanLink.attach(control)``.
    """

    def __init__(
        self,
        name: str,
        a: WanEnd,
        b: WanEnd,
        control: Path,
        settings: LinkSettings | None = None,
        *,
        tap_names: tuple[str, str] | None = None,
        log_path: Path | None = None,
        registry: netns.StateRegistry | None = None,
        seed: int | None = None,
    ) -> None:
        self.name = name
        self.a = a
        self.b = b
        self.control = control
        self.initial = settings or LinkSettings()
        self.tap_names = tap_names or (f"{name[:10]}-ta", f"{name[:10]}-tb")
        self.log_path = log_path
        self.registry = registry
        self.seed = seed
        self.pid: int | None = None

    def __repr__(self) -> str:
        return f"<WanLink {self.name} {self.a.namespace}<->{self.b.namespace} pid={self.pid}>"

    @classmethod
    def attach(cls, name: str, control: Path, pid: int | None = None) -> WanLink:
        """A handle for an already running link, for ``set``/``stats`` only."""
        link = cls(name, WanEnd("", "", ""), WanEnd("", "", ""), control)
        link.pid = pid
        return link

    def start(self) -> int:
        """Build the link and start its forwarder; returns the forwarder's PID."""
        fds: list[int] = []
        try:
            for tap in self.tap_names:
                if self.registry is not None:
                    self.registry.add("links", tap)
                fds.append(open_tap(tap))
            self.control.parent.mkdir(parents=True, exist_ok=True)
            self.control.unlink(missing_ok=True)
            argv = [
                sys.executable, "-m", "spokeshare.lab.wan",
                "--fd-a", str(fds[0]), "--fd-b", str(fds[1]),
                "--control", str(self.control),
                "--settings", json.dumps(self.initial.to_dict()),
            ]  # fmt: skip
            if self.seed is not None:
                argv += ["--seed", str(self.seed)]
            out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
            try:
                proc = subprocess.Popen(
                    argv,
                    pass_fds=fds,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                    env=_child_env(),
                )
            finally:
                if self.log_path and not isinstance(out, int):
                    out.close()
            self.pid = proc.pid
            if self.registry is not None:
                self.registry.add_process(proc.pid, f"wan {self.name}")
        finally:
            for fd in fds:
                os.close(fd)
        for tap, end in zip(self.tap_names, (self.a, self.b), strict=True):
            netns.move_link(tap, end.namespace, end.ifname)
            netns.set_mtu(end.namespace, end.ifname, 1500)
            netns.add_address(end.namespace, end.ifname, end.address)
            netns.link_up(end.namespace, end.ifname)
        self._wait_control()
        log.info("WAN %s up: %s <-> %s, pid %s", self.name, self.a, self.b, self.pid)
        assert self.pid is not None
        return self.pid

    def _wait_control(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.stats()
                return
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def set(
        self,
        *,
        rtt_ms: float | None = None,
        jitter_ms: float | None = None,
        loss_pct: float | None = None,
        rate_mbit: float | None = None,
        queue_bytes: int | None = None,
        up: bool | None = None,
    ) -> LinkSettings:
        """Change the given settings live; returns the settings now in force."""
        changes: dict[str, object] = {
            k: v
            for k, v in (
                ("rtt_ms", rtt_ms),
                ("jitter_ms", jitter_ms),
                ("loss_pct", loss_pct),
                ("rate_mbit", rate_mbit),
                ("queue_bytes", queue_bytes),
                ("up", up),
            )
            if v is not None
        }
        reply = control_request(self.control, {"cmd": "set", **changes})
        if not reply.get("ok"):
            raise ValueError(f"WAN {self.name}: {reply.get('error')}")
        settings = reply["settings"]
        assert isinstance(settings, dict)
        return LinkSettings.from_dict(settings)

    def stats(self) -> dict[str, object]:
        """The forwarder's counters and settings (see the module docstring)."""
        reply = control_request(self.control, {"cmd": "stats"})
        if not reply.get("ok"):
            raise ValueError(f"WAN {self.name}: {reply.get('error')}")
        return reply

    def stop(self) -> None:
        """Stop the forwarder (by PID, start time checked); its TAPs disappear with it."""
        if self.pid is not None:
            if self.registry is not None:
                self.registry.kill_process(self.pid)
            else:
                netns.kill_pid(self.pid, None)
            self.pid = None
        self.control.unlink(missing_ok=True)


def _child_env() -> dict[str, str]:
    """The environment for the forwarder: ours, with this package importable."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


if __name__ == "__main__":
    sys.exit(main())
