"""Two hub hosts at 100 ms RTT in front of HQ's one real smbd (bench.multihub builds the
lab): a real smbclient on the office PC, through the edge, keeps working when one hub's
host becomes unreachable (its WAN wire drops everything) and when the other hub's
process is killed. The switch time is measured in the benchmark, not here. And with
one hub: once a silent outage ends, every new connection works again."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.multihub import HubLab, hub_lab, two_hub_lab
from tests.helpers import wait_for
from tests.lab.building import reachable_dir

pytestmark = pytest.mark.lab


@pytest.fixture
def lab_root() -> Iterator[Path]:
    """A lab dir smbd's guest (``nobody``) can reach (pytest's tmp dirs are 0700)."""
    with reachable_dir("ss-multihub-") as path:
        yield path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _get(lab: HubLab, local: Path) -> None:
    """A new smbclient on the office PC gets ``data.bin`` into ``local``."""
    proc = lab.smbclient(f"get data.bin {local}")
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_smbclient_works_through_the_other_hub_when_one_fails(lab_root: Path) -> None:
    sent = lab_root / "sent.bin"
    sent.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    with two_hub_lab(lab_root, rtt_ms=100.0) as lab:
        # both hubs up: put the file at HQ and get it back, byte for byte
        wait_for(lambda: all(lab.hub_established(i) for i in range(2)), timeout=60,
                 interval=0.5, what="the edge connected to both hubs")  # fmt: skip
        proc = lab.smbclient(f"put {sent} data.bin")
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
        _get(lab, lab_root / "got-healthy.bin")
        assert _sha256(lab_root / "got-healthy.bin") == _sha256(sent)
        # it is in HQ's share itself, not only somewhere on the way
        assert _sha256(lab_root / "hq-samba" / "share" / "data.bin") == _sha256(sent)

        # hub 0's host becomes unreachable: a new smbclient goes through hub 1
        lab.cut(0)
        _get(lab, lab_root / "got-hub0-away.bin")
        assert _sha256(lab_root / "got-hub0-away.bin") == _sha256(sent)

        # hub 0's host is back (the edge holds a connection to it again), and hub 1's
        # process dies: a new smbclient goes through hub 0
        lab.cut(0, up=True)
        wait_for(lambda: lab.hub_established(0), timeout=90, interval=0.5,
                 what="the edge connected to hub 0 again")  # fmt: skip
        lab.kill_hub(1)
        _get(lab, lab_root / "got-hub1-dead.bin")
        assert _sha256(lab_root / "got-hub1-dead.bin") == _sha256(sent)


def test_one_hub_every_new_connection_works_again_once_a_silent_outage_ends(
    lab_root: Path,
) -> None:
    """One hub, its host silent for 10 s while the office PC starts a new connection
    every 0.1 s (bench.multihub's probe): the edge's pooled dials fail meanwhile and
    back off further with each failure. Once the host answers, the edge hears it on
    what it holds (a stream's END, the control channel's heartbeat) and dials at once,
    so from the first new connection that works after the outage, every later one
    works. Before, the pool waited out its grown backoff (up to 30 s) while a few
    surviving tunnels took turns: every other new connection waited out the pool's
    connect timeout and failed, for about 20 s."""
    with hub_lab(lab_root, rtt_ms=100.0, hubs=1) as lab:
        probe = lab.probe(30.0)
        wait_for(lambda: lab.connect()[0], timeout=30, interval=0.5,
                 what="a connection before the outage")  # fmt: skip
        lab.cut(0)
        t_fail = time.time()
        time.sleep(10.0)  # the outage's length: the scenario itself, not a wait for a state
        lab.cut(0, up=True)
        t_back = time.time()
        out, _ = probe.communicate(timeout=120)
    rows = sorted((json.loads(x) for x in out.decode().splitlines() if x.strip()),
                  key=lambda r: r["start"])  # fmt: skip
    during = [r for r in rows if t_fail + 1.0 <= r["start"] < t_back - 5.0]
    assert during and not any(r["ok"] for r in during), "the outage cut no connection"
    after = [r for r in rows if r["start"] >= t_back]
    first = next((i for i, r in enumerate(after) if r["ok"]), None)
    assert first is not None, "no new connection worked after the outage"
    later = after[first:]
    assert len(later) >= 50, len(later)
    failed = [round(r["start"] - t_back, 2) for r in later if not r["ok"]]
    assert not failed, f"new connections failed after the first worked, at (s after back) {failed}"
