"""The hub's clock against the edge's, end to end on loopback: a real hub stamps its
pongs, a real edge daemon estimates the skew (spokeshare.tunnel.control.clock_skew),
writes it to lan-status.json, and ``spokeshare check`` reads it there.

Hub and edge share this host's clock, so the true offset is 0 and the estimate must
be within half the measured round trip of it; the only slack is what elapses inside
the edge between reading the monotonic clock and the wall clock for one pong (a
thread switch under load: the GIL's switch interval is 5 ms), bounded here by
SLACK_MS. A real offset between two clocks is exercised by the pure tests
(tests/tunnel/test_control.py: simulated clocks) only: no faketime in this
environment's Debian packages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

from spokeshare import bundle, check
from spokeshare.config import load_edge
from spokeshare.edge_daemon import EdgeDaemon
from spokeshare.tunnel.hub import Hub
from tests.helpers import LoopThread, free_port, make_deployment, wait_for

#: Milliseconds allowed beyond RTT/2: the stamp's truncation and the skew's rounding
#: (1 ms each), and the gap between the edge's two clock reads (see the docstring).
SLACK_MS = 250


def test_edge_reports_the_hubs_clock_near_zero(tmp_path: Path, loop_thread: LoopThread) -> None:
    dep = make_deployment(tmp_path, {"smb": free_port(), "ipp": free_port()})
    path = dep.add_office("shop", ["ipp"])
    hub = Hub(dep.hub_config(), dep.dir)
    state = tmp_path / "edge-state"
    cfg = load_edge(None, {"bundle": str(path), "lan_address": "127.0.0.1",
                           "ports": {"ipp": free_port()}})  # fmt: skip
    daemon = EdgeDaemon(dataclasses.replace(cfg, state_dir=state), bundle.read(path))
    status_file = state / "lan-status.json"

    def hub_clock() -> dict[str, Any] | None:
        try:
            data = json.loads(status_file.read_text())
        except (OSError, ValueError):
            return None
        clock = data.get("hub_clock")
        return clock if isinstance(clock, dict) else None

    loop_thread.run(hub.start())
    try:
        loop_thread.run(daemon.start())
        try:
            clock = wait_for(hub_clock, timeout=30, what="hub_clock in lan-status.json")
            assert isinstance(clock, dict)
            skew_ms, rtt_ms = clock["skew_ms"], clock["rtt_ms"]
            assert isinstance(skew_ms, int) and rtt_ms >= 0
            assert abs(skew_ms) <= rtt_ms / 2 + SLACK_MS, clock
            at = dt.datetime.fromisoformat(clock["measured_at"])
            now = dt.datetime.now(dt.UTC)
            assert abs(now - at) < dt.timedelta(minutes=1)
            # what check reads from the same file
            finding = check.hub_clock(json.loads(status_file.read_text()), now)
            assert finding.level is check.Level.OK and finding.code == "edge.hub.clock"
            assert "s ahead of" in finding.message or "s behind" in finding.message
        finally:
            loop_thread.run(daemon.close())
    finally:
        loop_thread.run(hub.close())
