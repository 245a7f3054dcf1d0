"""WS-Discovery counters that only grow: AppSequence InstanceId and MetadataVersion.

WS-Discovery 1.1 §7 (AppSequence): InstanceId MUST be incremented by at least one
each time the service has gone down, lost state and come back up; §4.1 (Hello):
MetadataVersion is incremented whenever the target's metadata changes. Clients drop
messages whose InstanceId went backwards, so a wall-clock InstanceId alone breaks
after a clock step back (NTP correcting a box with a flat RTC battery). The edge keeps
both in ``STATE_DIR/wsd-counters.json``.

:func:`advance` is the pure decision; :func:`load` and :func:`store` are the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "wsd-counters.json"
#: The file is a few dozen bytes; anything longer is not ours.
MAX_FILE = 4096
#: AppSequence InstanceId is an xs:unsignedInt (WS-Discovery 1.1 schema).
MAX_UINT = 0xFFFFFFFF


@dataclass(frozen=True)
class WsdCounters:
    """``instance_id`` for AppSequence, ``metadata_version`` for Hello and matches,
    ``digest`` of the metadata that version describes."""

    instance_id: int
    metadata_version: int
    digest: str


def metadata_digest(names: Iterable[str], workgroup: str, addresses: Iterable[str]) -> str:
    """What the Get response and XAddrs depend on, as a stable hex digest."""
    text = "\n".join([*sorted(n.upper() for n in names), workgroup.upper(), *sorted(addresses)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def advance(previous: WsdCounters | None, wall_clock: float, digest: str) -> WsdCounters:
    """The counters for this start: InstanceId above both the previous one and the
    wall clock in seconds (so a lost file still starts high), MetadataVersion one up
    when the metadata changed. Both stay within xs:unsignedInt."""
    instance = min(int(wall_clock), MAX_UINT)
    if previous is None:
        return WsdCounters(max(instance, 1), 1, digest)
    instance = min(max(instance, previous.instance_id + 1), MAX_UINT)
    version = previous.metadata_version + (1 if digest != previous.digest else 0)
    return WsdCounters(instance, min(version, MAX_UINT), digest)


def load(state_dir: Path) -> WsdCounters | None:
    """The stored counters, or None if there are none or they do not parse."""
    try:
        raw = (state_dir / FILE_NAME).read_bytes()[: MAX_FILE + 1]
        if len(raw) > MAX_FILE:
            return None
        data = json.loads(raw)
        counters = WsdCounters(
            int(data["instance_id"]), int(data["metadata_version"]), str(data["digest"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (0 <= counters.instance_id <= MAX_UINT and 0 <= counters.metadata_version <= MAX_UINT):
        return None
    return counters


def store(state_dir: Path, counters: WsdCounters) -> None:
    """Write atomically (temporary file, fsync, rename). Raises OSError."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (FILE_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump(asdict(counters), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state_dir / FILE_NAME)
