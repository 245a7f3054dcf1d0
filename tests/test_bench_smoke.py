"""The loopback tunnel benchmark (bench/tunnel.py) runs end to end with tiny sizes.

Behaviour only: every measure produced a row for all three paths. Timings are the
benchmark's business, never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import capacity, common
from bench import tunnel as bench

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "tunnel.py"
STUNNEL = "/usr/bin/stunnel4"


def test_backend_protocol_and_helpers(tmp_path: Path) -> None:
    """The backend's U/D/E requests and the load generators agree on bytes moved."""
    with bench.backend(tmp_path) as port:
        up = bench.bulk(port, b"U", 2, 3 * common.MiB + 7, [])
        down = bench.bulk(port, b"D", 1, 5 * common.MiB + 3, [])
        assert up["bytes"] == 2 * (3 * common.MiB + 7)
        assert down["bytes"] == 5 * common.MiB + 3
        assert len(bench.rtt(port, 20, warm=2)) == 20
        assert len(bench.first_byte(port, 5, 0.0)) == 5
        held = bench.hold_connections(port, 4)
        assert len(held) == 4
        for s in held:
            s.close()


def test_percentiles_and_doc_section(tmp_path: Path) -> None:
    xs = [float(i) for i in range(1, 101)]
    assert common.pct(xs, 0.5) in (50.0, 51.0)
    assert common.pct(xs, 0.99) == 99.0
    assert common.median([3.0, 1.0, 2.0]) == 2.0
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    bench.write_doc(doc, "first\n")
    bench.write_doc(doc, "second\n")
    text = doc.read_text()
    assert "kept" in text and "second" in text and "first" not in text
    assert text.count(bench.BEGIN) == 1 and text.count("## Tunnel on loopback") == 1


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(STUNNEL), reason="needs Debian's stunnel4")
def test_smoke_run_reports_all_three_paths(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    paths = {"direct", "stunnel", "spokeshare"}
    speed = res["speed"]
    assert set(speed["bulk"]) == {"1x upload", "1x download", "8x upload", "8x download"}
    for cells in speed["bulk"].values():
        assert set(cells) == paths
    assert set(speed["rtt"]) == paths and set(speed["connect"]) == paths
    assert all(len(v) > 0 for v in speed["rtt"].values())
    mem = res["memory"]
    assert set(mem) == {"stunnel", "cli", "asyncio"}
    for loop in ("cli", "asyncio"):
        assert set(mem[loop]["pool"]) == {"office", "hq"}
        assert set(mem[loop]["relayed"]) == {"office", "hq"}
    table = proc.stdout
    for heading in ("Bulk throughput", "Round trip", "New connection", "Memory per idle"):
        assert heading in table
    assert table.count("| direct | stunnel | spokeshare |") >= 3


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(STUNNEL), reason="needs Debian's stunnel4")
@pytest.mark.parametrize("only", ["rtt", "connect"])
def test_only_measures_its_cells_alone(tmp_path: Path, only: str) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--only", only, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    speed = res["speed"]
    assert speed["bulk"] == {} and "memory" not in res
    paths = {"direct", "stunnel", "spokeshare"}
    if only == "rtt":
        assert speed["connect"] == {}
        assert set(speed["rtt"]) == paths and set(speed["rtt_cpu_us"]) == paths
        assert "relay cpu per round trip" in proc.stdout and "rtt p99" in proc.stdout
        assert "first byte" not in proc.stdout
    else:
        assert speed["rtt"] == {} and set(speed["connect"]) == paths
        assert all(speed["connect"][p] for p in paths)
        assert "new connection to first byte p99" in proc.stdout
        assert "rtt p50" not in proc.stdout
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", only, "--write", str(tmp_path / "x.md")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert refused.returncode == 2 and "--write needs a full run" in refused.stderr


def run_capacity(
    tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], str]:
    """bench/capacity.py ``--smoke`` with ``args``, writing its block into a copy of a
    small doc; it must succeed. Its run, its JSON results and the doc's text after."""
    out = tmp_path / "capacity.json"
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept\n")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "capacity.py"),
            "--smoke",
            *args,
            "--json",
            str(out),
            "--write",
            str(doc),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text()), doc.read_text()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(STUNNEL), reason="needs Debian's stunnel4")
def test_capacity_smoke_run_is_well_formed(tmp_path: Path) -> None:
    """bench/capacity.py with tiny sizes: every measure produced counts and its table."""
    proc, res, text = run_capacity(tmp_path)
    plan = res["plan"]
    idle = res["idle"]
    assert idle["tunnels"] == plan["idle_tunnels"]
    assert sum(idle["per_edge"]) == plan["idle_tunnels"] and idle["edges"] == 2
    assert len(idle["hub_rss_kib"]) == 2 and len(idle["edges_rss_kib"]) == 2
    assert res["idle_stunnel"]["connections"] == plan["stunnel_idle"]
    for path in ("opens_spokeshare", "opens_stunnel"):
        opens = res[path]
        assert opens["count"] > 0 and opens["failed"] == 0, opens
        assert len(opens["cpu"]) == 2
    assert res["opens_spokeshare"]["idle_held_after"] == plan["idle_tunnels"]
    sizes = res["offices"]["sizes"]
    assert list(sizes) == [str(n) for n in plan["offices"]]
    for n, v in sizes.items():
        assert v["enrolled"] >= int(n)
        assert len(v["office_add_cli_s"]) == plan["add_samples"]
        assert len(v["office_list_cli_s"]) == 3
        hs = v["handshakes"]
        assert hs["hub_handshakes"] > 0 and hs["failed"] == 0, hs
        # the hub counted every handshake a client completed, and no other
        assert hs["hub_handshakes"] == hs["client_count"], hs
    assert text.startswith("# Benchmarks\n\nkept\n")
    assert text.count("## Hub capacity on loopback") == 1
    for heading in ("### Idle tunnels", "### Stream opens", "### Enrolled offices"):
        assert heading in text and heading in proc.stdout


@pytest.mark.slow
def test_capacity_hubs_smoke_run_holds_tunnels_on_every_hub(tmp_path: Path) -> None:
    """bench/capacity.py --hubs with tiny sizes: one hub, then three on one deployment
    directory (real processes); every hub held tunnels of the offices' pools, every
    open made it through, and the side-by-side block was written once."""
    proc, res, text = run_capacity(tmp_path, "--hubs", "1,3")
    plan = res["plan"]
    runs = res["hubs"]["runs"]
    assert [r["hubs"] for r in runs] == [1, 3]
    for r in runs:
        assert len(r["tunnels"]) == r["hubs"] and min(r["tunnels"]) > 0, r["tunnels"]
        assert len(r["hub_rss_kib"]) == r["hubs"] and len(r["edges_rss_kib"]) == plan["offices"]
        assert r["opens"] > 0 and r["failed"] == 0, r
        assert len(r["hub_cpu_s"]) == r["hubs"] and len(r["edge_cpu_s"]) == plan["offices"]
        # the hubs' own counters saw the streams the clients completed
        assert sum(r["streams_per_hub"]) >= r["opens"], r
        assert len(r["idle_held_after"]) == r["hubs"] and min(r["idle_held_after"]) > 0
    assert len(res["loadavg"]) == 2
    assert text.startswith("# Benchmarks\n\nkept\n")
    assert text.count(capacity.HUBS_BEGIN) == 1 and text.count(capacity.HUBS_END) == 1
    for heading in ("### Tunnels held", "### Stream opens over all the offices"):
        assert heading in text and heading in proc.stdout
    assert "| 3 / 1 |" in text


@pytest.mark.parametrize("counts", ["0", "1,x", "9", ""])
def test_capacity_hubs_refuses_a_bad_count(counts: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        capacity.main(["--hubs", counts, "--smoke"])
    assert exc.value.code == 2
    assert "--hubs takes counts of hubs from 1 to 8" in capsys.readouterr().err
