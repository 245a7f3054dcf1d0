"""The hub's status page and metrics, for the monitoring people already run.

``GET /`` answers the dashboard, an HTML page of every office (spokeshare.dashboard);
``GET /status`` answers the hub's statistics snapshot as JSON (the same data
``spokeshare office list`` reads); ``GET /metrics`` answers it in the Prometheus text
exposition format. Rendering is pure; the server is a few lines of asyncio that read
one bounded request head and close. Enabled by ``[hub] status_listen`` (off by
default). On a loopback address it needs no credentials; on any other it needs
``[hub] status_token``, sent as ``Authorization: Bearer TOKEN`` or as the password of
HTTP basic auth (RFC 6750 §2.1, RFC 7617), compared in constant time; without it every
path answers 401 with ``WWW-Authenticate`` (RFC 9110 §11.6.1).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from spokeshare import dashboard, stats
from spokeshare.errors import ConfigError, DecodeError
from spokeshare.logfmt import Line
from spokeshare.stats import HubStatistics

log = logging.getLogger("spokeshare.status")

MAX_REQUEST_LINE = 1024
#: Header lines read after the request line at most (the rest is not read).
MAX_HEADER_LINES = 32
#: The page loads nothing: inline CSS and SVG only, no script, no frames.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
#: What a snapshot source gives: the hub's schema, or (tests, another writer) its JSON.
Snapshot = HubStatistics | Mapping[str, Any]


def schema(snap: Snapshot) -> HubStatistics:
    """The snapshot as the schema: its JSON form is read by :func:`stats.from_json`
    (wrong types take their defaults), the one place JSON comes in."""
    return snap if isinstance(snap, HubStatistics) else stats.from_json(HubStatistics, snap)


def render_metrics(snap: Snapshot) -> str:
    """Prometheus text format (version 0.0.4) of :meth:`Hub.statistics`: every metric
    the schema declares (spokeshare.stats), once, with help and type."""
    return stats.render_metrics(schema(snap))


def _response(status: str, ctype: str, body: bytes, extra: tuple[str, ...] = ()) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
        + "".join(f"{h}\r\n" for h in extra)
        + "\r\n"
    )
    return head.encode() + body


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def authorized(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token``: as a bearer token
    (RFC 6750 §2.1) or as the password of basic auth, any user name (RFC 7617 §2).
    No token configured: everyone is. Constant-time comparison (hmac.compare_digest)."""
    if not token:
        return True
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    offered = b""
    if scheme.lower() == "bearer":
        offered = value.encode("latin-1", "replace")
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        offered = decoded.partition(b":")[2]
    return hmac.compare_digest(offered, token.encode())


def _unauthorized() -> bytes:
    return _response(
        "401 Unauthorized",
        "text/plain",
        b"status_token required: Authorization: Bearer TOKEN, or basic auth with it as password\n",
        (
            'WWW-Authenticate: Basic realm="spokeshare hub", charset="UTF-8"',
            'WWW-Authenticate: Bearer realm="spokeshare hub"',
        ),
    )


def answer(
    request_line: bytes,
    snapshot: Callable[[], Snapshot],
    authorization: str | None = None,
    token: str = "",
    page: Callable[[HubStatistics], str] | None = None,
) -> bytes:
    """The whole HTTP response to one request line (pure: no I/O).

    ``snapshot`` gives the hub's statistics (a :class:`stats.HubStatistics`, or its
    JSON form as a mapping, read by :func:`schema`); ``authorization`` is the request's
    Authorization header (None: absent), checked against ``token`` (:func:`authorized`)
    for every path; ``page`` renders the dashboard from the snapshot (default:
    :func:`dashboard.render` without history).
    """
    parts = request_line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response("400 Bad Request", "text/plain", b"bad request\n")
    method, path = parts[0], parts[1].split("?", 1)[0]
    if method != "GET":
        return _response("405 Method Not Allowed", "text/plain", b"GET only\n")
    if not authorized(authorization, token):
        return _unauthorized()
    if path in ("/", "/index.html"):
        snap = schema(snapshot())
        text = page(snap) if page else dashboard.render(snap, {}, snap.time)
        return _response(
            "200 OK",
            "text/html; charset=utf-8",
            text.encode(),
            (f"Content-Security-Policy: {CSP}", "Referrer-Policy: no-referrer"),
        )
    if path == "/status":
        body = json.dumps(stats.to_json(schema(snapshot())), indent=1).encode() + b"\n"
        return _response("200 OK", "application/json", body)
    if path == "/metrics":
        return _response("200 OK", "text/plain; version=0.0.4", render_metrics(snapshot()).encode())
    return _response("404 Not Found", "text/plain", b"try /, /status or /metrics\n")


async def _read_authorization(reader: asyncio.StreamReader) -> str | None:
    """The Authorization header of the request head (None: absent); at most
    MAX_HEADER_LINES lines of at most MAX_REQUEST_LINE bytes each are read."""
    found: str | None = None
    for _ in range(MAX_HEADER_LINES):
        line = await reader.readuntil(b"\n")
        if line in (b"\r\n", b"\n"):
            return found
        name, sep, value = line.decode("latin-1").partition(":")
        if sep and name.strip().lower() == "authorization":
            found = value.strip()
    raise DecodeError("status", f"more than {MAX_HEADER_LINES} header lines")


async def serve(
    host: str, port: int, snapshot: Callable[[], Snapshot], token: str = ""
) -> asyncio.Server:
    """Serve the dashboard, /status and /metrics on ``host:port``.

    Raises ConfigError for a non-loopback ``host`` without ``token`` (config.load_hub
    refuses such a file already; this holds for any HubConfig). Each request's
    snapshot also feeds the dashboard's RTT history (dashboard.RttHistory), and so does
    a timer every dashboard.SAMPLE_SECONDS while the server serves, so the history
    covers the last minutes also when nobody was looking.
    """
    if not token and not is_loopback(host):
        raise ConfigError(
            "hub", "hub.status_token", f"status_listen {host}:{port} is not loopback: {TOKEN_FIX}"
        )
    history = dashboard.RttHistory()

    def sampled() -> HubStatistics:
        snap = schema(snapshot())
        history.note(snap, time.monotonic())
        return snap

    def page(snap: HubStatistics) -> str:
        return dashboard.render(snap, history.get(), time.time())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readuntil(b"\n")
                if len(line) > MAX_REQUEST_LINE:
                    raise DecodeError("status", "request line too long")
                authorization = await _read_authorization(reader)
            writer.write(answer(line.strip(), sampled, authorization, token, page))
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
    loop = asyncio.get_running_loop()

    def tick() -> None:  # a timer, not a task: it ends with the server, nothing to await
        if server.is_serving():
            sampled()
            loop.call_later(dashboard.SAMPLE_SECONDS, tick)

    tick()
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "%s",
        Line(
            "status page",
            url=f"http://{shown}:{server.sockets[0].getsockname()[1]}/",
            paths="/,/status,/metrics",
            auth="status_token required (bearer or basic auth)"
            if token
            else "loopback only, no token needed",
        ),
    )
    return server


#: The one-line fix for a status page on a non-loopback address without a token.
TOKEN_FIX = (
    'set [hub] status_token = "<random string of 16+ characters, e.g. openssl rand -hex 24>" '
    'or status_listen = "127.0.0.1:PORT"'
)
