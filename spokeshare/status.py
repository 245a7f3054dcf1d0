"""The hub's status page and metrics, for the monitoring people already run.

``GET /status`` answers the hub's statistics snapshot as JSON (the same data
``spokeshare office list`` reads); ``GET /metrics`` answers it in the Prometheus text
exposition format. Rendering is pure; the server is a few lines of asyncio that read
one bounded request line and close. Enabled by ``[hub] status_listen`` (off by
default; bind it to localhost or a management network only).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from spokeshare.errors import DecodeError

log = logging.getLogger("spokeshare.status")

MAX_REQUEST_LINE = 1024
_OFFICE_GAUGES = (
    ("connected", "spokeshare_office_connected", "1 if the office's control channel is up"),
    ("rtt_ms", "spokeshare_office_rtt_milliseconds", "last heartbeat round trip"),
    ("streams", "spokeshare_office_streams", "client streams relaying now"),
    ("idle_tunnels", "spokeshare_office_idle_tunnels", "warm tunnels waiting in the pool"),
    ("last_seen", "spokeshare_office_last_seen_seconds", "unix time of the last heartbeat"),
)
_OFFICE_COUNTERS = (
    ("streams_total", "spokeshare_office_streams_total", "client streams opened"),
    ("bytes_up", "spokeshare_office_bytes_up_total", "bytes from the office to HQ"),
    ("bytes_down", "spokeshare_office_bytes_down_total", "bytes from HQ to the office"),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(stats: dict[str, Any]) -> str:
    """Prometheus text format (version 0.0.4) of :meth:`Hub.statistics`."""
    out = [
        "# HELP spokeshare_hub_tunnels TLS tunnels open now",
        "# TYPE spokeshare_hub_tunnels gauge",
        f"spokeshare_hub_tunnels {int(stats.get('tunnels', 0))}",
        "# HELP spokeshare_hub_handshakes_total TLS handshakes completed",
        "# TYPE spokeshare_hub_handshakes_total counter",
        f"spokeshare_hub_handshakes_total {int(stats.get('handshakes', 0))}",
        "# HELP spokeshare_hub_handshake_failures_total TLS handshakes refused or failed",
        "# TYPE spokeshare_hub_handshake_failures_total counter",
        f"spokeshare_hub_handshake_failures_total {int(stats.get('handshake_failures', 0))}",
        "# HELP spokeshare_hub_handshakes_in_progress TLS handshakes running now",
        "# TYPE spokeshare_hub_handshakes_in_progress gauge",
        f"spokeshare_hub_handshakes_in_progress {int(stats.get('handshakes_in_progress', 0))}",
        "# HELP spokeshare_hub_refused_total connections failed or refused, by cause",
        "# TYPE spokeshare_hub_refused_total counter",
    ]
    refusals: dict[str, int] = stats.get("refusals", {})
    for cause, count in sorted(refusals.items()):
        out.append(f'spokeshare_hub_refused_total{{cause="{_label(cause)}"}} {int(count)}')
    offices: dict[str, dict[str, Any]] = stats.get("offices", {})
    for key, metric, help_text in _OFFICE_GAUGES + _OFFICE_COUNTERS:
        kind = "counter" if metric.endswith("_total") else "gauge"
        out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for name, office in sorted(offices.items()):
            value = office.get(key)
            if value is None:
                continue
            out.append(f'{metric}{{office="{_label(name)}"}} {float(value):g}')
    return "\n".join(out) + "\n"


def _response(status: str, ctype: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\nCache-Control: no-store\r\n\r\n"
    )
    return head.encode() + body


def answer(request_line: bytes, stats: Callable[[], dict[str, Any]]) -> bytes:
    """The whole HTTP response to one request line (pure: no I/O)."""
    parts = request_line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response("400 Bad Request", "text/plain", b"bad request\n")
    method, path = parts[0], parts[1].split("?", 1)[0]
    if method != "GET":
        return _response("405 Method Not Allowed", "text/plain", b"GET only\n")
    if path == "/status":
        body = json.dumps(stats(), indent=1).encode() + b"\n"
        return _response("200 OK", "application/json", body)
    if path == "/metrics":
        return _response("200 OK", "text/plain; version=0.0.4", render_metrics(stats()).encode())
    return _response("404 Not Found", "text/plain", b"try /status or /metrics\n")


async def serve(host: str, port: int, stats: Callable[[], dict[str, Any]]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readuntil(b"\n")
            if len(line) > MAX_REQUEST_LINE:
                raise DecodeError("status", "request line too long")
            writer.write(answer(line.strip(), stats))
            await writer.drain()
        except (
            TimeoutError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ) as exc:
            log.debug("status request dropped: %s", exc)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_LINE)
    log.info("status page on http://%s:%d/status and /metrics", host, port)
    return server
