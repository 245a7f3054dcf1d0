"""The control channel, sans-IO: typed messages and one heartbeat core for both ends.

Each edge keeps one control channel open to the hub: a tunnel whose open header is
``OpenControl`` and that, after the hub's OK status, carries CONTROL frames only
(docs/protocol.md, "Control channel"). Each frame holds one message, a UTF-8 JSON
object whose ``"t"`` names its type::

    {"t":"ping","seq":7}
    {"t":"pong","seq":7,"stats":{"clients":2,"idle":4,"streams_total":90,"streams_failed":1}}
    {"t":"pong","seq":7,"time":1795046400123}
    {"t":"pong","seq":7,"stats":{...},"lan":{"names":{"GLOBAL-NFS":"ok"},
     "printers":["Office laser"],"degraded":["llmnr: systemd-resolved holds port 5355"]}}
    {"t":"revoked"}
    {"t":"renew","id":1,"csr":"MIIB..."}
    {"t":"renew-issued","id":1,"chain":["MIIC...","MIIB..."]}
    {"t":"renew-refused","id":1,"reason":"office nyc is revoked"}

A pong from the edge carries the edge's statistics; one from the hub carries none.
A pong may carry ``time``, the sender's wall clock when it answered (integer
milliseconds since the Unix epoch, UTC): the hub stamps its pongs, and the edge
estimates the clock skew between them from the stamp and the round trip
(:func:`clock_skew`). A pong without it (an older peer) decodes as before, and an
older peer ignores the key.
An edge's pong may carry ``lan``, its LAN presence (:class:`Presence`): the names it
advertises and each one's state, HQ's printers it advertises and its degraded LAN
protocols, for the hub's office list and dashboard. It rides on every pong rather than
in a message of its own sent on change: the pong is already sent every interval, so the
hub needs no change tracking or resend after a reconnect, and an older hub ignores the
key. Bounded so a pong always fits one CONTROL frame (:data:`MAX_PRESENCE_BYTES`).
The three ``renew`` messages renew the office's certificate over its own channel
(:mod:`spokeshare.renewal`): the edge sends a PKCS#10 request (RFC 2986, DER in
base64, RFC 4648 §4), the hub answers with the issued chain (DER certificates in
base64, the office's first, then the CA's) or a refusal; ``id`` pairs the answer
with its request.
Keys a message does not know are ignored and a type it does not know decodes to
:class:`Unknown` (the peer may be newer), so new messages can be added without a new
wire version.

How the heartbeat works
-----------------------
Both ends run the same :class:`Heartbeat`: it pings every ``interval`` seconds, answers
every ping with a pong, measures the round-trip time from the pong that echoes a ping's
``seq``, and declares the peer lost once ``dead_after`` seconds pass without a single
message from it (any message counts, not only pongs). The shell feeds it what arrives
(:meth:`Heartbeat.receive`), asks when to wake (:meth:`Heartbeat.get_timer`), wakes it
(:meth:`Heartbeat.handle_timer`) and carries out the commands it returns. Nothing here
reads a clock: ``now`` is a parameter, in seconds of a monotonic clock.

The edge configures it by ``hub_dead_after`` (pinging three times in that span), the hub
by ``heartbeat_interval`` (declaring the edge lost after three silent intervals): the
same rule, :data:`PINGS_PER_DEAD_AFTER`, from either end.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spokeshare.errors import DecodeError, UsageError
from spokeshare.tunnel import wire

_PROTO = "tunnel-control"

#: Pings sent per ``dead_after`` span: a peer is lost after missing this many in a row,
#: so one lost ping (or a pong delayed by a burst of stream traffic) is never enough.
PINGS_PER_DEAD_AFTER = 3
#: Shortest ping interval, in seconds (a test's tiny ``hub_dead_after`` must not turn
#: the heartbeat into a busy loop).
MIN_INTERVAL = 0.05
#: Pings remembered while awaiting their pongs. More than ``PINGS_PER_DEAD_AFTER`` (a pong
#: that can still arrive before the peer counts as lost always finds its ping), and a
#: bound (a peer that never answers cannot grow the table).
MAX_PINGS_IN_FLIGHT = 16
#: Largest ``seq`` accepted: JSON numbers beyond 2**53 lose precision in other readers.
MAX_SEQ = (1 << 53) - 1
#: Longest message type name, and bounds on a pong's statistics.
MAX_TYPE = 32
MAX_STATS = 32
MAX_STAT_NAME = 64
#: Statistics values are counters and gauges: bounded like a signed 64-bit integer.
MAX_STAT_VALUE = (1 << 63) - 1
#: Largest certificate request, DER bytes (a P-256 request is about 300).
MAX_CSR = 1024
#: Largest certificate of an issued chain, DER bytes (a P-256 office certificate is
#: about 600), and most certificates in one chain (the office's and the CA's).
MAX_CERT = 1280
MAX_CHAIN = 2
#: Longest refusal reason, in characters.
MAX_REASON = 200
#: Largest pong ``time``, milliseconds since the epoch: exact in any JSON reader
#: (2**53 - 1, like ``seq``; far beyond any real date).
MAX_TIME_MS = (1 << 53) - 1
#: Bounds on a pong's LAN presence (``lan``): names advertised, printers advertised,
#: degraded entries, and the UTF-8 length of each string (a DNS name's 255 octets,
#: RFC 1035 section 2.3.4, bounds every one of them).
MAX_NAMES = 64
MAX_PRINTERS = 256
MAX_DEGRADED = 16
MAX_PRESENCE_STRING = 255
#: The presence's share of one CONTROL frame (wire.MAX_CONTROL), JSON bytes: the rest
#: is left for the pong's seq, time and statistics. :func:`fit_presence` drops entries
#: past it.
MAX_PRESENCE_BYTES = 3072


# -- messages ----------------------------------------------------------------------------


def _check_seq(seq: int) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise UsageError(f"control seq {seq!r} is not an integer in 0..{MAX_SEQ}")


@dataclass(frozen=True, slots=True)
class Ping:
    """Asks the peer for a :class:`Pong` echoing ``seq``."""

    seq: int

    def __post_init__(self) -> None:
        _check_seq(self.seq)


def _check_string(what: str, value: object) -> None:
    try:
        ok = isinstance(value, str) and 0 < len(value.encode("utf-8")) <= MAX_PRESENCE_STRING
    except UnicodeEncodeError:
        ok = False
    if not ok:
        raise UsageError(f"{what} {value!r} is not 1..{MAX_PRESENCE_STRING} UTF-8 bytes")


@dataclass(frozen=True, slots=True)
class Presence:
    """An edge's LAN presence (wire key ``lan`` of its pongs).

    ``names``: each virtual name advertised -> its state (``ok``, ``pending``,
    ``conflict``, ``withdrawn``, ``off``), at most :data:`MAX_NAMES`; ``printers``:
    HQ's printers advertised on the LAN (instance names), at most :data:`MAX_PRINTERS`;
    ``degraded``: ``"protocol: why"`` per degraded LAN protocol or listener, at most
    :data:`MAX_DEGRADED`. Every string is 1..:data:`MAX_PRESENCE_STRING` UTF-8 bytes.
    Raises :class:`UsageError` otherwise.
    """

    names: Mapping[str, str]
    printers: tuple[str, ...] = ()
    degraded: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.names, Mapping) or len(self.names) > MAX_NAMES:
            raise UsageError(f"presence names are not a mapping of at most {MAX_NAMES}")
        for name, state in self.names.items():
            _check_string("name", name)
            _check_string("name state", state)
        for what, items, limit in (
            ("printer", self.printers, MAX_PRINTERS),
            ("degraded entry", self.degraded, MAX_DEGRADED),
        ):
            if not isinstance(items, tuple) or len(items) > limit:
                raise UsageError(f"presence {what}s are not a tuple of at most {limit}")
            for item in items:
                _check_string(what, item)

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"names": {...}, "printers": [...], "degraded": [...]}``."""
        return {
            "names": dict(self.names),
            "printers": list(self.printers),
            "degraded": list(self.degraded),
        }


def _clip(text: str) -> str:
    """``text`` cut to :data:`MAX_PRESENCE_STRING` UTF-8 bytes (never mid-character)."""
    raw = text.encode("utf-8")[:MAX_PRESENCE_STRING]
    return raw.decode("utf-8", "ignore") or "?"


def fit_presence(
    names: Mapping[str, str], printers: Sequence[str], degraded: Sequence[str]
) -> Presence:
    """A :class:`Presence` within every bound, from whatever the edge has: strings cut
    to :data:`MAX_PRESENCE_STRING` bytes, lists to their counts, then printers, names
    and degraded entries dropped from the end (in that order: trouble is kept longest)
    until the JSON is at most :data:`MAX_PRESENCE_BYTES`."""
    n = {_clip(k): _clip(v) for k, v in list(names.items())[:MAX_NAMES]}
    p = [_clip(x) for x in printers[:MAX_PRINTERS]]
    d = [_clip(x) for x in degraded[:MAX_DEGRADED]]

    def size() -> int:
        body = {"names": n, "printers": p, "degraded": d}
        return len(json.dumps(body, separators=(",", ":")).encode("utf-8"))

    while size() > MAX_PRESENCE_BYTES:
        if p:
            p.pop()
        elif n:
            n.pop(next(reversed(n)))
        else:
            d.pop()
    return Presence(n, tuple(p), tuple(d))


@dataclass(frozen=True, slots=True)
class Pong:
    """Answers the :class:`Ping` with the same ``seq``.

    ``stats`` is the sender's statistics snapshot (name -> counter or gauge: the
    edge's :class:`EdgeReport`, :meth:`EdgeReport.to_stats`), or None (the hub's
    pongs). ``time_ms`` is the sender's wall clock when it answered, integer
    milliseconds since the Unix epoch (wire key ``time``), or None (an older peer).
    ``presence`` is the edge's LAN presence (wire key ``lan``), or None (the hub's
    pongs, an older edge). Raises :class:`UsageError` for a ``time_ms`` outside
    0..:data:`MAX_TIME_MS`.
    """

    seq: int
    stats: Mapping[str, int | float] | None = None
    time_ms: int | None = None
    presence: Presence | None = None

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        if self.presence is not None and not isinstance(self.presence, Presence):
            raise UsageError(f"pong presence {self.presence!r} is not a Presence")
        t = self.time_ms
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_TIME_MS
        ):
            raise UsageError(f"pong time {t!r} is not an integer in 0..{MAX_TIME_MS}")
        if self.stats is not None:
            if len(self.stats) > MAX_STATS:
                raise UsageError(f"{len(self.stats)} statistics exceed {MAX_STATS}")
            for name, value in self.stats.items():
                _check_stat(name, value)


#: Most causes (or statuses) an :class:`EdgeReport` carries per counter family; the
#: rest are summed under :data:`OTHER`. Seven fixed fields plus two families stay
#: within :data:`MAX_STATS`.
MAX_REPORT_CAUSES = 12
#: The key the causes past :data:`MAX_REPORT_CAUSES` are counted under.
OTHER = "other"


@dataclass(frozen=True, slots=True)
class EdgeReport:
    """What the edge's pongs report (wire key ``stats``), typed: the hub keeps it per
    office for ``office list``, ``/status``, ``/metrics`` and the dashboard.

    ``clients`` (connections carried now) and ``idle`` (warm tunnels) are gauges;
    ``streams_total`` and ``streams_failed`` count streams since the edge started;
    ``renew_failures`` counts failed renewals in a row, ``renew_failing_since`` is
    when the first of them failed and ``cert_not_after`` when the office certificate
    ends (unix seconds, None when there is none); ``dial_failures`` counts failed dials
    to a hub by cause (tunnel.tls.handshake_cause: ``timeout``, ``certificate``,
    ``tls:REASON``, ...) and ``refused`` the hub's refusals by status
    (wire.Status name). Both hold at most :data:`MAX_REPORT_CAUSES` keys.

    On the wire it is the pong's flat ``stats`` object (:meth:`to_stats`): the fields
    by name, the two families as ``dial_failed.CAUSE`` and ``refused.STATUS``, and a
    time of None as 0; :meth:`of` reads it back, keeping what it knows and ignoring
    what a newer edge adds. Raises :class:`UsageError` for a negative count.
    """

    clients: int = 0
    idle: int = 0
    streams_total: int = 0
    streams_failed: int = 0
    renew_failures: int = 0
    renew_failing_since: float | None = None
    cert_not_after: float | None = None
    dial_failures: Mapping[str, int] = field(default_factory=dict)
    refused: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        counts = (self.clients, self.idle, self.streams_total, self.streams_failed)
        if min((*counts, self.renew_failures)) < 0:
            raise UsageError("an edge report's counts are not negative")
        for family in (self.dial_failures, self.refused):
            if len(family) > MAX_REPORT_CAUSES or min(family.values(), default=0) < 0:
                raise UsageError(f"at most {MAX_REPORT_CAUSES} causes, none negative")

    def to_stats(self) -> dict[str, int | float]:
        """The pong's ``stats`` object (at most :data:`MAX_STATS` entries)."""
        out: dict[str, int | float] = {
            "clients": self.clients,
            "idle": self.idle,
            "streams_total": self.streams_total,
            "streams_failed": self.streams_failed,
            "renew_failures": self.renew_failures,
            "renew_failing_since": self.renew_failing_since or 0,
            "cert_not_after": self.cert_not_after or 0,
        }
        for prefix, family in (("dial_failed.", self.dial_failures), ("refused.", self.refused)):
            for cause, n in family.items():
                out[(prefix + cause)[:MAX_STAT_NAME]] = n
        return out

    @classmethod
    def of(cls, stats: Mapping[str, int | float]) -> EdgeReport:
        """The report in a decoded pong's ``stats`` (:func:`decode` has bounded its
        size and names); a field missing or of the wrong kind reads as its default."""

        def count(name: str) -> int:
            v = stats.get(name, 0)
            return v if isinstance(v, int) and v >= 0 else 0

        def when(name: str) -> float | None:
            v = stats.get(name, 0)
            return float(v) if v > 0 else None

        families: tuple[dict[str, int], dict[str, int]] = ({}, {})
        for name, v in stats.items():
            for prefix, family in zip(("dial_failed.", "refused."), families, strict=True):
                if name.startswith(prefix) and isinstance(v, int) and v >= 0:
                    family[name[len(prefix) :]] = v
        for family in families:
            while len(family) > MAX_REPORT_CAUSES:  # a stranger's pong: fold the rest
                cause = next(c for c in reversed(family) if c != OTHER)
                n = family.pop(cause)
                family[OTHER] = min(family.get(OTHER, 0) + n, MAX_STAT_VALUE)
        return cls(
            count("clients"),
            count("idle"),
            count("streams_total"),
            count("streams_failed"),
            count("renew_failures"),
            when("renew_failing_since"),
            when("cert_not_after"),
            families[0],
            families[1],
        )


def add_cause(counts: dict[str, int], cause: str, n: int = 1) -> None:
    """Count ``n`` under ``cause`` in ``counts``, or under :data:`OTHER` once
    ``counts`` holds :data:`MAX_REPORT_CAUSES` keys (an edge's counters by cause)."""
    if cause not in counts and len(counts) >= MAX_REPORT_CAUSES - (OTHER not in counts):
        cause = OTHER
    counts[cause] = min(counts.get(cause, 0) + n, MAX_STAT_VALUE)


@dataclass(frozen=True, slots=True)
class Revoked:
    """The hub tells the edge its office has been revoked (the hub then cuts it off)."""


def _check_der(what: str, der: object, limit: int) -> None:
    if not isinstance(der, bytes) or not 0 < len(der) <= limit:
        raise UsageError(f"{what} is not 1..{limit} bytes")


@dataclass(frozen=True, slots=True)
class RenewRequest:
    """The edge asks for a new certificate: ``csr`` is a PKCS#10 request (RFC 2986),
    DER, at most :data:`MAX_CSR` bytes; ``id`` (0..2**53-1) is echoed in the answer."""

    id: int
    csr: bytes

    def __post_init__(self) -> None:
        _check_seq(self.id)
        _check_der("certificate request", self.csr, MAX_CSR)


@dataclass(frozen=True, slots=True)
class RenewIssued:
    """The hub's answer to :class:`RenewRequest` ``id``: the issued certificate then
    the CA's, DER, 1..:data:`MAX_CHAIN` of at most :data:`MAX_CERT` bytes each."""

    id: int
    chain: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_seq(self.id)
        if not isinstance(self.chain, tuple) or not 0 < len(self.chain) <= MAX_CHAIN:
            raise UsageError(f"a chain holds 1..{MAX_CHAIN} certificates")
        for der in self.chain:
            _check_der("certificate", der, MAX_CERT)


@dataclass(frozen=True, slots=True)
class RenewRefused:
    """The hub refuses :class:`RenewRequest` ``id``; ``reason`` is 1..:data:`MAX_REASON`
    characters for the edge's log and status."""

    id: int
    reason: str

    def __post_init__(self) -> None:
        _check_seq(self.id)
        if not isinstance(self.reason, str) or not 0 < len(self.reason) <= MAX_REASON:
            raise UsageError(f"refusal reason is not 1..{MAX_REASON} characters")


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message of a type this version does not know (a newer peer); ignored."""

    type: str


ControlMessage = Ping | Pong | Revoked | RenewRequest | RenewIssued | RenewRefused | Unknown
#: Messages the heartbeat hands on to the shell (:class:`Deliver`): certificate renewal.
RenewMessage = RenewRequest | RenewIssued | RenewRefused


def _check_stat(name: object, value: object) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_STAT_NAME:
        raise UsageError(f"statistic name {name!r} is not 1..{MAX_STAT_NAME} characters")
    if not _is_number(value):
        raise UsageError(f"statistic {name} = {value!r} is not a finite number in range")


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_STAT_VALUE <= value <= MAX_STAT_VALUE
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= MAX_STAT_VALUE
    return False


def to_json(msg: ControlMessage) -> dict[str, Any]:
    """The JSON object for ``msg`` (the wire form before framing)."""
    if isinstance(msg, Ping):
        return {"t": "ping", "seq": msg.seq}
    if isinstance(msg, Pong):
        out: dict[str, Any] = {"t": "pong", "seq": msg.seq}
        if msg.stats is not None:
            out["stats"] = dict(msg.stats)
        if msg.time_ms is not None:
            out["time"] = msg.time_ms
        if msg.presence is not None:
            out["lan"] = msg.presence.to_json()
        return out
    if isinstance(msg, Revoked):
        return {"t": "revoked"}
    if isinstance(msg, RenewRequest):
        return {"t": "renew", "id": msg.id, "csr": _b64(msg.csr)}
    if isinstance(msg, RenewIssued):
        return {"t": "renew-issued", "id": msg.id, "chain": [_b64(c) for c in msg.chain]}
    if isinstance(msg, RenewRefused):
        return {"t": "renew-refused", "id": msg.id, "reason": msg.reason}
    raise UsageError(f"{msg!r} cannot be sent (an unknown type is only ever received)")


def encode(msg: ControlMessage) -> bytes:
    """``msg`` as one CONTROL frame (frame header and JSON payload), ready to write.

    Raises :class:`UsageError` for :class:`Unknown` (it is never sent).
    """
    return wire.encode_control(to_json(msg))


def decode(payload: bytes) -> ControlMessage:
    """Decode one CONTROL frame's payload (UTF-8 JSON, at most ``wire.MAX_CONTROL``).

    Raises :class:`DecodeError` (protocol ``tunnel-control``) and nothing else for
    bytes that are not a control message.
    """
    if len(payload) > wire.MAX_CONTROL:
        raise DecodeError(_PROTO, f"message of {len(payload)} bytes exceeds {wire.MAX_CONTROL}")
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers JSONDecodeError and ints too long to convert; RecursionError
        # deeply nested arrays.
        raise DecodeError(_PROTO, "message is not JSON") from None
    return decode_json(value)


def decode_json(value: object) -> ControlMessage:
    """Decode one message from its parsed JSON (``wire.ControlReceived.message``).

    Raises :class:`DecodeError` for a value that is not an object with a string
    ``"t"``, or whose fields are missing, of the wrong type or out of bounds.
    """
    if not isinstance(value, dict):
        raise DecodeError(_PROTO, "message is not a JSON object")
    kind = value.get("t")
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_TYPE:
        raise DecodeError(_PROTO, f"message type is not a string of 1..{MAX_TYPE} characters")
    if kind == "ping":
        return Ping(_seq(value))
    if kind == "pong":
        return Pong(
            _seq(value),
            _stats(value.get("stats")),
            _time(value.get("time")),
            _presence(value.get("lan")),
        )
    if kind == "revoked":
        return Revoked()
    if kind == "renew":
        return RenewRequest(_id(value), _der(value.get("csr"), "csr", MAX_CSR))
    if kind == "renew-issued":
        chain = value.get("chain")
        if not isinstance(chain, list) or not 0 < len(chain) <= MAX_CHAIN:
            raise DecodeError(_PROTO, f"chain is not a list of 1..{MAX_CHAIN} certificates")
        return RenewIssued(_id(value), tuple(_der(c, "certificate", MAX_CERT) for c in chain))
    if kind == "renew-refused":
        reason = value.get("reason")
        if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON:
            raise DecodeError(_PROTO, f"reason is not a string of 1..{MAX_REASON} characters")
        return RenewRefused(_id(value), reason)
    return Unknown(kind)


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def _id(value: dict[str, Any]) -> int:
    ident = value.get("id")
    if isinstance(ident, bool) or not isinstance(ident, int) or not 0 <= ident <= MAX_SEQ:
        raise DecodeError(_PROTO, f"id is not an integer in 0..{MAX_SEQ}")
    return ident


def _der(raw: object, what: str, limit: int) -> bytes:
    """Base64 (RFC 4648 §4, padded, no line breaks) of 1..``limit`` DER bytes."""
    if not isinstance(raw, str) or not 0 < len(raw) <= 4 * ((limit + 2) // 3):
        raise DecodeError(_PROTO, f"{what} is not base64 of 1..{limit} bytes")
    try:
        der = base64.b64decode(raw.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise DecodeError(_PROTO, f"{what} is not base64") from None
    if not 0 < len(der) <= limit:
        raise DecodeError(_PROTO, f"{what} is not 1..{limit} bytes")
    return der


def _seq(value: dict[str, Any]) -> int:
    seq = value.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise DecodeError(_PROTO, f"seq is not an integer in 0..{MAX_SEQ}")
    return seq


def _time(raw: object) -> int | None:
    """A pong's ``time``: absent (an older peer) or an integer in 0..MAX_TIME_MS."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_TIME_MS:
        raise DecodeError(_PROTO, f"time is not an integer in 0..{MAX_TIME_MS}")
    return raw


def _strings(raw: object, what: str, limit: int) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > limit:
        raise DecodeError(_PROTO, f"lan {what} is not a list of at most {limit}")
    for item in raw:
        _string(item, what)
    return tuple(raw)


def _string(item: object, what: str) -> str:
    if not isinstance(item, str):
        raise DecodeError(_PROTO, f"lan {what} entry is not a string")
    try:
        size = len(item.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape
        raise DecodeError(_PROTO, f"lan {what} entry is not UTF-8") from None
    if not 0 < size <= MAX_PRESENCE_STRING:
        raise DecodeError(_PROTO, f"lan {what} entry is not 1..{MAX_PRESENCE_STRING} bytes")
    return item


def _presence(raw: object) -> Presence | None:
    """A pong's ``lan``: absent (the hub, an older edge) or a bounded presence."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DecodeError(_PROTO, "lan is not a JSON object")
    names = raw.get("names", {})
    if not isinstance(names, dict) or len(names) > MAX_NAMES:
        raise DecodeError(_PROTO, f"lan names is not an object of at most {MAX_NAMES}")
    for name, state in names.items():
        _string(name, "name")
        _string(state, "name state")
    return Presence(
        dict(names),
        _strings(raw.get("printers", []), "printers", MAX_PRINTERS),
        _strings(raw.get("degraded", []), "degraded", MAX_DEGRADED),
    )


def _stats(raw: object) -> dict[str, int | float] | None:
    """A pong's statistics; entries whose value is not a number are skipped (a newer
    peer may report more), but the count and every name are bounded."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DecodeError(_PROTO, "stats is not a JSON object")
    if len(raw) > MAX_STATS:
        raise DecodeError(_PROTO, f"{len(raw)} statistics exceed {MAX_STATS}")
    out: dict[str, int | float] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_STAT_NAME:
            raise DecodeError(_PROTO, f"statistic name is not 1..{MAX_STAT_NAME} characters")
        if _is_number(value):
            out[name] = value
    return out


# -- the heartbeat -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    """``interval``: seconds between pings; ``dead_after``: seconds of silence after
    which the peer counts as lost."""

    interval: float
    dead_after: float

    def __post_init__(self) -> None:
        if not 0 < self.interval <= self.dead_after:
            raise UsageError(f"heartbeat interval {self.interval} not in (0, {self.dead_after}]")

    @classmethod
    def from_dead_after(cls, dead_after: float) -> HeartbeatConfig:
        """The edge's form (``hub_dead_after``): ping :data:`PINGS_PER_DEAD_AFTER` times
        in that span, at least :data:`MIN_INTERVAL` apart."""
        interval = max(MIN_INTERVAL, dead_after / PINGS_PER_DEAD_AFTER)
        return cls(interval, max(dead_after, interval))

    @classmethod
    def from_interval(cls, interval: float) -> HeartbeatConfig:
        """The hub's form (``heartbeat_interval``): lost after
        :data:`PINGS_PER_DEAD_AFTER` silent intervals."""
        return cls(interval, PINGS_PER_DEAD_AFTER * interval)


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``message`` on the control channel (``encode(message)``)."""

    message: ControlMessage


@dataclass(frozen=True, slots=True)
class RttMeasured:
    """A pong answered one of our pings: ``rtt`` seconds from ping to pong."""

    rtt: float


@dataclass(frozen=True, slots=True)
class ClockSkewMeasured:
    """A pong stamped with the peer's wall clock answered one of our pings: the peer's
    clock is ``skew`` seconds ahead of ours (negative: behind), estimated within
    ``rtt / 2`` (:func:`clock_skew`); ``rtt`` is that exchange's round trip, seconds."""

    skew: float
    rtt: float


@dataclass(frozen=True, slots=True)
class PeerStats:
    """The peer (an edge) reported its statistics in a pong."""

    report: EdgeReport


@dataclass(frozen=True, slots=True)
class PeerPresence:
    """The peer (an edge) reported its LAN presence in a pong."""

    presence: Presence


@dataclass(frozen=True, slots=True)
class PeerRevoked:
    """The hub says this office is revoked."""


@dataclass(frozen=True, slots=True)
class PeerLost:
    """Nothing heard for ``silence`` seconds (at least ``dead_after``): close the channel
    and treat the peer as unreachable. The heartbeat stops (no more timers)."""

    silence: float


@dataclass(frozen=True, slots=True)
class Deliver:
    """A renewal message for the shell's renewal handling (the heartbeat only notes
    that the peer was heard)."""

    message: RenewMessage


Command = (
    Send
    | RttMeasured
    | ClockSkewMeasured
    | PeerStats
    | PeerPresence
    | PeerRevoked
    | PeerLost
    | Deliver
)


def wall_ms(wall: float) -> int:
    """``wall`` (seconds since the Unix epoch, ``time.time()``) as a pong's ``time``:
    whole milliseconds, clamped to 0..:data:`MAX_TIME_MS`."""
    return min(MAX_TIME_MS, max(0, math.floor(wall * 1000)))


def clock_skew(peer_time_ms: int, received_wall: float, rtt: float) -> float:
    """Seconds the peer's clock is ahead of ours (negative: behind), from one exchange.

    We sent a ping and got the pong ``rtt`` seconds later (monotonic clock), at our
    wall-clock time ``received_wall`` (seconds since the epoch); the pong carries the
    peer's wall clock when it answered, ``peer_time_ms``. The peer stamped it somewhere
    between our ping's departure and the pong's arrival, that is between
    ``received_wall - rtt`` and ``received_wall`` on our clock; assuming equal delays
    both ways (NTP's assumption, RFC 5905 section 8) it stamped at the midpoint,
    ``received_wall - rtt / 2``. So::

        skew = peer_time - (received_wall - rtt / 2)

    and, whatever the real split of the delays, the estimate is within ``rtt / 2``
    of the true offset (plus the stamp's millisecond truncation). Negative ``rtt`` is
    taken as 0.
    """
    return peer_time_ms / 1000.0 - (received_wall - max(0.0, rtt) / 2.0)


class Heartbeat:
    """One end's heartbeat on one control channel (module docstring).

    Built when the channel is up (the edge has the hub's OK, the hub has sent it); the
    first ping is due at once. After :class:`PeerLost` it does nothing more.
    """

    __slots__ = ("cfg", "heard", "next_ping", "rtt", "lost", "_seq", "_sent")

    def __init__(self, cfg: HeartbeatConfig, now: float) -> None:
        self.cfg = cfg
        #: When the peer was last heard from (any message), monotonic seconds.
        self.heard = now
        self.next_ping = now
        #: The last measured round-trip time in seconds, or None before the first pong.
        self.rtt: float | None = None
        self.lost = False
        self._seq = 0
        self._sent: dict[int, float] = {}

    def __repr__(self) -> str:
        return (
            f"<Heartbeat heard={self.heard:.3f} next_ping={self.next_ping:.3f} "
            f"rtt={self.rtt} in_flight={len(self._sent)} lost={self.lost}>"
        )

    @property
    def in_flight(self) -> int:
        """Pings sent whose pong has not come (at most :data:`MAX_PINGS_IN_FLIGHT`)."""
        return len(self._sent)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (monotonic seconds), None once lost."""
        if self.lost:
            return None
        return min(self.next_ping, self.heard + self.cfg.dead_after)

    def handle_timer(self, now: float) -> list[Command]:
        """Declare the peer lost if it has been silent ``dead_after``, else ping if due."""
        if self.lost:
            return []
        if now - self.heard >= self.cfg.dead_after:
            self.lost = True
            self._sent.clear()
            return [PeerLost(now - self.heard)]
        if now >= self.next_ping:
            self.next_ping = now + self.cfg.interval
            return [self._ping(now)]
        return []

    def ping_now(self, now: float) -> list[Command]:
        """A ping out of schedule (the edge suspects the hub: a stream got no status in
        time); the regular schedule is unchanged."""
        return [] if self.lost else [self._ping(now)]

    def receive(
        self,
        msg: ControlMessage,
        now: float,
        report: EdgeReport | None = None,
        wall: float | None = None,
        presence: Presence | None = None,
    ) -> list[Command]:
        """A message arrived from the peer at ``now``; ``report`` is what our pong to a
        ping carries as ``stats`` (the edge's statistics; None from the hub). ``wall`` is our wall
        clock at ``now`` (seconds since the epoch) or None: given, our pong carries it
        (``time``), and a stamped pong answering our ping yields
        :class:`ClockSkewMeasured` after :class:`RttMeasured`. ``presence`` is what our
        pong carries as ``lan`` (the edge's LAN presence; None from the hub); a pong
        carrying one yields :class:`PeerPresence`."""
        if self.lost:
            return []
        self.heard = now
        if isinstance(msg, Ping):
            stamp = None if wall is None else wall_ms(wall)
            stats = None if report is None else report.to_stats()
            return [Send(Pong(msg.seq, stats, stamp, presence))]
        if isinstance(msg, Pong):
            out: list[Command] = []
            sent = self._sent.pop(msg.seq, None)
            if sent is not None:
                self.rtt = max(0.0, now - sent)
                out.append(RttMeasured(self.rtt))
                if msg.time_ms is not None and wall is not None:
                    out.append(ClockSkewMeasured(clock_skew(msg.time_ms, wall, self.rtt), self.rtt))
            if msg.stats is not None:
                out.append(PeerStats(EdgeReport.of(msg.stats)))
            if msg.presence is not None:
                out.append(PeerPresence(msg.presence))
            return out
        if isinstance(msg, Revoked):
            return [PeerRevoked()]
        if isinstance(msg, RenewRequest | RenewIssued | RenewRefused):
            return [Deliver(msg)]
        return []  # Unknown: a newer peer's message; hearing it is all that counts

    def _ping(self, now: float) -> Send:
        self._seq = self._seq + 1 if self._seq < MAX_SEQ else 1
        self._sent[self._seq] = now
        if len(self._sent) > MAX_PINGS_IN_FLIGHT:
            del self._sent[next(iter(self._sent))]  # the oldest (insertion order)
        return Send(Ping(self._seq))


#: After the hub refused the control channel (any status but OK, other than a dial
#: failure), wait at least as long as after this many failed dials: a hub that is busy,
#: shutting down or refusing our certificate is not helped by being asked every second.
REFUSED_AS_FAILURES = 6


def redial_failures(failures: int, refused: bool) -> int:
    """The failure count whose backoff (``pool.backoff_delay``) the next control dial
    waits: ``failures`` for dial failures, at least :data:`REFUSED_AS_FAILURES` after a
    refusal."""
    return max(failures, REFUSED_AS_FAILURES) if refused else failures
