"""WS-Discovery InstanceId and MetadataVersion only grow: restarts, clock steps, lost files."""

from __future__ import annotations

import uuid
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from spokeshare.lan import counters
from spokeshare.lan.discovery_service import WsdService
from tests.lan.settings import discovery_settings


@given(
    st.lists(
        st.tuples(st.floats(0, 5e9, allow_nan=False), st.sampled_from(["a", "b", "c"])),
        min_size=1,
        max_size=30,
    )
)
def test_counters_only_grow(starts: list[tuple[float, str]]) -> None:
    """Any sequence of starts, the wall clock jumping back and forth: InstanceId is
    strictly greater each time, MetadataVersion grows exactly when the metadata
    changed, both within xs:unsignedInt."""
    previous: counters.WsdCounters | None = None
    for clock, digest in starts:
        now = counters.advance(previous, clock, digest)
        assert 1 <= now.instance_id <= counters.MAX_UINT
        if previous is not None:
            assert now.instance_id > previous.instance_id or now.instance_id == counters.MAX_UINT
            changed = digest != previous.digest
            assert now.metadata_version == previous.metadata_version + changed
        previous = now


def test_store_load_and_bad_files(tmp_path: Path) -> None:
    c = counters.WsdCounters(1_800_000_000, 3, "ab")
    counters.store(tmp_path, c)
    assert counters.load(tmp_path) == c
    (tmp_path / counters.FILE_NAME).write_text('{"instance_id": -1}')
    assert counters.load(tmp_path) is None
    (tmp_path / counters.FILE_NAME).write_bytes(b"x" * (counters.MAX_FILE + 10))
    assert counters.load(tmp_path) is None
    assert counters.load(tmp_path / "missing") is None


def _service(state: Path, names: tuple[str, ...]) -> WsdService:
    # only constructed: no socket is opened
    settings = discovery_settings("lo", "198.18.200.1", names, uuid.UUID(int=7), state_dir=state)
    return WsdService(settings)


def test_wsd_service_restarts_with_growing_counters(tmp_path: Path) -> None:
    """Three edge starts over one state dir (a clock step back before the third, as
    when NTP corrects a box): InstanceId grows each time; MetadataVersion goes up when
    a name is added, and it is what the Hello carries."""
    first = _service(tmp_path, ("GLOBAL-NFS",))
    second = _service(tmp_path, ("GLOBAL-NFS",))
    assert second.counters.instance_id > first.counters.instance_id
    assert second.counters.metadata_version == first.counters.metadata_version == 1
    stored = counters.load(tmp_path)
    assert stored is not None
    # the clock is now far behind what was stored: the stored value still wins
    counters.store(tmp_path, counters.WsdCounters(4_000_000_000, 1, stored.digest))
    third = _service(tmp_path, ("GLOBAL-NFS", "GLOBAL-ENG"))
    assert third.counters.instance_id == 4_000_000_001
    assert third.counters.metadata_version == 2
    assert all(ep.metadata_version == 2 for ep in third.endpoints)
