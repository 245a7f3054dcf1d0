"""The edge's I/O shell: LAN listeners, the warm pool's tunnels, the control channel.

A LAN client's connection is handed a tunnel that is already open (TCP and TLS done
long before), the open header and the client's first bytes go out at once (0-RTT), and
the hub's status comes back ahead of the backend's first bytes. Which tunnel goes to
which client, when to dial and when to retire one are decided by the pure
:class:`spokeshare.tunnel.pool.Pool`; this module dials, writes and closes.

The control channel carries heartbeats both ways (:class:`spokeshare.tunnel.control.
Heartbeat` decides when to ping and when the hub is lost). It decides whether the hub
counts as reachable: while it is down (after a failure, not during start-up) a new
client connection is closed at once instead of waiting. In every case a client
connection whose open has no status ``pool.open_timeout`` after it went out goes to
another hub, if there is one left to try, and is closed after
:data:`spokeshare.tunnel.pool.LAST_TRY_STATUS_SECONDS` on the last.

The hub's state and each tunnel's change only through the tables of
:mod:`spokeshare.tunnel.edge_state`; here each tunnel state is a small dataclass
carrying that state's data (:class:`Opening` its client, :class:`Control` its
heartbeat). The NetBIOS session answerer on 139 is :mod:`spokeshare.lan.nbss_answer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import functools
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from spokeshare import __version__, bundle, heap, pki, renewal
from spokeshare.bundle import Bundle
from spokeshare.config import EdgeConfig, edge_listeners
from spokeshare.errors import DecodeError, EnrollmentError, UsageError
from spokeshare.lan import nbss_answer
from spokeshare.lan.hostile import RateLimitedLog
from spokeshare.logfmt import Line
from spokeshare.loglimit import LogLimiter
from spokeshare.stats import EdgeStatistics
from spokeshare.tasks import TaskSet
from spokeshare.tunnel import control, hubs, pool, streamlog, tls, wire
from spokeshare.tunnel.edge_state import (
    HubEvent,
    HubState,
    TunnelEvent,
    TunnelState,
    hub_transition,
    tunnel_transition,
)
from spokeshare.tunnel.relay import PlainEnd, ReadBuffer, Splice, TunnelEnd, abort_with_rst
from spokeshare.tunnel.sockets import carry_stream, tune_lan, tune_wan

__all__ = ["ClientEnd", "Edge", "EdgeTunnel", "HubState", "TunnelState"]

#: Seconds between attempts to bind a listener whose port another daemon held at
#: start (the same cadence as the LAN protocols' look for other daemons,
#: spokeshare.edge_daemon.COEXIST_INTERVAL).
LISTENER_RETRY_INTERVAL = 5.0

#: Client bytes kept while a stream's status is due (several hubs), so that its open can
#: be retried on another hub: an SMB NEGOTIATE or an IPP request head fits many times.
MAX_REPLAY = 64 * 1024

log = logging.getLogger("spokeshare.edge")
stream_log = logging.getLogger("spokeshare.edge.stream")


class ClientEnd(PlainEnd):
    """A LAN client's TCP connection to one of the edge's listeners."""

    __slots__ = (
        "edge",
        "service",
        "peer",
        "local",
        "arrived",
        "deadline",
        "replay",
        "replay_eof",
        "retries",
    )

    def __init__(self, edge: Edge, service: str) -> None:
        super().__init__()
        self.edge = edge
        self.service = service
        self.peer: tuple[str, int] = ("", 0)
        #: The edge address and port the client connected to (the hub's IPP handling
        #: names them in the Host it gives cupsd).
        self.local: tuple[str, int] = ("", 0)
        self.arrived = 0.0
        self.deadline: asyncio.TimerHandle | None = None
        #: What the client sent since its open header went out, while no status has
        #: come (several hubs only): the open may be retried on another hub with it.
        #: None: not kept (one hub, status come, or more than MAX_REPLAY bytes).
        self.replay: bytearray | None = None
        self.replay_eof = False
        #: Opens of this client retried on another hub.
        self.retries = 0

    def keep_replay(self) -> None:
        """From now until the status, keep what the client sends (Edge.retry_open)."""
        self.replay, self.replay_eof = bytearray(), False

    def _note(self, data: bytes) -> None:
        if self.replay is not None:
            if len(self.replay) + len(data) > MAX_REPLAY:
                self.replay = None  # too much to hold: this open is not retried
            else:
                self.replay += data

    def attach(self, splice: Splice) -> None:
        for chunk in self._early:
            self._note(chunk)
        if self._early_eof and self.replay is not None:
            self.replay_eof = True
        super().attach(splice)

    def data_received(self, data: bytes) -> None:
        if self.splice is not None:
            self._note(data)
        super().data_received(data)

    def eof_received(self) -> bool:
        if self.splice is not None and self.replay is not None:
            self.replay_eof = True
        return super().eof_received()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._accepted(transport)
        self.edge.client_arrived(self)

    def _accepted(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        local = transport.get_extra_info("sockname")
        # (host, port, ...) for TCP; a socket pair (the edge's own streams) has none
        self.local = (str(local[0]), int(local[1])) if isinstance(local, tuple) else ("", 0)
        self.arrived = time.monotonic()
        self.edge.heap_policy.note()
        tune_lan(transport.get_extra_info("socket"))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.splice is None:
            self.edge.client_gone(self)


# -- a tunnel's states, each with its own data (transitions: tunnel/edge_state.py) ------


@dataclass(slots=True)
class Idle:
    """TLS is up; in the pool (or just dialled for the control channel)."""


@dataclass(slots=True)
class Opening:
    """The open header and the client's first bytes are out; the hub's status is due.
    ``given_up``: no status came in time and the open went to another hub
    (Edge.retry_open): the splice is the client's next tunnel's, no longer this one's."""

    client: ClientEnd
    splice: Splice
    given_up: bool = False


@dataclass(slots=True)
class Relaying:
    """The hub said OK: the splice carries the client's stream."""

    client: ClientEnd
    splice: Splice


@dataclass(slots=True)
class Ending:
    """The stream ended cleanly on a reuse tunnel (the client is closed): the hub's END
    frame is awaited in ``buf``; ``timer`` closes the tunnel if it does not come."""

    buf: bytearray
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class AwaitControlStatus:
    """The control channel's open header is out; ``waiter`` gets the hub's status."""

    waiter: asyncio.Future[wire.StatusReply]


@dataclass(slots=True)
class Control:
    """The control channel runs: frames of control messages, and its heartbeat."""

    frames: wire.FrameReader
    heartbeat: control.Heartbeat


@dataclass(slots=True)
class Closed:
    """Refused or lost; nothing more happens on this tunnel."""


Phase = Idle | Opening | Relaying | Ending | AwaitControlStatus | Control | Closed

_STATE_OF: dict[type[Phase], TunnelState] = {
    Idle: TunnelState.IDLE,
    Opening: TunnelState.OPENING,
    Relaying: TunnelState.RELAYING,
    Ending: TunnelState.ENDING,
    AwaitControlStatus: TunnelState.AWAIT_CONTROL_STATUS,
    Control: TunnelState.CONTROL,
    Closed: TunnelState.CLOSED,
}


class EdgeTunnel(TunnelEnd):
    """One TLS connection to the hub: pooled, then a stream or the control channel.

    ``phase`` is its state with that state's data; it changes only through
    :meth:`_go`, which checks the transition against edge_state.TUNNEL_TRANSITIONS.
    """

    def __init__(self, edge: Edge) -> None:
        super().__init__(edge.reads)
        self.edge = edge
        self.phase: Phase = Idle()
        self.buf = bytearray()
        #: The hub agreed on sequential reuse (ALPN spokeshare/1+reuse; set by the dial).
        self.reuse = False
        #: The TLS context this tunnel was dialled with: after a certificate renewal
        #: the edge's changes, and a tunnel of the old one is not reused.
        self.ssl: object = None
        #: Streams this tunnel has carried.
        self.streams = 0
        #: Which of the bundle's hub addresses it was dialled to (spokeshare.tunnel.hubs).
        self.hub = 0
        #: Counted in Edge.pooled_per_hub (a pool tunnel, from its dial until it is lost).
        self.counted = False

    @property
    def state(self) -> TunnelState:
        return _STATE_OF[type(self.phase)]

    @property
    def splice(self) -> Splice | None:
        """The stream's splice while Opening (not given up) or Relaying (that phase's
        data), else None."""
        ph = self.phase
        if isinstance(ph, Relaying) or (isinstance(ph, Opening) and not ph.given_up):
            return ph.splice
        return None

    def __repr__(self) -> str:
        return f"<EdgeTunnel {self.state.value} hub={self.hub}>"

    def _go(self, event: TunnelEvent, phase: Phase) -> None:
        """Enter ``phase`` on ``event``; raises UsageError unless the table allows it."""
        new = tunnel_transition(self.state, event)
        if _STATE_OF[type(phase)] is not new:
            raise UsageError(f"{self!r} on {event.value} goes to {new.value}, not {phase!r}")
        self.phase = phase

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TLS client transport (uvloop's does not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def _transport(self) -> asyncio.Transport:
        if self.transport is None:
            raise UsageError(f"{self!r} is not connected")
        return self.transport

    # -- streams ---------------------------------------------------------------------
    def open_stream(self, client: ClientEnd) -> None:
        """Send the open header and splice the client in, without waiting (0-RTT)."""
        t = self._transport()
        if client.transport is None:
            raise UsageError(f"{client!r} is not connected")
        host, port = client.peer
        local, local_port = client.local
        t.write(wire.encode_open(wire.OpenStream(client.service, host, port, local, local_port)))
        splice = Splice(
            client.transport,
            t,
            functools.partial(self._stream_done, client),
            keep_tunnel=self.reuse,
        )
        self.streams += 1
        self._go(TunnelEvent.OPEN_STREAM, Opening(client, splice))
        client.attach(splice)

    def open_control(self) -> asyncio.Future[wire.StatusReply]:
        """Send the control channel's open header; the future gets the hub's status."""
        t = self._transport()
        waiter: asyncio.Future[wire.StatusReply] = asyncio.get_running_loop().create_future()
        self._go(TunnelEvent.OPEN_CONTROL, AwaitControlStatus(waiter))
        t.write(wire.encode_open(wire.OpenControl(f"spokeshare/{__version__}")))
        return waiter

    def data_received(self, data: bytes | memoryview) -> None:
        ph = self.phase
        if isinstance(ph, Relaying):
            if self.edge.hub_state is HubState.DOWN:
                self.edge.heard_from_hub()  # a stream survived an outage: the link is back
            ph.splice.tunnel_data(data)
            return
        if isinstance(ph, Control):
            self.edge.control_bytes(self, ph, data)
            return
        if isinstance(ph, Ending):
            ph.buf += data
            self._await_end(ph)
            return
        if isinstance(ph, Closed):
            return  # refused: the rest is not read
        self.buf += data
        try:
            parsed = wire.parse_status(self.buf)
        except DecodeError as exc:
            log.warning(
                "%s",
                Line(
                    "tunnel dropped",
                    office=self.edge.bundle.office,
                    reason=f"the hub sent a bad status: {exc.reason}",
                ),
            )
            self.abort("bad status from hub")
            return
        if parsed is None:
            return
        reply, used = parsed
        rest = bytes(self.buf[used:])
        self.buf.clear()
        if isinstance(ph, Opening):
            self._opened(ph, reply, rest)
        elif isinstance(ph, AwaitControlStatus):
            self._control_status(ph, reply, rest)
        else:  # an idle tunnel told something by the hub: it is refusing us
            self._go(TunnelEvent.STATUS_REFUSED, Closed())
            self.edge.pool.tunnel_lost(self)  # closing: never handed out from here
            self.edge.hub_refused(reply)
            self.close()
            self.edge.kick()

    def _opened(self, ph: Opening, reply: wire.StatusReply, rest: bytes) -> None:
        client, splice = ph.client, ph.splice
        if client.deadline is not None:
            client.deadline.cancel()
            client.deadline = None
        if reply.status is not wire.Status.OK:
            self._go(TunnelEvent.STATUS_REFUSED, Closed())
            self.edge.hub_refused(reply, client)
            splice.refused(reply.status.name)
            self._log(client, splice)
            self.edge.streams_failed += 1
            if client.transport is not None:
                client.transport.close()
            self.close()
            return
        client.replay = None  # the backend has the bytes from here: never replayed
        self._go(TunnelEvent.STATUS_OK, Relaying(client, splice))
        if rest:
            splice.tunnel_data(rest)

    def _control_status(self, ph: AwaitControlStatus, reply: wire.StatusReply, rest: bytes) -> None:
        if reply.status is wire.Status.OK:
            # The channel is up from here: the hub's first ping may be in ``rest``.
            hb = control.Heartbeat(self.edge.heartbeat_cfg, time.monotonic())
            running = Control(wire.FrameReader(allow_control=True), hb)
            self._go(TunnelEvent.STATUS_OK, running)
        else:
            self._go(TunnelEvent.STATUS_REFUSED, Closed())
        if not ph.waiter.done():
            ph.waiter.set_result(reply)
        if rest and isinstance(self.phase, Control):
            self.edge.control_bytes(self, self.phase, rest)

    def _stream_done(self, client: ClientEnd, splice: Splice) -> None:
        self.edge.clients.discard(self)
        if client.deadline is not None:
            client.deadline.cancel()
        self._log(client, splice)
        if not splice.keep_tunnel or splice.result is None or not splice.result.ok:
            return  # one stream per tunnel, or the splice has cut the tunnel
        if not isinstance(self.phase, Relaying) or not self.edge.may_reuse(self):
            self.close()
            return
        # Both EOFs passed: the hub's END frame follows (it may be here already).
        ending = Ending(bytearray(splice.reader.after_eof))
        self._go(TunnelEvent.STREAM_ENDED, ending)
        self.edge.ending.add(self)
        t = self._transport()
        ending.timer = asyncio.get_running_loop().call_later(
            pool.status_timeout(self.edge.cfg.pool, self.edge.rtt), self._end_timeout, ending
        )
        if not t.is_closing():
            t.resume_reading()  # the splice may have paused it (backpressure)
        self._await_end(ending)

    def _await_end(self, ph: Ending) -> None:
        """Bytes on an ENDING tunnel: the END frame, then (rarely) an unsolicited status."""
        if len(ph.buf) < len(wire.END_FRAME):
            return
        if ph.buf[: len(wire.END_FRAME)] != wire.END_FRAME:
            log.warning(
                "%s",
                Line(
                    "tunnel dropped",
                    office=self.edge.bundle.office,
                    reason="the hub sent other bytes than END after a stream",
                ),
            )
            self._leave_ending(ph)
            self.abort("bad end of stream from hub")
            return
        rest = bytes(ph.buf[len(wire.END_FRAME) :])
        self._leave_ending(ph)
        self._go(TunnelEvent.END_RECEIVED, Idle())
        if self.transport is not None:
            # Back to an idle pool tunnel: a dead WAN link is noticed in seconds again.
            carry_stream(self.transport.get_extra_info("socket"), self.edge.cfg.sockets, False)
        if rest:
            self.data_received(rest)  # a status on an idle tunnel: the hub refuses us
        if isinstance(self.phase, Idle):
            self.edge.tunnel_returned(self)

    def _leave_ending(self, ph: Ending) -> None:
        if ph.timer is not None:
            ph.timer.cancel()
            ph.timer = None
        self.edge.ending.discard(self)

    def _end_timeout(self, ph: Ending) -> None:
        ph.timer = None
        if self.phase is ph:
            self._leave_ending(ph)
            log.debug("%r: no END from the hub in time; closing", self)
            self.close()

    def _log(self, c: ClientEnd, splice: Splice) -> None:
        """The stream's one line (spokeshare.tunnel.streamlog): at the edge the splice's
        plain end is the client, so ``to_hq`` is what it read from the client (``up``)."""
        result, status, reason = streamlog.result_fields(splice.result)
        stream_log.info(
            "%s",
            streamlog.stream_line(
                self.edge.bundle.office,
                f"{c.peer[0]}:{c.peer[1]}",
                c.service,
                to_hq=splice.up,
                to_office=splice.down,
                duration_s=time.monotonic() - c.arrived,
                result=result,
                status=status,
                reason=reason,
            ),
        )

    # -- asyncio callbacks -----------------------------------------------------------
    def connection_lost(self, exc: Exception | None) -> None:
        prev, ph, splice = self.state, self.phase, self.splice
        if isinstance(ph, Ending):
            self._leave_ending(ph)
        self._go(TunnelEvent.CONNECTION_LOST, Closed())
        self.edge.heap_policy.note()
        if (
            isinstance(ph, Opening)
            and splice is not None
            and not self.buf
            and self.edge.may_retry(ph.client)
        ):
            # Reset before any status byte (a hub process that died): nothing of this
            # stream reached a backend through it; another hub gets the open.
            self.edge.tunnel_lost(self, prev)
            self.edge.retry_open(self, ph.client, "tunnel reset before the hub's status")
            return
        if splice is not None:
            splice.tunnel_lost(exc)
        if isinstance(ph, AwaitControlStatus) and not ph.waiter.done():
            ph.waiter.set_exception(ConnectionError("tunnel closed before status"))
        self.edge.tunnel_lost(self, prev)


def _hostport(hp: tuple[str, int]) -> str:
    return f"[{hp[0]}]:{hp[1]}" if ":" in hp[0] else f"{hp[0]}:{hp[1]}"


def _live(client: ClientEnd) -> bool:
    """A waiting client still connected (a closed one may not have been reported yet)."""
    return client.transport is not None and not client.transport.is_closing()


class Edge:
    """The edge daemon's tunnel side (LAN presence hooks in via ``on_hub_state``)."""

    def __init__(self, cfg: EdgeConfig, bundle: Bundle, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.bundle = bundle
        #: What every tunnel reads the hub's bytes into (relay.ReadBuffer).
        self.reads = ReadBuffer()
        self.ssl = tls.client_context(
            bundle.ca_pem, bundle.cert_pem, bundle.key_pem, reuse=cfg.pool.reuse
        )
        self.listeners = edge_listeners(cfg, bundle.services)
        self.rng = rng or random.Random()
        self.servers: list[asyncio.AbstractServer] = []
        #: LAN IPv4 listen address -> the IPv6 address serving the same names
        #: ("fe80::1%lan0"); set by the edge daemon before start().
        self.ipv6: dict[str, str] = {}
        #: Listeners that could not bind: "tcp ADDR:PORT" -> reason and holder.
        self.degraded: dict[str, str] = {}
        #: The same listeners, as what is needed to bind them again (retried every
        #: LISTENER_RETRY_INTERVAL seconds): key -> (factory, address, port, service, names).
        self._unbound: dict[
            str, tuple[Callable[[], asyncio.Protocol], str, int, str, str | None]
        ] = {}
        #: Called after a retried listener came up (the daemon rewrites its status).
        self.on_listeners_changed: list[Callable[[], None]] = []
        #: Idle tunnels, waiting clients, dials in flight and backoff (tunnel.pool).
        self.pool: pool.Pool[EdgeTunnel, ClientEnd] = pool.Pool(cfg.pool)
        #: Each hub address's health: where the next dial goes (tunnel.hubs).
        self.hubs = hubs.HubSet(len(bundle.hub_addresses), cfg.pool)
        #: Dials in flight per hub (the pool's spread counts them with the idle ones).
        self.dialing = [0] * len(bundle.hub_addresses)
        #: Pool tunnels per hub from their dial until lost: idle, carrying a stream or
        #: awaiting the hub's END (kept as counts: the spread reads them at every kick).
        self.pooled_per_hub = [0] * len(bundle.hub_addresses)
        #: The hub (index into bundle.hub_addresses) holding the control channel.
        self.control_hub: int | None = None
        #: Opens retried on another hub (no status from the first in time, or reset).
        self.streams_retried = 0
        self.clients: set[EdgeTunnel] = set()
        #: Tunnels whose stream ended cleanly, awaiting the hub's END (sequential reuse).
        self.ending: set[EdgeTunnel] = set()
        #: Streams carried by a tunnel that had carried one before (sequential reuse).
        self.streams_reused = 0
        self.hub_state = HubState.STARTING
        self.control: EdgeTunnel | None = None
        self.rtt: float | None = None
        #: The hub's clock against ours from the last stamped pong (control.clock_skew):
        #: skew and that exchange's RTT in seconds, and our wall clock then; None before.
        self.hub_clock: tuple[float, float, dt.datetime] | None = None
        self.streams_total = 0
        self.streams_failed = 0
        #: Failed dials to a hub by cause (tls.handshake_cause) and the hub's refusals
        #: by status (wire.Status name), since start; control.add_cause bounds both.
        self.dial_failures: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.congestion = ""
        #: Per-client WARNINGs: one per kind per LAN address per minute (a LAN flood).
        self.client_log = LogLimiter(60.0)
        #: Tunnels and clients come and go by thousands under a LAN flood; their freed
        #: TLS buffers go back to the system once the churn calms down (spokeshare.heap).
        self.heap_policy = heap.ReleasePolicy()
        self.on_hub_state: list[Callable[[HubState], None]] = []
        self._kick_handle: asyncio.Handle | None = None
        self._wake_handle: asyncio.TimerHandle | None = None
        self.tasks = TaskSet(log, "edge task")
        #: Lines and counters for what LAN clients get wrong on 139 (rate-limited).
        self.session_log = RateLimitedLog(log)
        self.spawn = self.tasks.spawn
        self.heartbeat_cfg = control.HeartbeatConfig.from_dead_after(cfg.hub_dead_after)
        #: Set when a running stream receives bytes while the hub counts as down.
        self._hub_heard = asyncio.Event()
        self._closing = False
        #: Certificate renewal over the control channel (spokeshare.renewal): failures
        #: in a row, since when and why, the last success; the request awaiting its
        #: answer (id, key, future); called after each attempt (the status file).
        self.renew_failures = 0
        self.renew_failing_since: dt.datetime | None = None
        self.renew_last_failure: dt.datetime | None = None
        self.renew_reason = ""
        self.renewed: dt.datetime | None = None
        self._renew_id = 0
        self._renew_pending: tuple[int, asyncio.Future[control.RenewMessage]] | None = None
        self._control_up = asyncio.Event()
        #: Set when the control channel's tunnel is lost: wakes the heartbeat's wait, so
        #: that the channel moves to another hub at once, not at the next heartbeat.
        self._control_lost = asyncio.Event()
        self.on_renewal: list[Callable[[], None]] = []
        #: The LAN presence each pong carries (control.Presence: names, printers,
        #: degraded protocols); set by the edge daemon, None without a LAN side.
        self.lan_presence: Callable[[], control.Presence] | None = None

    @property
    def idle(self) -> list[EdgeTunnel]:
        """The pool's idle tunnels, oldest first (a copy)."""
        return self.pool.idle

    @property
    def waiters(self) -> list[ClientEnd]:
        """Clients waiting for a tunnel, first come first (a copy)."""
        return self.pool.waiters

    @property
    def connecting(self) -> int:
        return self.pool.connecting

    def __repr__(self) -> str:
        return (
            f"<Edge {self.bundle.office} hub={self.hub_state.value} idle={len(self.idle)} "
            f"connecting={self.connecting} clients={len(self.clients)}>"
        )

    def statistics(self) -> EdgeStatistics:
        """The hub and pool now, the streams so far (spokeshare.stats.EdgeStatistics)."""
        return EdgeStatistics(
            office=self.bundle.office,
            hub=self.hub_state.value,
            rtt_ms=round(self.rtt * 1000, 2) if self.rtt is not None else None,
            idle=len(self.idle),
            connecting=self.connecting,
            waiting=len(self.waiters),
            clients=len(self.clients),
            streams_total=self.streams_total,
            streams_failed=self.streams_failed,
            streams_reused=self.streams_reused,
            dial_failures=dict(sorted(self.dial_failures.items())),
            refused=dict(sorted(self.refused.items())),
            sessions=dict(sorted(self.session_log.counts.items())),
            listeners_degraded=dict(self.degraded),
            certificate=self.renewal_status(dt.datetime.now(dt.UTC)).to_json(),
            hubs={
                _hostport(self.bundle.hub_addresses[v.index]): (
                    "control" if v.index == self.control_hub else "away" if v.away else "up"
                )
                for v in self.hubs.view()
            },
        )

    def hub_clock_status(self) -> dict[str, int | float | str] | None:
        """The last estimate of the hub's clock against ours, as ``lan-status.json``'s
        ``hub_clock`` holds it: ``skew_ms`` (integer milliseconds the hub is ahead,
        negative when behind; within half the RTT, control.clock_skew), ``rtt_ms`` (that
        exchange's round trip) and ``measured_at`` (ISO 8601 UTC); None before the first
        stamped pong (an older hub sends none)."""
        if self.hub_clock is None:
            return None
        skew, rtt, at = self.hub_clock
        return {
            "skew_ms": round(skew * 1000),
            "rtt_ms": round(rtt * 1000, 2),
            "measured_at": at.isoformat(timespec="seconds"),
        }

    def renewal_status(self, now: dt.datetime) -> renewal.RenewalStatus:
        """The certificate in use and its renewal (spokeshare.renewal.RenewalStatus)."""
        cert = self.bundle.cert
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        return renewal.RenewalStatus(
            not_after=na,
            renew_time=renewal.renew_time(nb, na, self.cfg.renew_at),
            next_attempt=renewal.next_attempt(
                nb, na, self.cfg.renew_at, self.renew_failures, self.renew_last_failure
            ),
            renewed=self.renewed,
            failures=self.renew_failures,
            failing_since=self.renew_failing_since,
            reason=self.renew_reason,
        )

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self.listen()
        self.spawn(self._control_loop())
        self.spawn(self._renewal_loop())
        self.spawn(self._housekeeping())
        self.spawn(self._retry_listeners_loop())
        self.kick()

    async def _housekeeping(self) -> None:
        while not self._closing:
            await asyncio.sleep(1.0)
            if self.heap_policy.due(time.monotonic()):
                heap.release_free_memory()

    # -- LAN listeners (each bound alone: one taken port leaves the rest serving) ------
    def _addresses(self, ipv4: str) -> list[str]:
        """``ipv4`` and the IPv6 address (with %scope) that serves the same names."""
        v6 = self.ipv6.get(ipv4)
        return [ipv4, v6] if v6 else [ipv4]

    async def _serve(
        self,
        factory: Callable[[], asyncio.Protocol],
        addr: str,
        port: int,
        service: str,
        names: str | None = None,
    ) -> bool:
        """Listen on ``addr``:``port`` (IPv6 link-local as ``fe80::x%ifname``) for the
        hub ``service`` (``netbios-session``: the NetBIOS session service for ``names``,
        comma-separated).

        A bind failure (another daemon holds the port: smbd on 445/139, cupsd on 631)
        is logged once, naming the holder and the fix, and recorded in
        :attr:`degraded`; the edge goes on without that listener.
        """
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(factory, addr, port, reuse_address=True, backlog=1024)
        except OSError as exc:
            from spokeshare.lan import coexist

            key = f"tcp {addr}:{port}"
            self._unbound[key] = (factory, addr, port, service, names)
            if key in self.degraded:
                return False  # a retry that failed again: logged once already
            what = f"NetBIOS sessions to {names}" if names else f"service {service}"
            holder: str | None
            if exc.errno == errno.EADDRNOTAVAIL:  # nobody holds it: no interface has it
                holder = None
                fix = (
                    f"no interface of this box has {addr.split('%', 1)[0]}: set [lan] "
                    "address (and interface) to this box's address on the office LAN"
                )
                self.degraded[key] = f"{what}: {exc.strerror or exc}; {fix}"
            else:
                holder = coexist.Scanner().holder_of("tcp", addr, port)
                fix = coexist.fix_for(holder)
                self.degraded[key] = f"{what}: {exc.strerror or exc}; held by {holder}"
            log.error(
                "%s",
                Line(
                    "listener failed",
                    address=addr,
                    port=port,
                    service=service,
                    names=names,
                    error=exc.strerror or exc,
                    holder=holder,
                    fix=fix,
                    retry_s=LISTENER_RETRY_INTERVAL,
                ),
            )
            return False
        self.servers.append(server)
        bound = server.sockets[0].getsockname()
        log.info("%s", Line("listening", address=addr, port=bound[1], service=service, names=names))
        return True

    async def retry_listeners(self) -> int:
        """Try once more to bind every listener whose port was taken; return how many
        came up. Each one that does is logged (one line) and leaves :attr:`degraded`."""
        up = 0
        for key, (factory, addr, port, service, names) in list(self._unbound.items()):
            if self._closing:
                break
            if await self._serve(factory, addr, port, service, names):
                if self._closing:  # close() ran while binding: it missed this one
                    self.servers[-1].close()
                    break
                del self._unbound[key]
                was = self.degraded.pop(key, "")
                up += 1
                log.warning(
                    "%s",
                    Line(
                        "listener recovered",
                        address=addr,
                        port=port,
                        service=service,
                        names=names,
                        # None: the address had come to the box, nobody held the port
                        holder=was.split("; held by ", 1)[1] if "; held by " in was else None,
                    ),
                )
        if up:
            for cb in list(self.on_listeners_changed):
                cb()
        return up

    async def _retry_listeners_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(LISTENER_RETRY_INTERVAL)
            if self._unbound:
                await self.retry_listeners()

    async def listen(self) -> None:
        """Open every LAN listener: relayed services on their addresses, the NetBIOS
        session service per address, each also on that address's IPv6 twin."""
        for (ipv4, port), service in sorted(self.listeners.items()):
            for addr in self._addresses(ipv4):
                await self._serve(functools.partial(ClientEnd, self, service), addr, port, service)
        nb = self.cfg.netbios
        if nb.enabled and nb.session_port:
            by_address: dict[str, dict[str, str]] = {}
            for n in self.cfg.names:
                by_address.setdefault(n.address or self.cfg.lan_address, {})[n.name] = n.service
            for ipv4, names in sorted(by_address.items()):
                # *SMBSERVER / *SMBSERV are answered only when every name at this
                # address stands for one hub service (then any of them will do).
                generic = sorted(names)[0] if len(set(names.values())) == 1 else None
                for addr in self._addresses(ipv4):
                    await self._serve(
                        functools.partial(nbss_answer.SessionAnswerer, self, names, generic),
                        addr,
                        nb.session_port,
                        "netbios-session",
                        ",".join(names),
                    )

    async def close(self) -> None:
        self._closing = True
        for s in self.servers:
            s.close()
        idle, waiters = self.pool.drain()
        for t in idle:
            t.close()
        for t in list(self.clients):
            t.abort("edge shutting down")
        for t in list(self.ending):
            t.close()
        if self.control is not None:
            self.control.close()
        for w in waiters:
            if w.transport is not None:
                w.transport.close()
        await self.tasks.aclose()
        for s in self.servers:
            await s.wait_closed()
        log.info("%s", Line("edge stopped", office=self.bundle.office))

    # -- clients ---------------------------------------------------------------------
    def session_accepted(self, transport: asyncio.Transport) -> None:
        """A PC connected to the NetBIOS session port (lan.nbss_answer.SessionHost)."""
        self.heap_policy.note()
        tune_lan(transport.get_extra_info("socket"))

    def session_up(self, transport: asyncio.Transport, service: str, early: bytes) -> None:
        """The session answerer said yes for ``service``: from here the connection is a
        client like one on 445 (lan.nbss_answer.SessionHost)."""
        client = ClientEnd(self, service)
        transport.set_protocol(client)
        client.connection_made(transport)
        if early:
            client.data_received(early)  # kept, reading paused, until a stream attaches

    def client_arrived(self, client: ClientEnd) -> None:
        """A LAN client connected: hand it a warm tunnel, or wait for one, or refuse.

        Deadlines: waiting for a tunnel may take as long as dialling one
        (``pool.connect_timeout``: under a burst the pool is growing); once the open
        header is out, the hub's status must come within ``open_timeout`` (or four
        measured RTTs on a slower link). While the hub counts as unreachable a client
        is refused at once.
        """
        tunnel, stale = self.pool.take(time.monotonic())
        for t in stale:
            t.close()
        if tunnel is not None:
            self._start_stream(tunnel, client)
        elif self.hub_state in (HubState.DOWN, HubState.REVOKED):
            self._reject(client, f"hub unreachable ({self.hub_state.value})")
        else:
            if client.transport is not None:
                client.transport.pause_reading()
            self.pool.wait(client)
            client.deadline = asyncio.get_running_loop().call_later(
                self.cfg.pool.connect_timeout, self._wait_timeout, client
            )
        self.kick()

    def _start_stream(self, tunnel: EdgeTunnel, client: ClientEnd) -> None:
        if client.deadline is not None:
            client.deadline.cancel()
        another_hub = self._another_hub_left(client)
        client.deadline = asyncio.get_running_loop().call_later(
            pool.status_timeout(self.cfg.pool, self.rtt, last_try=not another_hub),
            self._status_timeout,
            client,
            tunnel,
        )
        self.streams_total += 1
        if tunnel.streams:
            self.streams_reused += 1
        self.clients.add(tunnel)
        if another_hub:
            client.keep_replay()
        else:
            client.replay = None
        # From here the tunnel carries a client: a WAN outage stalls it, not cuts it.
        if tunnel.transport is not None:
            carry_stream(tunnel.transport.get_extra_info("socket"), self.cfg.sockets, True)
        tunnel.open_stream(client)

    def _status_timeout(self, client: ClientEnd, tunnel: EdgeTunnel) -> None:
        client.deadline = None
        ph = tunnel.phase
        if (
            isinstance(ph, Opening)
            and ph.client is client
            and not tunnel.buf
            and (self.may_retry(client))
        ):
            # No status byte: the hub (or the path to it) is silent. The hub writes its
            # status before any byte goes to a backend (docs/protocol.md), so nothing of
            # this stream has reached one through it: give the open to another hub.
            ph.given_up = True  # the tunnel goes without its splice: the client stays
            tunnel.abort("no status from the hub in time")
            self.retry_open(tunnel, client, "no status from the hub in time")
            return
        if tunnel.state is TunnelState.OPENING and client.splice is not None:
            self.streams_failed += 1
            if self.client_log.admit("no-answer", client.peer[0], time.monotonic()):
                log.warning(
                    "%s",
                    Line(
                        "hub no answer",
                        office=self.bundle.office,
                        client=f"{client.peer[0]}:{client.peer[1]}",
                        wait_s=pool.status_timeout(self.cfg.pool, self.rtt),
                    ),
                )
            client.splice.abort("hub did not answer in time")
            self._suspect_hub()

    def may_retry(self, client: ClientEnd) -> bool:
        """Whether a client's open, unanswered on one hub, may go to another: several
        hubs, its bytes so far kept (ClientEnd.replay), the client still there, and
        fewer retries than other hubs."""
        return (
            not self._closing
            and self._another_hub_left(client)
            and client.replay is not None
            and _live(client)
        )

    def _another_hub_left(self, client: ClientEnd) -> bool:
        """Whether a hub this client's open has not tried yet is left (one try per hub)."""
        return len(self.hubs) > 1 and client.retries < len(self.hubs) - 1

    def retry_open(self, tunnel: EdgeTunnel, client: ClientEnd, why: str) -> None:
        """Give ``client``'s open, whose tunnel to one hub is given up before any status,
        to another hub: its hub is marked away (its idle tunnels dropped), the bytes the
        client sent are kept for the next tunnel, and it takes one as a new client does."""
        if client.deadline is not None:
            client.deadline.cancel()
            client.deadline = None
        replay, eof = bytes(client.replay or b""), client.replay_eof
        client.detach(replay, eof)
        client.retries += 1
        self.streams_retried += 1
        self.clients.discard(tunnel)
        host, port = self.bundle.hub_addresses[tunnel.hub]
        if self.client_log.admit("retried", client.peer[0], time.monotonic()):
            log.warning(
                "%s",
                Line("open retried", office=self.bundle.office,
                     client=f"{client.peer[0]}:{client.peer[1]}", service=client.service,
                     from_hub=f"{host}:{port}", reason=why),
            )  # fmt: skip
        self.hub_lost(tunnel.hub, why)
        if tunnel is self.control:
            return  # never: a stream is not opened on the control channel
        taken, stale = self.pool.take(time.monotonic())
        for t in stale:
            t.close()
        if taken is not None:
            self._start_stream(taken, client)
        else:
            self.pool.wait(client)
            client.deadline = asyncio.get_running_loop().call_later(
                self.cfg.pool.connect_timeout, self._wait_timeout, client
            )
        self.kick()

    def _wait_timeout(self, client: ClientEnd) -> None:
        client.deadline = None
        if self.pool.client_gone(client):
            self._reject(
                client, f"no tunnel to the hub within {self.cfg.pool.connect_timeout:.1f}s"
            )

    def _reject(self, client: ClientEnd, reason: str) -> None:
        self.streams_failed += 1
        if client.deadline is not None:
            client.deadline.cancel()
            client.deadline = None
        stream_log.info(
            "%s",
            streamlog.stream_line(
                self.bundle.office,
                f"{client.peer[0]}:{client.peer[1]}",
                client.service,
                to_hq=0,
                to_office=0,
                duration_s=time.monotonic() - client.arrived,
                result="rejected",
                reason=reason,
            ),
        )
        if client.transport is not None:
            abort_with_rst(client.transport)

    def client_gone(self, client: ClientEnd) -> None:
        if self.pool.client_gone(client) and client.deadline is not None:
            client.deadline.cancel()

    def hub_refused(self, reply: wire.StatusReply, client: ClientEnd | None = None) -> None:
        control.add_cause(self.refused, reply.status.name)
        source = client.peer[0] if client else ""
        if self.client_log.admit(reply.status.name, source, time.monotonic()):
            log.warning(
                "%s",
                Line(
                    "hub refused",
                    office=self.bundle.office,
                    client=f"{client.peer[0]}:{client.peer[1]}" if client else None,
                    service=client.service if client else None,
                    status=reply.status.name,
                    reason=reply.reason,
                ),
            )
        if reply.status is wire.Status.REVOKED:
            self._hub_event(HubEvent.REVOKED)

    # -- the pool --------------------------------------------------------------------
    def kick(self) -> None:
        """Ask the pool policy what to do, soon (coalesces bursts of events)."""
        if self._kick_handle is None and not self._closing:
            self._kick_handle = asyncio.get_running_loop().call_soon(self._evaluate)

    def _evaluate(self) -> None:
        self._kick_handle = None
        if self._closing:
            return
        now = time.monotonic()
        revoked = self.hub_state is HubState.REVOKED
        ev = self.pool.evaluate(now, dial=not revoked)
        for t in ev.close:
            t.close()
        if revoked:
            return
        for _ in range(ev.open):
            target = self.hubs.dial_target(self._load(), now)
            if target is None:
                self.pool.dial_ended()  # every hub is away inside its window
                continue
            self.dialing[target] += 1
            self.spawn(self._open_pooled(target))
        if not ev.open and len(self.hubs) > 1:
            # Tunnels held per hub: idle, carrying a stream or waiting for the hub's END
            # (one whose stream ends cleanly comes back to the pool). Counting idle ones
            # alone, every stream taken from one hub looked like an imbalance: under
            # load the edge retired and redialled tunnels all the time, a handshake each.
            crowded = self.hubs.rebalance(self.pooled_per_hub, sum(self.dialing))
            oldest = None
            if crowded is not None:
                oldest = next((t for t in self.pool.idle if t.hub == crowded), None)
            if oldest is not None:
                # The oldest idle tunnel of the most loaded hub goes; its refill (next
                # evaluation) goes to the least loaded hub.
                for t in self.pool.drop(lambda t: t is oldest):
                    t.close()
                self.kick()
        for target in self.hubs.probes(now):
            # A hub that was away rejoins the spread: one probe even while the pool is full.
            self.pool.dial_started()
            self.dialing[target] += 1
            self.spawn(self._open_pooled(target))
        wake = ev.wake_at
        hub_wake = self.hubs.next_wake(now) if len(self.hubs) > 1 else None
        if hub_wake is not None:
            wake = hub_wake if wake is None else min(wake, hub_wake)
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        if wake is not None:
            loop = asyncio.get_running_loop()
            self._wake_handle = loop.call_at(loop.time() + max(0.0, wake - now) + 0.001, self.kick)

    def _load(self) -> list[int]:
        """Tunnels per hub: the pool's (idle or carrying a stream) plus dials in flight
        (hubs.dial_target)."""
        return [p + d for p, d in zip(self.pooled_per_hub, self.dialing, strict=True)]

    async def _dial(self, hub: int) -> EdgeTunnel:
        """TCP connect (socket tuned first) and TLS handshake to hub address ``hub``."""
        loop = asyncio.get_running_loop()
        host, port = self.bundle.hub_addresses[hub]
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            cc = tune_wan(sock, self.cfg.sockets)
            if cc != self.congestion:
                self.congestion = cc
                log.info("%s", Line("wan congestion control", algorithm=cc or "default"))
            async with asyncio.timeout(self.cfg.pool.connect_timeout):
                await loop.sock_connect(sock, addr)
                _, proto = await loop.create_connection(
                    lambda: EdgeTunnel(self),
                    sock=sock,
                    ssl=self.ssl,
                    server_hostname=self.bundle.hub_name,
                    ssl_handshake_timeout=self.cfg.pool.connect_timeout,
                )
        except BaseException:
            sock.close()
            raise
        sslobj = proto.transport.get_extra_info("ssl_object") if proto.transport else None
        if not tls.check_alpn(sslobj):
            proto.abort("ALPN mismatch")
            raise ConnectionError(f"hub did not agree on ALPN {' or '.join(wire.ALPNS)}")
        proto.reuse = tls.reuse_agreed(sslobj)
        proto.ssl = self.ssl
        proto.hub = hub
        if proto.state is not TunnelState.IDLE:  # closed by the hub before we got it
            raise ConnectionError("hub closed the tunnel as it came up")
        return proto

    def _dial_failed(self, exc: BaseException, what: str, pooled: bool, hub: int) -> None:
        """A dial to hub ``hub`` failed: that hub backs off; the whole pool backs off
        only when no hub is left to dial (tunnel.hubs)."""
        now, jitter = time.monotonic(), self.rng.uniform(0.5, 1.0)
        first = not self.hubs.away(hub)
        self.hubs.dial_failed(hub, now, jitter)
        everywhere = self.hubs.all_away()
        if pooled and everywhere:
            self.pool.dial_failed(now, jitter)
        elif pooled:
            self.pool.dial_ended()
        elif everywhere:
            self.pool.unreachable(now, jitter)
        if first:
            self._drop_hub(hub)
        control.add_cause(self.dial_failures, tls.handshake_cause(exc))
        reason = tls.describe_handshake_error(exc)
        host, port = self.bundle.hub_addresses[hub]
        if first:
            log.warning(
                "%s",
                Line(
                    "hub unreachable",
                    office=self.bundle.office,
                    hub=f"{host}:{port}",
                    dialing=what,
                    failures=1,
                    reason=f"{reason} (retrying with backoff)"
                    + ("" if everywhere else "; other hubs serve meanwhile"),
                ),
            )
        else:
            log.debug("hub %s:%d still unreachable: %s", host, port, reason)

    def _drop_hub(self, hub: int) -> None:
        """Hub ``hub`` is away: its idle tunnels leave the pool (closed), so no client
        is handed one; the pool refills from the other hubs."""
        if len(self.hubs) == 1:
            return  # the hub state's own drain does it (HubState.DOWN)
        for t in self.pool.drop(lambda t: t.hub == hub):
            t.abort("hub away")

    def hub_lost(self, hub: int, why: str) -> None:
        """Hub ``hub`` was found away without a dial (control channel silent or reset,
        or a stream's status missing): back off from it and drop its idle tunnels."""
        if len(self.hubs) == 1:
            return
        was_away = self.hubs.away(hub)
        self.hubs.lost(hub, time.monotonic(), self.rng.uniform(0.5, 1.0))
        self._drop_hub(hub)
        if not was_away:
            host, port = self.bundle.hub_addresses[hub]
            log.warning(
                "%s",
                Line("hub away", office=self.bundle.office, hub=f"{host}:{port}", reason=why),
            )
        self.kick()

    async def _open_pooled(self, hub: int) -> None:
        try:
            tunnel = await self._dial(hub)
        except (OSError, TimeoutError) as exc:
            self.dialing[hub] -= 1
            self._dial_failed(exc, "a pooled tunnel", pooled=True, hub=hub)
            self.kick()
            return
        self.dialing[hub] -= 1
        if self.hubs.away(hub) and len(self.hubs) > 1:
            host, port = self.bundle.hub_addresses[hub]
            log.info("%s", Line("hub back", office=self.bundle.office, hub=f"{host}:{port}"))
        self.hubs.dial_ok(hub)
        if self.pool.failures:
            log.info(
                "%s", Line("hub reachable", office=self.bundle.office, failures=self.pool.failures)
            )
        if self._closing:
            tunnel.close()
            return
        if tunnel.transport is not None and not tunnel.transport.is_closing():
            tunnel.counted = True  # (one lost meanwhile is the pool's to drop, uncounted)
            self.pooled_per_hub[hub] += 1
        client = self.pool.tunnel_ready(tunnel, time.monotonic(), _live)
        if client is not None:
            self._start_stream(tunnel, client)
        self.kick()

    def may_reuse(self, tunnel: EdgeTunnel) -> bool:
        """Whether a tunnel whose stream just ended cleanly may carry another: not while
        the edge closes or the hub counts as away (with several hubs: its own hub), nor
        one dialled with a certificate the edge has since renewed."""
        return (
            not self._closing
            and self.hub_state in (HubState.UP, HubState.STARTING)
            and tunnel.ssl is self.ssl
            and not (len(self.hubs) > 1 and self.hubs.away(tunnel.hub))
        )

    def tunnel_returned(self, tunnel: EdgeTunnel) -> None:
        """The hub's END came: the tunnel waits for a stream again (pool.tunnel_returned
        says whether a waiting client gets it, it goes idle, or it is one too many)."""
        if not self.may_reuse(tunnel):
            tunnel.close()
            return
        self._hub_answered()
        client, keep = self.pool.tunnel_returned(tunnel, time.monotonic(), _live)
        if client is not None:
            self._start_stream(tunnel, client)
        elif not keep:
            tunnel.close()
        self.kick()

    def tunnel_lost(self, tunnel: EdgeTunnel, prev: TunnelState) -> None:
        if tunnel.counted:
            tunnel.counted = False
            self.pooled_per_hub[tunnel.hub] -= 1
        if prev is TunnelState.IDLE:
            self.pool.tunnel_lost(tunnel)  # False: already taken or retired
            self.kick()
        self.clients.discard(tunnel)
        if tunnel is self.control:
            self.control = None
            self._control_up.clear()
            self._control_lost.set()
            pending = self._renew_pending
            if pending is not None and not pending[1].done():
                pending[1].set_exception(ConnectionError("control channel lost"))

    # -- the control channel ---------------------------------------------------------
    async def _control_loop(self) -> None:
        """Dial the control channel, keep it (the heartbeat, control.Heartbeat), and
        dial again with backoff when it fails, is refused or falls silent."""
        failures = 0
        #: The hub the channel was last lost or refused on: the next dial tries the next.
        last: int | None = None
        while not self._closing:
            now = time.monotonic()
            hub = self.hubs.control_target(now, last)
            if hub is None:  # every hub away inside its backoff window
                self._hub_event(HubEvent.UNREACHABLE)
                wake = self.hubs.next_wake(now)
                await self._retry_after(max(0.01, (wake or now) - now))
                continue
            tunnel: EdgeTunnel | None = None
            try:
                tunnel = await self._dial(hub)
                waiter = tunnel.open_control()
                async with asyncio.timeout(self.cfg.pool.connect_timeout):
                    reply = await waiter
            except (OSError, TimeoutError) as exc:
                if tunnel is not None:
                    tunnel.abort("no status for the control channel")
                failures += 1
                last = hub
                self._dial_failed(exc, "the control channel", pooled=False, hub=hub)
                if not self.hubs.all_away() and len(self.hubs) > 1:
                    continue  # another hub is up: dial it at once
                self._hub_event(HubEvent.UNREACHABLE)
                await self._retry_after(
                    pool.backoff_delay(self.cfg.pool, failures, self.rng.uniform(0.5, 1.0))
                )
                continue
            if reply.status is not wire.Status.OK:
                self.hub_refused(reply)
                tunnel.close()
                failures += 1
                last = hub
                if reply.status is not wire.Status.REVOKED:
                    self.hub_lost(hub, f"refused the control channel ({reply.status.name})")
                    if not self.hubs.all_away() and len(self.hubs) > 1:
                        continue
                    self._hub_event(HubEvent.UNREACHABLE)
                await asyncio.sleep(
                    pool.backoff_delay(
                        self.cfg.pool,
                        control.redial_failures(failures, refused=True),
                        self.rng.uniform(0.5, 1.0),
                    )
                )
                continue
            running = tunnel.phase
            if not isinstance(running, Control):  # lost right after its OK
                failures += 1
                last = hub
                self.hub_lost(hub, "control channel lost right after its OK")
                if not self.hubs.all_away() and len(self.hubs) > 1:
                    continue
                self._hub_event(HubEvent.UNREACHABLE)
                await self._retry_after(
                    pool.backoff_delay(self.cfg.pool, failures, self.rng.uniform(0.5, 1.0))
                )
                continue
            failures = 0
            self.hubs.dial_ok(hub)
            if last is not None and last != hub and len(self.hubs) > 1:
                log.info(
                    "%s",
                    Line("control channel moved", office=self.bundle.office,
                         from_hub=_hostport(self.bundle.hub_addresses[last]),
                         to_hub=_hostport(self.bundle.hub_addresses[hub])),
                )  # fmt: skip
            self.control = tunnel
            self.control_hub = hub
            self._control_lost.clear()
            self._hub_event(HubEvent.CONTROL_UP)
            self.pool.reachable()
            self.kick()
            self._control_up.set()
            try:
                await self._keep_control(tunnel, running.heartbeat)
            finally:
                self._control_up.clear()
                self.control_hub = None
            if self._closing:
                break
            last = hub
            # The hub of the channel is away (heartbeat silent, reset or closed): its
            # idle tunnels go; while another hub is up the edge stays up and the
            # channel moves there at once.
            self.hub_lost(hub, "control channel lost")
            if len(self.hubs) == 1 or self.hubs.all_away():
                self._hub_event(HubEvent.UNREACHABLE)

    async def _keep_control(self, tunnel: EdgeTunnel, hb: control.Heartbeat) -> None:
        """Wake the heartbeat when it asks, until the channel closes or the hub is lost
        (a lost channel's tunnel ends the wait at once: Edge.tunnel_lost)."""
        while tunnel.state is TunnelState.CONTROL and not self._closing:
            self._control_commands(tunnel, hb.handle_timer(time.monotonic()))
            due = hb.get_timer()
            if due is None:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    await self._control_lost.wait()

    async def _retry_after(self, delay: float) -> None:
        """Back off before the next control dial, in seconds; cut short when a stream
        that survived the outage hears from the hub again (the WAN is back, so new
        clients need not wait out the backoff to be served)."""
        self._hub_heard.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._hub_heard.wait()

    def _hub_answered(self) -> None:
        """The hub answered on a tunnel the edge holds (the control channel, a stream's
        END): pooled dials that back off after an outage try again now (pool.Pool.
        hub_heard), instead of leaving clients to wait out a backoff grown during it."""
        if self.pool.hub_heard(time.monotonic()):
            self.kick()

    def heard_from_hub(self) -> None:
        """A stream's tunnel received bytes while the hub counted as down."""
        if not self._hub_heard.is_set():
            log.info(
                "%s",
                Line("hub reconnecting", office=self.bundle.office,
                     reason="a running stream hears from the hub again"),
            )  # fmt: skip
            self._hub_heard.set()

    def _suspect_hub(self) -> None:
        """A stream got no answer in time: ask the control channel right away."""
        ctl = self.control
        if ctl is not None and isinstance(ctl.phase, Control):
            self._control_commands(ctl, ctl.phase.heartbeat.ping_now(time.monotonic()))

    def control_bytes(self, tunnel: EdgeTunnel, running: Control, data: bytes | memoryview) -> None:
        """Bytes on the control channel after the hub's OK: frames of control messages."""
        try:
            events = running.frames.feed(data)
            messages = [
                control.decode_json(ev.message)
                for ev in events
                if isinstance(ev, wire.ControlReceived)
            ]
        except DecodeError as exc:
            log.warning(
                "%s",
                Line("control channel lost", office=self.bundle.office,
                     reason=f"bad control frame from the hub ({exc.reason}); reconnecting"),
            )  # fmt: skip
            tunnel.abort("bad control frame")
            return
        if len(messages) != len(events):
            tunnel.abort("unexpected frame on control channel")
            return
        if messages:
            self._hub_answered()
        hb = running.heartbeat
        for msg in messages:
            self._control_commands(
                tunnel,
                hb.receive(
                    msg,
                    time.monotonic(),
                    self.report(),
                    time.time(),
                    self.lan_presence() if self.lan_presence is not None else None,
                ),
            )

    def _control_commands(self, tunnel: EdgeTunnel, commands: list[control.Command]) -> None:
        """Carry out what the heartbeat decided."""
        for cmd in commands:
            if isinstance(cmd, control.Send):
                t = tunnel.transport
                if t is not None and not t.is_closing():
                    t.write(control.encode(cmd.message))
            elif isinstance(cmd, control.RttMeasured):
                self.rtt = cmd.rtt
            elif isinstance(cmd, control.ClockSkewMeasured):
                self.hub_clock = (cmd.skew, cmd.rtt, dt.datetime.now(dt.UTC))
            elif isinstance(cmd, control.PeerRevoked):
                log.error(
                    "%s",
                    Line("office revoked", office=self.bundle.office, reason="the hub says so"),
                )
                self._hub_event(HubEvent.REVOKED)
            elif isinstance(cmd, control.PeerLost):
                log.warning(
                    "%s",
                    Line("control channel lost", office=self.bundle.office, silence_s=cmd.silence,
                         reason="no heartbeat from the hub; treating it as unreachable"),
                )  # fmt: skip
                tunnel.abort("heartbeat lost")
            elif isinstance(cmd, control.Deliver):
                pending = self._renew_pending
                msg = cmd.message
                if (
                    isinstance(msg, control.RenewIssued | control.RenewRefused)
                    and pending is not None
                    and msg.id == pending[0]
                    and not pending[1].done()
                ):
                    pending[1].set_result(msg)
            # PeerStats: the hub's pongs carry none; nothing to keep if one did

    def report(self) -> control.EdgeReport:
        """What this edge's pongs tell the hub (control.EdgeReport)."""
        since = self.renew_failing_since
        return control.EdgeReport(
            clients=len(self.clients),
            idle=len(self.idle),
            streams_total=self.streams_total,
            streams_failed=self.streams_failed,
            renew_failures=self.renew_failures,
            renew_failing_since=since.timestamp() if since else None,
            cert_not_after=self.bundle.cert.not_valid_after_utc.timestamp(),
            dial_failures=dict(self.dial_failures),
            refused=dict(self.refused),
        )

    # -- certificate renewal (spokeshare.renewal) ------------------------------------
    async def _renewal_loop(self) -> None:
        """Renew the office certificate over the control channel when it is due, and
        after a failure when renewal.next_attempt says."""
        while not self._closing:
            now = dt.datetime.now(dt.UTC)
            due = self.renewal_status(now).next_attempt
            if due > now:
                # Wake at least once a minute: the wall clock may be stepped meanwhile.
                await asyncio.sleep(min(60.0, (due - now).total_seconds()))
                continue
            if not self._control_up.is_set():
                # Due while the hub is away: wait for the channel, and count each
                # answer_timeout without one as a failed attempt (logged, reported).
                cert = self.bundle.cert
                life = renewal.lifetime(cert.not_valid_before_utc, cert.not_valid_after_utc)
                try:
                    async with asyncio.timeout(renewal.answer_timeout(life)):
                        await self._control_up.wait()
                except TimeoutError:
                    self._renewal_failed("hub unreachable (no control channel)")
                    for cb in list(self.on_renewal):
                        cb()
                continue
            await self._renew_once()

    async def _renew_once(self) -> None:
        """One attempt: new key, request, answer; install the result or note why not."""
        cert = self.bundle.cert
        life = renewal.lifetime(cert.not_valid_before_utc, cert.not_valid_after_utc)
        if not os.access(self.cfg.bundle.parent, os.W_OK):
            # Asking would have the hub issue a certificate we cannot keep.
            self._renewal_failed(f"cannot write the bundle's directory {self.cfg.bundle.parent}")
            for cb in list(self.on_renewal):
                cb()
            return
        key = pki.new_key()
        self._renew_id += 1
        fut: asyncio.Future[control.RenewMessage] = asyncio.get_running_loop().create_future()
        self._renew_pending = (self._renew_id, fut)
        try:
            ctl = self.control
            t = ctl.transport if ctl is not None else None
            if t is None or t.is_closing():
                raise ConnectionError("control channel lost")
            request = control.RenewRequest(
                self._renew_id, renewal.make_request(self.bundle.office, key)
            )
            t.write(control.encode(request))
            async with asyncio.timeout(renewal.answer_timeout(life)):
                answer = await fut
            if isinstance(answer, control.RenewRefused):
                raise EnrollmentError(f"refused by the hub: {answer.reason}")
            if not isinstance(answer, control.RenewIssued):
                raise EnrollmentError("unexpected answer")
            await self._install(key, answer.chain)
        except TimeoutError:
            self._renewal_failed("no answer from the hub")
        except (ConnectionError, EnrollmentError, OSError) as exc:
            self._renewal_failed(str(exc) or type(exc).__name__)
        finally:
            self._renew_pending = None
            for cb in list(self.on_renewal):
                cb()

    async def _install(self, key: ec.EllipticCurvePrivateKey, chain: tuple[bytes, ...]) -> None:
        """Check the issued certificate (our key, our office, signed by our CA), write
        the bundle atomically (pki.replace_private) and dial new tunnels with it;
        tunnels already open go on with the old one."""
        try:
            cert = x509.load_der_x509_certificate(chain[0])
            ca = pki.load_cert(self.bundle.ca_pem)
            cert.verify_directly_issued_by(ca)
            office = pki.office_of(cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise EnrollmentError(f"the issued certificate does not verify: {exc}") from None
        if cert.public_key() != key.public_key() or office != self.bundle.office:
            raise EnrollmentError("the issued certificate is not for this office's new key")
        new = dataclasses.replace(
            self.bundle, cert_pem=pki.cert_pem(cert), key_pem=pki.key_pem(key)
        )
        ssl = tls.client_context(new.ca_pem, new.cert_pem, new.key_pem, self.cfg.pool.reuse)
        await asyncio.to_thread(pki.replace_private, self.cfg.bundle, bundle.render(new))
        failures_before = self.renew_failures
        # One step, no await or log call between: a reader on another thread sees the
        # renewal only with its failure state cleared.
        self.renew_failures, self.renew_failing_since, self.renew_reason = 0, None, ""
        self.renew_last_failure = None
        self.bundle, self.ssl = new, ssl
        self.renewed = dt.datetime.now(dt.UTC)
        log.info(
            "%s",
            Line(
                "certificate renewed",
                office=office,
                serial=f"{cert.serial_number:x}",
                not_after=cert.not_valid_after_utc.isoformat(timespec="seconds"),
                bundle=self.cfg.bundle,
                failures_before=failures_before or None,
            ),
        )

    def _renewal_failed(self, reason: str) -> None:
        now = dt.datetime.now(dt.UTC)
        self.renew_failures += 1
        self.renew_failing_since = self.renew_failing_since or now
        self.renew_last_failure = now
        self.renew_reason = reason[:200]
        st = self.renewal_status(now)
        log.warning(
            "%s",
            Line(
                "certificate renewal failed",
                office=self.bundle.office,
                reason=self.renew_reason,
                failures=self.renew_failures,
                failing_since=self.renew_failing_since.isoformat(timespec="seconds"),
                next_attempt=st.next_attempt.isoformat(timespec="seconds"),
                not_after=st.not_after.isoformat(timespec="seconds"),
            ),
        )

    def _hub_event(self, event: HubEvent) -> None:
        """Move the hub's state as edge_state.HUB_TRANSITIONS says and act on a change."""
        state = hub_transition(self.hub_state, event)
        if state is self.hub_state:
            return
        log.info(
            "%s",
            Line(
                "hub state",
                **{
                    "office": self.bundle.office,
                    "from": self.hub_state.value,  # a keyword: only as a key here
                    "to": state.value,
                    "cause": event.value,
                },
            ),
        )
        self.hub_state = state
        if state in (HubState.DOWN, HubState.REVOKED):
            # Idle tunnels fail fast with the control channel: none is handed to a client
            # while the hub is away, and the pool refills once it is back. Streams
            # already running keep their tunnels (sockets.carry_stream).
            idle, waiters = self.pool.drain()
            for client in waiters:
                self._reject(client, f"hub unreachable ({state.value})")
            for t in idle:
                t.abort(f"hub unreachable ({state.value})")
            if idle:
                log.info(
                    "%s",
                    Line("idle tunnels dropped", office=self.bundle.office, count=len(idle),
                         reason=f"hub unreachable ({state.value})"),
                )  # fmt: skip
        for cb in self.on_hub_state:
            cb(state)
