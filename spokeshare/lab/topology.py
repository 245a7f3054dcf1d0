"""The lab as a whole: HQ, offices, their LANs and WAN links, services, hub and edges.

Address plan (all inside 198.18.0.0/15, RFC 2544's benchmarking range):

==========================  ==========================================================
HQ service address          198.19.0.1/32 on ``hq``'s ``lo`` (hub, smbd, cupsd, LPD, raw)
WAN of office *i* (1-based)  198.19.*i*.0/30: ``hq`` .1 (``wan-NAME``), edge .2 (``wan0``)
LAN of office *i*            198.18.(10+*i*).0/24: edge .1, fs .2, pc .10 (``lan0``)
==========================  ==========================================================

Each office LAN is a bridge ``ss-NAME-br`` in the root namespace (no address on it, so
it switches frames and routes nothing); each host is attached by a veth pair whose
root end is ``ss-NAME-e``/``-f``/``-p``. The edge reaches HQ's service address over its
WAN link. The PC and the file server have no route off their LAN, as in an office
where only the edge talks to HQ; ``direct_route=True`` adds one (PC and fs route via
the edge, which forwards IP, and HQ routes the LAN back), for the benchmarks' direct
baseline.

The hub and the edges are started through hooks, so this module needs none of the
tunnel's code: ``start_hub(lab) -> pid`` and ``start_edge(lab, office) -> pid``. A hook
returns once its process is ready; the lab records the PID (with start time) and stops
it on ``down``. :meth:`Lab.spawn` is the convenient way for a hook to start a process
in a host; :attr:`Lab.deploy_dir` is where the hub's deployment (CA, bundles) belongs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spokeshare.lab import cluster, netns, services
from spokeshare.lab.netns import LabError, StateRegistry
from spokeshare.lab.wan import WanEnd, WanLink
from spokeshare.lab.wire import LinkSettings

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/spokeshare/lab")
HQ = "hq"
HQ_SERVICE_IP = "198.19.0.1"
LAN_IFNAME = "lan0"
#: Which state dir's lab holds the machine-wide host names now.
OWNER_FILE = Path("/run/spokeshare/lab.owner")
MAX_OFFICES = 200
_OFFICE_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")

Progress = Callable[[str, float], None]
HubHook = Callable[["Lab"], int]
EdgeHook = Callable[["Lab", str], int]


@dataclass(frozen=True)
class OfficePlan:
    """Names and addresses of one office (see the module docstring for the plan)."""

    name: str
    index: int  # 1-based

    @property
    def edge(self) -> str:
        return f"{self.name}-edge"

    @property
    def pc(self) -> str:
        return f"{self.name}-pc"

    @property
    def fs(self) -> str:
        return f"{self.name}-fs"

    @property
    def hosts(self) -> tuple[str, str, str]:
        return (self.edge, self.pc, self.fs)

    @property
    def fs_netbios_name(self) -> str:
        return f"FS-{self.name.upper()}"

    @property
    def lan_prefix(self) -> str:
        return f"198.18.{10 + self.index}"

    @property
    def lan_cidr(self) -> str:
        return f"{self.lan_prefix}.0/24"

    @property
    def edge_ip(self) -> str:
        return f"{self.lan_prefix}.1"

    @property
    def fs_ip(self) -> str:
        return f"{self.lan_prefix}.2"

    @property
    def pc_ip(self) -> str:
        return f"{self.lan_prefix}.10"

    @property
    def wan_hq_ip(self) -> str:
        return f"198.19.{self.index}.1"

    @property
    def wan_edge_ip(self) -> str:
        return f"198.19.{self.index}.2"

    @property
    def wan_hq_ifname(self) -> str:
        return f"wan-{self.name}"

    @property
    def bridge(self) -> str:
        return f"ss-{self.name}-br"

    def veth_root(self, host: str) -> str:
        """Root-namespace end of ``host``'s veth (e, f or p)."""
        return f"ss-{self.name}-{host[len(self.name) + 1]}"

    @property
    def taps(self) -> tuple[str, str]:
        return (f"ss-{self.name}-th", f"ss-{self.name}-te")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "hosts": list(self.hosts),
            "lan": self.lan_cidr,
            "edge_ip": self.edge_ip,
            "fs_ip": self.fs_ip,
            "pc_ip": self.pc_ip,
            "wan_hq_ip": self.wan_hq_ip,
            "wan_edge_ip": self.wan_edge_ip,
        }


def plan_offices(names: Sequence[str]) -> list[OfficePlan]:
    """Validate office names (lowercase, <= 8 characters, unique) and number them."""
    if not names:
        raise ValueError("a lab needs at least one office")
    if len(names) > MAX_OFFICES:
        raise ValueError(f"at most {MAX_OFFICES} offices")
    seen: set[str] = set()
    for name in names:
        if not _OFFICE_RE.match(name):
            raise ValueError(
                f"office name {name!r}: 1-8 lowercase letters/digits, starting with a letter"
            )
        if name in seen:
            raise ValueError(f"office {name!r} given twice")
        seen.add(name)
    return [OfficePlan(name, i) for i, name in enumerate(names, start=1)]


class Lab:
    """HQ and offices on one machine.

    ``Lab(state_dir, offices=["nyc", "sf"], wan=LinkSettings(rtt_ms=100))`` describes a
    lab; :meth:`up` builds it, :meth:`down` removes it. A lab built by another process
    is reopened with :meth:`Lab.existing` (for ``status``, ``exec``, ``wan``, ``down``).
    """

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        offices: Sequence[str] = ("nyc", "sf"),
        wan: LinkSettings | None = None,
        *,
        direct_route: bool = False,
        start_hub: HubHook | None = None,
        start_edge: EdgeHook | None = None,
        hq_nodes: int = 1,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.offices = plan_offices(list(offices))
        if not 1 <= hq_nodes <= cluster.MAX_HQ_NODES:
            raise ValueError(f"--hq-nodes: 1 to {cluster.MAX_HQ_NODES}, not {hq_nodes}")
        self.hq_nodes = hq_nodes
        #: HQ's Samba as a CTDB cluster (hq_nodes >= 2), else None: smbd runs in hq.
        self.cluster: cluster.ClusterPlan | None = (
            cluster.ClusterPlan(hq_nodes, self.state_dir / "hosts") if hq_nodes > 1 else None
        )
        self.wan_settings = wan or LinkSettings()
        self.direct_route = direct_route
        self.start_hub = start_hub
        self.start_edge = start_edge
        self.registry = StateRegistry(self.state_dir / "state.json")
        self.hub_pid: int | None = None
        self.edge_pids: dict[str, int] = {}

    def __repr__(self) -> str:
        names = ",".join(o.name for o in self.offices)
        return (
            f"<Lab {self.state_dir} offices={names} hq_nodes={self.hq_nodes} "
            f"wan={self.wan_settings}>"
        )

    @classmethod
    def existing(cls, state_dir: Path = DEFAULT_STATE_DIR) -> Lab:
        """The lab recorded in ``state_dir`` (raises LabError when there is none)."""
        registry = StateRegistry(Path(state_dir).resolve() / "state.json")
        meta = registry.meta
        if not meta.get("offices"):
            raise LabError(f"no lab in {state_dir}")
        lab = cls(
            state_dir,
            offices=meta["offices"],
            wan=LinkSettings.from_dict(meta.get("wan", {})),
            direct_route=bool(meta.get("direct_route", False)),
            hq_nodes=int(meta.get("hq_nodes", 1)),
        )
        return lab

    # --- paths and names the hooks use ---------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        nodes = self.cluster.hosts if self.cluster is not None else []
        return [HQ, *nodes, *(h for o in self.offices for h in o.hosts)]

    @property
    def smb_backends(self) -> list[str]:
        """HQ's SMB service as ``HOST:PORT`` backends for the hub, in order: smbd on the
        service address, or each CTDB public address of the cluster."""
        if self.cluster is None:
            return [f"{HQ_SERVICE_IP}:445"]
        return [f"{ip}:445" for ip in self.cluster.public_ips]

    def hq_cluster(self) -> cluster.HqCluster:
        """The running CTDB cluster (LabError when HQ is one host)."""
        if self.cluster is None:
            raise LabError("HQ is one host in this lab (lab up --hq-nodes N makes a cluster)")
        return cluster.HqCluster(self.cluster, self.registry, self.logs_dir)

    @property
    def hub_address(self) -> str:
        """The address the hub listens on and every office dials."""
        return HQ_SERVICE_IP

    @property
    def deploy_dir(self) -> Path:
        """Where the hook keeps the deployment (CA, hub config, office bundles)."""
        return self.state_dir / "deploy"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def host_dir(self, host: str) -> Path:
        """A private directory for ``host``'s generated configuration and state."""
        return self.state_dir / "hosts" / host

    def office(self, name: str) -> OfficePlan:
        for plan in self.offices:
            if plan.name == name:
                return plan
        raise LabError(f"no office {name!r} in this lab")

    def wan_control(self, office: str) -> Path:
        return self.state_dir / "wan" / f"{office}.sock"

    # --- processes -----------------------------------------------------------------------

    def spawn(
        self, host: str, argv: Sequence[str], what: str, env: dict[str, str] | None = None
    ) -> int:
        """Start ``argv`` in ``host`` (own session, output in ``logs/WHAT.log``); record it."""
        self._check_host(host)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", what)
        return services.spawn(
            self.registry, host, self._on_host(host, argv), what,
            self.logs_dir / f"{safe}.log", env=env,
        )  # fmt: skip

    def exec(
        self, host: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` in ``host`` and wait (``kwargs`` go to :func:`subprocess.run`)."""
        self._check_host(host)
        return subprocess.run(netns.exec_argv(host, self._on_host(host, argv)), **kwargs)

    def _on_host(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as ``host`` runs it: a cluster node's own CTDB directories mounted."""
        if self.cluster is not None and host in self.cluster.hosts:
            return self.cluster.node_argv(self.cluster.node(host), argv)
        return list(argv)

    def _check_host(self, host: str) -> None:
        if host not in self.hosts:
            raise LabError(f"no host {host!r}; hosts: {', '.join(self.hosts)}")

    # --- build ---------------------------------------------------------------------------

    def up(self, progress: Progress | None = None) -> None:
        """Build the lab, start its services and (if hooked) hub and edges.

        A stale lab in the same state dir is removed first. If anything fails, what was
        built is removed again before the exception propagates.
        """
        t0 = time.monotonic()

        def step(name: str) -> None:
            log.info("lab up: %s", name)
            if progress is not None:
                progress(name, time.monotonic() - t0)

        self._check_state_dir()
        other = self._other_owner()
        if other is not None:
            raise LabError(
                f"a lab from {other} is up (host names are machine-wide); "
                f"remove it first: spokeshare lab --state-dir {other} down"
            )
        step("removing any stale lab")
        self.down()
        OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
        OWNER_FILE.write_text(str(self.state_dir.resolve()))
        try:
            self._build(step)
        except BaseException:
            log.warning("lab up failed; removing what was built (logs kept in %s)", self.logs_dir)
            self.down(keep_logs=True)
            raise
        step("ready")

    def _other_owner(self) -> Path | None:
        """The state dir of another lab that is up now, if any (stale records ignored)."""
        try:
            owner = Path(OWNER_FILE.read_text().strip())
        except OSError:
            return None
        if owner == self.state_dir.resolve():
            return None
        if not (owner / "state.json").exists() or not netns.namespace_exists(HQ):
            return None
        return owner

    def _check_state_dir(self) -> None:
        """The daemons drop privileges (smbd's guests are ``nobody``, cupsd runs backends
        as ``lp``): every directory above the state dir must be searchable by others."""
        for d in (self.state_dir, *self.state_dir.parents):
            if d.exists() and not d.stat().st_mode & 0o001:
                raise LabError(
                    f"state dir {self.state_dir}: {d} is not searchable by other users "
                    "(chmod o+x it, or choose another --state-dir)"
                )

    def _build(self, step: Callable[[str], None]) -> None:
        reg = self.registry
        reg.set_meta("offices", [o.name for o in self.offices])
        reg.set_meta("wan", self.wan_settings.to_dict())
        reg.set_meta("direct_route", self.direct_route)
        reg.set_meta("hq_nodes", self.hq_nodes)
        for sub in ("hosts", "wan", "logs"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)

        step("namespaces")
        for host in self.hosts:
            reg.add("namespaces", host)
            netns.create_namespace(host)
        # The service address sits on hq's loopback (this kernel has no dummy links):
        # reachable over every WAN link, independent of any one of them.
        netns.add_address(HQ, "lo", f"{HQ_SERVICE_IP}/32")

        for o in self.offices:
            step(f"{o.name}: LAN")
            self._build_lan(o)

        for o in self.offices:
            step(f"{o.name}: WAN link")
            self._build_wan(o)

        step("hq: cupsd")
        hq_ips = (HQ_SERVICE_IP, *(o.wan_hq_ip for o in self.offices))
        hq_cups = services.CupsHost(HQ, hq_ips, self.host_dir(HQ) / "cups")
        hq_cups.start(reg, self.logs_dir)

        if self.cluster is not None:
            self._build_cluster(step)
        else:
            self._build_hq_smbd(step, hq_cups)

        step("hq: cups-lpd (515) and a raw printer (9100)")
        services.LpdServer(HQ, HQ_SERVICE_IP, hq_cups.socket).start(reg, self.logs_dir)
        services.RawPrinter(HQ, HQ_SERVICE_IP, self.host_dir(HQ) / "raw-printer").start(
            reg, self.logs_dir
        )

        for o in self.offices:
            step(f"{o.name}: file server {o.fs_netbios_name}")
            fs = services.SambaHost(
                o.fs, o.fs_netbios_name, (f"{o.fs_ip}/24",),
                self.host_dir(o.fs) / "samba", master_browser=True,
            )  # fmt: skip
            fs.start(reg, o.fs_ip, self.logs_dir)
            services.write_pc_config(
                reg, o.pc, f"{o.pc_ip}/24", self.host_dir(o.pc), f"{o.edge_ip}:631"
            )

        if self.start_hub is not None:
            step("hub")
            self.hub_pid = self.start_hub(self)
            reg.add_process(self.hub_pid, "hub")
            reg.set_meta("hub_pid", self.hub_pid)
        if self.start_edge is not None:
            for o in self.offices:
                step(f"{o.name}: edge")
                pid = self.start_edge(self, o.name)
                self.edge_pids[o.name] = pid
                reg.add_process(pid, f"edge {o.name}")
            reg.set_meta("edge_pids", self.edge_pids)

    def _build_hq_smbd(self, step: Callable[[str], None], hq_cups: services.CupsHost) -> None:
        """HQ as one host: smbd in ``hq``, after cupsd (it shares the printers CUPS
        lists when it starts)."""
        reg = self.registry
        step("hq: smbd")
        hq_addrs = (f"{HQ_SERVICE_IP}/32", *(f"{o.wan_hq_ip}/30" for o in self.offices))
        services.add_hq_unix_user(reg, HQ)
        hq_samba = services.SambaHost(
            HQ, "HQ", hq_addrs, self.host_dir(HQ) / "samba", print_server=hq_cups.socket
        )
        # alice goes into the passdb before smbd starts: smbpasswd then never meets
        # smbd creating the same tdb files (it failed once so, on a loaded machine).
        hq_samba.prepare()
        hq_samba.add_user(services.ALICE, services.ALICE_PASSWORD)
        hq_samba.start(reg, HQ_SERVICE_IP, self.logs_dir)

    def _build_cluster(self, step: Callable[[str], None]) -> None:
        """HQ's Samba as a CTDB cluster (spokeshare.lab.cluster); ready when every node
        is OK and every public address is hosted."""
        hq_cluster = self.hq_cluster()
        step(f"hq: cluster network ({self.hq_nodes} nodes)")
        hq_cluster.network(HQ)
        hq_cluster.configure()
        step("hq: ctdbd and smbd on every node")
        hq_cluster.start()

    def _build_lan(self, o: OfficePlan) -> None:
        reg = self.registry
        reg.add("links", o.bridge)
        netns.create_bridge(o.bridge)
        for host, ip in ((o.edge, o.edge_ip), (o.fs, o.fs_ip), (o.pc, o.pc_ip)):
            root_end = o.veth_root(host)
            reg.add("links", root_end)
            netns.create_veth(root_end, f"{root_end}x")
            netns.move_link(f"{root_end}x", host, LAN_IFNAME)
            netns.attach_to_bridge(root_end, o.bridge)
            netns.add_address(host, LAN_IFNAME, f"{ip}/24")
            netns.link_up(host, LAN_IFNAME)
            # An office host reaches multicast (mDNS, LLMNR, WS-Discovery) through its
            # default route; lab hosts have none, so they get the multicast range on
            # the LAN itself.
            netns.add_device_route(host, "224.0.0.0/4", LAN_IFNAME)
        netns.link_up(None, o.bridge)
        if self.direct_route:
            netns.sysctl(o.edge, {"net.ipv4.ip_forward": "1"})
            for host in (o.pc, o.fs):
                netns.add_route(host, "default", o.edge_ip)

    def _build_wan(self, o: OfficePlan) -> None:
        for tap in o.taps:
            if netns.link_exists(tap):  # a leftover from a run whose state file was lost
                netns.delete_link(tap)
        link = WanLink(
            o.name,
            WanEnd(HQ, o.wan_hq_ifname, f"{o.wan_hq_ip}/30"),
            WanEnd(o.edge, "wan0", f"{o.wan_edge_ip}/30"),
            self.wan_control(o.name),
            self.wan_settings,
            tap_names=o.taps,
            log_path=self.logs_dir / f"wan-{o.name}.log",
            registry=self.registry,
        )
        link.start()
        netns.add_route(o.edge, f"{HQ_SERVICE_IP}/32", o.wan_hq_ip)
        if self.direct_route:
            netns.add_route(HQ, o.lan_cidr, o.wan_edge_ip)

    # --- run time ------------------------------------------------------------------------

    def wan(self, office: str, **changes: Any) -> LinkSettings:
        """Change the WAN link of ``office`` live (keywords of :meth:`WanLink.set`)."""
        self.office(office)
        return WanLink.attach(office, self.wan_control(office)).set(**changes)

    def wan_stats(self, office: str) -> dict[str, object]:
        self.office(office)
        return WanLink.attach(office, self.wan_control(office)).stats()

    def status(self) -> dict[str, Any]:
        """A snapshot: hosts present, processes alive, each WAN link's settings and counters."""
        present = set(netns.list_namespaces())
        procs = [
            {**p, "alive": netns.pid_alive(p["pid"], p["start"])} for p in self.registry.processes()
        ]
        wans: dict[str, Any] = {}
        for o in self.offices:
            try:
                wans[o.name] = self.wan_stats(o.name)
            except (OSError, ValueError) as exc:
                wans[o.name] = {"ok": False, "error": str(exc)}
        return {
            "state_dir": str(self.state_dir),
            "up": bool(self.registry.data["namespaces"]),
            "hub_address": self.hub_address,
            "direct_route": self.direct_route,
            "hq_nodes": self.hq_nodes,
            "smb_backends": self.smb_backends,
            "hosts": {h: h in present for h in self.hosts},
            "offices": [o.to_dict() for o in self.offices],
            "processes": procs,
            "wan": wans,
        }

    # --- teardown ------------------------------------------------------------------------

    def down(self, keep_logs: bool = False) -> list[str]:
        """Remove everything a lab in this state dir built (also a crashed one).

        Processes by PID (start time checked), then anything left in the lab's
        namespaces, links, namespaces, files under /etc/netns, and the generated files
        in the state dir. Safe to call when nothing is up. Returns what was done.
        """
        done = self.registry.teardown()
        if self._other_owner() is not None:
            return done  # the namespaces by these names belong to another lab
        with contextlib.suppress(FileNotFoundError):
            OWNER_FILE.unlink()
        # A lab whose state file was lost still has its names: those are ours.
        for host in self.hosts:
            if netns.namespace_exists(host):
                for pid, start in netns.pids_in_namespace(host):
                    netns.kill_pid(pid, start)
                netns.delete_namespace(host)
                done.append(f"deleted stray namespace {host}")
        strays = [
            i for o in self.offices for i in (o.bridge, *(o.veth_root(h) for h in o.hosts), *o.taps)
        ]
        if self.cluster is not None:
            strays += self.cluster.links
        for ifname in strays:
            if netns.link_exists(ifname):
                netns.delete_link(ifname)
                done.append(f"deleted stray link {ifname}")
        for sub in ("hosts", "wan", "deploy") if keep_logs else ("hosts", "wan", "deploy", "logs"):
            path = self.state_dir / sub
            if path.exists():
                shutil.rmtree(path)
        self.hub_pid = None
        self.edge_pids = {}
        return done
