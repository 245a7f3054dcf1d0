"""The hub's dashboard: every office at a glance, as one self-contained HTML page.

Pure rendering (no I/O, no clock: ``now`` is a parameter). :func:`render` turns the
hub's statistics snapshot (what ``GET /status`` answers: ``{"version", "time",
"offices": {NAME: {...}}, ...}``) and each office's recent RTT samples into an HTML
string; :class:`RttHistory` keeps those samples, a small bounded ring per office. The
server side (spokeshare.status) serves the page at ``/``.

What the page holds, per office: connected or not, RTT now with a sparkline of the
recent samples (inline SVG), clients now, streams now and in total, bytes each way,
certificate expiry and renewal state, names and printers advertised and degraded LAN
protocols when the snapshot carries them (keys read: :data:`CERT_EXPIRY_KEYS`,
:data:`RENEWAL_KEYS`, ``names``, ``printers``, :data:`DEGRADED_KEYS`). Offices are
sorted trouble first (:func:`trouble`): disconnected, degraded, certificate near expiry
or renewal failing, then the rest, each group by name.

Above the offices, each hub service's backends (``backends`` of the snapshot,
spokeshare.stats.BackendStatistics): up, down, or unchecked (the hub has not finished
a connect or probe to it since it started), since when, the last error and the streams
each carried; a service with a backend down is named in the summary.

The page loads nothing from elsewhere: its CSS is inline, the sparklines are inline
SVG, no script; it reloads itself every :data:`REFRESH_SECONDS` (``<meta
http-equiv="refresh">``). Every value from the snapshot is escaped (``html.escape``)
wherever it lands, text or attribute. Office names come from the hub's registry, but
a snapshot may be read from another worker's file: nothing in it is trusted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import html
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Seconds between the page's own reloads.
REFRESH_SECONDS = 5
#: RTT samples kept per office: five minutes at one sample per refresh.
HISTORY_SAMPLES = 60
#: At most one RTT sample per office per this many seconds, however often the page,
#: /status or /metrics is read.
SAMPLE_SECONDS = 5.0
#: Offices kept in the history at most (bounds memory whatever the snapshots hold).
MAX_OFFICES = 4096
#: A certificate expiring within this many seconds is trouble: the same 30 days after
#: which ``spokeshare check`` warns (a renewal that works replaces it at two thirds
#: of its lifetime, long before).
NEAR_EXPIRY_SECONDS = 30 * 86400
#: Keys of an office's snapshot holding its certificate's end of validity (unix
#: seconds, or an ISO 8601 string), first found wins; also ``not_after`` inside a
#: ``certificate`` mapping (spokeshare.renewal.RenewalStatus.to_json).
CERT_EXPIRY_KEYS = ("cert_not_after", "cert_expires", "not_after")
#: Keys holding the renewal state (a short string, or a mapping with ``state``); also
#: ``renew`` inside a ``certificate`` mapping (renewal.describe's phrase).
RENEWAL_KEYS = ("renewal", "cert_renewal", "renewal_state")
#: Keys holding degraded LAN protocols: protocol -> "ok" or why it is degraded, or a
#: list of protocol names.
DEGRADED_KEYS = ("degraded", "lan", "listeners_degraded")
#: Items shown per list (names, printers, protocols) before "+N more".
MAX_LIST_ITEMS = 12
#: Characters shown of any one value.
MAX_TEXT = 120


class Trouble(enum.IntEnum):
    """How an office fares, worst first (the page's sort order)."""

    DISCONNECTED = 0
    DEGRADED = 1
    CERT = 2
    OK = 3


class RttHistory:
    """A bounded ring of (time, RTT ms) samples per office, from successive snapshots.

    :meth:`note` takes a snapshot at ``now`` (monotonic seconds) and records each
    connected office's ``rtt_ms``, at most once per :data:`SAMPLE_SECONDS`; offices no
    longer in the snapshot are forgotten. At most :data:`HISTORY_SAMPLES` samples per
    office and :data:`MAX_OFFICES` offices are kept.
    """

    def __init__(self, samples: int = HISTORY_SAMPLES, every: float | None = None) -> None:
        self.samples = samples
        self.every = SAMPLE_SECONDS if every is None else every
        self._rings: dict[str, deque[tuple[float, float]]] = {}
        self._last: float | None = None

    def __repr__(self) -> str:
        return f"<RttHistory offices={len(self._rings)} samples<={self.samples}>"

    def note(self, snapshot: Mapping[str, Any] | Any, now: float) -> None:
        if self._last is not None and now - self._last < self.every:
            return
        self._last = now
        offices = _offices(snapshot)
        for gone in set(self._rings) - set(offices):
            del self._rings[gone]
        for name, office in offices.items():
            ring = self._rings.get(name)
            if ring is None:
                if len(self._rings) >= MAX_OFFICES:
                    continue
                ring = self._rings[name] = deque(maxlen=self.samples)
            rtt = _number(office.get("rtt_ms"))
            if office.get("connected") and rtt is not None and rtt >= 0:
                ring.append((now, rtt))

    def get(self) -> dict[str, list[float]]:
        """Office name -> its RTT samples in ms, oldest first."""
        return {name: [rtt for _, rtt in ring] for name, ring in self._rings.items()}


def trouble(office: Mapping[str, Any], now: float) -> Trouble:
    """The worst thing about one office's snapshot at ``now`` (unix seconds)."""
    if not office.get("connected"):
        return Trouble.DISCONNECTED
    if degraded_protocols(office):
        return Trouble.DEGRADED
    expiry = cert_expiry(office)
    if expiry is not None and expiry - now < NEAR_EXPIRY_SECONDS:
        return Trouble.CERT
    if "fail" in renewal_state(office).lower():
        return Trouble.CERT
    return Trouble.OK


def sort_offices(
    offices: Mapping[str, Mapping[str, Any]], now: float
) -> list[tuple[str, Mapping[str, Any], Trouble]]:
    """(name, snapshot, trouble) per office, trouble first, then by name."""
    rows = [(name, o, trouble(o, now)) for name, o in offices.items()]
    rows.sort(key=lambda r: (r[2], r[0].casefold(), r[0]))
    return rows


def degraded_protocols(office: Mapping[str, Any]) -> dict[str, str]:
    """Protocol -> why it is degraded ("" when the snapshot does not say)."""
    out: dict[str, str] = {}
    for key in DEGRADED_KEYS:
        value = office.get(key)
        if isinstance(value, Mapping):
            for proto, why in value.items():
                if str(why) != "ok":
                    out[str(proto)] = str(why)
        elif isinstance(value, list | tuple):
            for proto in value:
                out.setdefault(str(proto), "")
    return out


def cert_expiry(office: Mapping[str, Any]) -> float | None:
    """The office certificate's end of validity in unix seconds, if the snapshot has it."""
    cert = office.get("certificate")
    nested = [cert.get("not_after")] if isinstance(cert, Mapping) else []
    for value in [office.get(key) for key in CERT_EXPIRY_KEYS] + nested:
        if isinstance(value, str):
            try:
                when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            return when.timestamp()
        number = _number(value)
        if number is not None:
            return number
    return None


def renewal_state(office: Mapping[str, Any]) -> str:
    """The certificate renewal state as the snapshot says it ("" when it does not)."""
    cert = office.get("certificate")
    if isinstance(cert, Mapping) and cert.get("renew"):
        return str(cert["renew"])
    for key in RENEWAL_KEYS:
        value = office.get(key)
        if isinstance(value, Mapping):
            parts = [str(value.get("state", ""))]
            if value.get("error"):
                parts.append(str(value["error"]))
            return ": ".join(p for p in parts if p)
        if value is not None and value != "":
            return str(value)
    return ""


def render(
    snapshot: Mapping[str, Any] | Any,
    history: Mapping[str, Sequence[float]],
    now: float,
) -> str:
    """The whole page (an HTML5 document) for ``snapshot`` at ``now`` (unix seconds).

    ``snapshot`` is the hub's statistics (a mapping, or a dataclass of the same shape);
    ``history`` maps office names to RTT samples in ms, oldest first. Never raises on
    odd values: what cannot be read is shown as "?" or left out.
    """
    snap = _mapping(snapshot)
    offices = _offices(snap)
    rows = sort_offices(offices, now)
    down = sum(1 for r in rows if r[2] is Trouble.DISCONNECTED)
    worse = sum(1 for r in rows if r[2] is not Trouble.OK)
    title = f"spokeshare hub: {len(rows) - down}/{len(rows)} offices connected"
    updated = _number(snap.get("time"))
    summary = [
        f"{len(rows)} office{'s' if len(rows) != 1 else ''}",
        f"{down} disconnected",
        f"{worse - down} other trouble",
        f"hub {_text(snap.get('version', ''))}",
    ]
    hub_names = sorted({_text(h) for h in snap.get("hubs") or () if isinstance(h, str)})
    if len(hub_names) > 1:
        summary.append(f"hubs {', '.join(hub_names)}")
    backends = _backends(snap)
    down_backends = [b for b in backends if b.get("up") is not True]
    if down_backends:
        summary.append(f"{len(down_backends)} of {len(backends)} backends down")
    if updated is not None:
        summary.append(f"snapshot {_clock(updated)} UTC")
    cards = [_card(name, o, t, history.get(name, ()), now) for name, o, t in rows]
    if not cards:
        cards = ['<p class="empty">No office is enrolled yet (spokeshare office add NAME).</p>']
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<header><h1>{_esc(title)}</h1>",
            f'<p class="summary">{" · ".join(_esc(s) for s in summary)}</p></header>',
            _backend_table(backends, now),
            '<main class="offices">',
            *cards,
            "</main>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _backends(snap: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The snapshot's backends, by service then configured position (bad entries out)."""
    raw = snap.get("backends")
    if not isinstance(raw, Mapping):
        return []
    rows = [_mapping(v) for v in raw.values()]
    rows = [r for r in rows if isinstance(r, Mapping) and r]

    def key(r: Mapping[str, Any]) -> tuple[str, float]:
        return (_text(r.get("service", "")), _number(r.get("position")) or 0.0)

    return sorted(rows, key=key)


def _backend_table(rows: Sequence[Mapping[str, Any]], now: float) -> str:
    """The backends section ("" without backends): one row per backend."""
    if not rows:
        return ""
    out = []
    for r in rows:
        up = r.get("up") is True
        # Up by assumption until the hub's first connect or probe to it has finished.
        state = ("up" if r.get("checked", True) is not False else "unchecked") if up else "down"
        since = _number(r.get("since"))
        when = _esc(f"for {_span(max(0.0, now - since))}") if since is not None else ""
        if state == "unchecked":
            when = "not checked yet"
        out.append(
            f'<tr class="{state}" data-backend="{_esc(r.get("address", ""))}">'
            f"<td>{_esc(_text(r.get('service', '')))}</td>"
            f"<td>{_esc(_text(r.get('address', '')))}</td>"
            f'<td><span class="badge">{state}</span> {when}</td>'
            f"<td>{_int_text(r.get('streams'))}</td>"
            f"<td>{_esc(_text(r.get('last_error', '')))}</td></tr>"
        )
    return (
        '<section class="backends"><table><thead><tr><th>service</th><th>backend</th>'
        "<th>state</th><th>streams</th><th>last error</th></tr></thead><tbody>"
        + "".join(out)
        + "</tbody></table></section>"
    )


_STATE_WORDS = {
    Trouble.DISCONNECTED: "disconnected",
    Trouble.DEGRADED: "degraded",
    Trouble.CERT: "certificate",
    Trouble.OK: "connected",
}


def _card(name: str, o: Mapping[str, Any], t: Trouble, samples: Sequence[float], now: float) -> str:
    state = _STATE_WORDS[t]
    rtt = _number(o.get("rtt_ms")) if o.get("connected") else None
    rows: list[tuple[str, str]] = [
        ("RTT", (f"{rtt:.1f} ms" if rtt is not None else "–") + "<br>" + sparkline(samples)),
        ("clients", _int_text(o.get("clients"))),
        (
            "streams",
            f"{_int_text(o.get('streams'))} now, {_int_text(o.get('streams_total'))} total",
        ),
        ("bytes", f"↑ {_bytes(o.get('bytes_up'))} ↓ {_bytes(o.get('bytes_down'))}"),
    ]
    seen = _number(o.get("last_seen"))
    if seen is not None:
        rows.append(("last seen", _esc(_ago(now - seen))))
    expiry = cert_expiry(o)
    renewal = renewal_state(o)
    if expiry is not None or renewal:
        cert = []
        if expiry is not None:
            cert.append(
                f'expires <span class="nw">{_esc(_date(expiry))}</span> '
                f"({_esc(_until(expiry - now))})"
            )
        if renewal:
            cert.append(f"renewal {_esc(_text(renewal))}")
        rows.append(("certificate", "<br>".join(cert)))
    degraded = degraded_protocols(o)
    if degraded:
        rows.append(
            ("degraded", _list(f"{p}: {why}" if why else p for p, why in sorted(degraded.items())))
        )
    for key in ("names", "printers"):
        value = o.get(key)
        if isinstance(value, Mapping) and value:  # name -> its state (control.Presence)
            rows.append((key, _list(f"{k} ({v})" for k, v in sorted(value.items()))))
        elif isinstance(value, list | tuple) and value:
            rows.append((key, _list(str(v) for v in value)))
    hubs = hub_tunnels(o)
    if hubs:  # several hubs: the office's tunnels on each, the control channel's marked
        ctl = _text(o.get("control_hub") or "")
        rows.append(("hubs", _list(
            f"{h}: {n} tunnel{'s' if n != 1 else ''}{' (control)' if h == ctl else ''}"
            for h, n in hubs
        )))  # fmt: skip
    version = o.get("version")
    if version:
        rows.append(("edge version", _esc(_text(version))))
    body = "".join(f"<dt>{_esc(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f'<article class="office {state}" data-office="{_esc(name)}" data-state="{state}">'
        f'<h2><span class="name">{_esc(_text(name))}</span> '
        f'<span class="badge">{state}</span></h2><dl>{body}</dl></article>'
    )


def hub_tunnels(o: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The office's tunnels per hub (``hub_tunnels``; the control channel's hub with 0
    if it holds none else), sorted; [] when only one hub reports it."""
    raw = o.get("hub_tunnels")
    out: dict[str, int] = {}
    if isinstance(raw, Mapping):
        out = {_text(k): int(v) for k, v in raw.items() if isinstance(v, int)}
    ctl = o.get("control_hub")
    if isinstance(ctl, str) and ctl:
        out.setdefault(_text(ctl), 0)
    return sorted(out.items()) if len(out) > 1 else []


def sparkline(samples: Sequence[float], width: int = 120, height: int = 24) -> str:
    """Inline SVG of ``samples`` (ms, oldest first), lowest at the bottom and highest
    at the top, followed by that range in ms; "" when there are fewer than two."""
    points = [s for s in samples if math.isfinite(s) and s >= 0]
    if len(points) < 2:
        return ""
    low, high = min(points), max(points)
    span = high - low
    step = width / (len(points) - 1)

    def y(v: float) -> float:  # a flat line sits in the middle
        return height / 2 if span == 0 else height - 1 - (v - low) / span * (height - 2)

    coords = " ".join(f"{i * step:.1f},{y(v):.1f}" for i, v in enumerate(points))
    label = f"RTT, last {len(points)} samples: {low:.0f} to {high:.0f} ms"
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_esc(label)}"><polyline fill="none" stroke="currentColor" '
        f'stroke-width="1.5" points="{coords}"/></svg>'
        f' <span class="range">{low:.0f}–{high:.0f} ms</span>'
    )


_CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;
 background:#f4f5f7;color:#1d232b}
header{padding:.8rem 1rem;background:#1d232b;color:#fff}
h1{font-size:1.15rem;margin:0}
.summary{margin:.2rem 0 0;color:#c9d1d9;font-size:.9rem}
.backends{padding:.8rem .8rem 0}
.backends table{border-collapse:collapse;background:#fff;font-size:.9rem}
.backends th,.backends td{padding:.2rem .6rem;text-align:left;border-bottom:1px solid #e1e4e8}
.backends tr.down{background:#fff5f5}
.backends tr.down .badge{background:#d1242f;color:#fff}
.backends tr.unchecked .badge{background:#eaeef2;color:#57606a}
.offices{display:grid;grid-template-columns:repeat(auto-fill,minmax(19rem,1fr));
 gap:.8rem;padding:.8rem}
.office{background:#fff;border-radius:6px;border-left:6px solid #2e9e4f;
 padding:.6rem .8rem;box-shadow:0 1px 2px rgba(0,0,0,.12)}
.office.disconnected{border-left-color:#d1242f;background:#fff5f5}
.office.degraded{border-left-color:#d4a72c}
.office.certificate{border-left-color:#bc4c00}
h2{font-size:1.05rem;margin:0 0 .4rem;display:flex;justify-content:space-between;
 gap:.5rem;overflow-wrap:anywhere}
.badge{font-size:.75rem;font-weight:600;text-transform:uppercase;padding:.1rem .45rem;
 border-radius:1rem;background:#dafbe1;color:#116329;white-space:nowrap}
.disconnected .badge{background:#ffebe9;color:#a40e26}
.degraded .badge{background:#fff8c5;color:#7d4e00}
.certificate .badge{background:#fff1e5;color:#953800}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .7rem;margin:0;
 font-size:.9rem}
dt{color:#57606a}
dd{margin:0;overflow-wrap:anywhere}
.nw{white-space:nowrap}
.spark{vertical-align:middle;color:#0969da;max-width:45%}
.range{color:#57606a;font-size:.8rem;white-space:nowrap}
ul{margin:0;padding-left:1.1rem}
.empty{padding:1rem}
@media (max-width:480px){.offices{grid-template-columns:1fr;padding:.5rem}
 body{font-size:14px}}
"""


def _mapping(snapshot: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    if dataclasses.is_dataclass(snapshot) and not isinstance(snapshot, type):
        # One level only: nested records (offices) are read the same way when reached.
        return {f.name: getattr(snapshot, f.name) for f in dataclasses.fields(snapshot)}
    return snapshot if isinstance(snapshot, Mapping) else {}


def _offices(snapshot: Mapping[str, Any] | Any) -> dict[str, Mapping[str, Any]]:
    raw = _mapping(snapshot).get("offices", {})
    if isinstance(raw, Mapping):
        items: Iterable[tuple[Any, Any]] = raw.items()
    elif isinstance(raw, list | tuple):  # a list of office records with a name each
        items = ((_mapping(o).get("name", "?"), o) for o in raw)
    else:
        return {}
    return {str(name): _mapping(o) for name, o in items}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _int_text(value: object) -> str:
    number = _number(value)
    return str(int(number)) if number is not None else "?"


def _bytes(value: object) -> str:
    number = _number(value)
    if number is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(number) < 1024 or unit == "TiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return "?"  # not reached


def _list(items: Iterable[str]) -> str:
    values = list(items)
    shown = "".join(f"<li>{_esc(_text(v))}</li>" for v in values[:MAX_LIST_ITEMS])
    more = len(values) - MAX_LIST_ITEMS
    if more > 0:
        shown += f"<li>+{more} more</li>"
    return f"<ul>{shown}</ul>"


def _ago(seconds: float) -> str:
    return "just now" if seconds < 1 else f"{_span(seconds)} ago"


def _until(seconds: float) -> str:
    return f"expired {_span(-seconds)} ago" if seconds < 0 else f"in {_span(seconds)}"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _clock(when: float) -> str:
    try:
        return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "?"


def _date(when: float) -> str:
    try:
        return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return "?"
