"""HQ's Samba as a CTDB cluster (``lab up --hq-nodes 3``), reached through edge and hub.

One lab for the module: HQ as three CTDB nodes, offices nyc and sf at 20 ms RTT, the
real hub and edges. The hub's ``smb`` service (nyc) lists the three public addresses in
order; an extra service ``smb-b`` (sf's ``GLOBAL-NFS``) the same, starting with the
second. So while all answer, nyc's streams reach the first address and sf's the second,
and CTDB places the two on different nodes. Tests run in file order; each failure test
enables or restarts its node again.

The 10 s bound is the issue's ("a new connection from the same office PC works within
10 s"): a failure deadline, not a measurement. The times are measured by
``bench/ctdb_failover.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare import config, logfmt
from spokeshare.lab import cluster, netns, services, spokes
from spokeshare.lab.topology import Lab
from spokeshare.lab.wire import LinkSettings
from tests.lab.building import running_lab

pytestmark = pytest.mark.lab

OFFICES = ("nyc", "sf")
#: The issue's bound from a node's failure to a working new connection, seconds.
FAILOVER_BOUND = 10.0


def _start_hub(lab: Lab) -> int:
    # sf's path: the same backends, the second public address first.
    rotated = [*lab.smb_backends[1:], lab.smb_backends[0]]
    return spokes.start_hub(lab, extra_services={"smb-b": ",".join(rotated)})


def _start_edge(lab: Lab, office: str) -> int:
    if office == "nyc":
        return spokes.start_edge(lab, office)
    # The edge's own address carries its bundle's smb: the name gets an address of its own.
    return spokes.start_edge(lab, office, names=[(spokes.VIRTUAL_NAME, "smb-b", sf_name_ip(lab))])


def sf_name_ip(lab: Lab) -> str:
    return f"{lab.office('sf').lan_prefix}.5"


def name_ip(lab: Lab, office: str) -> str:
    """Where the office PC reaches GLOBAL-NFS (name lookup is tested elsewhere)."""
    return lab.office(office).edge_ip if office == "nyc" else sf_name_ip(lab)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(
        "ss-ctdb-", OFFICES, LinkSettings(rtt_ms=20.0),
        start_hub=_start_hub, start_edge=_start_edge, hq_nodes=3,
    ) as lab:  # fmt: skip
        yield lab


def public_ip(lab: Lab, office: str) -> str:
    """The public address the office's path reaches (its hub service's backend)."""
    assert lab.cluster is not None
    return lab.cluster.public_ips[0 if office == "nyc" else 1]


def smbclient(
    lab: Lab, office: str, command: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``smbclient //GLOBAL-NFS/share`` from the office PC at its edge, as a guest."""
    share = f"//{spokes.VIRTUAL_NAME}/{services.SHARE}"
    return lab.exec(
        lab.office(office).pc,
        ["smbclient", share, "-I", name_ip(lab, office), "-N", "-c", command],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def put_files(lab: Lab, office: str, tmp_path: Path, count: int, size: int) -> dict[str, str]:
    """Write ``count`` random files through the office; {name: SHA-256} of those the
    server acknowledged (smbclient exited 0 after the close)."""
    written: dict[str, str] = {}
    for _ in range(count):
        name = f"f-{os.urandom(4).hex()}.bin"
        data = os.urandom(size)
        src = tmp_path / name
        src.write_bytes(data)
        done = smbclient(lab, office, f"put {src} {name}")
        assert done.returncode == 0, done.stdout + done.stderr
        written[name] = hashlib.sha256(data).hexdigest()
    return written


def read_back(lab: Lab, office: str, tmp_path: Path, names: list[str]) -> dict[str, str]:
    """Get ``names`` through the office in one connection; {name: SHA-256 of the copy}."""
    out = tmp_path / f"back-{office}-{os.urandom(3).hex()}"
    out.mkdir()
    gets = "; ".join(f"get {n} {out / n}" for n in names)
    done = smbclient(lab, office, gets)
    assert done.returncode == 0, done.stdout + done.stderr
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names}


def new_connection_works(lab: Lab, office: str, deadline: float) -> bool:
    """One new smbclient connection from the office PC lists the share before ``deadline``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    try:
        done = smbclient(lab, office, "ls", timeout=remaining)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def wait_new_connection(lab: Lab, office: str, since: float) -> None:
    """Poll new connections from the office PC; fail when none works by the bound."""
    deadline = since + FAILOVER_BOUND
    while not new_connection_works(lab, office, deadline):
        if time.monotonic() >= deadline:
            pytest.fail(f"no new connection from {office}-pc within {FAILOVER_BOUND} s")
        time.sleep(0.2)


def hq_cluster(lab: Lab) -> cluster.HqCluster:
    return lab.hq_cluster()


# --- the cluster as built ------------------------------------------------------------------


def test_every_node_ok_and_every_public_address_hosted(lab: Lab) -> None:
    c = hq_cluster(lab)
    assert lab.cluster is not None
    for node in lab.cluster.node_plans:
        assert c.status_ok(node), c.ctdb(node, "status").stdout.decode()
        hosted = c.public_ip_hosts(node)
        assert set(hosted) == set(lab.cluster.public_ips)
        assert all(0 <= pnn < 3 for pnn in hosted.values()), hosted
    # smbd with clustering on every node, the hub's smb service on a public address.
    for node in lab.cluster.node_plans:
        assert "clustering = yes" in lab.cluster.samba(node).conf.read_text()
    smb = config.load_hub(lab.deploy_dir / "hub.toml").services["smb"]
    assert [b.address for b in smb.backends] == [f"{ip}:445" for ip in lab.cluster.public_ips]


def test_file_written_in_nyc_via_one_node_reads_identical_in_sf_via_another(
    lab: Lab, tmp_path: Path
) -> None:
    c = hq_cluster(lab)
    via_nyc, via_sf = c.node_hosting(public_ip(lab, "nyc")), c.node_hosting(public_ip(lab, "sf"))
    assert via_nyc is not None and via_sf is not None
    assert via_nyc != via_sf, f"both offices' addresses on {via_nyc.host}"
    written = put_files(lab, "nyc", tmp_path, count=1, size=1024 * 1024)
    assert read_back(lab, "sf", tmp_path, list(written)) == written
    # The bytes are on the cluster filesystem, where every node reads them.
    assert lab.cluster is not None
    for name, digest in written.items():
        assert hashlib.sha256((lab.cluster.share_path / name).read_bytes()).hexdigest() == digest


def _restore(c: cluster.HqCluster, node: cluster.NodePlan) -> None:
    c.enable(node)
    services.wait_for("every public address hosted again", c.all_hosted, timeout=60, interval=0.5)


def test_ctdb_disable_of_the_node_serving_nyc(lab: Lab, tmp_path: Path) -> None:
    c = hq_cluster(lab)
    ip = public_ip(lab, "nyc")
    written = put_files(lab, "nyc", tmp_path, count=5, size=256 * 1024)
    node = c.node_hosting(ip)
    assert node is not None
    # A stream in flight while the node goes: it may break; only new connections count.
    big = tmp_path / "stream.bin"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    stream = subprocess.Popen(
        netns.exec_argv(lab.office("nyc").pc, ["smbclient",
            f"//{spokes.VIRTUAL_NAME}/{services.SHARE}", "-I", name_ip(lab, "nyc"),
            "-N", "-c", f"put {big} stream.bin"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        c.disable(node)
        wait_new_connection(lab, "nyc", t0)
        others = [n for n in c.plan.node_plans if n != node]
        services.wait_for(f"{ip} on another node", lambda: c.node_hosting(ip) in others, timeout=30)
        assert read_back(lab, "nyc", tmp_path, list(written)) == written
        assert read_back(lab, "sf", tmp_path, list(written)) == written
    finally:
        try:
            stream.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stream.kill()
            stream.wait()
        _restore(c, node)


def _hub_log_size(lab: Lab) -> int:
    try:
        return (lab.logs_dir / "hub.log").stat().st_size
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("role", ["not-the-leader", "the-leader"])
def test_host_crash_of_the_node_serving_nyc(lab: Lab, tmp_path: Path, role: str) -> None:
    """The node hosting nyc's address crashes as a host does: every process in its
    namespace killed at once (ctdbd, its recovery daemon and cluster-lock helper, smbd
    and its children). For ``the-leader`` the address is first moved onto the cluster
    leader (CTDB rarely leaves it there): the others then wait out the leader timeout
    (5 s), elect a leader, which takes the cluster lock the dead one's helper released
    with the host, and move its addresses. The node is started again afterwards."""
    c = hq_cluster(lab)
    ip = public_ip(lab, "nyc")
    leader = c.leader()
    assert leader is not None
    if role == "the-leader":
        if c.node_hosting(ip) != leader:
            c.move_ip(ip, leader)
    elif c.node_hosting(ip) == leader:
        c.move_ip(ip, next(n for n in c.plan.node_plans if n != leader))
    written = put_files(lab, "nyc", tmp_path, count=5, size=256 * 1024)
    node = c.node_hosting(ip)
    assert node is not None and (node == c.leader()) == (role == "the-leader")
    survivors = [n for n in c.plan.node_plans if n != node]
    daemons = set(c.pids(node).values())
    assert len(daemons) == 2, c.pids(node)
    # Every other recorded process of the lab (hub, edges, WAN links, the other nodes).
    others = [p for p in lab.registry.processes() if p["pid"] not in daemons]
    in_node = {pid for pid, _ in netns.pids_in_namespace(node.host)}
    assert daemons < in_node  # ctdbd's helpers and smbd's children are there too
    hub_log_from = _hub_log_size(lab)
    t0 = time.monotonic()
    killed = c.crash(node)
    try:
        assert daemons <= set(killed), (daemons, killed)
        assert netns.pids_in_namespace(node.host) == []
        assert os.getpid() not in killed
        for p in others:
            assert p["pid"] not in killed, p
            assert netns.pid_alive(p["pid"], p["start"]), f"{p['what']} died with {node.host}"
        wait_new_connection(lab, "nyc", t0)
        services.wait_for(
            f"{ip} on a surviving node", lambda: c.node_hosting(ip) in survivors, timeout=30
        )  # the dead node's ctdb does not answer; a survivor does
        assert read_back(lab, "nyc", tmp_path, list(written)) == written
        assert read_back(lab, "sf", tmp_path, list(written)) == written
        # The hub's health check saw the address go (a connect to it failed while the
        # dead node's kernel still answered for it) and come back on its new node.
        backend = f"{ip}:445"

        def down_then_up() -> bool:
            with (lab.logs_dir / "hub.log").open("rb") as f:
                f.seek(hub_log_from)
                log = f.read().decode(errors="replace")
            down = [e for e in logfmt.find(log, "backend down") if e.get("backend") == backend]
            up = [e for e in logfmt.find(log, "backend up") if e.get("backend") == backend]
            return bool(down) and bool(up)

        services.wait_for("hub: backend down, then up again", down_then_up, timeout=60)
    finally:
        c.restart(node)
