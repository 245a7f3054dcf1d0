"""The hub's dashboard: every office at a glance, as one self-contained HTML page.

Pure rendering (no I/O, no clock: ``now`` is a parameter). :func:`render` turns the
hub's statistics (a :class:`spokeshare.stats.HubStatistics`, the schema ``GET /status``
and ``office list`` read too) and each office's recent RTT samples into an HTML string;
:class:`RttHistory` keeps those samples, a small bounded ring per office. The server
side (spokeshare.status) serves the page at ``/``; a snapshot it only has as JSON goes
through :func:`spokeshare.stats.from_json` first.

What the page holds, per office (:class:`~spokeshare.stats.OfficeStatistics`):
connected or not, RTT now with a sparkline of the recent samples (inline SVG), clients
now, streams now and in total, bytes each way, certificate expiry and renewal state
(``certificate``, a :class:`~spokeshare.stats.OfficeCertificate`), names and printers
advertised, degraded LAN protocols, the edge's failed dials to a hub by cause
(``edge_dial_failures``, when there are any), and with several hubs the office's
tunnels on each. Offices are sorted trouble first
(:func:`trouble`): disconnected, degraded, certificate near expiry or renewal failing,
then the rest, each group by name.

Above the offices, each hub service's backends (``backends``,
:class:`~spokeshare.stats.BackendStatistics`): up, down, or unchecked (the hub has not
finished a connect or probe to it since it started), since when, the last error and
the streams each carried; a service with a backend down is named in the summary.

The page loads nothing from elsewhere: its CSS is inline, the sparklines are inline
SVG, no script; it reloads itself every :data:`REFRESH_SECONDS` (``<meta
http-equiv="refresh">``). Every value from the snapshot is escaped (``html.escape``)
wherever it lands, text or attribute, and cut to :data:`MAX_TEXT` characters. Office
names come from the hub's registry, but a snapshot may be read from another worker's
file: no text in it is trusted.
"""

from __future__ import annotations

import datetime as dt
import enum
import html
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from spokeshare.stats import BackendStatistics, HubStatistics, OfficeStatistics

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

    def note(self, snapshot: HubStatistics, now: float) -> None:
        if self._last is not None and now - self._last < self.every:
            return
        self._last = now
        offices = snapshot.offices
        for gone in set(self._rings) - set(offices):
            del self._rings[gone]
        for name, office in offices.items():
            ring = self._rings.get(name)
            if ring is None:
                if len(self._rings) >= MAX_OFFICES:
                    continue
                ring = self._rings[name] = deque(maxlen=self.samples)
            rtt = _finite(office.rtt_ms)
            if office.connected and rtt is not None and rtt >= 0:
                ring.append((now, rtt))

    def get(self) -> dict[str, list[float]]:
        """Office name -> its RTT samples in ms, oldest first."""
        return {name: [rtt for _, rtt in ring] for name, ring in self._rings.items()}


def trouble(office: OfficeStatistics, now: float) -> Trouble:
    """The worst thing about one office's statistics at ``now`` (unix seconds)."""
    if not office.connected:
        return Trouble.DISCONNECTED
    if office.degraded:
        return Trouble.DEGRADED
    expiry = cert_expiry(office)
    if expiry is not None and expiry - now < NEAR_EXPIRY_SECONDS:
        return Trouble.CERT
    if "fail" in renewal_state(office).lower():
        return Trouble.CERT
    return Trouble.OK


def sort_offices(
    offices: Mapping[str, OfficeStatistics], now: float
) -> list[tuple[str, OfficeStatistics, Trouble]]:
    """(name, statistics, trouble) per office, trouble first, then by name."""
    rows = [(name, o, trouble(o, now)) for name, o in offices.items()]
    rows.sort(key=lambda r: (r[2], r[0].casefold(), r[0]))
    return rows


def cert_expiry(office: OfficeStatistics) -> float | None:
    """The office certificate's end of validity in unix seconds (None: not known, or
    not an ISO 8601 time); without a UTC offset it is taken as UTC."""
    not_after = office.certificate.get("not_after")
    if not not_after:
        return None
    try:
        when = dt.datetime.fromisoformat(not_after)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def renewal_state(office: OfficeStatistics) -> str:
    """The certificate renewal phrase (``ok DATE``, ``due DATE``, ``failing since
    ...``; "" when not known)."""
    return office.certificate.get("renew") or ""


def render(snapshot: HubStatistics, history: Mapping[str, Sequence[float]], now: float) -> str:
    """The whole page (an HTML5 document) for ``snapshot`` at ``now`` (unix seconds).

    ``history`` maps office names to RTT samples in ms, oldest first.
    """
    rows = sort_offices(snapshot.offices, now)
    down = sum(1 for r in rows if r[2] is Trouble.DISCONNECTED)
    worse = sum(1 for r in rows if r[2] is not Trouble.OK)
    title = f"spokeshare hub: {len(rows) - down}/{len(rows)} offices connected"
    summary = [
        f"{len(rows)} office{'s' if len(rows) != 1 else ''}",
        f"{down} disconnected",
        f"{worse - down} other trouble",
        f"hub {_text(snapshot.version)}",
    ]
    hub_names = sorted({_text(h) for h in snapshot.hubs})
    if len(hub_names) > 1:
        summary.append(f"hubs {', '.join(hub_names)}")
    backends = sorted(snapshot.backends.values(), key=lambda b: (b.service, b.position))
    down_backends = [b for b in backends if not b.up]
    if down_backends:
        summary.append(f"{len(down_backends)} of {len(backends)} backends down")
    updated = _finite(snapshot.time)
    if updated:  # 0: a snapshot nobody stamped
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


def _backend_table(rows: Sequence[BackendStatistics], now: float) -> str:
    """The backends section ("" without backends): one row per backend."""
    if not rows:
        return ""
    out = []
    for b in rows:
        # Up by assumption until the hub's first connect or probe to it has finished.
        state = ("up" if b.checked else "unchecked") if b.up else "down"
        since = _finite(b.since)
        when = _esc(f"for {_span(max(0.0, now - since))}") if since is not None else ""
        if state == "unchecked":
            when = "not checked yet"
        out.append(
            f'<tr class="{state}" data-backend="{_esc(b.address)}">'
            f"<td>{_esc(_text(b.service))}</td>"
            f"<td>{_esc(_text(b.address))}</td>"
            f'<td><span class="badge">{state}</span> {when}</td>'
            f"<td>{b.streams:d}</td>"
            f"<td>{_esc(_text(b.last_error))}</td></tr>"
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


def _card(name: str, o: OfficeStatistics, t: Trouble, samples: Sequence[float], now: float) -> str:
    state = _STATE_WORDS[t]
    rtt = _finite(o.rtt_ms) if o.connected else None
    rows: list[tuple[str, str]] = [
        ("RTT", (f"{rtt:.1f} ms" if rtt is not None else "–") + "<br>" + sparkline(samples)),
        ("clients", f"{o.clients:d}"),
        ("streams", f"{o.streams:d} now, {o.streams_total:d} total"),
        ("bytes", f"↑ {_bytes(o.bytes_up)} ↓ {_bytes(o.bytes_down)}"),
    ]
    seen = _finite(o.last_seen)
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
    if o.degraded:  # "protocol: why" each
        rows.append(("degraded", _list(sorted(o.degraded))))
    if o.names:  # name -> its state (control.Presence)
        rows.append(("names", _list(f"{k} ({v})" for k, v in sorted(o.names.items()))))
    if o.printers:
        rows.append(("printers", _list(o.printers)))
    if o.edge_dial_failures:  # cause -> count since the edge started
        rows.append(("dial failures", _list(
            f"{cause}: {n:d}" for cause, n in sorted(o.edge_dial_failures.items())
        )))  # fmt: skip
    hubs = hub_tunnels(o)
    if hubs:  # several hubs: the office's tunnels on each, the control channel's marked
        rows.append(("hubs", _list(
            f"{h}: {n} tunnel{'s' if n != 1 else ''}{' (control)' if h == o.control_hub else ''}"
            for h, n in hubs
        )))  # fmt: skip
    if o.version:
        rows.append(("edge version", _esc(_text(o.version))))
    body = "".join(f"<dt>{_esc(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f'<article class="office {state}" data-office="{_esc(name)}" data-state="{state}">'
        f'<h2><span class="name">{_esc(_text(name))}</span> '
        f'<span class="badge">{state}</span></h2><dl>{body}</dl></article>'
    )


def hub_tunnels(o: OfficeStatistics) -> list[tuple[str, int]]:
    """The office's tunnels per hub (``hub_tunnels``; the control channel's hub with 0
    if it holds none else), sorted; [] when only one hub reports it."""
    out = dict(o.hub_tunnels)
    if o.control_hub:
        out.setdefault(o.control_hub, 0)
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


def _finite(value: float | None) -> float | None:
    """``value`` unless it is None, NaN or infinite (then None)."""
    return value if value is not None and math.isfinite(value) else None


def _text(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _bytes(number: float) -> str:
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
