"""The edge on a box that still runs the old hack: nmbd, smbd, wsdd, avahi-daemon and
systemd-resolved.

Office nyc's edge host runs, before the edge starts, what an office box typically ran
before spokeshare: systemd-resolved with LLMNR and mDNS on, Samba's nmbd with
``netbios aliases = GLOBAL-NFS`` and smbd on 445, wsdd announcing GLOBAL-NFS, and
avahi-daemon. The edge must come up anyway (relay and the NetBIOS session service
running), leave each taken protocol to the daemon holding it with one log line naming
it and the fix, show it degraded in ``lan-status.json``, never add a second answerer,
take a protocol back when its daemon goes, and give it up again when the daemon comes
back.

systemd-resolved is Debian 12's own binary, unpacked by ``./run setup`` (installing
the package would take over the machine's /etc/resolv.conf) and run without systemd
or D-Bus (see :meth:`OldBox.start_resolved`).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spokeshare import logfmt
from spokeshare.lab import netns, services, spokes
from spokeshare.lab.avahi import AvahiHost
from spokeshare.lab.topology import LAN_IFNAME, Lab
from spokeshare.lab.wire import LinkSettings
from tests.helpers import wait_for
from tests.lab import wsdd_client

pytestmark = pytest.mark.lab

EDGE = "198.18.11.1"
EDGE_HOST = "nyc-edge"
PC = "nyc-pc"
#: Unpacked by ./run setup (fetch_systemd_resolved).
RESOLVED = Path("/var/cache/spokeshare-lab/systemd-resolved/lib/systemd/systemd-resolved")
#: What the old box's systemd-resolved answers for over LLMNR and mDNS: the host name
#: (namespaces share the machine's UTS namespace).
RESOLVED_NAME = socket.gethostname()

_SMB_CONF = """\
[global]
  netbios name = OLDBOX
  netbios aliases = GLOBAL-NFS
  workgroup = ACME
  server role = standalone server
  interfaces = {edge}/24
  bind interfaces only = yes
  local master = no
  smb ports = 445
  private dir = {r}/private
  lock directory = {r}/lock
  state directory = {r}/state
  cache directory = {r}/cache
  pid directory = {r}/run
  ncalrpc dir = {r}/run/ncalrpc
  log file = {r}/log.%m
  passdb backend = tdbsam:{r}/private/passdb.tdb
  map to guest = Bad User
  load printers = no
  printcap name = /dev/null
  disable spoolss = yes
[old]
  path = {r}/old
  guest ok = yes
"""


def sh(lab: Lab, host: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return lab.exec(host, list(argv), capture_output=True, text=True, timeout=timeout)


def _listening(proto: str, port: int) -> bool:
    out = netns.run_in(EDGE_HOST, ["ss", f"-Hln{proto}", f"sport = :{port}"], check=False)
    return bool(out.stdout.decode().strip())


class OldBox:
    """The old daemons on the edge host, recorded in the lab registry, stopped by PID."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.root = lab.host_dir(EDGE_HOST) / "oldbox"
        self.pids: dict[str, int] = {}

    def _spawn(self, what: str, argv: list[str], samba: bool = False) -> int:
        pid = services.spawn(
            self.lab.registry, EDGE_HOST, argv, what, self.lab.logs_dir / f"old-{what}.log",
            new_session=not samba,
        )  # fmt: skip
        self.pids[what] = pid
        return pid

    def start_samba(self) -> None:
        r = self.root
        for sub in ("private", "lock", "state", "cache", "run", "old"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        conf = r / "smb.conf"
        conf.write_text(_SMB_CONF.format(edge=EDGE, r=r))
        for daemon in ("smbd", "nmbd"):
            self._spawn(
                daemon, [daemon, "--foreground", "--debug-stdout", f"--configfile={conf}"], True
            )
        services.wait_for("old smbd on 445", lambda: _listening("t", 445), 30)
        services.wait_for("old nmbd on 137", lambda: _listening("u", 137), 30)

    def start_nmbd(self) -> None:
        """nmbd alone (smbd keeps running), with the old box's ``smb.conf``."""
        conf = self.root / "smb.conf"
        self._spawn(
            "nmbd", ["nmbd", "--foreground", "--debug-stdout", f"--configfile={conf}"], True
        )

    def start_wsdd(self) -> None:
        argv = ["wsdd", "-i", LAN_IFNAME, "-4", "-n", "GLOBAL-NFS", "-w", "ACME",
                "-U", "0c2e1f6a-5d0b-4c59-8a52-1f1e2d3c4b5a"]  # fmt: skip
        self._spawn("wsdd", argv)
        services.wait_for("old wsdd on 5357", lambda: _listening("t", 5357), 30)

    def start_avahi(self) -> None:
        """The lab's own :class:`AvahiHost` (its bus and avahi-daemon), host ``oldbox``."""
        host = AvahiHost(EDGE_HOST, LAN_IFNAME, "oldbox", self.root / "avahi")
        bus, avahi = host.start(self.lab.registry, self.lab.logs_dir)
        self.pids["dbus-daemon"] = bus
        self.pids["avahi-daemon"] = avahi

    def start_resolved(self) -> None:
        """systemd-resolved with ``LLMNR=yes`` and ``MulticastDNS=yes`` (a drop-in),
        the LAN link's state as systemd-networkd writes it for a ``.network`` with
        ``LLMNR=yes`` and ``MulticastDNS=yes`` (without networkd, resolved gives a link
        LLMNR but no mDNS), in the mount namespace ``ip netns exec`` gives it: its own
        /run (the runtime directory owned by its user, which it insists on), and
        /etc/passwd and /etc/group with its system user ``systemd-resolve``. There is no
        D-Bus: resolved waits for a bus to appear and serves meanwhile."""
        if not RESOLVED.exists():
            pytest.skip(f"{RESOLVED} missing: ./run setup unpacks systemd-resolved")
        r = self.root / "resolved"
        run = r / "run"
        for sub in ("systemd/resolved.conf.d", "systemd/netif/links", "systemd/resolve"):
            (run / sub).mkdir(parents=True, exist_ok=True)
        (run / "systemd/resolved.conf.d/lab.conf").write_text(
            "[Resolve]\nLLMNR=yes\nMulticastDNS=yes\nDNSStubListener=no\n"
        )
        index = netns.run_in(EDGE_HOST, ["cat", f"/sys/class/net/{LAN_IFNAME}/ifindex"])
        (run / "systemd/netif/links" / index.stdout.decode().strip()).write_text(
            "ADMIN_STATE=configured\nOPER_STATE=routable\nLLMNR=yes\nMDNS=yes\n"
        )
        passwd, group = Path("/etc/passwd").read_text(), Path("/etc/group").read_text()
        used = {int(line.split(":")[2]) for line in passwd.splitlines() if line.count(":") >= 3}
        uid = next(u for u in range(999, 100, -1) if u not in used)
        (r / "passwd").write_text(f"{passwd}systemd-resolve:x:{uid}:{uid}::/:/usr/sbin/nologin\n")
        (r / "group").write_text(f"{group}systemd-resolve:x:{uid}:\n")
        for f in ("passwd", "group"):
            (r / f).chmod(0o644)
        script = (
            f"mount --bind {run} /run && mount --bind {r / 'passwd'} /etc/passwd && "
            f"mount --bind {r / 'group'} /etc/group && "
            f"chown {uid}:{uid} /run/systemd/resolve && exec {RESOLVED}"
        )
        self.pids["systemd-resolved"] = services.spawn(
            self.lab.registry, EDGE_HOST, ["sh", "-c", script], "systemd-resolved",
            self.lab.logs_dir / "old-systemd-resolved.log",
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_TARGET": "console"},
        )  # fmt: skip
        services.wait_for("old systemd-resolved on 5355", lambda: _listening("u", 5355), 30)
        services.wait_for("old systemd-resolved on 5353", lambda: _listening("u", 5353), 30)

    def stop(self, what: str) -> None:
        self.lab.registry.kill_process(self.pids.pop(what))


def start_edge_beside_old_box(lab: Lab, office: str) -> int:
    box = OldBox(lab)
    box.start_resolved()
    box.start_samba()
    box.start_wsdd()
    box.start_avahi()
    lab.old_box = box  # type: ignore[attr-defined]
    conf = lab.host_dir(EDGE_HOST) / "edge.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(spokes.edge_toml(lab, office))
    pid = lab.spawn(EDGE_HOST, spokes._cli("edge", "--config", str(conf)), f"edge-{office}")
    services.wait_for(
        "the edge up beside the old daemons",
        lambda: (
            bool(spokes.edge_status(lab, office).get("up")) and spokes.office_connected(lab, office)
        ),
        30,
    )
    return pid


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    path = Path(tempfile.mkdtemp(prefix="ss-coexist-"))
    path.chmod(0o755)
    the_lab = Lab(
        path,
        ["nyc"],
        LinkSettings(rtt_ms=20),
        start_hub=spokes.start_hub,
        start_edge=start_edge_beside_old_box,
    )
    ok = False
    try:
        the_lab.up()
        yield the_lab
        ok = True
    finally:
        the_lab.down(keep_logs=not ok)
        if ok:
            shutil.rmtree(path, ignore_errors=True)


def edge_log(lab: Lab) -> str:
    return (lab.logs_dir / "edge-nyc.log").read_text()


def degraded(lab: Lab, protocol: str) -> list[str]:
    """The reasons of the edge's ``protocol degraded`` lines for ``protocol``."""
    return [ln["reason"] for ln in logfmt.find(edge_log(lab), "protocol degraded")
            if ln["protocol"] == protocol]  # fmt: skip


def ended_ok(hub_status: dict[str, object]) -> int:
    """The streams of nyc the hub has ended with result ok (and logged)."""
    return spokes.office_counts(hub_status, "nyc", "streams_ended").get("ok", 0)


def lan_status(lab: Lab) -> dict[str, object]:
    path = lab.host_dir(EDGE_HOST) / "state" / "lan-status.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def protocol_state(lab: Lab, protocol: str) -> str:
    lan = lan_status(lab).get("lan", {})
    return str(lan.get(protocol, "")) if isinstance(lan, dict) else ""


def nbns_answers(lab: Lab, name: str) -> list[str]:
    """Every answer to a broadcast query from the PC (nmblookup prints each)."""
    out = sh(lab, PC, "nmblookup", name).stdout
    return re.findall(rf"^(\S+) {name}<00>$", out, re.M)


def mdns_a(lab: Lab, name: str) -> list[str]:
    out = sh(
        lab, PC, "dig", "+short", "+tries=1", "+time=2", "-p", "5353", f"@{EDGE}",
        f"{name}.local", "A",
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if re.fullmatch(r"[\d.]+", line)]


def wsdd_discovers(lab: Lab, seconds: float) -> set[str]:
    return wsdd_client.wsdd_discovers(
        PC, LAN_IFNAME, "5b0d4e29-6f5e-4b4a-9a4f-3f0c3b3a1c12", seconds
    )


def wait_until(what: str, cond: Callable[[], object], timeout: float) -> object:
    return wait_for(cond, timeout, what, interval=0.5)


def test_edge_runs_beside_the_old_daemons(lab: Lab) -> None:
    box: OldBox = lab.old_box  # type: ignore[attr-defined]
    log = edge_log(lab)
    resolved = f"systemd-resolve (pid {box.pids['systemd-resolved']})"  # comm: 15 chars
    for protocol, daemons, fix in (
        ("netbios", ["nmbd"], "systemctl disable --now nmbd"),
        ("wsd", ["wsdd"], "systemctl disable --now wsdd"),
        ("mdns", ["avahi-daemon", resolved], "MulticastDNS=no in /etc/systemd/resolved.conf"),
        ("llmnr", [resolved], "LLMNR=no in /etc/systemd/resolved.conf"),
    ):
        lines = degraded(lab, protocol)
        assert len(lines) == 1, (protocol, lines)  # one line, naming the daemons and the fix
        assert fix in lines[0], lines[0]
        for daemon in daemons:
            held = daemon if "(pid" in daemon else f"{daemon} (pid {box.pids[daemon]})"
            assert held in lines[0] and held in protocol_state(lab, protocol), lines[0]
    taken = [f for f in logfmt.find(log, "listener failed")
             if (f["address"], f["port"]) == (EDGE, "445")]  # fmt: skip
    assert len(taken) == 1 and "smbd (pid" in taken[0]["holder"], taken
    assert taken[0]["fix"] and taken[0]["service"] == "smb", taken
    status = lan_status(lab)
    assert f"tcp {EDGE}:445" in status["listeners_degraded"]  # type: ignore[operator]

    # The relay runs: 139 (its listener bound) reaches HQ's share through the hub.
    ok_before = ended_ok(spokes.fresh_hub_status(lab))
    res = sh(lab, PC, "smbclient", "//GLOBAL-NFS/share", "-N", "-I", EDGE, "-p", "139", "-c", "ls")
    assert res.returncode == 0, res.stdout + res.stderr
    settled = functools.partial(spokes.streams_ended, lab, "nyc", time.time())
    ended = wait_until("the stream ended at the hub", settled, 10)
    assert isinstance(ended, dict) and ended.get("ok", 0) > ok_before, ended
    assert re.search(
        r"stream office=nyc client=198\.18\.11\.10:\d+ service=smb .*result=ok",
        (lab.logs_dir / "hub.log").read_text(),
    )
    # LLMNR has one answerer, systemd-resolved, for its own name; nobody (not the edge)
    # for GLOBAL-NFS. NetBIOS has one answerer, nmbd.
    out = sh(lab, PC, "llmnr-query", "-T", "A", RESOLVED_NAME).stdout
    assert re.findall(rf"{re.escape(RESOLVED_NAME)} IN A (\S+)", out) == [EDGE], out
    out = sh(lab, PC, "llmnr-query", "-T", "A", "GLOBAL-NFS").stdout
    assert re.findall(r"GLOBAL-NFS IN A (\S+)", out) == [], out
    wait_until("nmbd's alias registered", lambda: nbns_answers(lab, "GLOBAL-NFS"), 30)
    assert nbns_answers(lab, "GLOBAL-NFS") == [EDGE]
    # Nobody publishes GLOBAL-NFS.local. (avahi and resolved both answer on 5353 for
    # their own names; which one a unicast query reaches is the kernel's choice.)
    assert mdns_a(lab, "GLOBAL-NFS") == []


def test_protocols_come_back_when_the_daemons_go(lab: Lab) -> None:
    box: OldBox = lab.old_box  # type: ignore[attr-defined]
    for daemon in ("avahi-daemon", "wsdd", "nmbd", "systemd-resolved"):
        box.stop(daemon)
    for protocol in ("mdns", "wsd", "netbios", "llmnr"):

        def back(p: str = protocol) -> bool:
            return protocol_state(lab, p) == "ok"

        wait_until(f"{protocol} back", back, 30)
    restored = logfmt.find(edge_log(lab), "protocol restored")
    assert sorted(ln["protocol"] for ln in restored) == ["llmnr", "mdns", "netbios", "wsd"]

    def llmnr_answers() -> list[str]:
        out = sh(lab, PC, "llmnr-query", "-T", "A", "GLOBAL-NFS").stdout
        return re.findall(r"GLOBAL-NFS IN A (\S+)", out)

    wait_until("GLOBAL-NFS over LLMNR", lambda: llmnr_answers() == [EDGE], 20)
    wait_until("the edge's NetBIOS name claimed", lambda: nbns_answers(lab, "GLOBAL-NFS"), 20)
    assert nbns_answers(lab, "GLOBAL-NFS") == [EDGE]
    wait_until("GLOBAL-NFS.local", lambda: mdns_a(lab, "GLOBAL-NFS") == [EDGE], 20)
    assert "GLOBAL-NFS" in wsdd_discovers(lab, 8)


def test_a_daemon_started_later_takes_the_protocol_back(lab: Lab) -> None:
    box: OldBox = lab.old_box  # type: ignore[attr-defined]
    before = len(degraded(lab, "mdns"))
    box.start_avahi()
    wait_until("mdns degraded again", lambda: "avahi-daemon" in protocol_state(lab, "mdns"), 30)
    assert len(degraded(lab, "mdns")) == before + 1
    assert mdns_a(lab, "GLOBAL-NFS") == []  # the edge said goodbye; avahi alone remains
    assert mdns_a(lab, "oldbox") == [EDGE]
    assert protocol_state(lab, "llmnr") == "ok" and protocol_state(lab, "netbios") == "ok"


def test_systemd_resolved_started_later_takes_llmnr_back(lab: Lab) -> None:
    """systemd-resolved (LLMNR on) started while the edge answers LLMNR: within a check
    interval the edge hands LLMNR over with one line naming it and the fix, and stops
    answering GLOBAL-NFS there; resolved alone answers, for its own name."""
    box: OldBox = lab.old_box  # type: ignore[attr-defined]
    assert protocol_state(lab, "llmnr") == "ok"
    before = len(degraded(lab, "llmnr"))
    box.start_resolved()
    wait_until("llmnr degraded", lambda: "systemd-resolve" in protocol_state(lab, "llmnr"), 30)
    lines = degraded(lab, "llmnr")
    assert len(lines) == before + 1 and "LLMNR=no in /etc/systemd/resolved.conf" in lines[-1]
    out = sh(lab, PC, "llmnr-query", "-T", "A", "GLOBAL-NFS").stdout
    assert re.findall(r"GLOBAL-NFS IN A (\S+)", out) == [], out
    out = sh(lab, PC, "llmnr-query", "-T", "A", RESOLVED_NAME).stdout
    assert re.findall(rf"{re.escape(RESOLVED_NAME)} IN A (\S+)", out) == [EDGE], out
    assert protocol_state(lab, "netbios") == "ok"


def relay_works(lab: Lab) -> None:
    """The PC lists HQ's share through the edge's 139 (the old smbd holds 445)."""
    res = sh(lab, PC, "smbclient", "//GLOBAL-NFS/share", "-N", "-I", EDGE, "-p", "139", "-c", "ls")
    assert res.returncode == 0, res.stdout + res.stderr


def wsd_answerers(lab: Lab, name: str, seconds: float) -> list[str]:
    """One line per WS-Discovery device the PC's wsdd found for ``name`` over IPv4 (it
    reports a device, by its endpoint UUID, once per address: the edge's also on its
    IPv6 link-local address, the old wsdd runs with ``-4``)."""
    out = wsdd_client.wsdd_log(PC, LAN_IFNAME, "5b0d4e29-6f5e-4b4a-9a4f-3f0c3b3a1c12", seconds)
    return re.findall(rf"discovered {name} in Workgroup:ACME on 198\.18\.\S+", out)


def started_later(lab: Lab, protocol: str, daemon: str, other: str) -> list[str]:
    """``daemon`` of the old box started while the edge serves ``protocol`` (and
    ``other``, checked ok before): the edge hands ``protocol`` over with one new line,
    which names the daemon by its PID. Returns the protocol's lines, that one last."""
    box: OldBox = lab.old_box  # type: ignore[attr-defined]
    assert protocol_state(lab, protocol) == "ok" and protocol_state(lab, other) == "ok"
    before = len(degraded(lab, protocol))
    getattr(box, f"start_{daemon}")()
    wait_until(f"{protocol} degraded", lambda: daemon in protocol_state(lab, protocol), 30)
    lines = degraded(lab, protocol)
    assert len(lines) == before + 1, lines
    assert f"{daemon} (pid {box.pids[daemon]})" in lines[-1], lines[-1]
    return lines


def test_nmbd_started_later_takes_netbios_back(lab: Lab) -> None:
    """nmbd (``netbios aliases = GLOBAL-NFS``) started while the edge answers NetBIOS:
    the edge hands NetBIOS over with one line naming nmbd and the fix, shows it
    degraded, and releases its names; nmbd alone answers for GLOBAL-NFS; the relay and
    WS-Discovery keep working. When nmbd goes, the edge takes NetBIOS back."""
    box: OldBox = lab.old_box  # type: ignore[attr-defined]
    line = started_later(lab, "netbios", "nmbd", other="wsd")[-1]
    assert "systemctl disable --now nmbd" in line, line
    # nmbd claims its alias once the edge released it; then it alone answers.
    wait_until("nmbd answers for GLOBAL-NFS", lambda: nbns_answers(lab, "GLOBAL-NFS"), 60)
    assert nbns_answers(lab, "GLOBAL-NFS") == [EDGE]
    out = sh(lab, PC, "nmblookup", "-A", EDGE).stdout
    assert "OLDBOX" in out, out  # the answer to node status is nmbd's
    relay_works(lab)
    assert protocol_state(lab, "wsd") == "ok"
    assert len(wsd_answerers(lab, "GLOBAL-NFS", 8)) == 1

    box.stop("nmbd")
    wait_until("netbios back", lambda: protocol_state(lab, "netbios") == "ok", 30)
    wait_until("the edge's NetBIOS name claimed", lambda: nbns_answers(lab, "GLOBAL-NFS"), 20)
    assert nbns_answers(lab, "GLOBAL-NFS") == [EDGE]


def test_wsdd_started_later_takes_wsd_back(lab: Lab) -> None:
    """wsdd announcing GLOBAL-NFS started while the edge answers WS-Discovery. wsdd 0.7
    cannot bind TCP 5357 then (the edge holds it; asyncio logs EADDRINUSE) and runs on
    with UDP 3702 only. The edge hands WS-Discovery over (never two answerers) with one
    line naming wsdd, the port it lacks and the fix, a restart first, and shows it
    degraded; the relay and NetBIOS keep working. wsdd restarted as the line says
    serves in full: the PC finds GLOBAL-NFS once, wsdd's. When wsdd goes, the edge
    takes WS-Discovery back."""
    box: OldBox = lab.old_box  # type: ignore[attr-defined]
    lines = started_later(lab, "wsd", "wsdd", other="netbios")
    line = lines[-1]
    assert "but not TCP 5357" in line, line
    assert "restart it (systemctl restart wsdd)" in line, line
    assert "systemctl disable --now wsdd" in line, line
    relay_works(lab)
    assert protocol_state(lab, "netbios") == "ok"
    assert nbns_answers(lab, "GLOBAL-NFS") == [EDGE]

    # The fix named: restart wsdd (stop, start; the edge does not take a protocol back
    # on one look). It binds 5357 now, and the status names the new process, whole.
    box.stop("wsdd")
    box.start_wsdd()
    pid = box.pids["wsdd"]
    wait_until(
        "the status naming the restarted wsdd",
        lambda: (
            f"wsdd (pid {pid})" in protocol_state(lab, "wsd")
            and "but not" not in protocol_state(lab, "wsd")
        ),
        30,
    )
    found = wsd_answerers(lab, "GLOBAL-NFS", 8)
    assert len(found) == 1, found
    assert len(degraded(lab, "wsd")) == len(lines)  # still one line
    relay_works(lab)

    box.stop("wsdd")
    wait_until("wsd back", lambda: protocol_state(lab, "wsd") == "ok", 30)
    assert "GLOBAL-NFS" in wsdd_discovers(lab, 8)
