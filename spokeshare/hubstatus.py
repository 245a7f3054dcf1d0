"""The hub's status snapshots on disk, and merging those of several workers.

Each hub process writes its :meth:`Hub.statistics` (a :class:`stats.HubStatistics`,
as :func:`stats.to_json`) to ``STATE_DIR/status.json`` (``status-N.json`` for worker N
when the hub runs several) every second. Readers (``spokeshare office list``, the
status page) merge the fresh ones as the schema says (spokeshare.stats): an office is
connected if any worker holds its control channel, and counts add up.

Several hubs on one shared deployment directory (docs/scale-out.md) each also write
their snapshot to ``DIR/hubs/NAME.json`` (``NAME-N.json`` per worker), NAME being
``[hub] name``; readers merge every fresh one there with their own host's, the same
way, so every hub answers for the whole deployment and each office shows the hub of
its control channel and its tunnels per hub. A snapshot read twice (the state
directory's copy and the shared one) counts once: snapshots are told apart by hub
name and process id.
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


#: The shared deployment directory's folder of every hub's snapshots.
SHARED = "hubs"


def status_path(state_dir: Path, worker: int | None) -> Path:
    return state_dir / ("status.json" if worker is None else f"status-{worker}.json")


def shared_path(directory: Path, hub: str, worker: int | None) -> Path:
    """Where hub ``hub`` (its [hub] name) writes its snapshot in the shared directory."""
    return directory / SHARED / (f"{hub}.json" if worker is None else f"{hub}-{worker}.json")


def read_deployment(
    directory: Path, state_dir: Path, now: float | None = None
) -> list[dict[str, Any]]:
    """Every fresh snapshot of the deployment: this host's (``state_dir``) and every
    hub's in ``directory``/hubs, each process once (by its ``hubs`` and ``pid``)."""
    seen: set[tuple[tuple[str, ...], int]] = set()
    out = []
    for snap in read_fresh(state_dir, now) + read_fresh(directory / SHARED, now, "*.json"):
        hubs, pid = snap.get("hubs"), snap.get("pid")
        key = (
            tuple(str(h) for h in hubs) if isinstance(hubs, list) else (),
            pid if isinstance(pid, int) else 0,
        )
        if key in seen:
            continue
        seen.add(key)
        out.append(snap)
    return out


def read_fresh(
    state_dir: Path, now: float | None = None, pattern: str = "status*.json"
) -> list[dict[str, Any]]:
    """The status files in ``state_dir`` (as written: JSON objects) whose ``time`` is
    within FRESH_SECONDS of ``now`` (unix seconds; default the clock). A file that is
    unreadable, not a JSON object or without a numeric ``time`` is skipped."""
    now = time.time() if now is None else now
    out = []
    for path in sorted(state_dir.glob(pattern)):
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
