"""Namespaces, links and processes of the lab, and the state file that can undo them.

Everything the lab creates is written to a :class:`StateRegistry` (a JSON file in the
lab's state dir) *before* it is created, so a ``down`` after a crash, a Ctrl-C or a
failed ``up`` finds and removes it: namespaces, links left in the root namespace,
files written outside the state dir (``/etc/netns/HOST/...``), and processes.

Processes are recorded by PID together with their start time (field 22 of
``/proc/PID/stat``, in clock ticks since boot). A PID is only ever signalled when its
start time still matches, so a PID reused by an unrelated process is never killed.
Nothing is ever killed by name. On teardown, any process still living inside one of
the lab's namespaces (a daemon's forked worker, something started by ``lab exec``) is
found through ``/proc/PID/ns/net`` and stopped the same way.

Links are configured through pyroute2 (netlink); commands inside a namespace run under
``ip netns exec NAME``, which also bind-mounts ``/etc/netns/NAME/*`` over ``/etc`` (the
way each host gets its own ``smb.conf``, ``hosts`` or CUPS ``client.conf``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns  # type: ignore[import-untyped]

from spokeshare.errors import SpokeshareError

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")

#: Socket buffer maxima inside every lab host: a 1 Gbit/s flow at 200 ms RTT has a
#: bandwidth-delay product of 25 MB, so 32 MiB leaves TCP autotuning room.
BUFFER_MAX = 32 * 1024 * 1024
HOST_SYSCTLS: dict[str, str] = {
    "net.core.rmem_max": str(BUFFER_MAX),
    "net.core.wmem_max": str(BUFFER_MAX),
    "net.ipv4.tcp_rmem": f"4096 131072 {BUFFER_MAX}",
    "net.ipv4.tcp_wmem": f"4096 16384 {BUFFER_MAX}",
    # A lab host has nothing to do with IPv6 router solicitations and DAD delays.
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}


class LabError(SpokeshareError):
    """A lab operation failed (a command, a netlink request, a missing namespace)."""


# --- processes ----------------------------------------------------------------------


def proc_start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot), or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (comm) is in parentheses and may contain spaces: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None  # a zombie is already dead; only its parent's wait is missing
    return int(fields[19])  # field 22 overall; fields[0] is field 3


def pid_alive(pid: int, start: int | None) -> bool:
    """Whether ``pid`` exists and (if ``start`` is given) is the same process."""
    now = proc_start_time(pid)
    return now is not None and (start is None or now == start)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kill_pid(pid: int, start: int | None, timeout: float = 5.0) -> bool:
    """Stop ``pid`` (SIGTERM, then SIGKILL after ``timeout``) if it is still the same process.

    Returns True if a process was signalled.
    """
    if not pid_alive(pid, start):
        _reap(pid)
        return False
    start = proc_start_time(pid) if start is None else start
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid, start):
            return True
        time.sleep(0.02)
    if pid_alive(pid, start):
        log.warning("pid %s ignored SIGTERM, sending SIGKILL", pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid, start):
            _reap(pid)
            time.sleep(0.02)
    return True


def pids_in_namespace(name: str) -> list[tuple[int, int]]:
    """(pid, start time) of every process whose network namespace is ``name``."""
    try:
        target = os.stat(NETNS_DIR / name).st_ino
    except FileNotFoundError:
        return []
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != target:
                continue
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        start = proc_start_time(int(entry))
        if start is not None:
            found.append((int(entry), start))
    return found


# --- namespaces and links -------------------------------------------------------------


def list_namespaces() -> list[str]:
    return sorted(netns.listnetns())


def namespace_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_namespace(name: str) -> None:
    """Create namespace ``name`` with ``lo`` up and the lab's sysctls."""
    netns.create(name)
    with ipr(name) as ip:
        ip.link("set", index=_index(ip, "lo"), state="up")
    sysctl(name, HOST_SYSCTLS)


def delete_namespace(name: str) -> None:
    """Remove namespace ``name`` (its processes must be stopped first)."""
    if namespace_exists(name):
        netns.remove(name)


@contextmanager
def ipr(namespace: str | None = None) -> Iterator[Any]:
    """A pyroute2 ``IPRoute`` in ``namespace`` (None: the root namespace)."""
    ip = IPRoute(netns=namespace) if namespace else IPRoute()
    try:
        yield ip
    finally:
        ip.close()


def _index(ip: Any, ifname: str) -> int:
    found = ip.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"no interface {ifname}")
    return int(found[0])


def link_exists(ifname: str, namespace: str | None = None) -> bool:
    with ipr(namespace) as ip:
        return bool(ip.link_lookup(ifname=ifname))


def delete_link(ifname: str, namespace: str | None = None) -> None:
    with ipr(namespace) as ip:
        found = ip.link_lookup(ifname=ifname)
        if found:
            ip.link("del", index=found[0])


def create_veth(ifname: str, peer: str) -> None:
    """A veth pair in the root namespace."""
    with ipr() as ip:
        ip.link("add", ifname=ifname, kind="veth", peer=peer)


def create_bridge(ifname: str) -> None:
    """A bridge in the root namespace with no address (a plain switch), IPv6 off."""
    with ipr() as ip:
        ip.link("add", ifname=ifname, kind="bridge", br_mcast_snooping=0)
    _write_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "1")


def attach_to_bridge(ifname: str, bridge: str) -> None:
    with ipr() as ip:
        ip.link("set", index=_index(ip, ifname), master=_index(ip, bridge), state="up")
    _write_sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "1")


def move_link(ifname: str, namespace: str, new_name: str) -> None:
    """Move a root-namespace link into ``namespace``, renaming it to ``new_name``."""
    with ipr() as ip:
        ip.link("set", index=_index(ip, ifname), net_ns_fd=namespace, ifname=new_name)


def link_up(namespace: str | None, ifname: str) -> None:
    with ipr(namespace) as ip:
        ip.link("set", index=_index(ip, ifname), state="up")


def set_mtu(namespace: str | None, ifname: str, mtu: int) -> None:
    with ipr(namespace) as ip:
        ip.link("set", index=_index(ip, ifname), mtu=mtu)


def add_address(namespace: str, ifname: str, cidr: str) -> None:
    """Add ``cidr`` ("198.18.11.1/24") to ``ifname`` in ``namespace``."""
    address, _, prefix = cidr.partition("/")
    with ipr(namespace) as ip:
        ip.addr("add", index=_index(ip, ifname), address=address, prefixlen=int(prefix))


def add_route(namespace: str, dst: str, gateway: str) -> None:
    """A route to ``dst`` ("default" or a CIDR) via ``gateway`` in ``namespace``."""
    with ipr(namespace) as ip:
        ip.route("add", dst=dst if dst != "default" else "0.0.0.0/0", gateway=gateway)


def add_device_route(namespace: str, dst: str, ifname: str) -> None:
    """A route to ``dst`` (a CIDR) straight out of ``ifname`` in ``namespace``."""
    with ipr(namespace) as ip:
        ip.route("add", dst=dst, oif=_index(ip, ifname))


def _write_sysctl(path: str, value: str) -> None:
    try:
        Path("/proc/sys", path).write_text(value)
    except OSError as exc:
        log.debug("sysctl %s=%s: %s", path, value, exc)


def sysctl(namespace: str, values: Mapping[str, str]) -> None:
    """Set sysctls inside ``namespace`` (the net.* ones are per namespace)."""
    argv = ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())]
    run_in(namespace, argv)


def exec_argv(namespace: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside ``namespace`` (with its /etc/netns files)."""
    return ["ip", "netns", "exec", namespace, *argv]


def run_in(
    namespace: str,
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60.0,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` in ``namespace`` and wait for it; output captured."""
    full = exec_argv(namespace, argv)
    proc = subprocess.run(full, capture_output=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise LabError(
            f"{' '.join(full)} exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


# --- the state file ----------------------------------------------------------------------


class StateRegistry:
    """What the lab created, persisted as JSON so that ``down`` can undo it after a crash.

    Kinds: ``namespaces``, ``links`` (in the root namespace), ``files`` and ``dirs``
    (outside the state dir), ``processes`` ({pid, start, what}). ``meta`` holds the
    lab's own description (plan, settings) for later commands.
    """

    KINDS = ("namespaces", "links", "files", "dirs")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = self._load()

    def __repr__(self) -> str:
        return f"<StateRegistry {self.path}>"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        except json.JSONDecodeError as exc:
            log.warning("state file %s unreadable (%s); starting empty", self.path, exc)
            data = {}
        if not isinstance(data, dict):
            data = {}
        state: dict[str, Any] = data
        for kind in self.KINDS:
            state.setdefault(kind, [])
        state.setdefault("processes", [])
        state.setdefault("meta", {})
        return state

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    @property
    def empty(self) -> bool:
        return not any(self.data[k] for k in (*self.KINDS, "processes"))

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.data["meta"]
        return meta

    def set_meta(self, key: str, value: object) -> None:
        self.data["meta"][key] = value
        self.save()

    def add(self, kind: str, value: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown kind {kind}")
        if value not in self.data[kind]:
            self.data[kind].append(value)
            self.save()

    def add_process(self, pid: int, what: str) -> int:
        """Record ``pid`` with its start time (once: a process recorded already, under
        whatever name, keeps its entry); returns the start time."""
        start = proc_start_time(pid)
        if start is None:
            raise LabError(f"{what}: process {pid} exited at once")
        known = any(p["pid"] == pid and p["start"] == start for p in self.data["processes"])
        if not known:
            self.data["processes"].append({"pid": pid, "start": start, "what": what})
            self.save()
        return start

    def processes(self) -> list[dict[str, Any]]:
        return list(self.data["processes"])

    def kill_process(self, pid: int) -> None:
        """Stop a recorded process (start time checked) and forget it."""
        for entry in self.processes():
            if entry["pid"] == pid:
                kill_pid(pid, entry["start"])
                self.data["processes"].remove(entry)
                self.save()

    def teardown(self) -> list[str]:
        """Undo everything recorded, in reverse order of dependency; returns what was done.

        Idempotent: whatever is already gone is skipped. The state file itself stays
        (with empty lists) so the caller can remove the state dir.
        """
        done: list[str] = []
        for entry in reversed(self.processes()):
            if kill_pid(entry["pid"], entry["start"]):
                done.append(f"stopped {entry['what']} (pid {entry['pid']})")
            self.data["processes"].remove(entry)
            self.save()
        for name in self.data["namespaces"]:
            for pid, start in pids_in_namespace(name):
                if kill_pid(pid, start):
                    done.append(f"stopped pid {pid} left in {name}")
        for ifname in reversed(self.data["links"]):
            try:
                if link_exists(ifname):
                    delete_link(ifname)
                    done.append(f"deleted link {ifname}")
            except Exception as exc:  # netlink errors vary; report, keep cleaning up
                log.warning("could not delete link %s: %s", ifname, exc)
        self.data["links"] = []
        self.save()
        for name in reversed(self.data["namespaces"]):
            if namespace_exists(name):
                delete_namespace(name)
                done.append(f"deleted namespace {name}")
        self.data["namespaces"] = []
        self.save()
        for file in reversed(self.data["files"]):
            try:
                os.unlink(file)
                done.append(f"removed {file}")
            except FileNotFoundError:
                pass
        self.data["files"] = []
        for d in reversed(self.data["dirs"]):
            try:
                os.rmdir(d)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                    raise
        self.data["dirs"] = []
        self.data["meta"] = {}
        self.save()
        return done
