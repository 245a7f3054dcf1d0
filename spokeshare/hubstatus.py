"""The hub's status snapshots on disk, and merging those of several workers.

Each hub process writes its :meth:`Hub.statistics` to ``STATE_DIR/status.json``
(``status-N.json`` for worker N when the hub runs several) every second. Readers
(``spokeshare office list``, the status page) merge the fresh ones: an office is
connected if any worker holds its control channel, and counts add up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: A snapshot older than this belongs to a hub (or worker) that is gone.
FRESH_SECONDS = 10.0


def status_path(state_dir: Path, worker: int | None) -> Path:
    return state_dir / ("status.json" if worker is None else f"status-{worker}.json")


def read_fresh(state_dir: Path, now: float | None = None) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    out = []
    for path in sorted(state_dir.glob("status*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and now - float(data.get("time", 0)) < FRESH_SECONDS:
            out.append(data)
    return out


_SUMS = ("streams", "idle_tunnels", "streams_total", "bytes_up", "bytes_down")


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One view of the hub from its workers' snapshots (None: no hub running)."""
    if not snapshots:
        return None
    offices: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        for name, o in snap.get("offices", {}).items():
            m = offices.setdefault(
                name,
                {
                    "connected": False,
                    "version": "",
                    "rtt_ms": None,
                    "last_seen": None,
                    "clients": 0,
                    **{k: 0 for k in _SUMS},
                },
            )
            for k in _SUMS:
                m[k] += int(o.get(k, 0) or 0)
            if o.get("connected"):
                # The worker holding the control channel knows RTT, version, clients.
                m.update(
                    connected=True,
                    version=o.get("version", ""),
                    rtt_ms=o.get("rtt_ms"),
                    clients=o.get("clients", 0),
                )
            seen = o.get("last_seen")
            if seen is not None and (m["last_seen"] is None or seen > m["last_seen"]):
                m["last_seen"] = seen
    return {
        "version": snapshots[0].get("version", ""),
        "pids": sorted(int(s.get("pid", 0)) for s in snapshots),
        "workers": len(snapshots),
        "time": max(float(s.get("time", 0)) for s in snapshots),
        "handshakes": sum(int(s.get("handshakes", 0)) for s in snapshots),
        "handshake_failures": sum(int(s.get("handshake_failures", 0)) for s in snapshots),
        "handshakes_in_progress": sum(int(s.get("handshakes_in_progress", 0)) for s in snapshots),
        "refusals": _sum_counts([s.get("refusals", {}) for s in snapshots]),
        "tunnels": sum(int(s.get("tunnels", 0)) for s in snapshots),
        "offices": dict(sorted(offices.items())),
    }


def _sum_counts(tables: list[Any]) -> dict[str, int]:
    """Per-cause counters of several workers, added up."""
    out: dict[str, int] = {}
    for t in tables:
        if isinstance(t, dict):
            for k, v in t.items():
                if isinstance(v, int):
                    out[str(k)] = out.get(str(k), 0) + v
    return dict(sorted(out.items()))
