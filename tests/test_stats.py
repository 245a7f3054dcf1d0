"""The statistics schema (spokeshare.stats): the workers' merge, JSON, /metrics, and
``spokeshare office list`` reading it."""

from __future__ import annotations

import dataclasses
import json
import time
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from spokeshare import bundle, cli, enrollment, hubstatus, stats
from spokeshare.config import load_edge
from spokeshare.edge_daemon import EdgeDaemon
from spokeshare.errors import UsageError
from spokeshare.stats import BackendStatistics, HubStatistics, Kind, Merge, OfficeStatistics
from tests.helpers import LoopThread, free_port, make_deployment, wait_for

LABELS = st.sampled_from(["BUSY", "REVOKED", "tls:WRONG_VERSION_NUMBER", 'odd "label"\\'])


def _strategy(hint: Any, min_offices: int = 0) -> st.SearchStrategy[Any]:
    """Values of one schema field's type, as a worker could report them."""
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(0, 2**53)
    if hint is float:
        return st.floats(0, 2e9, allow_nan=False)
    if hint is str:
        return st.text(max_size=8)
    if hint == float | None:
        return st.none() | st.floats(0, 2e9, allow_nan=False)
    if hint == tuple[int, ...]:
        return st.lists(st.integers(1, 2**22), max_size=3).map(lambda v: tuple(sorted(v)))
    if hint == tuple[str, ...]:  # presence text: printers, degraded protocols
        return st.lists(st.text(min_size=1, max_size=8), max_size=3).map(tuple)
    if hint == Mapping[str, str]:  # presence: name -> state
        return st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=3)
    if hint == Mapping[str, int]:
        return st.dictionaries(LABELS, st.integers(0, 2**53), max_size=3)
    if hint == Mapping[str, Any]:  # a JSON object kept as it is
        value = st.none() | st.integers(0, 2**53) | st.text(max_size=8)
        return st.dictionaries(st.sampled_from(["not_after", "renew", "failures"]), value)
    if hint == Mapping[str, OfficeStatistics]:
        names = st.sampled_from(["nyc", "sfo", "lon"])
        return st.dictionaries(names, offices(), min_size=min_offices, max_size=3)
    if hint == Mapping[str, BackendStatistics]:
        keys = st.sampled_from(["smb 198.18.0.11:445", "smb 198.18.0.12:445", "ipp a:631"])
        # a backend's labels are its key's service and address (hub.backend_statistics)
        return st.dictionaries(keys, records(BackendStatistics), max_size=3).map(
            lambda d: {
                k: dataclasses.replace(v, service=k.split()[0], address=k.split()[1])
                for k, v in d.items()
            }
        )
    if hint == Mapping[str, Any]:  # the certificate: a JSON object kept as it is
        keys = st.sampled_from(["not_after", "renew", "failures"])
        return st.dictionaries(keys, st.text(max_size=8) | st.integers(0, 9), max_size=3)
    raise AssertionError(f"schema field of a type this test cannot draw: {hint!r}")


def records(cls: type[Any], min_offices: int = 0) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(
        cls, **{f.name: _strategy(hints[f.name], min_offices) for f in dataclasses.fields(cls)}
    )


def offices() -> st.SearchStrategy[OfficeStatistics]:
    return records(OfficeStatistics)


def hubs(min_offices: int = 0) -> st.SearchStrategy[HubStatistics]:
    return records(HubStatistics, min_offices)


def _expected(rule: Merge, f: dataclasses.Field[Any], rs: list[Any]) -> Any:
    values = [getattr(r, f.name) for r in rs]
    if rule is Merge.SUM and isinstance(values[0], Mapping):
        keys = {k for v in values for k in v}
        return {k: sum(v.get(k, 0) for v in values) for k in keys}
    if rule is Merge.SUM:
        return sum(values)
    if rule is Merge.MAX:
        present = [v for v in values if v is not None]
        return max(present) if present else None
    if rule is Merge.ANY:
        return any(values)
    if rule is Merge.ALL:
        return all(values)
    if rule is Merge.FIRST:
        return values[0]
    if rule is Merge.LEAD:
        lead = [r for r in rs if getattr(r, type(r).LEAD_FIELD)]
        if lead:
            return getattr(lead[0], f.name)
        factory = f.default_factory
        return f.default if factory is dataclasses.MISSING else factory()
    if rule is Merge.CONCAT:
        return tuple(sorted(v for t in values for v in t))
    assert rule is Merge.EACH
    names = {n for v in values for n in v}
    return {n: stats.merge_records([v[n] for v in values if n in v]) for n in names}


def _check_merge(rs: list[Any]) -> None:
    merged = stats.merge_records(rs)
    for f, s in stats.fields(type(merged)):
        assert getattr(merged, f.name) == _expected(s.merge, f, rs), f.name


@given(st.lists(offices(), min_size=1, max_size=5))
def test_office_snapshots_of_n_workers_merge_as_each_field_declares(
    rs: list[OfficeStatistics],
) -> None:
    _check_merge(rs)


@given(st.lists(hubs(), min_size=1, max_size=4))
def test_hub_snapshots_of_n_workers_merge_as_each_field_declares(rs: list[HubStatistics]) -> None:
    _check_merge(rs)
    # Counters sum: every counter of the merge is the sum over the workers.
    merged = stats.merge_records(rs)
    for f, s in stats.fields(HubStatistics):
        if s.kind is Kind.COUNTER and s.metric is not None and s.label is None:
            assert getattr(merged, f.name) == sum(getattr(r, f.name) for r in rs)


@given(st.lists(hubs(), min_size=3, max_size=5), st.data())
def test_merging_in_any_grouping_gives_the_same(
    rs: list[HubStatistics], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(1, len(rs) - 1))
    assert stats.merge_records([stats.merge_records(rs[:cut]), *rs[cut:]]) == stats.merge_records(
        rs
    )


def test_every_field_declares_a_merge_and_every_counter_is_named_total() -> None:
    for cls in (HubStatistics, OfficeStatistics, BackendStatistics):
        for f, s in stats.fields(cls):
            assert isinstance(s.merge, Merge), f.name
            if s.metric is not None:
                assert s.metric.startswith("spokeshare_") and s.help
                assert (s.kind is Kind.COUNTER) == s.metric.endswith("_total")
                assert s.merge is not Merge.EACH
    with pytest.raises(UsageError, match="_total"):
        stats.stat(0, merge=Merge.SUM, metric="x_total", help="h", kind=Kind.GAUGE)
    with pytest.raises(UsageError, match="help"):
        stats.stat(0, merge=Merge.SUM, metric="x")


def test_misuse_is_a_usage_error_not_bad_input() -> None:
    """Calling the schema wrongly is our bug (errors.UsageError), never a ValueError or
    TypeError that a handler of bad input could catch by accident."""
    for call in (
        lambda: stats.to_json({"pid": 1}),
        lambda: stats.to_json(HubStatistics),
        lambda: stats.merge_records([]),
        lambda: stats.stat(0, merge=Merge.SUM, metric="x"),
    ):
        with pytest.raises(UsageError) as caught:
            call()
        assert not isinstance(caught.value, ValueError | TypeError)


@given(hubs())
def test_json_round_trip(snap: HubStatistics) -> None:
    text = json.dumps(stats.to_json(snap))
    assert stats.from_json(HubStatistics, json.loads(text)) == snap


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(HubStatistics)]), JSON))
def test_a_snapshot_file_of_any_content_reads_as_a_snapshot(raw: dict[str, Any]) -> None:
    """Another worker's file is not trusted: wrong types take the default, no error."""
    snap = stats.from_json(HubStatistics, raw)
    assert isinstance(snap, HubStatistics)
    assert all(isinstance(o, OfficeStatistics) for o in snap.offices.values())
    stats.render_metrics(snap)  # renders whatever it held
    assert stats.from_json(HubStatistics, json.loads(json.dumps(stats.to_json(snap)))) == snap


def test_the_json_keys_operators_read_are_kept() -> None:
    """status.json / GET /status keep the key names they had (new keys added only)."""
    hub = stats.to_json(HubStatistics(offices={"nyc": OfficeStatistics()}))
    assert {"version", "pid", "time", "handshakes", "handshake_failures",
            "handshakes_in_progress", "refusals", "heap_releases", "tunnels",
            "offices", "pids", "workers"} <= set(hub)  # fmt: skip
    assert {"connected", "version", "rtt_ms", "last_seen", "streams", "idle_tunnels", "clients",
            "streams_total", "bytes_up", "bytes_down"} <= set(hub["offices"]["nyc"])  # fmt: skip


@given(hubs(min_offices=1))
def test_metrics_expose_every_field_once_with_help_and_type(snap: HubStatistics) -> None:
    text = stats.render_metrics(snap)
    classes = (HubStatistics, OfficeStatistics, BackendStatistics)
    declared = {s.metric: (cls, f, s) for cls in classes for f, s in stats.fields(cls) if s.metric}
    assert len(declared) == sum(
        1 for cls in classes for _, s in stats.fields(cls) if s.metric
    )  # no metric name used twice
    by_labels = {(b.service, b.address): b for b in snap.backends.values()}
    for name, (_, _, s) in declared.items():
        assert text.count(f"# HELP {name} ") == 1 and text.count(f"# TYPE {name} ") == 1
        assert f"# TYPE {name} {s.kind.value}\n" in text
    # Prometheus's own parser reads it, and every sample is the snapshot's value.
    seen = set()
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            cls, f, s = declared[sample.name]
            seen.add(sample.name)
            owner: Any = snap
            if cls is OfficeStatistics:
                owner = snap.offices[sample.labels["office"]]
            elif cls is BackendStatistics:
                owner = by_labels[(sample.labels["service"], sample.labels["backend"])]
            value = getattr(owner, f.name)
            if s.label is not None:
                value = value[sample.labels[s.label]]
            assert sample.value == float(value), (sample.name, sample)
    for name, (cls, f, s) in declared.items():
        owners: list[Any] = [snap]
        if cls is OfficeStatistics:
            owners = list(snap.offices.values())
        elif cls is BackendStatistics:
            owners = list(snap.backends.values())
        values = [getattr(o, f.name) for o in owners]
        present = any(len(v) > 0 if s.label else v is not None for v in values)
        assert (name in seen) == present, name


def test_refusal_statuses_and_causes_are_in_the_metrics() -> None:
    snap = HubStatistics(
        refusals={"tls:WRONG_VERSION_NUMBER": 7, "evicted": 2},
        refusal_statuses={"REVOKED": 3},
        offices={"nyc": OfficeStatistics(refused={"BUSY": 4, "UNKNOWN_SERVICE": 1})},
    )
    text = stats.render_metrics(snap)
    assert 'spokeshare_hub_refused_total{cause="tls:WRONG_VERSION_NUMBER"} 7\n' in text
    assert 'spokeshare_hub_refusal_statuses_total{status="REVOKED"} 3\n' in text
    assert 'spokeshare_office_refused_total{office="nyc",status="BUSY"} 4\n' in text


def test_backends_are_in_the_metrics_and_down_in_any_worker_is_down() -> None:
    up = BackendStatistics("smb", "198.18.0.11:445", 0, True, 10.0, "", 0, 5)
    down = BackendStatistics("smb", "198.18.0.11:445", 0, False, 20.0, "Connection refused", 2, 1)
    key = "smb 198.18.0.11:445"
    merged = stats.merge_records([HubStatistics(backends={key: up}),
                                  HubStatistics(backends={key: down})])  # fmt: skip
    b = merged.backends[key]
    assert (b.up, b.failures, b.streams, b.since) == (False, 2, 6, 20.0)
    text = stats.render_metrics(merged)
    assert 'spokeshare_backend_up{service="smb",backend="198.18.0.11:445"} 0\n' in text
    assert 'spokeshare_backend_failures_total{service="smb",backend="198.18.0.11:445"} 2\n' in text
    assert 'spokeshare_backend_streams_total{service="smb",backend="198.18.0.11:445"} 6\n' in text


def _deployment(tmp_path: Path) -> tuple[Path, Path]:
    d, state = tmp_path / "dep", tmp_path / "state"
    enrollment.init(d, "hq", ["hq.example:7443"], {"smb": "198.18.0.10:445"}, state_dir=state,
                    listen=["127.0.0.1:7443"])  # fmt: skip
    for name in ("nyc", "sfo"):
        enrollment.add_office(d, name, None, tmp_path / f"{name}.bundle")
    state.mkdir(parents=True, exist_ok=True)
    return d, state


def _write(state: Path, worker: int, snap: HubStatistics) -> None:
    (state / f"status-{worker}.json").write_text(json.dumps(stats.to_json(snap)))


def test_office_list_reads_the_merged_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d, state = _deployment(tmp_path)
    now = time.time()
    _write(state, 0, HubStatistics(pid=10, time=now, offices={
        "nyc": OfficeStatistics(streams=1, last_seen=now - 30)}))  # fmt: skip
    _write(state, 1, HubStatistics(pid=11, time=now, offices={"nyc": OfficeStatistics(
        connected=True, rtt_ms=101.25, clients=4, last_seen=now - 5, version="v")}))  # fmt: skip
    assert cli.main(["office", "list", "--dir", str(d), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["hub_running"] is True
    nyc, sfo = listed["offices"]
    assert {"office", "expires", "revoked", "connected", "last_seen", "rtt_ms", "clients",
            "services", "printers", "version"} <= set(nyc)  # fmt: skip
    assert (nyc["version"], sfo["version"]) == ("v", "")
    assert (nyc["office"], nyc["connected"], nyc["rtt_ms"], nyc["clients"]) == (
        "nyc", True, 101.25, 4)  # fmt: skip
    assert nyc["last_seen"] == pytest.approx(now - 5)
    assert (sfo["office"], sfo["connected"], sfo["rtt_ms"], sfo["clients"]) == (
        "sfo", False, None, 0)  # fmt: skip
    assert cli.main(["office", "list", "--dir", str(d)]) == 0
    head, *rows = capsys.readouterr().out.splitlines()
    assert head.split()[:9] == ["OFFICE", "EXPIRES", "REVOKED", "CONNECTED", "LAST", "SEEN",
                                "RTT", "ms", "CLIENTS"]  # fmt: skip
    assert rows[0].split()[:3] == ["nyc", nyc["expires"], "no"]
    assert rows[0].split()[3:9] == ["yes", "5s", "ago", "101.2", "4", "v"]
    assert rows[1].split()[3:8] == ["no", "never", "-", "0", "-"]


def test_office_list_without_a_running_hub(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d, state = _deployment(tmp_path)
    _write(state, 0, HubStatistics(pid=10, time=time.time() - 60,
                                   offices={"nyc": OfficeStatistics(connected=True)}))  # fmt: skip
    assert cli.main(["office", "list", "--dir", str(d)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "(hub not running or status stale: connection columns unknown)"
    assert [r.split()[3] for r in out[2:]] == ["no", "no"]
    assert hubstatus.merge(hubstatus.read_fresh(state)) is None
    for odd in ('{"time": "soon"}', '{"time": null}', "[1]", '{"time": 1e400}'):
        (state / "status-9.json").write_text(odd)
        assert hubstatus.read_fresh(state) == []  # skipped, not an error


def test_the_edge_writes_its_lan_status_from_the_schema(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    """An edge without a LAN interface (relaying only): lan-status.json says it is up,
    with no names, and keeps the keys operators and ``spokeshare check`` read."""
    dep = make_deployment(tmp_path, {"smb": free_port(), "ipp": free_port()})
    path = dep.add_office("shop", ["ipp"])
    state = tmp_path / "edge-state"
    cfg = load_edge(None, {"bundle": str(path), "lan_address": "127.0.0.1",
                           "ports": {"ipp": free_port()}})  # fmt: skip
    cfg = dataclasses.replace(cfg, state_dir=state)
    daemon = EdgeDaemon(cfg, bundle.read(path))
    try:
        loop_thread.run(daemon.start())
        written = json.loads((state / "lan-status.json").read_text())
        assert set(written) == {f.name for f in dataclasses.fields(stats.LanStatus)}
        assert written["up"] is True and written["names"] == {} and written["lan"] == {}
        assert written["withdrawn"] is False and "not_after" in written["certificate"]
        assert written["hub"] in ("starting", "down") and written["withdrawals"] == {}
        snap = loop_thread.call(daemon.statistics)
        assert snap.status.up and snap.status.names == {} and not snap.status.withdrawn
        assert snap.edge.office == "shop" and snap.services == {} and snap.presence == ()
        assert stats.to_json(snap)["edge"]["listeners_degraded"] == {}
        # statistics.json: the whole snapshot, for the office's admin
        counters = state / "statistics.json"
        wait_for(counters.exists, what="statistics.json written")
        written = json.loads(counters.read_text())
        assert set(written) == {f.name for f in dataclasses.fields(stats.EdgeDaemonStatistics)}
        assert written["edge"]["office"] == "shop"
        assert written["edge"]["dial_failures"]["refused"] >= 1  # no hub runs here
        assert written["status"]["up"] is True and written["services"] == {}
    finally:
        loop_thread.run(daemon.close())
