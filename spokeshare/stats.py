"""One schema for what the hub reports: its snapshot, each office's, and their metrics.

A snapshot is a frozen dataclass (:class:`HubStatistics`, holding an
:class:`OfficeStatistics` per office). Every field declares, beside its value, how it
is reported, with :func:`stat`:

- ``metric``: its Prometheus name (``None``: in the JSON only, e.g. a version string),
  with ``help`` and ``kind`` (gauge or counter, :class:`Kind`);
- ``merge``: how the snapshots of several hub workers (``[hub] workers``) combine
  into one (:class:`Merge`): counters and additive gauges sum, ``connected`` is true if
  any worker holds the control channel, RTT and version come from that worker;
- ``label``: for a mapping field (per-cause or per-status counters), the label its
  keys become in the metric.

Everything that reads a snapshot goes through this schema: the status files and
``GET /status`` (:func:`to_json` / :func:`from_json`, key names are the field names),
the worker merge (:func:`merge`), ``GET /metrics`` (:func:`render_metrics`) and
``spokeshare office list``. Adding an office metric is one field in
:class:`OfficeStatistics`; each service backend's health is a
:class:`BackendStatistics` (metrics labelled ``service`` and ``backend``).

Pure: no I/O, no clock (a snapshot's ``time`` is set by whoever takes it). A snapshot
read from another worker's file is not trusted: :func:`from_json` keeps a field only
when its value has the declared type and uses the default otherwise.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from spokeshare.errors import UsageError

#: The metadata key under which a field's :class:`Stat` is kept.
META = "spokeshare.stat"


class Kind(enum.Enum):
    """The Prometheus metric type of a field (text format 0.0.4, ``# TYPE``)."""

    GAUGE = "gauge"
    COUNTER = "counter"


class Merge(enum.Enum):
    """How one field of several workers' snapshots becomes the merged value."""

    SUM = "sum"  # numbers add up; mappings add up per key
    MAX = "max"  # the largest value that is not None (None if all are)
    ANY = "any"  # true if any is
    ALL = "all"  # true if every one is
    FIRST = "first"  # the first snapshot's (the process that merges lists itself first)
    LEAD = "lead"  # the lead snapshot's (LEAD_FIELD true), else the field's default
    CONCAT = "concat"  # tuples joined, sorted
    EACH = "each"  # a mapping of snapshots: merged per key, recursively


@dataclass(frozen=True, slots=True)
class Stat:
    """What :func:`stat` declares about one field."""

    merge: Merge
    metric: str | None = None
    help: str = ""
    kind: Kind = Kind.GAUGE
    label: str | None = None


def stat(
    default: Any = dataclasses.MISSING,
    *,
    merge: Merge,
    metric: str | None = None,
    help: str = "",
    kind: Kind = Kind.GAUGE,
    label: str | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field carrying its :class:`Stat` (``factory`` for a mutable default).

    Raises :class:`~spokeshare.errors.UsageError` for a metric without help, or a
    counter whose name does not end in ``_total`` (Prometheus naming: https://prometheus.io/docs/practices/naming/).
    """
    if metric is not None and not help:
        raise UsageError(f"metric {metric} needs help text")
    if metric is not None and (kind is Kind.COUNTER) != metric.endswith("_total"):
        raise UsageError(f"metric {metric}: counters, and only counters, end in _total")
    meta = {META: Stat(merge, metric, help, kind, label)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OfficeStatistics:
    """What the hub knows about one office (one worker's view, or the merged one)."""

    #: The field whose snapshot is the lead in a merge (Merge.LEAD): the worker that
    #: holds the office's control channel knows its RTT, version and clients.
    LEAD_FIELD: ClassVar[str] = "connected"

    connected: bool = stat(
        False,
        merge=Merge.ANY,
        metric="spokeshare_office_connected",
        help="1 if the office's control channel is up",
    )
    version: str = stat("", merge=Merge.LEAD)
    rtt_ms: float | None = stat(
        None,
        merge=Merge.LEAD,
        metric="spokeshare_office_rtt_milliseconds",
        help="last heartbeat round trip",
    )
    last_seen: float | None = stat(
        None,
        merge=Merge.MAX,
        metric="spokeshare_office_last_seen_seconds",
        help="unix time of the last heartbeat",
    )
    streams: int = stat(
        0, merge=Merge.SUM, metric="spokeshare_office_streams", help="client streams relaying now"
    )
    idle_tunnels: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_office_idle_tunnels",
        help="warm tunnels waiting in the pool",
    )
    clients: int = stat(
        0,
        merge=Merge.LEAD,
        metric="spokeshare_office_clients",
        help="LAN clients the edge carries now, as its last heartbeat said",
    )
    streams_total: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_office_streams_total",
        help="client streams opened",
        kind=Kind.COUNTER,
    )
    bytes_up: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_office_bytes_up_total",
        help="bytes from the office to HQ",
        kind=Kind.COUNTER,
    )
    bytes_down: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_office_bytes_down_total",
        help="bytes from HQ to the office",
        kind=Kind.COUNTER,
    )
    streams_ended: Mapping[str, int] = stat(
        merge=Merge.SUM,
        metric="spokeshare_office_streams_ended_total",
        help="client streams ended, by result (the stream log line's: ok, refused, reset, ...)",
        kind=Kind.COUNTER,
        label="result",
        factory=dict,
    )
    refused: Mapping[str, int] = stat(
        merge=Merge.SUM,
        metric="spokeshare_office_refused_total",
        help="tunnels of this office answered a status other than OK, by status",
        kind=Kind.COUNTER,
        label="status",
        factory=dict,
    )
    edge_dial_failures: Mapping[str, int] = stat(
        merge=Merge.LEAD,
        metric="spokeshare_office_edge_dial_failures_total",
        help="the edge's failed dials to a hub, by cause (timeout, certificate, "
        "tls:REASON, reset, ...), as its last heartbeat said",
        kind=Kind.COUNTER,
        label="cause",
        factory=dict,
    )
    #: The office certificate and its renewal (spokeshare.renewal.hub_certificate:
    #: not_after, renewed, failures, renew); the worker holding the control channel
    #: knows what the edge reported.
    certificate: Mapping[str, Any] = stat(merge=Merge.LEAD, factory=dict)
    #: The edge's LAN presence from its last pong (control.Presence; no metric: text):
    #: name advertised -> its state, HQ's printers advertised, "protocol: why" per
    #: degraded LAN protocol or listener. The control channel's worker knows them.
    names: Mapping[str, str] = stat(merge=Merge.LEAD, factory=dict)
    printers: tuple[str, ...] = stat((), merge=Merge.LEAD)
    degraded: tuple[str, ...] = stat((), merge=Merge.LEAD)
    ipp_refused: Mapping[str, int] = stat(
        merge=Merge.SUM,
        metric="spokeshare_office_ipp_refused_total",
        help="IPP requests of this office the hub refused, by reason (printer: not one of "
        "the office's printers; malformed: bad HTTP or IPP)",
        kind=Kind.COUNTER,
        label="reason",
        factory=dict,
    )
    #: Several hubs (docs/scale-out.md): the hub ([hub] name) holding the office's
    #: control channel ("" when none does), and the office's tunnels on each hub.
    control_hub: str = stat("", merge=Merge.LEAD)
    hub_tunnels: Mapping[str, int] = stat(
        merge=Merge.SUM,
        metric="spokeshare_office_hub_tunnels",
        help="the office's tunnels (idle, streams, control) on each hub",
        label="hub",
        factory=dict,
    )


@dataclass(frozen=True)
class BackendStatistics:
    """One backend of a hub service and its health (spokeshare.tunnel.backends), keyed
    in :attr:`HubStatistics.backends` by ``SERVICE HOST:PORT``. Each hub worker checks
    its backends itself: merged, a backend is up only if every worker finds it so."""

    LEAD_FIELD: ClassVar[str] = ""

    service: str = stat("", merge=Merge.FIRST)
    address: str = stat("", merge=Merge.FIRST)  # HOST:PORT
    position: int = stat(0, merge=Merge.FIRST)  # 0: the first listed in hub.toml
    up: bool = stat(
        True,
        merge=Merge.ALL,
        metric="spokeshare_backend_up",
        help="1 if the backend accepted its last connect or probe",
    )
    since: float | None = stat(None, merge=Merge.MAX)  # unix time it went up or down
    last_error: str = stat("", merge=Merge.FIRST)  # why its last connect failed
    failures: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_backend_failures_total",
        help="connects and probes to the backend refused, timed out or failed",
        kind=Kind.COUNTER,
    )
    streams: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_backend_streams_total",
        help="client streams connected to the backend",
        kind=Kind.COUNTER,
    )
    #: Whether a connect or probe to it has finished since the hub started (before
    #: that ``up`` is an assumption).
    checked: bool = stat(True, merge=Merge.ALL)


@dataclass(frozen=True)
class HubStatistics:
    """One hub process's snapshot (``STATE_DIR/status.json``, ``status-N.json``), or
    the merge of its workers' (:func:`merge`; then ``pid`` is the merging process's)."""

    LEAD_FIELD: ClassVar[str] = ""

    version: str = stat("", merge=Merge.FIRST)
    pid: int = stat(0, merge=Merge.FIRST)
    pids: tuple[int, ...] = stat((), merge=Merge.CONCAT)
    #: The hubs ([hub] name) whose snapshots this is: one, or every one merged.
    hubs: tuple[str, ...] = stat((), merge=Merge.CONCAT)
    time: float = stat(0.0, merge=Merge.MAX)  # unix seconds the snapshot was taken
    workers: int = stat(
        1, merge=Merge.SUM, metric="spokeshare_hub_workers", help="hub processes reporting"
    )
    handshakes: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_hub_handshakes_total",
        help="TLS handshakes completed",
        kind=Kind.COUNTER,
    )
    streams_reused: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_hub_streams_reused_total",
        help="streams carried by a tunnel that had carried one before (sequential reuse)",
        kind=Kind.COUNTER,
    )
    handshake_failures: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_hub_handshake_failures_total",
        help="TLS handshakes refused or failed",
        kind=Kind.COUNTER,
    )
    handshakes_in_progress: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_hub_handshakes_in_progress",
        help="TLS handshakes running now",
    )
    refusals: Mapping[str, int] = stat(
        merge=Merge.SUM,
        metric="spokeshare_hub_refused_total",
        help="connections failed or refused, by cause (tls:REASON, evicted, alpn, "
        "identity, admission:STATUS)",
        kind=Kind.COUNTER,
        label="cause",
        factory=dict,
    )
    refusal_statuses: Mapping[str, int] = stat(
        merge=Merge.SUM,
        metric="spokeshare_hub_refusal_statuses_total",
        help="statuses other than OK answered to an open header or an admission, by status",
        kind=Kind.COUNTER,
        label="status",
        factory=dict,
    )
    heap_releases: int = stat(
        0,
        merge=Merge.SUM,
        metric="spokeshare_hub_heap_releases_total",
        help="times freed heap pages went back to the system",
        kind=Kind.COUNTER,
    )
    tunnels: int = stat(
        0, merge=Merge.SUM, metric="spokeshare_hub_tunnels", help="TLS tunnels open now"
    )
    #: What the hub's start-up check found at HQ (spokeshare.hqcheck): SMB backend
    #: ("SERVICE HOST:PORT", as in :attr:`backends`) -> 1 if its server offers SMB3
    #: multichannel, 0 if not; one that could not be asked, or not yet, is absent. One
    #: process per hub asks, so merged over several hubs it counts those that found it
    #: offered (anything above 0 needs the README's fix).
    backend_multichannel: Mapping[str, int] = stat(
        merge=Merge.SUM,
        metric="spokeshare_hub_backend_multichannel",
        help="hubs that found HQ's SMB server offering SMB3 multichannel when they asked "
        "at start (clients then connect around the tunnel); 0: not offered",
        label="backend",
        factory=dict,
    )
    offices: Mapping[str, OfficeStatistics] = stat(merge=Merge.EACH, factory=dict)
    #: Every service's backends ("SERVICE HOST:PORT" -> its health).
    backends: Mapping[str, BackendStatistics] = stat(merge=Merge.EACH, factory=dict)


S = TypeVar("S", OfficeStatistics, HubStatistics, BackendStatistics)


def fields(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], Stat]]:
    """Each field of a schema class with its :class:`Stat`, in declared order."""
    return [(f, f.metadata[META]) for f in dataclasses.fields(cls)]


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


# -- JSON --------------------------------------------------------------------------------


def to_json(snapshot: Any) -> dict[str, Any]:
    """A snapshot (any schema dataclass of this module) as JSON-ready values, keyed by
    field name, nested dataclasses as objects. Raises UsageError for a non-dataclass."""
    if not dataclasses.is_dataclass(snapshot) or isinstance(snapshot, type):
        raise UsageError(f"not a snapshot: {snapshot!r}")
    return dataclasses.asdict(snapshot)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _coerce(hint: Any, value: Any, default: Any) -> Any:
    """``value`` if it has type ``hint`` (ints taken as floats), else ``default``."""
    if hint is bool:
        return value if isinstance(value, bool) else default
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else default
    if hint is float:
        return float(value) if _finite(value) else default
    if hint is str:
        return value if isinstance(value, str) else default
    if hint == float | None:
        return float(value) if _finite(value) else None
    if hint == tuple[int, ...]:
        if isinstance(value, list | tuple):
            return tuple(v for v in value if isinstance(v, int) and not isinstance(v, bool))
        return default
    if hint == Mapping[str, int]:
        if isinstance(value, Mapping):
            return {
                str(k): v
                for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
                if isinstance(v, int) and not isinstance(v, bool)
            }
        return default
    if hint == tuple[str, ...]:
        if isinstance(value, list | tuple):
            return tuple(v for v in value if isinstance(v, str))
        return default
    if hint == Mapping[str, str]:
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items() if isinstance(v, str)}
        return default
    if hint == Mapping[str, OfficeStatistics]:
        if isinstance(value, Mapping):
            return {
                str(k): from_json(OfficeStatistics, v)
                for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
            }
        return default
    if hint == Mapping[str, BackendStatistics]:
        if isinstance(value, Mapping):
            return {
                str(k): from_json(BackendStatistics, v)
                for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
            }
        return default
    if hint == Mapping[str, Any]:  # a JSON object kept as it is (OfficeStatistics.certificate)
        return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else default
    raise UsageError(f"no JSON reading for {hint!r}")  # a schema field of a new type


def from_json(cls: type[S], data: Any) -> S:
    """A snapshot from what :func:`to_json` wrote (any JSON value: a field whose value
    has the wrong type, or is missing, takes its default; unknown keys are ignored)."""
    hints = typing.get_type_hints(cls)
    raw = data if isinstance(data, Mapping) else {}
    values = {}
    for f, _ in fields(cls):
        default = _default(f)
        values[f.name] = _coerce(hints[f.name], raw.get(f.name, default), default)
    return cls(**values)


# -- merging the workers' snapshots ------------------------------------------------------


def _merge_value(rule: Merge, f: dataclasses.Field[Any], values: list[Any], lead: Any) -> Any:
    if rule is Merge.SUM:
        if values and isinstance(values[0], Mapping):
            out: dict[str, int] = {}
            for table in values:
                for k, v in table.items():
                    out[k] = out.get(k, 0) + v
            return dict(sorted(out.items()))
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
        return getattr(lead, f.name) if lead is not None else _default(f)
    if rule is Merge.CONCAT:
        return tuple(sorted(v for t in values for v in t))
    # Merge.EACH: a mapping of snapshots (offices, backends), each merged over the
    # workers that have it
    names = sorted({k for table in values for k in table})
    return {n: merge_records([t[n] for t in values if n in t]) for n in names}


def merge_records(records: Sequence[S]) -> S:
    """One snapshot from several of the same class (at least one), field by field as
    each declares (:class:`Merge`). Raises UsageError for no records."""
    if not records:
        raise UsageError("nothing to merge")
    cls = type(records[0])
    lead = None
    if cls.LEAD_FIELD:
        lead = next((r for r in records if getattr(r, cls.LEAD_FIELD)), None)
    values = {
        f.name: _merge_value(s.merge, f, [getattr(r, f.name) for r in records], lead)
        for f, s in fields(cls)
    }
    return cls(**values)


# -- Prometheus text ---------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: bool | int | float) -> str:
    """A sample value, exact: integers in full (a byte counter past 10**6 must not
    round), floats as Python's shortest round-trip form, booleans 1 or 0."""
    if isinstance(value, bool | int):
        return str(int(value))
    return repr(float(value))


def _samples(metric: str, labels: str, value: Any, label: str | None) -> list[str]:
    if isinstance(value, Mapping):
        sep = "," if labels else ""
        return [
            f'{metric}{{{labels}{sep}{label}="{_label(k)}"}} {_number(v)}'
            for k, v in sorted(value.items())
        ]
    if value is None:
        return []
    braces = f"{{{labels}}}" if labels else ""
    return [f"{metric}{braces} {_number(value)}"]


def render_metrics(snapshot: HubStatistics) -> str:
    """Prometheus text format (version 0.0.4) of ``snapshot``: every field with a
    ``metric`` once, with its ``# HELP`` and ``# TYPE``; office fields labelled
    ``office``, backend fields ``service`` and ``backend``, mapping fields by their
    ``label``. A None value has no sample."""
    out: list[str] = []
    for f, s in fields(HubStatistics):
        if s.metric is None:
            continue
        out += [f"# HELP {s.metric} {s.help}", f"# TYPE {s.metric} {s.kind.value}"]
        out += _samples(s.metric, "", getattr(snapshot, f.name), s.label)
    for f, s in fields(OfficeStatistics):
        if s.metric is None:
            continue
        out += [f"# HELP {s.metric} {s.help}", f"# TYPE {s.metric} {s.kind.value}"]
        for name, office in sorted(snapshot.offices.items()):
            labels = f'office="{_label(name)}"'
            out += _samples(s.metric, labels, getattr(office, f.name), s.label)
    for f, s in fields(BackendStatistics):
        if s.metric is None:
            continue
        out += [f"# HELP {s.metric} {s.help}", f"# TYPE {s.metric} {s.kind.value}"]
        for _, b in sorted(snapshot.backends.items()):
            labels = f'service="{_label(b.service)}",backend="{_label(b.address)}"'
            out += _samples(s.metric, labels, getattr(b, f.name), s.label)
    return "\n".join(out) + "\n"


# -- the edge ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeStatistics:
    """What an edge's tunnel side reports (``Edge.statistics``): its hub and pool now,
    its streams so far. No metrics and no merge: one edge process, read by its daemon."""

    office: str
    hub: str  # tunnel.edge.HubState value
    rtt_ms: float | None  # last heartbeat round trip
    idle: int  # warm tunnels in the pool
    connecting: int  # tunnels being opened
    waiting: int  # client connections waiting for a tunnel
    clients: int  # client connections carried now
    streams_total: int
    streams_failed: int
    #: Streams carried by a tunnel that had carried one before (sequential reuse).
    streams_reused: int
    #: Failed dials to a hub by cause (tunnel.tls.handshake_cause: ``timeout``,
    #: ``certificate``, ``tls:REASON``, ``reset``, ...) and the hub's refusals of this
    #: edge's opens by status (wire.Status name), since start.
    dial_failures: Mapping[str, int]
    refused: Mapping[str, int]
    #: Refused or odd NetBIOS session requests, by kind (lan/nbss_answer.py).
    sessions: Mapping[str, int]
    #: Relayed listener ("HOST:PORT") -> why it is not bound (edge.retry_listeners).
    listeners_degraded: Mapping[str, str]
    #: The certificate and its renewal (spokeshare.renewal.RenewalStatus.to_json).
    certificate: Mapping[str, Any]
    #: Each hub address ("HOST:PORT") -> "up", "away" or "control" (holds the control
    #: channel), as the edge sees them (spokeshare.tunnel.hubs).
    hubs: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class LanStatus:
    """``STATE_DIR/lan-status.json``: what an operator, ``spokeshare check`` and the lab
    read of an edge's LAN side (EdgeDaemon.lan_status_snapshot)."""

    #: The daemon's start has finished: every protocol started or degraded.
    up: bool
    #: The names are withdrawn from the LAN (the hub unreachable for withdraw_after).
    withdrawn: bool
    #: LAN protocol -> "ok", or why it is degraded.
    lan: Mapping[str, str]
    listeners_degraded: Mapping[str, str]
    #: LAN protocol -> name -> its state (EdgeDaemon.names_status).
    names: Mapping[str, Mapping[str, str]]
    certificate: Mapping[str, Any]
    #: The hub's clock against the edge's from the last stamped pong
    #: (Edge.hub_clock_status: skew_ms, rtt_ms, measured_at), None before the first.
    hub_clock: Mapping[str, Any] | None = None
    #: The hub as the edge sees it now (tunnel.edge_state.HubState value: ``starting``,
    #: ``up``, ``down``, ``revoked``); the file is rewritten at each change.
    hub: str = ""
    #: LAN protocol -> times its names were withdrawn from the LAN (mDNS: goodbyes
    #: sent, RFC 6762 section 10.1), counted once the protocol's withdraw has returned.
    withdrawals: Mapping[str, int] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class EdgeDaemonStatistics:
    """Everything an edge reports (``EdgeDaemon.statistics``): the tunnel side, the LAN
    status, and each running LAN service's own statistics (a frozen dataclass each)."""

    edge: EdgeStatistics
    status: LanStatus
    #: The LAN presence services, by class name, in start order.
    presence: tuple[str, ...]
    #: LAN protocol -> that service's statistics() now.
    services: Mapping[str, Any]
