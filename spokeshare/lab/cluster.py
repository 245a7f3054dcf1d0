"""HQ's Samba as a CTDB cluster: ``lab up --hq-nodes N`` (N >= 2).

What a Debian operator builds, on N machines, following ctdb(7), ctdb.conf(5) and
Samba's "Setting up a cluster" guide, here on N lab hosts ``hq-node1`` ... ``hq-nodeN``:

- Debian's ``ctdbd`` and ``smbd`` on every node. The package's ``/etc/ctdb`` (with the
  event scripts its postinst enables: 00.ctdb, 01.reclock, 05.system, 10.interface) plus
  the three files every operator writes: ``ctdb.conf`` (stock, with ``[cluster] cluster
  lock`` set: Samba 4.17's name for the recovery lock), ``nodes`` (the private
  addresses) and ``public_addresses``.
- ``smb.conf`` the same on every node: ``clustering = yes``, one netbios name (``HQ``)
  for the cluster, ``[share]`` on the cluster filesystem, no ``interfaces``/``bind
  interfaces only`` (public addresses come and go; smbd listens on all of them). The
  passdb (tdbsam) is a CTDB persistent database then: ``alice`` is added once, on node 1.
- A cluster filesystem: a directory of the host's filesystem (``STATE_DIR/hosts/
  cluster-fs``) that all nodes see, holding the share and the cluster lock file (CTDB
  takes an fcntl lock on it; local fcntl locks behave as a cluster filesystem's do).
- 50.samba is **not** enabled: its ``startup`` event starts smbd through the init system
  (``service smbd start``), which here is the machine's, not the node's. The lab starts
  each node's smbd itself, after ctdbd, as a unit ordered after ctdb.service would be.
  What this leaves out: 50.samba's ``monitor`` event, which marks a node UNHEALTHY (and
  moves its addresses away) when its smbd stops listening while ctdbd runs on. An
  operator enables 50.samba (``ctdb event script enable legacy 50.samba``).

Address plan (198.18.0.0/15, RFC 2544):

=================================  =========================================================
HQ LAN (bridge ``ss-hq-lan``)       198.18.1.0/24: ``hq`` .1 (``hqlan0``), node *k* .(10+k)
                                    (``lan0``)
CTDB public addresses               198.18.1.(100+k)/24 on the nodes' ``lan0``, one per node
private cluster network             198.18.2.0/24 (bridge ``ss-hq-clu``): node *k* .k
                                    (``priv0``); CTDB's ``nodes`` file
=================================  =========================================================

Each node is a machine of its own to CTDB: ``/etc/ctdb``, ``/run`` (CTDB's socket and
pid file live in ``/run/ctdb``) and ``/var/lib/ctdb`` (its databases) are per node.
Debian's ctdb compiles those paths in (``CTDB_SOCKET`` and ``CTDB_BASE`` are honoured
only in CTDB's own test mode, ctdb/common/path.c), so every process of a node runs
under :func:`node_argv`: in the private mount namespace that ``ip netns exec`` makes, the
node's directories are bind-mounted over those three before the command starts. The
bind mounts never reach the machine (``ip netns exec`` makes ``/`` a slave mount).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spokeshare.lab import netns, services
from spokeshare.lab.netns import LabError, StateRegistry

#: ``--hq-nodes`` bounds: 1 is the single HQ host; a cluster has 2 to 8 nodes.
MAX_HQ_NODES = 8
#: ctdbd's TCP port between nodes (ctdb(7), "Private address"; /etc/services "ctdb").
CTDB_PORT = 4379
#: Debian's ctdb paths, compiled in (``strings /usr/sbin/ctdbd``).
CTDB_ETC = Path("/etc/ctdb")
CTDB_VAR = Path("/var/lib/ctdb")
HQ_LAN_PREFIX = "198.18.1"
HQ_LAN_IP = f"{HQ_LAN_PREFIX}.1"
HQ_LAN_IFNAME = "hqlan0"
PRIVATE_PREFIX = "198.18.2"
NODE_LAN_IFNAME = "lan0"
NODE_PRIVATE_IFNAME = "priv0"
LAN_BRIDGE = "ss-hq-lan"
PRIVATE_BRIDGE = "ss-hq-clu"
HQ_LAN_VETH = "ss-hq-h"
#: One netbios name for the whole cluster (Samba clustering wants it the same on all).
CLUSTER_NETBIOS_NAME = "HQ"
#: Mounts a node's own /etc/ctdb, /run and /var/lib/ctdb, then runs the command.
_NODE_WRAPPER = (
    'mount --bind "$1" /etc/ctdb && mount --bind "$2" /run && '
    'mount --bind "$3" /var/lib/ctdb && shift 3 && exec "$@"'
)


def _namespace_inode(pid: int) -> int | None:
    """The inode of ``pid``'s network namespace (None once the process is gone)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is a child of this process that has exited."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def node_name(k: int) -> str:
    """The lab host of node ``k`` (1-based): ``hq-nodeK``."""
    return f"hq-node{k}"


@dataclass(frozen=True)
class NodePlan:
    """Names and addresses of one cluster node (PNN ``index - 1`` in CTDB's terms)."""

    index: int  # 1-based

    @property
    def host(self) -> str:
        return node_name(self.index)

    @property
    def pnn(self) -> int:
        """CTDB's node number: the line of the ``nodes`` file, from 0."""
        return self.index - 1

    @property
    def lan_ip(self) -> str:
        return f"{HQ_LAN_PREFIX}.{10 + self.index}"

    @property
    def private_ip(self) -> str:
        return f"{PRIVATE_PREFIX}.{self.index}"

    @property
    def public_ip(self) -> str:
        """The public address this node's index gives the cluster (any node may host it)."""
        return f"{HQ_LAN_PREFIX}.{100 + self.index}"

    @property
    def lan_veth(self) -> str:
        return f"ss-hq-n{self.index}l"

    @property
    def private_veth(self) -> str:
        return f"ss-hq-n{self.index}c"


@dataclass(frozen=True)
class ClusterPlan:
    """``nodes`` cluster nodes; all files of the cluster live under ``root``."""

    nodes: int
    root: Path

    def __post_init__(self) -> None:
        if not 2 <= self.nodes <= MAX_HQ_NODES:
            raise ValueError(f"an HQ cluster has 2 to {MAX_HQ_NODES} nodes, not {self.nodes}")

    @property
    def node_plans(self) -> list[NodePlan]:
        return [NodePlan(k) for k in range(1, self.nodes + 1)]

    @property
    def hosts(self) -> list[str]:
        return [n.host for n in self.node_plans]

    @property
    def public_ips(self) -> list[str]:
        return [n.public_ip for n in self.node_plans]

    @property
    def links(self) -> list[str]:
        """Root-namespace links: the two bridges, hq's veth and each node's two."""
        ends = [e for n in self.node_plans for e in (n.lan_veth, n.private_veth)]
        return [LAN_BRIDGE, PRIVATE_BRIDGE, HQ_LAN_VETH, *ends]

    # --- the cluster filesystem -------------------------------------------------------

    @property
    def shared_dir(self) -> Path:
        """The directory standing in for the cluster filesystem."""
        return self.root / "cluster-fs"

    @property
    def share_path(self) -> Path:
        return self.shared_dir / services.SHARE

    @property
    def cluster_lock(self) -> Path:
        return self.shared_dir / ".ctdb" / "reclock"

    # --- per node ---------------------------------------------------------------------

    def node_dir(self, node: NodePlan) -> Path:
        return self.root / node.host

    def etc_dir(self, node: NodePlan) -> Path:
        """The node's /etc/ctdb."""
        return self.node_dir(node) / "etc-ctdb"

    def run_dir(self, node: NodePlan) -> Path:
        """The node's /run (CTDB's socket and pid file are in its ctdb/)."""
        return self.node_dir(node) / "run"

    def var_dir(self, node: NodePlan) -> Path:
        """The node's /var/lib/ctdb (volatile, persistent and state databases)."""
        return self.node_dir(node) / "var-ctdb"

    def samba_dir(self, node: NodePlan) -> Path:
        return self.node_dir(node) / "samba"

    def node(self, host: str) -> NodePlan:
        for n in self.node_plans:
            if n.host == host:
                return n
        raise LabError(f"no cluster node {host!r}")

    # --- what the operator writes (ctdb.conf(5), ctdb(7)) ------------------------------

    def ctdb_conf(self, stock: str) -> str:
        """Debian's stock ctdb.conf with the cluster lock set (ctdb.conf(5), [cluster])."""
        marker = "[cluster]\n"
        if marker not in stock:
            raise LabError(f"{CTDB_ETC}/ctdb.conf: no [cluster] section")
        line = f"\tcluster lock = {self.cluster_lock}\n"
        return stock.replace(marker, marker + line, 1)

    def nodes_file(self) -> str:
        """ctdb(7) "Private address": one private address per line, PNN = line number."""
        return "".join(f"{n.private_ip}\n" for n in self.node_plans)

    def public_addresses_file(self) -> str:
        """ctdb(7) "Public address": ``ADDRESS/MASK INTERFACE``, the same on every node."""
        return "".join(f"{ip}/24 {NODE_LAN_IFNAME}\n" for ip in self.public_ips)

    def samba(self, node: NodePlan) -> services.SambaHost:
        """The node's smbd: the same smb.conf on every node but for its local paths."""
        return services.SambaHost(
            node.host,
            CLUSTER_NETBIOS_NAME,
            (),
            self.samba_dir(node),
            clustered_share=self.share_path,
        )

    def node_argv(self, node: NodePlan, argv: Sequence[str]) -> list[str]:
        """``argv`` as a process of ``node`` (its own /etc/ctdb, /run, /var/lib/ctdb)."""
        return [
            "sh", "-c", _NODE_WRAPPER, "ctdb-node",
            str(self.etc_dir(node)), str(self.run_dir(node)), str(self.var_dir(node)),
            *argv,
        ]  # fmt: skip


def all_nodes_ok(text: str) -> bool:
    """Whether ``ctdb status``'s machine-readable output (``-X``) shows every node OK.

    ``ctdb -X status`` prints a header ``|Node|IP|Disconnected|...|ThisNode|`` and a
    row per node, ``|PNN|IP|FLAG...|Y or N|``; a node is OK when every flag between its
    address and ThisNode is 0 (tests/lab/test_cluster_plan.py has captured outputs).
    """
    rows = [r for r in text.splitlines() if re.match(r"^\|\d+\|", r)]
    if not rows:
        return False
    for row in rows:
        fields = row.strip("|").split("|")
        if len(fields) < 4 or any(f != "0" for f in fields[2:-1]):
            return False
    return True


def parse_ctdb_ip(text: str) -> dict[str, int]:
    """``ctdb -X ip`` output -> {public address: PNN hosting it, -1 when none}.

    The output is ``|Public IP|Node|`` then ``|ADDRESS|PNN|`` per address (ctdb(1), "ip").
    """
    hosted: dict[str, int] = {}
    for row in text.splitlines():
        m = re.match(r"^\|(\d+\.\d+\.\d+\.\d+)\|(-?\d+)\|", row)
        if m:
            hosted[m.group(1)] = int(m.group(2))
    return hosted


class HqCluster:
    """Builds and starts the cluster of a lab (the I/O side of :class:`ClusterPlan`)."""

    def __init__(self, plan: ClusterPlan, registry: StateRegistry, logs_dir: Path) -> None:
        self.plan = plan
        self.registry = registry
        self.logs_dir = logs_dir

    def __repr__(self) -> str:
        return f"<HqCluster nodes={self.plan.nodes} root={self.plan.root}>"

    def run(
        self, node: NodePlan, argv: Sequence[str], check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` on ``node`` and wait."""
        return netns.run_in(node.host, self.plan.node_argv(node, argv), check=check,
                            timeout=timeout)  # fmt: skip

    def ctdb(self, node: NodePlan, *args: str) -> subprocess.CompletedProcess[bytes]:
        """The ``ctdb`` tool on ``node`` (never raises: look at returncode; one that
        hangs for 30 s is stopped and counts as failed, returncode -1)."""
        try:
            return self.run(node, ["ctdb", *args], check=False, timeout=30)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(["ctdb", *args], -1, b"", b"timed out")

    def status_ok(self, node: NodePlan) -> bool:
        done = self.ctdb(node, "-X", "status")
        return done.returncode == 0 and all_nodes_ok(done.stdout.decode())

    def public_ip_hosts(self, node: NodePlan) -> dict[str, int]:
        """Public address -> PNN hosting it, as ``node``'s ctdbd sees it ({} if it can't say)."""
        done = self.ctdb(node, "-X", "ip")
        return parse_ctdb_ip(done.stdout.decode()) if done.returncode == 0 else {}

    def network(self, hq: str) -> None:
        """Namespaces exist already: the HQ LAN and the private network between nodes."""
        reg = self.registry
        for bridge in (LAN_BRIDGE, PRIVATE_BRIDGE):
            reg.add("links", bridge)
            netns.create_bridge(bridge)
        reg.add("links", HQ_LAN_VETH)
        netns.create_veth(HQ_LAN_VETH, f"{HQ_LAN_VETH}x")
        netns.move_link(f"{HQ_LAN_VETH}x", hq, HQ_LAN_IFNAME)
        netns.attach_to_bridge(HQ_LAN_VETH, LAN_BRIDGE)
        netns.add_address(hq, HQ_LAN_IFNAME, f"{HQ_LAN_IP}/24")
        netns.link_up(hq, HQ_LAN_IFNAME)
        for node in self.plan.node_plans:
            for root_end, bridge, ifname, ip in (
                (node.lan_veth, LAN_BRIDGE, NODE_LAN_IFNAME, node.lan_ip),
                (node.private_veth, PRIVATE_BRIDGE, NODE_PRIVATE_IFNAME, node.private_ip),
            ):
                reg.add("links", root_end)
                netns.create_veth(root_end, f"{root_end}x")
                netns.move_link(f"{root_end}x", node.host, ifname)
                netns.attach_to_bridge(root_end, bridge)
                netns.add_address(node.host, ifname, f"{ip}/24")
                netns.link_up(node.host, ifname)
        for bridge in (LAN_BRIDGE, PRIVATE_BRIDGE):
            netns.link_up(None, bridge)

    def configure(self) -> None:
        """Each node's /etc/ctdb (the package's, plus the operator's three files), its
        empty /run and /var/lib/ctdb, and the cluster filesystem."""
        plan = self.plan
        plan.share_path.mkdir(parents=True, exist_ok=True)
        plan.share_path.chmod(0o1777)
        plan.cluster_lock.parent.mkdir(parents=True, exist_ok=True)
        stock = (CTDB_ETC / "ctdb.conf").read_text()
        for node in plan.node_plans:
            etc = plan.etc_dir(node)
            if etc.exists():
                shutil.rmtree(etc)
            # As the package installs it on every machine, event script links included.
            shutil.copytree(CTDB_ETC, etc, symlinks=True)
            (etc / "ctdb.conf").write_text(plan.ctdb_conf(stock))
            (etc / "nodes").write_text(plan.nodes_file())
            (etc / "public_addresses").write_text(plan.public_addresses_file())
            (plan.run_dir(node) / "ctdb").mkdir(parents=True, exist_ok=True)
            for sub in ("volatile", "persistent", "state"):
                (plan.var_dir(node) / sub).mkdir(parents=True, exist_ok=True)
            # 10.interface adds and removes the public addresses: the one script an
            # operator must enable for them (Debian's postinst already has).
            if not (etc / "events" / "legacy" / "10.interface.script").exists():
                self.run(node, ["ctdb", "event", "script", "enable", "legacy", "10.interface"])
            services.add_hq_unix_user(self.registry, node.host)

    def start(self, ready_timeout: float = 120.0) -> None:
        """Start ctdbd on every node, wait for all OK; add alice to the (clustered)
        passdb; start every smbd; wait until every public address is hosted."""
        plan = self.plan
        for node in plan.node_plans:
            self.start_ctdbd(node)
        self.wait_all_ok(ready_timeout)
        for node in plan.node_plans:
            plan.samba(node).prepare()
        # The passdb is a CTDB persistent database: one smbpasswd serves every node.
        first = plan.node_plans[0]
        plan.samba(first).add_user(
            services.ALICE, services.ALICE_PASSWORD, wrap=functools.partial(plan.node_argv, first)
        )
        for node in plan.node_plans:
            self.start_smbd(node)
        self.wait_all_hosted(ready_timeout)

    def restart(self, node: NodePlan, ready_timeout: float = 120.0) -> None:
        """Start a stopped (or crashed) node's ctdbd and smbd again; return when the
        cluster is whole. What a daemon crash (:meth:`kill_daemons`) left running in
        the node (ctdbd's event daemon and helpers, smbd's children; after a host
        crash, :meth:`crash`, nothing is left) is stopped first, by PID, as
        ctdb.service's ``KillMode=control-group`` does before a restart: a new ctdbd
        cannot start its event daemon beside the old one (seen here). 10.interface's
        ``init`` event removes public addresses a crash left on the interface."""
        for pid, start in netns.pids_in_namespace(node.host):
            netns.kill_pid(pid, start)
        self.start_ctdbd(node)
        self.wait_all_ok(ready_timeout)
        self.start_smbd(node)
        self.wait_all_hosted(ready_timeout)

    def start_ctdbd(self, node: NodePlan) -> int:
        """ctdbd in the foreground (``--interactive``: logs to stderr), recorded."""
        argv = self.plan.node_argv(node, ["ctdbd", "--interactive"])
        return services.spawn(self.registry, node.host, argv, f"ctdbd {node.host}",
                              self.logs_dir / f"{node.host}-ctdbd.log")  # fmt: skip

    def start_smbd(self, node: NodePlan) -> int:
        """smbd (needs the node's ctdbd running); returns once it listens on 445."""
        samba = self.plan.samba(node)
        argv = self.plan.node_argv(
            node, ["smbd", "--foreground", "--debug-stdout", f"--configfile={samba.conf}"]
        )
        pid = services.spawn(
            self.registry, node.host, argv, f"smbd {node.host}",
            self.logs_dir / f"{node.host}-smbd.log", new_session=False,
        )  # fmt: skip
        start = self.registry.processes()[-1]["start"]
        services.wait_for(
            f"smbd {node.host}",
            functools.partial(services.listening, node.host, 445),
            timeout=30,
            alive=functools.partial(netns.pid_alive, pid, start),
        )
        return pid

    def wait_all_ok(self, timeout: float) -> None:
        services.wait_for(
            "CTDB: every node OK",
            lambda: all(self.status_ok(n) for n in self.plan.node_plans),
            timeout=timeout,
            interval=0.5,
        )

    def wait_all_hosted(self, timeout: float) -> None:
        services.wait_for(
            "CTDB: every node OK, every public address hosted",
            self.all_hosted,
            timeout=timeout,
            interval=0.5,
        )

    def all_hosted(self) -> bool:
        """Every node OK, and every public address on a node (``ctdb ip`` on node 1)."""
        plan = self.plan
        if not all(self.status_ok(n) for n in plan.node_plans):
            return False
        hosted = self.public_ip_hosts(plan.node_plans[0])
        return set(hosted) == set(plan.public_ips) and all(p >= 0 for p in hosted.values())

    def pids(self, node: NodePlan) -> dict[str, int]:
        """{"ctdbd": PID, "smbd": PID} of ``node`` as recorded (missing when not running)."""
        out: dict[str, int] = {}
        for entry in self.registry.processes():
            for daemon in ("ctdbd", "smbd"):
                if entry["what"] == f"{daemon} {node.host}":
                    out[daemon] = entry["pid"]
        return out

    def node_hosting(self, public_ip: str) -> NodePlan | None:
        """The node that hosts ``public_ip`` now, as the first node that answers says
        (None while no node hosts it or none answers)."""
        for node in self.plan.node_plans:
            hosted = self.public_ip_hosts(node)
            if hosted:
                pnn = hosted.get(public_ip, -1)
                return self.plan.node_plans[pnn] if 0 <= pnn < self.plan.nodes else None
        return None

    def disable(self, node: NodePlan) -> None:
        """``ctdb disable`` on ``node``: it keeps running but hosts no public address."""
        self.run(node, ["ctdb", "disable"], timeout=30)

    def enable(self, node: NodePlan) -> None:
        self.run(node, ["ctdb", "enable"], timeout=30)

    def crash(self, node: NodePlan, timeout: float = 10.0) -> list[int]:
        """A host crash of ``node``: every process of the node dies at once, with no
        shutdown event and no address released by it. Returns the PIDs killed.

        Each node is a network namespace of its own, so the node's processes are those
        whose ``/proc/PID/ns/net`` is the namespace's (by PID and start time, never by
        name): ctdbd, its recovery daemon and cluster-lock helper
        (``ctdb_mutex_fcntl_helper``, whose fcntl lock goes with it, as it would with the
        host), its event daemon and scripts, smbd and its children, and any ``ctdb``
        tool running there. Each is checked, just before the signal, to still be in that
        namespace; all are stopped (SIGSTOP), then all get SIGKILL, so that none reacts
        to another's death first; the scan repeats until none is left (a process may
        fork meanwhile). Nothing outside the namespace is signalled. The recorded ctdbd
        and smbd are then reaped and forgotten.

        Raises :class:`LabError` if the namespace still has processes after ``timeout``
        seconds, or is not there. For a daemon crash on a host that stays up, see
        :meth:`kill_daemons`.
        """
        target = self._namespace_inode(node)
        me = os.getpid()
        killed: list[int] = []
        deadline = time.monotonic() + timeout
        while found := netns.pids_in_namespace(node.host):
            # All stopped first, then all killed: no process of the node sees another
            # die and reacts (smbd exits on its own when its ctdbd goes), as on a host
            # that fails at once.
            stopped = []
            for pid, start in found:
                if pid == me:
                    raise LabError(f"crash {node.host}: refusing to kill this process")
                if _namespace_inode(pid) != target or not netns.pid_alive(pid, start):
                    continue  # gone, or a new process with its PID outside the node
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    continue
                stopped.append(pid)
            for pid in stopped:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append(pid)
            for pid in killed:  # ours (ctdbd, smbd): no zombie left to rescan
                _reap(pid)
            if time.monotonic() >= deadline:
                raise LabError(f"crash {node.host}: processes left after {timeout:g} s: {found}")
            time.sleep(0.01)
        self._forget_daemons(node)
        return killed

    def kill_daemons(self, node: NodePlan) -> list[int]:
        """A crash of ``node``'s two daemons on a host that stays up: its recorded smbd
        and ctdbd get SIGKILL, by PID (start time checked); nothing else of the node.

        What survives is what would on such a host: smbd's children, ctdbd's event
        daemon and its recovery daemon's cluster-lock helper (``ctdb_mutex_fcntl_helper``),
        which keeps the fcntl cluster lock until it notices its parent gone (it checks
        every 5 s, ctdb/server/ctdb_mutex_fcntl_helper.c). For a host crash see
        :meth:`crash`. Returns the PIDs killed."""
        killed: list[int] = []
        for daemon in ("smbd", "ctdbd"):
            for entry in self.registry.processes():
                if entry["what"] != f"{daemon} {node.host}":
                    continue
                if netns.pid_alive(entry["pid"], entry["start"]):
                    os.kill(entry["pid"], signal.SIGKILL)
                    killed.append(entry["pid"])
        self._forget_daemons(node)
        return killed

    def _forget_daemons(self, node: NodePlan) -> None:
        """Reap the node's recorded ctdbd and smbd (dead now) and forget them."""
        for entry in self.registry.processes():
            if entry["what"] in (f"smbd {node.host}", f"ctdbd {node.host}"):
                self.registry.kill_process(entry["pid"])

    def _namespace_inode(self, node: NodePlan) -> int:
        try:
            return os.stat(netns.NETNS_DIR / node.host).st_ino
        except FileNotFoundError:
            raise LabError(f"no network namespace {node.host!r}") from None

    def leader(self) -> NodePlan | None:
        """The cluster leader (``ctdb leader``) as the first node that answers says."""
        for node in self.plan.node_plans:
            done = self.ctdb(node, "leader")
            if done.returncode == 0 and done.stdout.strip().isdigit():
                pnn = int(done.stdout.strip())
                return self.plan.node_plans[pnn] if 0 <= pnn < self.plan.nodes else None
        return None

    def move_ip(self, public_ip: str, to: NodePlan, timeout: float = 60.0) -> None:
        """``ctdb moveip`` (an operator's command): ``public_ip`` onto ``to``; returns once
        ``ctdb ip`` shows it there and takeover runs are enabled again.

        ctdb 4.17's moveip disables takeover runs on the nodes for 20 s ("Disabling
        takeover runs for 20 seconds") and they come back only on that timeout: a node
        failing meanwhile keeps its addresses until then (measured: 18 s instead of 6 s
        after a leader crash). So this waits until every node's log has re-enabled them.
        """
        marks = {n: self._takeover_marks(n) for n in self.plan.node_plans}
        self.run(to, ["ctdb", "moveip", public_ip, str(to.pnn)], timeout=timeout)
        services.wait_for(
            f"{public_ip} on {to.host}",
            lambda: self.node_hosting(public_ip) == to,
            timeout=timeout,
            interval=0.2,
        )

        def reenabled() -> bool:
            for node, before in marks.items():
                lines = self._takeover_lines(node)[before:]
                if lines and "Disabling" in lines[-1]:
                    return False
            return True

        services.wait_for("takeover runs enabled again", reenabled, timeout=timeout)

    def _takeover_lines(self, node: NodePlan) -> list[str]:
        """The ``… takeover runs …`` lines of ``node``'s ctdbd log, in order."""
        try:
            text = (self.logs_dir / f"{node.host}-ctdbd.log").read_text(errors="replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if "abling takeover runs" in ln]

    def _takeover_marks(self, node: NodePlan) -> int:
        return len(self._takeover_lines(node))
