"""The hub as several worker processes sharing its port (``[hub] workers``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spokeshare import bundle, enrollment, hubstatus
from tests.helpers import (
    Deployment,
    LoopThread,
    edge_config,
    free_port,
    process,
    recv_all,
    wait_for,
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spokeshare", *args], capture_output=True, text=True, timeout=60
    )


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.expect_errors  # the edge logs its office's revocation at ERROR
def test_two_workers_share_the_port(
    deployment: Deployment, loop_thread: LoopThread, tmp_path: Path
) -> None:
    from spokeshare.tunnel.edge import Edge

    hub_toml = deployment.dir / "hub.toml"
    hub_toml.write_text(
        hub_toml.read_text().replace("[hub]\n", "[hub]\nworkers = 2\nheartbeat_interval = 0.5\n")
    )
    state = deployment.dir.parent / "hq-state"
    log = open(tmp_path / "hub.log", "wb")
    with process(
        [sys.executable, "-m", "spokeshare", "hub", "--dir", str(deployment.dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    ) as hub:
        wait_for(
            lambda: len(hubstatus.read_fresh(state)) == 2,
            timeout=20,
            what="two workers writing their status",
        )
        port = free_port()
        edge = Edge(
            edge_config(deployment.bundles["nyc"], {"smb": port}, min_idle=8),
            bundle.read(deployment.bundles["nyc"]),
        )
        loop_thread.run(edge.start())
        try:
            for i in range(40):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    c.sendall(b"%d" % i)
                    c.shutdown(socket.SHUT_WR)
                    assert recv_all(c) == b"%d" % i

            def per_worker() -> list[int]:
                return [
                    s["offices"].get("nyc", {}).get("streams_total", 0)
                    for s in hubstatus.read_fresh(state)
                ]

            # The kernel spread the tunnels: both workers relayed streams.
            wait_for(
                lambda: sum(per_worker()) == 40 and min(per_worker()) > 0,
                what=f"40 streams over both workers (now {per_worker()})",
            )
            listed = json.loads(
                cli("office", "list", "--dir", str(deployment.dir), "--json").stdout
            )
            nyc = listed["offices"][0]
            assert listed["hub_running"] and nyc["connected"] and nyc["rtt_ms"] is not None
            # A revocation reaches every worker.
            enrollment.revoke_office(deployment.dir, "nyc")
            wait_for(
                lambda: loop_thread.call(lambda: edge.hub_state.value) == "revoked",
                what="edge revoked",
            )
            wait_for(
                lambda: all(
                    s["offices"].get("nyc", {}).get("streams", 0) == 0 and s["tunnels"] == 0
                    for s in hubstatus.read_fresh(state)
                ),
                what="no tunnel left on any worker",
            )
        finally:
            loop_thread.run(edge.close())
        workers = [int(s["pid"]) for s in hubstatus.read_fresh(state)]
        assert len(workers) == 2 and hub.pid not in workers
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(20) == 0
        wait_for(lambda: not any(alive(p) for p in workers), what="workers gone")


def test_merge_status() -> None:
    now = time.time()
    a = {
        "pid": 1,
        "time": now,
        "handshakes": 3,
        "tunnels": 2,
        "offices": {
            "nyc": {
                "connected": True,
                "rtt_ms": 100.0,
                "version": "v",
                "clients": 5,
                "streams": 1,
                "streams_total": 10,
                "last_seen": now - 1,
            }
        },
    }
    b = {
        "pid": 2,
        "time": now,
        "handshakes": 4,
        "tunnels": 1,
        "offices": {
            "nyc": {
                "connected": False,
                "rtt_ms": None,
                "streams": 2,
                "streams_total": 7,
                "last_seen": None,
            }
        },
    }
    m = hubstatus.merge([a, b])
    assert m is not None
    assert m.pids == (1, 2) and m.handshakes == 7 and m.tunnels == 3 and m.workers == 2
    nyc = m.offices["nyc"]
    assert nyc.connected and nyc.rtt_ms == 100.0 and nyc.clients == 5 and nyc.version == "v"
    assert nyc.streams == 3 and nyc.streams_total == 17 and nyc.last_seen == now - 1
    assert hubstatus.merge([]) is None


def test_stale_snapshots_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "status-0.json").write_text(json.dumps({"pid": 1, "time": time.time()}))
    (tmp_path / "status-1.json").write_text(json.dumps({"pid": 2, "time": time.time() - 60}))
    (tmp_path / "status.json").write_text("{not json")
    assert [s["pid"] for s in hubstatus.read_fresh(tmp_path)] == [1]
    os.remove(tmp_path / "status-0.json")
    assert hubstatus.read_fresh(tmp_path) == []
