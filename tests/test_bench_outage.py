"""The WAN outage benchmark's report (spokeshare bench wan --outages): table and merge."""

from __future__ import annotations

from pathlib import Path

from bench.wan import (
    OUTAGE_BEGIN,
    OUTAGE_END,
    OutageResult,
    outage_runs,
    render_outages,
    write_outage_block,
)

FACTS = {"CPU": "cpu", "cores": "2", "kernel": "6.18"}


def test_table_longest_and_ratio() -> None:
    results = [
        OutageResult("direct", 12.0, True, 7.0),
        OutageResult("spokeshare", 12.0, True, 0.7),
        OutageResult("direct", 45.0, True, 20.0),
        OutageResult("spokeshare", 45.0, False, None, "NT_STATUS_IO_TIMEOUT"),
        OutageResult("direct", 90.0, False, None, "exit 1"),
        OutageResult("spokeshare", 90.0, True, 0.9),
    ]
    text = render_outages(results, FACTS, "2026-11-30 17:00 UTC")
    assert text.startswith(OUTAGE_BEGIN) and text.rstrip().endswith(OUTAGE_END)
    rows = [line for line in text.splitlines() if line.startswith("| 12 s")]
    assert rows == ["| 12 s | survived, moving 7.00 s after link-up | survived, moving "
                    "0.70 s after link-up | 0.10 |"]  # fmt: skip
    assert "**cut** (NT_STATUS_IO_TIMEOUT)" in text
    assert "direct: 45 s (cut at 90 s)" in text
    assert "spokeshare: 12 s (cut at 45 s)" in text


def test_block_replaced_in_place(tmp_path: Path) -> None:
    out = tmp_path / "b.md"
    out.write_text("# head\n\nkept\n")
    one = render_outages([OutageResult("direct", 12.0, True, 1.0)], FACTS, "t1")
    write_outage_block(out, one)
    two = render_outages([OutageResult("direct", 12.0, True, 2.0)], FACTS, "t2")
    write_outage_block(out, two)
    text = out.read_text()
    assert text.count(OUTAGE_BEGIN) == 1 and "kept" in text
    assert "2.00 s after link-up" in text and "1.00 s" not in text


def test_runs_listed_are_those_the_table_still_holds() -> None:
    """A run whose every cell was measured again drops out of the date line; results
    from a file written before results named their run stand for the file's list."""
    old, new = "2026-11-30 (--outages 12,45)", "2026-12-01 (--outages 12)"
    results = [
        OutageResult("direct", 12.0, True, 9.0, run=new),
        OutageResult("spokeshare", 12.0, True, 1.0, run=new),
        OutageResult("spokeshare", 45.0, True, 1.3, run=old),
    ]
    assert outage_runs(results, []) == [new, old]
    assert outage_runs(results[:2], [old]) == [new]  # every cell of the old run redone
    legacy = [OutageResult("stunnel", 45.0, True, 15.0)]
    assert outage_runs(legacy + results[:1], [old]) == [old, new]
