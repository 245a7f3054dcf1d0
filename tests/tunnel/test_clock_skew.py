"""The hub's clock against the edge's, end to end on loopback: a real hub stamps its
pongs, a real edge daemon estimates the skew (spokeshare.tunnel.control.clock_skew),
writes it to lan-status.json, and ``spokeshare check`` reads it there.

Hub and edge share this host's clock, so the true offset is 0 and the estimate must
be within half the measured round trip of it; the only slack is what elapses inside
the edge between reading the monotonic clock and the wall clock for one pong (a
thread switch under load: the GIL's switch interval is 5 ms), bounded here by
SLACK_MS. A real offset: the hub process run under faketime (libfaketime, Debian's
faketime package), its wall clock 2 and 10 minutes ahead, and ``spokeshare check
--edge`` run as the operator runs it; simulated clocks in tests/tunnel/test_control.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spokeshare import bundle, check, hubstatus
from spokeshare.config import load_edge, load_hub
from spokeshare.edge_daemon import EdgeDaemon
from spokeshare.tunnel.hub import Hub
from tests.helpers import LoopThread, free_port, make_deployment, process, wait_for

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


def _hub_clock(status_file: Path) -> dict[str, Any] | None:
    """lan-status.json's ``hub_clock`` object, None while there is none (or no file)."""
    try:
        data = json.loads(status_file.read_text())
    except (OSError, ValueError):
        return None
    clock = data.get("hub_clock") if isinstance(data, dict) else None
    return clock if isinstance(clock, dict) else None


# The hub runs ahead, never behind: the hub refuses an office certificate whose
# notBefore is in its future, and office certificates are backdated by pki.BACKDATE
# (5 minutes) only, so a hub 10 minutes behind would refuse a certificate issued now.
# Ahead is fine both ways: the edge's and the hub's certificates end years from now.
@pytest.mark.parametrize(
    ("offset", "skew_s", "level", "status"),
    [("+2m", 120, "warning", 1), ("+10m", 600, "error", 2)],
)
def test_edge_measures_a_hub_running_ahead_under_faketime(
    tmp_path: Path, offset: str, skew_s: int, level: str, status: int
) -> None:
    """A hub process whose wall clock runs ``offset`` ahead (libfaketime, Debian's
    faketime package; its monotonic clock left true with FAKETIME_DONT_FAKE_MONOTONIC,
    which asyncio's timers run on): the edge measures the offset within RTT/2 +
    SLACK_MS, and ``spokeshare check --edge`` (the CLI) says so at ``level``."""
    assert glob.glob("/usr/lib/*/faketime/libfaketime.so.1"), "./run setup installs faketime"
    # smb only: a hub process refuses an ipp backend on loopback (see hub.toml checks).
    dep = make_deployment(tmp_path, {"smb": free_port()})
    path = dep.add_office("shop", ["smb"])
    hub_toml = dep.dir / "hub.toml"
    hub_state = load_hub(hub_toml).state_dir
    # Pongs every half second (the default five would only slow the wait).
    text = hub_toml.read_text()
    assert "heartbeat_interval" not in text and "[hub]\n" in text
    hub_toml.write_text(text.replace("[hub]\n", "[hub]\nheartbeat_interval = 0.5\n", 1))
    state = tmp_path / "edge-state"
    edge_toml = tmp_path / "edge.toml"
    # The edge runs as the operator runs it (the CLI, its own process), listening on a
    # free port: check trusts a measurement only while an edge runs on this box.
    edge_toml.write_text(
        f'[edge]\nbundle = "{path}"\nstate_dir = "{state}"\n\n'
        f'[lan]\naddress = "127.0.0.1"\n\n[ports]\nsmb = {free_port()}\n'
    )
    status_file = state / "lan-status.json"
    # libfaketime preloaded as the faketime command does (ld.so expands $LIB), but with
    # the hub as the process started: faketime itself forks, and stopping it by PID
    # would leave the hub running.
    argv = [sys.executable, "-m", "spokeshare", "hub"]
    env = {
        **os.environ,
        "LD_PRELOAD": "/usr/$LIB/faketime/libfaketime.so.1",
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    with (
        open(tmp_path / "hub.log", "wb") as out,
        process(
            argv + ["--dir", str(dep.dir)], stdout=out, stderr=subprocess.STDOUT, env=env
        ) as hub,
    ):
        wait_for(lambda: hub.poll() is not None or bool(hubstatus.read_fresh(hub_state)),
                 timeout=30, what="the hub writing its status")  # fmt: skip
        assert hub.poll() is None, (tmp_path / "hub.log").read_text(errors="replace")
        with (
            open(tmp_path / "edge.log", "wb") as edge_out,
            process([sys.executable, "-m", "spokeshare", "edge", "--config", str(edge_toml)],
                    stdout=edge_out, stderr=subprocess.STDOUT) as edge,
        ):  # fmt: skip
            clock = wait_for(lambda: edge.poll() is not None or _hub_clock(status_file),
                             timeout=30, what="hub_clock in lan-status.json")  # fmt: skip
            assert isinstance(clock, dict), (tmp_path / "edge.log").read_text(errors="replace")
            skew_ms, rtt_ms = clock["skew_ms"], clock["rtt_ms"]
            assert abs(skew_ms - skew_s * 1000) <= rtt_ms / 2 + SLACK_MS, clock
            done = subprocess.run(
                [sys.executable, "-m", "spokeshare", "check", "--edge",
                 "--config", str(edge_toml), "--json"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            findings = {f["code"]: f for f in json.loads(done.stdout)}
            assert findings["edge.hub.clock"]["level"] == level, findings["edge.hub.clock"]
            assert "ahead of" in findings["edge.hub.clock"]["message"]
            # Other findings of this loopback office may be worse; never better.
            assert status <= done.returncode <= 2, (done.returncode, findings)
