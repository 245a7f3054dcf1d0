"""The edge's LAN presence reaches the hub, end to end on loopback: a real edge daemon
whose IPP listener cannot bind (its port held) reports that degraded listener in its
pongs (control.Presence), and the real hub's office statistics and dashboard show it."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import pytest

from spokeshare import bundle, dashboard, stats
from spokeshare.config import load_edge
from spokeshare.edge_daemon import EdgeDaemon
from spokeshare.tunnel.hub import Hub
from tests.helpers import LoopThread, free_port, make_deployment, wait_for


@pytest.mark.expect_errors  # the held port's "cannot listen" line is the point
def test_hub_lists_the_edges_degraded_listener(tmp_path: Path, loop_thread: LoopThread) -> None:
    dep = make_deployment(tmp_path, {"smb": free_port(), "ipp": free_port()})
    path = dep.add_office("shop", ["ipp"])
    hub = Hub(dep.hub_config(), dep.dir)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    cfg = load_edge(None, {"bundle": str(path), "lan_address": "127.0.0.1",
                           "ports": {"ipp": port}})  # fmt: skip
    daemon = EdgeDaemon(dataclasses.replace(cfg, state_dir=tmp_path / "edge"), bundle.read(path))

    def shop() -> stats.OfficeStatistics | None:
        office = loop_thread.call(hub.statistics).offices.get("shop")
        return office if office is not None and office.degraded else None

    loop_thread.run(hub.start())
    try:
        loop_thread.run(daemon.start())
        try:
            office = wait_for(shop, timeout=30, what="shop's degraded listener at the hub")
            assert isinstance(office, stats.OfficeStatistics)
            assert any(f"127.0.0.1:{port}" in d for d in office.degraded), office.degraded
            sent = loop_thread.call(daemon.pong_presence)
            assert office.names == dict(sent.names) and office.printers == sent.printers
            snapshot = loop_thread.call(hub.statistics)
            page = dashboard.render(snapshot, {}, time.time())
            assert f"127.0.0.1:{port}" in page
            assert dashboard.trouble(snapshot.offices["shop"], time.time()) is (
                dashboard.Trouble.DEGRADED
            )
        finally:
            loop_thread.run(daemon.close())
    finally:
        loop_thread.run(hub.close())
        holder.close()
