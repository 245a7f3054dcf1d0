"""Hubs, one office, a real WAN, HQ's real smbd: what a hub failure costs new client
connections, with two hubs (active-active) and with one.

The lab (run inside tests/lab/netns-worker, as root), addresses from 198.19.251.0/24
(the benchmarking range):

- office: the edge host ``ssmh-edge`` (tunnel side only, listening for SMB on its LAN
  address 198.19.251.33:445) and a PC ``ssmh-pc`` (198.19.251.34) on a LAN of their
  own; the PC has the lab's office-PC client configuration
  (spokeshare.lab.services.write_pc_config);
- HQ: hub hosts ``ssmh-hub0`` and ``ssmh-hub1`` (``--hubs 1``: hub 0 only), each behind
  its own TAP WAN wire (spokeshare.lab.wan) with the configured RTT, and HQ's file
  server ``ssmh-hq``: one real ``smbd`` (198.19.251.100) on an HQ LAN bridge that
  every hub host is on (198.19.251.65, .66), configured by the lab's own Samba
  generation (spokeshare.lab.services.SambaHost: Debian's stock settings plus the
  README's HQ changes). Every hub's ``smb`` service is that smbd; the office's bundle
  lists every hub.

A probe on the PC starts a new client connection to the edge every 0.1 s, each on its
own (one the failure stalls hides none after it): connect, an SMB2 NEGOTIATE
(spokeshare.smb2_negotiate), smbd's answer, close; one record each. ``--smbclient``
adds the same failures with a probe of a new ``smbclient -c ls`` every 0.5 s.

``python -m bench.multihub [--rtt-ms 100] [--seconds 40] [--outage-s 10]`` measures,
side by side in one run, for a deployment of two hubs and one of a single hub: hub 0's
process killed (SIGKILL: its connections reset), and restarted the way the packaged
unit (etc/systemd/spokeshare-hub.service, read at run time for ``Restart=`` and
``RestartSec=``) restarts it; hub 0's host unreachable (its WAN wire drops everything:
silence) for ``--outage-s``, then back. For each: the time from the failure to the
first new connection that succeeded, the longest one started after it, how many
failed. The issue's bound for the next new connection with two hubs is 2 s + 2 RTT.

The module's ``edge``, ``connect`` and ``probe`` subcommands are what runs inside the
namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import re
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
PC_NS = "ssmh-pc"
FS_NS = "ssmh-hq"
HUB_NS = ("ssmh-hub0", "ssmh-hub1")
#: (edge end, hub end) of each hub's WAN wire.
WAN = (("198.19.251.1/30", "198.19.251.2/30"), ("198.19.251.5/30", "198.19.251.6/30"))
#: The office LAN: (edge, PC).
OFFICE_LAN = ("198.19.251.33/29", "198.19.251.34/29")
#: HQ's LAN: the hub hosts and the file server.
HQ_LAN_HUBS = ("198.19.251.65/26", "198.19.251.66/26")
HQ_LAN_FS = "198.19.251.100/26"
HQ_BRIDGE = "ssmh-hqbr"
HUB_PORT = 7443
SMB_PORT = 445
SHARE = "share"
ROOT = Path(__file__).resolve().parent.parent
HUB_UNIT = ROOT / "etc" / "systemd" / "spokeshare-hub.service"
#: How long a probe waits for an answer, seconds: as long as smbclient's own default
#: (20 s) and more, so that a connection the edge holds shows as slow, not as failed.
PROBE_TIMEOUT_S = 30.0
#: How often the probe starts a new connection (a new smbclient), seconds.
PROBE_INTERVAL_S = 0.1
SMBCLIENT_INTERVAL_S = 0.5


def _ip(cidr: str) -> str:
    return cidr.split("/")[0]


def _hub_ip(i: int) -> str:
    return _ip(WAN[i][1])


EDGE_IP = _ip(OFFICE_LAN[0])
FS_IP = _ip(HQ_LAN_FS)


def unit_restart(unit: Path = HUB_UNIT) -> tuple[str, float]:
    """``Restart=`` and ``RestartSec=`` (seconds) of a systemd unit file.

    systemd.service(5): Restart= defaults to "no", RestartSec= to 100 ms; a plain
    number is seconds. Raises ValueError for a RestartSec= with units this does not read.
    """
    restart, sec = "no", 0.1
    for line in unit.read_text().splitlines():
        key, _, value = line.strip().partition("=")
        if key == "Restart":
            restart = value.strip()
        elif key == "RestartSec":
            m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|ms)?", value.strip())
            if m is None:
                raise ValueError(f"{unit}: RestartSec={value} not understood")
            sec = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return restart, sec


# -- what runs inside the namespaces -----------------------------------------------------


def run_edge(bundle_path: Path) -> None:
    """The edge's tunnel side with stock settings, SMB on its office LAN address."""
    from spokeshare import bundle
    from spokeshare.config import load_edge
    from spokeshare.tunnel.edge import Edge

    cfg = load_edge(
        None,
        {
            "bundle": str(bundle_path),
            "lan_address": EDGE_IP,
            "ports": {"smb": SMB_PORT, "ipp": 0, "lpd": 0, "raw": 0},
            "netbios": {"enabled": False},
        },
    )

    # As `spokeshare edge` logs (to the lab's edge.log).
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> None:
        edge = Edge(cfg, bundle.read(bundle_path))
        await edge.start()
        await asyncio.Event().wait()

    asyncio.run(main())


def one_connection(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, float]:
    """A new SMB client connection: connect, SMB2 NEGOTIATE, smbd's answer parsed, close.
    (answered, seconds)."""
    from spokeshare import smb2_negotiate as neg
    from spokeshare.errors import SpokeshareError

    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as c:
            c.sendall(neg.encode_request(os.urandom(16)))
            head = _recv_exactly(c, 4)
            neg.parse_response(_recv_exactly(c, neg.frame_length(head)))
        return True, time.monotonic() - t0
    except (OSError, SpokeshareError):
        return False, time.monotonic() - t0


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            raise ConnectionError(f"closed after {len(got)} of {n} bytes")
        got += chunk
    return bytes(got)


def smbclient_ls(host: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, float]:
    """A new ``smbclient -c ls`` of the share as a guest: (listed, seconds)."""
    argv = ["smbclient", f"//{host}/{SHARE}", "-N", "-p", str(SMB_PORT), "-c", "ls"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - t0
    return proc.returncode == 0, time.monotonic() - t0


def run_probe(host: str, port: int, seconds: float, smbclient: bool = False) -> None:
    """New connections for ``seconds``, one started every PROBE_INTERVAL_S (``smbclient``:
    new ``smbclient -c ls`` runs, every SMBCLIENT_INTERVAL_S), each in a thread of its
    own, so that one the failure stalls does not hide the ones after it (a user's other
    PCs, or a retry, do not wait for it either). One JSON line each, in the order they
    finish: ``{"start": unix seconds, "s": duration, "ok": answered}``."""
    interval = SMBCLIENT_INTERVAL_S if smbclient else PROBE_INTERVAL_S
    lock = threading.Lock()

    def attempt() -> None:
        start = time.time()
        ok, took = smbclient_ls(host) if smbclient else one_connection(host, port)
        with lock:
            print(json.dumps({"start": start, "s": took, "ok": ok}), flush=True)

    threads = []
    t0 = time.monotonic()
    k = 0
    while (due := t0 + k * interval) < t0 + seconds:
        time.sleep(max(0.0, due - time.monotonic()))  # the probe's pace
        t = threading.Thread(target=attempt)
        t.start()
        threads.append(t)
        k += 1
    for t in threads:
        t.join()


# -- the lab -------------------------------------------------------------------------------


class HubLab:
    """The topology of the module docstring with ``hubs`` hub hosts (1 or 2), built in
    ``root`` (searchable by others: smbd's guests are ``nobody``); torn down on close."""

    def __init__(self, root: Path, rtt_ms: float, hubs: int = 2) -> None:
        from spokeshare.lab import netns

        if hubs not in (1, 2):
            raise ValueError(f"hubs must be 1 or 2, not {hubs}")
        self.root = root
        self.rtt_ms = rtt_ms
        self.hubs = hubs
        self.registry = netns.StateRegistry(root / "state.json")
        self.links: list[Any] = []
        self.hub_pids: list[int] = []
        self.hub_argv: list[list[str]] = []
        self.dir = root / "hq"

    def _spawn(self, ns: str, argv: list[str], what: str) -> int:
        from spokeshare.lab import services

        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return services.spawn(self.registry, ns, argv, what, self.root / f"{what}.log", env=env)

    def _veth(self, root_end: str, ns: str, cidr: str, bridge: str | None = None) -> None:
        """A veth from the root namespace into ``ns`` (as ``lan0``, addressed ``cidr``);
        its root end on ``bridge``, or moved into EDGE_NS as ``lan0`` when None."""
        from spokeshare.lab import netns

        self.registry.add("links", root_end)
        netns.create_veth(root_end, f"{root_end}x")
        netns.move_link(f"{root_end}x", ns, "lan0")
        netns.add_address(ns, "lan0", cidr)
        netns.link_up(ns, "lan0")
        if bridge is not None:
            netns.attach_to_bridge(root_end, bridge)
        else:
            netns.move_link(root_end, EDGE_NS, "lan0")
            netns.add_address(EDGE_NS, "lan0", OFFICE_LAN[0])
            netns.link_up(EDGE_NS, "lan0")

    def start(self) -> None:
        from spokeshare import enrollment
        from spokeshare.lab import netns, services
        from spokeshare.lab.wan import WanEnd, WanLink
        from spokeshare.lab.wire import LinkSettings

        hub_ns = HUB_NS[: self.hubs]
        for ns in (EDGE_NS, PC_NS, FS_NS, *hub_ns):
            self.registry.add("namespaces", ns)
            netns.create_namespace(ns)
        # the office LAN (PC to edge) and HQ's LAN (hub hosts and the file server)
        self._veth("ssmh-pc", PC_NS, OFFICE_LAN[1])
        self.registry.add("links", HQ_BRIDGE)
        netns.create_bridge(HQ_BRIDGE)
        self._veth("ssmh-fs", FS_NS, HQ_LAN_FS, HQ_BRIDGE)
        for i, ns in enumerate(hub_ns):
            self._veth(f"ssmh-hq{i}", ns, HQ_LAN_HUBS[i], HQ_BRIDGE)
        netns.link_up(None, HQ_BRIDGE)
        for i, (edge_end, hub_end) in enumerate(WAN[: self.hubs]):
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
        services.write_pc_config(
            self.registry, PC_NS, OFFICE_LAN[1], self.root / "pc", f"{EDGE_IP}:631"
        )
        samba = services.SambaHost(FS_NS, "HQ", (HQ_LAN_FS,), self.root / "hq-samba")
        samba.start(self.registry, FS_IP, self.root)
        enrollment.init(
            self.dir,
            "hub.lab",
            [f"{_hub_ip(i)}:{HUB_PORT}" for i in range(self.hubs)],
            {"smb": f"{FS_IP}:{SMB_PORT}", "ipp": f"{FS_IP}:631"},
            state_dir=self.root / "hq-state",
        )
        out = self.root / "nyc.bundle"
        enrollment.add_office(self.dir, "nyc", ["smb"], out)
        for i, ns in enumerate(hub_ns):
            toml = (self.dir / "hub.toml").read_text()
            toml = toml.replace(
                f'listen = ["0.0.0.0:{HUB_PORT}"]',
                f'listen = ["{_hub_ip(i)}:{HUB_PORT}"]\nname = "hub{i}"',
            ).replace(f'state_dir = "{self.root / "hq-state"}"',
                      f'state_dir = "{self.root / f"state-hub{i}"}"')  # fmt: skip
            cfg = self.root / f"hub-{i}.toml"
            cfg.write_text(toml)
            argv = [sys.executable, "-m", "spokeshare", "hub", "--dir", str(self.dir),
                    "--config", str(cfg)]  # fmt: skip
            self.hub_argv.append(argv)
            self.hub_pids.append(self._spawn(ns, argv, f"hub{i}"))
            services.wait_for(f"hub {i}", lambda: services.listening(ns, HUB_PORT), 30)  # noqa: B023
        self._spawn(EDGE_NS, [sys.executable, "-m", "bench.multihub", "edge", str(out)], "edge")
        services.wait_for("edge", lambda: services.listening(EDGE_NS, SMB_PORT, EDGE_IP), 30)
        services.wait_for("a first connection", lambda: self.connect()[0], 60, interval=0.5)

    def connect(self) -> tuple[bool, float]:
        """One new SMB client connection from the office PC: (answered, seconds)."""
        from spokeshare.lab import netns

        proc = netns.run_in(
            PC_NS,
            [sys.executable, "-m", "bench.multihub", "connect"],
            check=False,
            timeout=60,
        )
        try:
            data = json.loads(proc.stdout.decode())
        except ValueError:
            return False, 0.0
        return bool(data["ok"]), float(data["s"])

    def smbclient(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        """``smbclient //EDGE/share -N -c COMMAND`` on the office PC (a guest, as the
        lab's HQ share allows), through the edge; not checked."""
        from spokeshare.lab import netns

        argv = ["smbclient", f"//{EDGE_IP}/{SHARE}", "-N", "-p", str(SMB_PORT), "-c", command]
        return netns.run_in(PC_NS, argv, check=False, timeout=timeout)

    def hub_established(self, i: int) -> bool:
        """Whether the edge holds a connection to hub ``i`` (seen at the hub's host)."""
        from spokeshare.lab import netns

        argv = ["ss", "-Htn", "state", "established", f"sport = :{HUB_PORT}"]
        return bool(netns.run_in(HUB_NS[i], argv, check=False).stdout.strip())

    def probe(self, seconds: float, smbclient: bool = False) -> subprocess.Popen[bytes]:
        from spokeshare.lab import netns

        argv = [sys.executable, "-m", "bench.multihub", "probe", "--seconds", str(seconds)]
        argv += ["--smbclient"] if smbclient else []
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.Popen(netns.exec_argv(PC_NS, argv), stdout=subprocess.PIPE, env=env)

    def control_on(self, i: int) -> bool:
        """Whether hub ``i``'s log says the office's control channel came up there."""
        log = self.root / f"hub{i}.log"
        return log.exists() and "control channel up" in log.read_text(errors="replace")

    def kill_hub(self, i: int) -> None:
        """Hub ``i``'s process dies (SIGKILL by PID): its connections reset."""
        os.kill(self.hub_pids[i], signal.SIGKILL)

    def restart_hub(self, i: int) -> None:
        """Start hub ``i`` again with the same command line (what systemd does)."""
        self.hub_pids[i] = self._spawn(HUB_NS[i], self.hub_argv[i], f"hub{i}")

    def cut(self, i: int, up: bool = False) -> None:
        """Hub ``i``'s host becomes unreachable (its WAN wire drops everything), or
        reachable again with ``up``."""
        self.links[i].set(up=up)

    def close(self) -> None:
        for link in self.links:
            with contextlib.suppress(Exception):
                link.stop()
        self.registry.teardown()


@contextlib.contextmanager
def hub_lab(root: Path, rtt_ms: float = 100.0, hubs: int = 2) -> Iterator[HubLab]:
    lab = HubLab(root, rtt_ms, hubs)
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


def two_hub_lab(root: Path, rtt_ms: float = 100.0) -> contextlib.AbstractContextManager[HubLab]:
    return hub_lab(root, rtt_ms, 2)


# -- the measurement -----------------------------------------------------------------------

#: systemd.service(5), "Restart=": the settings under which a process killed by SIGKILL
#: (an unclean signal) is started again.
RESTARTS_ON_SIGKILL = ("always", "on-failure", "on-abnormal", "on-abort")
#: The probe's healthy stretch before the failure, seconds.
BASELINE_S = 3.0


def _after(lines: bytes, t_fail: float, t_back: float | None) -> dict[str, Any]:
    rows = [json.loads(x) for x in lines.decode().splitlines() if x.strip()]
    rows.sort(key=lambda r: r["start"])
    before = [r["s"] for r in rows if r["start"] + r["s"] < t_fail and r["ok"]]
    # every connection not finished when the failure struck (the one in flight too)
    after = [r for r in rows if r["start"] + r["s"] >= t_fail]
    # the first new connection, started after the failure, to succeed (by when it did)
    new_ok = [r for r in after if r["ok"] and r["start"] >= t_fail]
    first_ok = min(new_ok, key=lambda r: r["start"] + r["s"], default=None)
    out: dict[str, Any] = {
        "healthy_median_s": round(statistics.median(before), 3) if before else None,
        "after": len(after),
        "failed": sum(1 for r in after if not r["ok"]),
        "longest_s": round(max((r["s"] for r in after), default=0.0), 3),
        # when the last failed one gave up (failures can go on after the first success)
        "last_failed_after_failure_s": max(
            (round(r["start"] + r["s"] - t_fail, 3) for r in after if not r["ok"]), default=None
        ),
        "first_ok_after_failure_s": (
            round(first_ok["start"] + first_ok["s"] - t_fail, 3) if first_ok else None
        ),
    }
    if t_back is not None:
        # the first success that finished once the hub was back (restarted, reachable)
        back = [r for r in after if r["ok"] and r["start"] + r["s"] >= t_back]
        back_ok = min(back, key=lambda r: r["start"] + r["s"], default=None)
        out["back_after_s"] = round(t_back - t_fail, 3)
        out["first_ok_after_back_s"] = (
            round(back_ok["start"] + back_ok["s"] - t_back, 3) if back_ok else None
        )
    return out


def measure(
    kind: str, hubs: int, rtt_ms: float, seconds: float, outage_s: float, smbclient: bool = False
) -> dict[str, Any]:
    """One lab of ``hubs`` hubs, one failure of ``kind`` of hub 0 after BASELINE_S of a
    probe of ``seconds`` (``smbclient``: of new ``smbclient -c ls`` runs).

    "process": SIGKILL, then, as the packaged unit does (Restart=, RestartSec= read from
    etc/systemd/spokeshare-hub.service), the same command line again after RestartSec.
    "host": its WAN wire drops everything for ``outage_s``, then carries traffic again.
    """
    restart, restart_sec = unit_restart()
    with tempfile.TemporaryDirectory(prefix="ss-multihub-") as d:
        Path(d).chmod(0o755)  # smbd's guest (nobody) must reach the share under it
        with hub_lab(Path(d), rtt_ms, hubs) as lab:
            probe = lab.probe(seconds, smbclient)
            time.sleep(BASELINE_S)  # the probe's healthy baseline runs meanwhile
            control_on_failed_hub = lab.control_on(0)
            t_fail = time.time()
            t_back: float | None = None
            if kind == "process":
                lab.kill_hub(0)
                if restart in RESTARTS_ON_SIGKILL:
                    time.sleep(restart_sec)  # systemd's RestartSec=
                    t_back = time.time()
                    lab.restart_hub(0)
            else:
                lab.cut(0)
                time.sleep(outage_s)  # the outage's length
                t_back = time.time()
                lab.cut(0, up=True)
            out, _ = probe.communicate(timeout=seconds + 60)
            result = _after(out, t_fail, t_back)
    result.update(hubs=hubs, kind=kind, probe="smbclient ls" if smbclient else "negotiate")
    result["control_channel_on_failed_hub"] = control_on_failed_hub
    if hubs > 1:
        result["bound_s"] = round(2 + 2 * rtt_ms / 1000, 3)
    return result


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def _commit() -> str:
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return proc.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(prog="python -m bench.multihub", description=doc.split("\n")[0])
    sub = p.add_subparsers(dest="cmd")
    e = sub.add_parser("edge")
    e.add_argument("bundle")
    sub.add_parser("connect")
    pr = sub.add_parser("probe")
    pr.add_argument("--seconds", type=float, default=40.0)
    pr.add_argument("--smbclient", action="store_true")
    p.add_argument("--rtt-ms", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=40.0, help="probe length per failure")
    p.add_argument("--outage-s", type=float, default=10.0, help="how long a host is away")
    p.add_argument(
        "--smbclient",
        action="store_true",
        help="also the same failures with a probe of new smbclient -c ls runs",
    )
    a = p.parse_args(argv)
    if a.cmd == "edge":
        run_edge(Path(a.bundle))
    elif a.cmd == "connect":
        ok, took = one_connection(EDGE_IP, SMB_PORT)
        print(json.dumps({"ok": ok, "s": took}))
    elif a.cmd == "probe":
        run_probe(EDGE_IP, SMB_PORT, a.seconds, a.smbclient)
    else:
        restart, restart_sec = unit_restart()
        load_before = os.getloadavg()
        results = [
            measure(kind, hubs, a.rtt_ms, a.seconds, a.outage_s, smb)
            for smb in ((False, True) if a.smbclient else (False,))
            for hubs in (2, 1)
            for kind in ("process", "host")
        ]
        print(json.dumps({
            "rtt_ms": a.rtt_ms,
            "outage_s": a.outage_s,
            "hub_unit": {"Restart": restart, "RestartSec": restart_sec},
            "machine": f"{_cpu()}, {os.cpu_count()} cores",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": _commit(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "results": results,
        }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
