"""The WAN benchmark's machinery, once, with tiny sizes at one RTT.

Builds the bench's own lab (under the lab lock), runs every measuring function of
:mod:`bench.wan` against the three contenders (direct, stunnel, spokeshare)
and checks that each produced a number and that every file crossed byte for byte (the
measuring functions compare what arrived with its source and raise otherwise). Timings
are reported by the benchmark, never asserted here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import wan as bench_wan
from bench.wan import CONTENDERS, PLANS, Bench, Cell

pytestmark = [pytest.mark.lab, pytest.mark.slow]

RTT = 20.0


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    with bench_wan.bench_lab() as lab:
        b = bench_wan.prepare(lab, PLANS["smoke"])
        bench_wan.set_link(lab, RTT)
        yield b


def _number(cell: Cell) -> float:
    assert cell.value is not None, cell.note
    assert cell.value > 0, cell
    assert "stopped" not in cell.note, cell.note
    return cell.value


@pytest.mark.parametrize("name", CONTENDERS)
def test_first_answer_listing_and_round_trips(bench: Bench, name: str) -> None:
    c = bench_wan.contenders()[name]
    _number(bench_wan.measure_connect(bench, c, RTT))
    _number(bench_wan.measure_ls(bench, c, RTT))
    cell = bench_wan.measure_echo(bench, c, RTT)
    _number(cell)
    assert len(cell.samples) >= 1


@pytest.mark.parametrize("name", CONTENDERS)
def test_get_and_put_arrive_byte_identical(bench: Bench, name: str) -> None:
    c = bench_wan.contenders()[name]
    _number(bench_wan.measure_get(bench, c, RTT))
    _number(bench_wan.measure_put(bench, c, RTT))
    # The measuring functions remove what they transferred once checked.
    assert not (bench.work / f"got-{name}.bin").exists()
    assert not (bench.hq_share / f"put-{name}.bin").exists()


def test_a_mismatch_is_an_error(bench: Bench, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"x" * 9 + b"y")
    assert not bench_wan._same(a, b)
    b.write_bytes(b"x" * 10)
    assert bench_wan._same(a, b)


@pytest.mark.parametrize("name", CONTENDERS)
def test_folder_round_trip(bench: Bench, name: str) -> None:
    c = bench_wan.contenders()[name]
    cells = bench_wan.measure_folder(bench, c, RTT)
    assert set(cells) == {"mput", "dir_ls", "mget"}
    for cell in cells.values():
        _number(cell)


@pytest.mark.parametrize("name", CONTENDERS)
def test_concurrent_clients(bench: Bench, name: str) -> None:
    c = bench_wan.contenders()[name]
    cell = bench_wan.measure_concurrency(bench, c, RTT)
    _number(cell)
    assert cell.note == f"0 of {bench.plan.concurrency} failed", cell.note


def test_report_block_replaces_only_its_markers(bench: Bench, tmp_path: Path) -> None:
    bench.results.clear()
    for name in CONTENDERS:
        bench.record("connect", name, RTT, Cell(RTT * 1.5))
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nloopback section\n")
    facts = {"CPU": "test"}
    block = bench_wan.render(bench, facts, {}, 1.0, tmp_path / "img", out)
    bench_wan.write_block(out, block)
    bench_wan.write_block(out, block)
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nloopback section\n")
    assert text.count(bench_wan.BEGIN) == 1 and text.count(bench_wan.END) == 1
    assert "(img/wan-connect.png)" in text
    assert (tmp_path / "img" / "wan-connect.png").stat().st_size > 0
