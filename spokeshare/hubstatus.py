"""The hub's status snapshots on disk, and merging those of several workers.

Each hub process writes its :meth:`Hub.statistics` (a :class:`stats.HubStatistics`,
as :func:`stats.to_json`) to ``STATE_DIR/status.json`` (``status-N.json`` for worker N
when the hub runs several) every second. Readers (``spokeshare office list``, the
status page) merge the fresh ones as the schema says (spokeshare.stats): an office is
connected if any worker holds its control channel, and counts add up.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from spokeshare import stats
from spokeshare.stats import HubStatistics

#: A snapshot older than this belongs to a hub (or worker) that is gone.
FRESH_SECONDS = 10.0


def status_path(state_dir: Path, worker: int | None) -> Path:
    return state_dir / ("status.json" if worker is None else f"status-{worker}.json")


def read_fresh(state_dir: Path, now: float | None = None) -> list[dict[str, Any]]:
    """The status files in ``state_dir`` (as written: JSON objects) whose ``time`` is
    within FRESH_SECONDS of ``now`` (unix seconds; default the clock). A file that is
    unreadable, not a JSON object or without a numeric ``time`` is skipped."""
    now = time.time() if now is None else now
    out = []
    for path in sorted(state_dir.glob("status*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        taken = data.get("time")
        if isinstance(taken, int | float) and math.isfinite(taken) and now - taken < FRESH_SECONDS:
            out.append(data)
    return out


def merge(snapshots: Sequence[HubStatistics | Mapping[str, Any]]) -> HubStatistics | None:
    """One view of the hub from its workers' snapshots (None: no hub running).

    Snapshots read from files (mappings) go through :func:`stats.from_json`; each field
    combines as the schema declares (:class:`stats.Merge`): counters and tunnels add up,
    an office is connected if any worker holds its control channel, and that worker
    gives its RTT, version and clients.
    """
    if not snapshots:
        return None
    read = [
        s if isinstance(s, HubStatistics) else stats.from_json(HubStatistics, s) for s in snapshots
    ]
    # A file written before snapshots listed their pids names its process in ``pid``.
    return stats.merge_records([s if s.pids else replace(s, pids=(s.pid,)) for s in read])
