"""The CTDB cluster's plan and the files it writes (spokeshare.lab.cluster); no lab built.

The ``ctdb -X`` outputs below were captured from Debian's ctdb 2:4.17.12 in the lab
(``spokeshare lab exec hq-node1 -- ctdb -X status``, ``ctdb -X ip``), as noted at each.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spokeshare.lab import cluster
from spokeshare.lab.netns import LabError
from spokeshare.lab.topology import Lab

#: /etc/ctdb/ctdb.conf as Debian's ctdb 2:4.17.12+dfsg-0+deb12u4 installs it.
STOCK_CTDB_CONF = """\
# See ctdb.conf(5) for documentation
#
# See ctdb-script.options(5) for documentation about event script
# options

[logging]
	# Enable logging to syslog
	location = syslog

	# Default log level
	log level = NOTICE

[cluster]
	# Shared cluster lock file to avoid split brain.  Daemon
	# default is no cluster lock.  Do NOT run CTDB without a
	# cluster lock file unless you know exactly what you are
	# doing.
	#
	# Please see the CLUSTER LOCK section in ctdb(7) for more
	# details.
	#
	# cluster lock = !/bin/false CLUSTER LOCK NOT CONFIGURED
"""

#: ``ctdb -X status`` on hq-node1 of a healthy 3-node lab cluster (captured).
STATUS_ALL_OK = """\
|Node|IP|Disconnected|Unknown|Banned|Disabled|Unhealthy|Stopped|Inactive|PartiallyOnline|ThisNode|
|0|198.18.2.1|0|0|0|0|0|0|0|0|Y|
|1|198.18.2.2|0|0|0|0|0|0|0|0|N|
|2|198.18.2.3|0|0|0|0|0|0|0|0|N|
"""

#: ``ctdb -X status`` on hq-node1 after ``ctdb disable`` on hq-node2 (captured).
STATUS_ONE_DISABLED = """\
|Node|IP|Disconnected|Unknown|Banned|Disabled|Unhealthy|Stopped|Inactive|PartiallyOnline|ThisNode|
|0|198.18.2.1|0|0|0|0|0|0|0|0|Y|
|1|198.18.2.2|0|0|0|1|0|0|0|0|N|
|2|198.18.2.3|0|0|0|0|0|0|0|0|N|
"""

#: ``ctdb -X ip`` on hq-node1 of a healthy 3-node lab cluster (captured).
IP_ALL_HOSTED = """\
|Public IP|Node|
|198.18.1.101|2|
|198.18.1.102|1|
|198.18.1.103|0|
"""


def plan(tmp_path: Path, nodes: int = 3) -> cluster.ClusterPlan:
    return cluster.ClusterPlan(nodes, tmp_path)


def test_node_addresses_follow_the_plan(tmp_path: Path) -> None:
    p = plan(tmp_path)
    assert p.hosts == ["hq-node1", "hq-node2", "hq-node3"]
    assert [n.lan_ip for n in p.node_plans] == ["198.18.1.11", "198.18.1.12", "198.18.1.13"]
    assert [n.private_ip for n in p.node_plans] == ["198.18.2.1", "198.18.2.2", "198.18.2.3"]
    assert p.public_ips == ["198.18.1.101", "198.18.1.102", "198.18.1.103"]
    assert [n.pnn for n in p.node_plans] == [0, 1, 2]
    # Interface names fit IFNAMSIZ (15 characters and a NUL).
    assert all(len(name) <= 15 for name in p.links)


@pytest.mark.parametrize("nodes", [0, 1, cluster.MAX_HQ_NODES + 1])
def test_a_cluster_has_two_to_eight_nodes(tmp_path: Path, nodes: int) -> None:
    with pytest.raises(ValueError, match="2 to 8 nodes"):
        plan(tmp_path, nodes)


@pytest.mark.parametrize("nodes", [0, 9])
def test_lab_refuses_hq_nodes_out_of_range(tmp_path: Path, nodes: int) -> None:
    with pytest.raises(ValueError, match="--hq-nodes"):
        Lab(tmp_path, ["nyc"], hq_nodes=nodes)


def test_one_hq_node_is_the_single_host(tmp_path: Path) -> None:
    lab = Lab(tmp_path, ["nyc"])
    assert lab.cluster is None
    assert lab.smb_backends == ["198.19.0.1:445"]
    assert not any(h.startswith("hq-node") for h in lab.hosts)


def test_three_nodes_are_hosts_and_backends(tmp_path: Path) -> None:
    lab = Lab(tmp_path, ["nyc"], hq_nodes=3)
    assert lab.hosts[:4] == ["hq", "hq-node1", "hq-node2", "hq-node3"]
    assert lab.smb_backends == ["198.18.1.101:445", "198.18.1.102:445", "198.18.1.103:445"]


def test_nodes_and_public_addresses_files(tmp_path: Path) -> None:
    p = plan(tmp_path)
    assert p.nodes_file() == "198.18.2.1\n198.18.2.2\n198.18.2.3\n"
    assert p.public_addresses_file() == (
        "198.18.1.101/24 lan0\n198.18.1.102/24 lan0\n198.18.1.103/24 lan0\n"
    )


def test_ctdb_conf_is_stock_plus_the_cluster_lock(tmp_path: Path) -> None:
    p = plan(tmp_path)
    conf = p.ctdb_conf(STOCK_CTDB_CONF)
    added = [ln for ln in conf.splitlines() if ln not in STOCK_CTDB_CONF.splitlines()]
    assert added == [f"\tcluster lock = {tmp_path}/cluster-fs/.ctdb/reclock"]
    assert conf.index("cluster lock =") > conf.index("[cluster]")


def test_ctdb_conf_without_a_cluster_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"\[cluster\]"):
        plan(tmp_path).ctdb_conf("[logging]\n\tlocation = syslog\n")


def test_node_smb_conf_is_clustered_and_binds_no_interface(tmp_path: Path) -> None:
    p = plan(tmp_path)
    text = p.samba(p.node_plans[1]).config_text()
    assert "  clustering = yes" in text.splitlines()
    assert "bind interfaces only" not in text and "interfaces =" not in text
    assert "  netbios name = HQ" in text.splitlines()
    assert f"  path = {tmp_path}/cluster-fs/share" in text.splitlines()
    assert f"{tmp_path}/hq-node2/samba/private" in text
    # The same file on every node but for the node's own local paths.
    other = p.samba(p.node_plans[0]).config_text()
    assert other.replace("hq-node1", "hq-node2") == text


def test_node_argv_mounts_the_nodes_directories(tmp_path: Path) -> None:
    p = plan(tmp_path)
    argv = p.node_argv(p.node_plans[0], ["ctdb", "status"])
    assert argv[:2] == ["sh", "-c"]
    assert "/etc/ctdb" in argv[2] and "/run" in argv[2] and "/var/lib/ctdb" in argv[2]
    assert argv[4:7] == [
        f"{tmp_path}/hq-node1/etc-ctdb", f"{tmp_path}/hq-node1/run", f"{tmp_path}/hq-node1/var-ctdb"
    ]  # fmt: skip
    assert argv[7:] == ["ctdb", "status"]


def test_status_parsing() -> None:
    assert cluster.all_nodes_ok(STATUS_ALL_OK)
    assert not cluster.all_nodes_ok(STATUS_ONE_DISABLED)
    assert not cluster.all_nodes_ok("")
    assert not cluster.all_nodes_ok("connect() failed, errno=2\n")


def test_ip_parsing() -> None:
    assert cluster.parse_ctdb_ip(IP_ALL_HOSTED) == {
        "198.18.1.101": 2, "198.18.1.102": 1, "198.18.1.103": 0
    }  # fmt: skip
    unhosted = IP_ALL_HOSTED.replace("|198.18.1.102|1|", "|198.18.1.102|-1|")
    assert cluster.parse_ctdb_ip(unhosted)["198.18.1.102"] == -1
    assert cluster.parse_ctdb_ip("") == {}
