"""The hub: accepts tunnels from offices, checks them, and hands streams to backends.

Every accepted TCP connection goes through, in order:

1. TLS 1.3 handshake (``loop.connect_accepted_socket`` on a socket we accepted, so a
   failure is raised to us and logged with its reason, never silently dropped),
   client certificate verified against the deployment's CA, ALPN agreed.
2. The office named by the certificate must be in the registry, with this
   certificate's serial, and not revoked; else REVOKED and close.
3. The open header (bounded size; a deadline starts at its first byte, so a pooled
   tunnel may idle but a slow header cannot hold a slot). Unknown version, unknown
   service, service not allowed for this office: a status and close.
4. STREAM: connect to one of the service's backends (named only in hub.toml; several
   are tried as spokeshare.tunnel.backends decides, and a down one is probed in the
   background until it answers again), answer OK, splice.
   CONTROL: heartbeats (``tunnel.control``); the hub learns the office's RTT, version
   and clients.

Tunnel states
-------------
Every transition of a :class:`HubTunnel` is in :data:`TRANSITIONS` and made by
``HubTunnel._go``, which refuses (``UsageError``) a pair the table does not list. Each
state carries its own data (the ``phase``: :class:`AwaitHeader`, :class:`Connecting`,
:class:`Relaying`, :class:`ControlChannel`, :class:`Closed`), so nothing is read from
an attribute that only some states fill::

    AWAIT_HEADER --OPEN_STREAM--> CONNECTING --BACKEND_UP--> RELAYING --STREAM_ENDED--> CLOSED
    RELAYING --STREAM_REUSED--> AWAIT_HEADER          ended cleanly, END sent (reuse)
    AWAIT_HEADER --OPEN_CONTROL--> CONTROL
    AWAIT_HEADER, CONNECTING --REFUSED--> CLOSED     a status other than OK, then close
    any state --LOST--> CLOSED                        the TLS connection is gone

Sequential reuse (docs/protocol.md): on a tunnel that agreed on ALPN
``spokeshare/1+reuse`` a relayed stream (not the IPP gate's) that ended with an EOF
frame in each direction and nothing after it closes only the backend connection; the
hub sends the END frame and waits for the next open header with the pool's idle
allowance, as on a new tunnel. Any other ending closes the tunnel as before.

A tunnel exists from admission on (office and transport known); during the TLS
handshake and the admission checks its connection's protocol is :class:`Handshaking`,
which keeps what arrives meanwhile.

Registry changes (``spokeshare office revoke``) are picked up within a second and a
revoked office's live tunnels are cut. A status snapshot is written to
``STATE_DIR/status.json`` every second for ``spokeshare office list``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spokeshare import __version__, enrollment, heap, hubstatus, pki, renewal, renewal_spool
from spokeshare.config import Backend, HubConfig, SocketConfig, probe_policy
from spokeshare.errors import ConfigError, DecodeError, EnrollmentError, UsageError
from spokeshare.logfmt import Line
from spokeshare.loglimit import LogLimiter
from spokeshare.printing import ipp_relay
from spokeshare.printing.hub_ipp import PrinterPolicy, StreamInfo
from spokeshare.stats import BackendStatistics, HubStatistics, OfficeStatistics, to_json
from spokeshare.tasks import TaskSet
from spokeshare.tunnel import backends, control, reserved_port, streamlog, tls, wire
from spokeshare.tunnel.control import EdgeReport, Presence
from spokeshare.tunnel.relay import PlainEnd, ReadBuffer, Splice, TunnelEnd, abort_with_rst
from spokeshare.tunnel.sockets import carry_stream, tune_lan, tune_wan

log = logging.getLogger("spokeshare.hub")
stream_log = logging.getLogger("spokeshare.hub.stream")

#: Bytes a tunnel may carry ahead of the backend connection being ready (0-RTT data).
MAX_EARLY = 256 * 1024

#: Seconds between looks at the renewal spool in the shared directory
#: (spokeshare.renewal_spool): by the CA host's hub for requests, by the asking hub
#: for its answer.
SPOOL_POLL = 0.25
#: Seconds between log lines for one kind of refused connection from one address, and
#: between the summaries of what was held back (see spokeshare.loglimit).
REFUSAL_LOG_INTERVAL = 60.0
#: hub.toml settings a reload (SIGHUP, :meth:`Hub.reload`) leaves as they were: they
#: shape what the process set up when it started (its listening sockets, the worker
#: processes, the state and status files, the status server, the start-up check of
#: HQ's backends). Field of HubConfig -> the hub.toml key.
RESTART_ONLY = {
    "listen": "hub.listen",
    "workers": "hub.workers",
    "state_dir": "hub.state_dir",
    "status_listen": "hub.status_listen",
    "status_token": "hub.status_token",
    "check_backends": "hub.check_backends",
}
#: After a burst of connections, free heap pages go back to the system (see
#: spokeshare.heap) at most this often, in seconds, once the burst has calmed down.
HEAP_RELEASE_INTERVAL = 10.0


class TunnelState(enum.Enum):
    """Where a :class:`HubTunnel` is (module docstring, "Tunnel states")."""

    AWAIT_HEADER = "await-header"
    CONNECTING = "connecting"
    RELAYING = "relaying"
    CONTROL = "control"
    CLOSED = "closed"


class TunnelEvent(enum.Enum):
    """What moves a :class:`HubTunnel` from one :class:`TunnelState` to the next."""

    OPEN_STREAM = "open-stream"  # a stream header passed the checks: dial the backend
    OPEN_CONTROL = "open-control"  # a control header: OK sent, heartbeats from here
    BACKEND_UP = "backend-up"  # the backend answered: OK sent, spliced
    REFUSED = "refused"  # a status other than OK sent, tunnel closing
    STREAM_ENDED = "stream-ended"  # the splice is done (both EOFs, or failed and aborted)
    STREAM_REUSED = "stream-reused"  # ended cleanly on a reuse tunnel: END sent
    LOST = "lost"  # the TLS connection is gone


#: Every transition a hub tunnel makes: (state, event) -> next state. Anything else
#: raises UsageError (a bug: the callbacks check the state before they move it).
TRANSITIONS: dict[tuple[TunnelState, TunnelEvent], TunnelState] = {
    (TunnelState.AWAIT_HEADER, TunnelEvent.OPEN_STREAM): TunnelState.CONNECTING,
    (TunnelState.AWAIT_HEADER, TunnelEvent.OPEN_CONTROL): TunnelState.CONTROL,
    (TunnelState.AWAIT_HEADER, TunnelEvent.REFUSED): TunnelState.CLOSED,
    (TunnelState.CONNECTING, TunnelEvent.BACKEND_UP): TunnelState.RELAYING,
    (TunnelState.CONNECTING, TunnelEvent.REFUSED): TunnelState.CLOSED,
    (TunnelState.RELAYING, TunnelEvent.STREAM_ENDED): TunnelState.CLOSED,
    (TunnelState.RELAYING, TunnelEvent.STREAM_REUSED): TunnelState.AWAIT_HEADER,
    **{(s, TunnelEvent.LOST): TunnelState.CLOSED for s in TunnelState},
}


@dataclass(slots=True)
class AwaitHeader:
    """Idle in the edge's pool, or reading an open header: bytes so far and the one
    timer (the pool's idle allowance, then from the first byte the header's)."""

    STATE: ClassVar[TunnelState] = TunnelState.AWAIT_HEADER
    buf: bytearray = field(default_factory=bytearray)
    started: bool = False
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class Connecting:
    """The stream's backend is being dialled; what the edge sends meanwhile (0-RTT)
    waits in ``early``, at most MAX_EARLY bytes."""

    STATE: ClassVar[TunnelState] = TunnelState.CONNECTING
    header: wire.OpenStream
    opened_at: float  # monotonic
    early: bytearray


@dataclass(slots=True)
class Relaying:
    """The stream runs through ``splice`` (read by ``TunnelEnd.splice``, for flow
    control and aborts)."""

    STATE: ClassVar[TunnelState] = TunnelState.RELAYING
    header: wire.OpenStream
    opened_at: float
    splice: Splice


@dataclass(slots=True)
class ControlChannel:
    """The office's control channel: control frames and their heartbeat, woken by
    ``timer`` when the heartbeat asks (``control.Heartbeat.get_timer``)."""

    STATE: ClassVar[TunnelState] = TunnelState.CONTROL
    frames: wire.FrameReader
    heartbeat: control.Heartbeat
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class Closed:
    """Refused, ended or lost: nothing more happens on this tunnel."""

    STATE: ClassVar[TunnelState] = TunnelState.CLOSED


Phase = AwaitHeader | Connecting | Relaying | ControlChannel | Closed


@dataclass
class OfficeState:
    """What the hub knows about one office right now."""

    name: str
    tunnels: set[HubTunnel] = field(default_factory=set)
    control: HubTunnel | None = None
    version: str = ""
    rtt: float | None = None
    last_seen: float | None = None  # wall clock
    streams_total: int = 0
    #: Streams ended (each one's log line written), by the line's result.
    streams_ended: dict[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    #: What the edge's last pong reported (control.EdgeReport); None before one.
    edge_report: EdgeReport | None = None
    #: The edge's LAN presence from its last pong that carried one (control.Presence).
    presence: Presence | None = None
    #: Statuses other than OK answered to this office's tunnels, by wire.Status name.
    refused: dict[str, int] = field(default_factory=dict)
    #: IPP requests the hub refused (printing.hub_ipp.IppGate), by reason.
    ipp_refused: dict[str, int] = field(default_factory=dict)
    #: The printers the registry gives the office (the ipp service's gate), as last
    #: loaded: recomputed by ``Hub.reload_registry``, read by every IPP request.
    printer_policy: PrinterPolicy = field(default_factory=lambda: PrinterPolicy.of(()))
    #: A certificate renewal over the control channel is being issued (one at a time).
    renewing: bool = False
    #: The last renewal this hub refused: (wall clock, reason); None after one it issued.
    renew_refused: tuple[float, str] | None = None
    #: The registry's record of the office, as last loaded (apply_record).
    record: enrollment.OfficeRecord | None = None

    def apply_record(self, record: enrollment.OfficeRecord | None) -> None:
        """Take what the registry says about this office now (None: not enrolled)."""
        self.printer_policy = PrinterPolicy.of(record.printers if record is not None else ())
        self.record = record

    def certificate(self, now: dt.datetime) -> dict[str, Any]:
        """The office certificate and its renewal (renewal.hub_certificate), {} when
        the office is not enrolled."""
        rec = self.record
        if rec is None:
            return {}
        report = self.edge_report or EdgeReport()
        return renewal.hub_certificate(
            rec.not_before,
            rec.not_after,
            rec.renewed,
            now,
            report.renew_failures,
            report.renew_failing_since,
            self.renew_refused,
        )

    def statistics(self) -> OfficeStatistics:
        """This worker's view of the office now (spokeshare.stats)."""
        streams = sum(
            1 for t in self.tunnels if t.state in (TunnelState.RELAYING, TunnelState.CONNECTING)
        )
        idle = sum(1 for t in self.tunnels if t.state is TunnelState.AWAIT_HEADER)
        report = self.edge_report
        return OfficeStatistics(
            connected=self.control is not None,
            version=self.version,
            rtt_ms=round(self.rtt * 1000, 2) if self.rtt is not None else None,
            last_seen=self.last_seen,
            streams=streams,
            idle_tunnels=idle,
            clients=report.clients if report is not None else streams,
            streams_total=self.streams_total,
            streams_ended=dict(sorted(self.streams_ended.items())),
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            refused=dict(sorted(self.refused.items())),
            edge_dial_failures=dict(sorted(report.dial_failures.items())) if report else {},
            certificate=self.certificate(dt.datetime.now(dt.UTC)),
            names=dict(self.presence.names) if self.presence is not None else {},
            printers=self.presence.printers if self.presence is not None else (),
            degraded=self.presence.degraded if self.presence is not None else (),
            ipp_refused=dict(sorted(self.ipp_refused.items())),
        )

    def count_ipp_refused(self, reason: str) -> None:
        """One IPP request of this office refused by the hub (hub_ipp.REFUSED_*)."""
        self.ipp_refused[reason] = self.ipp_refused.get(reason, 0) + 1


#: What Hub.dial calls with the backend that connected: transport, protocol, HOST:PORT.
Connected = Callable[[asyncio.Transport, PlainEnd, str], None]


@dataclass(slots=True)
class _Race:
    """One stream's connect attempts (Hub.dial): ``done`` once one connected or the
    stream gave up; ``results`` (attempt number, None or why it failed) wakes it."""

    connected: Connected
    done: bool = False
    results: asyncio.Queue[tuple[int, str | None]] = field(default_factory=asyncio.Queue)


def _connect_error(exc: BaseException, timeout: float) -> str:
    """Why a connect to a backend failed, in a few words."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc)


class Handshaking(asyncio.Protocol):
    """The protocol of a connection during its TLS handshake and admission: keeps what
    arrives until the :class:`HubTunnel` takes over (``transport.set_protocol``)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.buf += data  # admission follows the handshake at once: briefly held

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class HubTunnel(TunnelEnd):
    """One TLS connection from an admitted office's edge (module docstring)."""

    transport: asyncio.Transport

    def __init__(
        self,
        hub: Hub,
        peer: tuple[str, int],
        transport: asyncio.Transport,
        office: OfficeState,
        reuse: bool = False,
    ) -> None:
        super().__init__(hub.reads)
        self.hub = hub
        self.peer = peer
        self.transport = transport
        self.office = office
        #: The edge agreed on sequential reuse (ALPN spokeshare/1+reuse).
        self.reuse = reuse
        #: Streams this tunnel has opened (more than one: it was reused).
        self.streams = 0
        self.phase: Phase = AwaitHeader()

    def __repr__(self) -> str:
        return f"<HubTunnel {self.office.name} {self.peer[0]}:{self.peer[1]} {self.state.value}>"

    @property
    def state(self) -> TunnelState:
        return self.phase.STATE

    @property
    def splice(self) -> Splice | None:
        """The stream's splice while Relaying (that phase's data), else None."""
        return self.phase.splice if isinstance(self.phase, Relaying) else None

    def _go(self, event: TunnelEvent, phase: Phase) -> None:
        """The one place the state changes: ``event`` must lead (TRANSITIONS) to
        ``phase``'s state; what belonged to the state left behind (its timer) ends."""
        if TRANSITIONS.get((self.state, event)) is not phase.STATE:
            raise UsageError(f"hub tunnel in state {self.state.value} cannot {event.value}")
        old = self.phase
        if isinstance(old, AwaitHeader | ControlChannel) and old.timer is not None:
            old.timer.cancel()
        self.phase = phase

    # -- set-up ----------------------------------------------------------------------
    def start(self, early: bytes) -> None:
        """Admitted: join the office, wait for a header (idle in the pool till then)."""
        self.office.tunnels.add(self)
        if isinstance(self.phase, AwaitHeader):  # a new tunnel's first state
            self._arm(self.phase, self.hub.cfg.limits.idle_timeout)
        if early:
            self.data_received(early)

    def _arm(self, st: AwaitHeader, delay: float) -> None:
        if st.timer is not None:
            st.timer.cancel()
        st.timer = asyncio.get_running_loop().call_later(delay, self._expire, st)

    def _expire(self, st: AwaitHeader) -> None:
        st.timer = None
        if self.phase is not st:
            return
        if st.buf:
            self._refuse(wire.Status.BAD_HEADER, "open header too slow")
        else:
            log.debug("%r closed: idle in pool too long", self)
            self.close()

    # -- asyncio callbacks -----------------------------------------------------------
    def data_received(self, data: bytes | memoryview) -> None:
        st = self.phase
        if isinstance(st, Relaying):
            st.splice.tunnel_data(data)
        elif isinstance(st, AwaitHeader):
            st.buf += data
            self._on_header_bytes(st)
        elif isinstance(st, Connecting):
            st.early += data
            if len(st.early) > MAX_EARLY:
                self._refuse(wire.Status.BAD_HEADER, "too much data before the stream opened")
        elif isinstance(st, ControlChannel):
            self._on_control_bytes(st, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.splice is not None:
            self.splice.tunnel_lost(exc)  # a running stream ends first (and is logged)
        self._go(TunnelEvent.LOST, Closed())
        self.hub.heap_policy.note()
        self.office.tunnels.discard(self)
        if self.office.control is self:
            self.office.control = None
            log.info(
                "%s",
                Line(
                    "control channel closed",
                    office=self.office.name,
                    peer=f"{self.peer[0]}:{self.peer[1]}",
                    reason=str(exc) if exc else None,
                ),
            )

    # -- the open header -------------------------------------------------------------
    def _on_header_bytes(self, st: AwaitHeader) -> None:
        if not st.started:
            # The pool's idle allowance ends with the first header byte: from here a
            # slow (or one byte a second) header has header_timeout to complete.
            st.started = True
            self._arm(st, self.hub.cfg.limits.header_timeout)
        try:
            parsed = wire.parse_open(st.buf)
        except wire.UnsupportedVersion as exc:
            self._refuse(
                wire.Status.UNSUPPORTED_VERSION,
                f"wire version {exc.version} not supported (this hub speaks {wire.VERSION})",
            )
            return
        except DecodeError as exc:
            self._refuse(wire.Status.BAD_HEADER, exc.reason)
            return
        if parsed is None:
            return
        header, used = parsed
        rest = st.buf[used:]
        if isinstance(header, wire.OpenControl):
            self._start_control(header, bytes(rest))
            return
        office = self.office
        service = self.hub.cfg.services.get(header.service)
        record = self.hub.registry.get(office.name)
        if service is None:
            self._refuse(
                wire.Status.UNKNOWN_SERVICE, f"no service {header.service!r}", (header, 0.0)
            )
        elif record is None or header.service not in record.services:
            self._refuse(
                wire.Status.NOT_ALLOWED,
                f"office {office.name} may not use {header.service!r}",
                (header, 0.0),
            )
        else:
            conn = Connecting(header, time.monotonic(), rest)
            self._go(TunnelEvent.OPEN_STREAM, conn)
            self.transport.pause_reading()
            office.streams_total += 1
            self.streams += 1
            if self.streams > 1:
                self.hub.streams_reused += 1
            self.hub.spawn(self._connect_backend(conn))

    def _refuse(
        self,
        status: wire.Status,
        reason: str,
        stream: tuple[wire.OpenStream, float] | None = None,
    ) -> None:
        """Answer a status, close, and log it: as the stream's one line when it was one
        (``stream``: its header and when it opened; a CONNECTING tunnel's own)."""
        st = self.phase
        if stream is None and isinstance(st, Connecting):
            stream = (st.header, st.opened_at)
        if stream is not None:
            self._log_stream(stream, None, "refused", logging.WARNING, status.name, reason)
        else:
            log.warning(
                "%s",
                Line(
                    "tunnel refused",
                    office=self.office.name,
                    peer=f"{self.peer[0]}:{self.peer[1]}",
                    status=status.name,
                    reason=reason,
                ),
            )
        self._go(TunnelEvent.REFUSED, Closed())
        self.hub.count_status(status, self.office)
        if not self.transport.is_closing():
            self.transport.write(wire.encode_status(wire.StatusReply(status, reason[:200])))
            self.transport.close()

    async def _connect_backend(self, conn: Connecting) -> None:
        why = await self.hub.dial(
            conn.header.service, lambda trans, end, where: self._spliced(conn, trans, end, where)
        )
        if why is not None and self.phase is conn:
            self._refuse(wire.Status.BACKEND_DOWN, why)

    def _spliced(
        self, conn: Connecting, btrans: asyncio.Transport, bend: PlainEnd, address: str
    ) -> None:
        """The backend at ``address`` connected (called the moment it did, before the
        loop runs anything else): answer OK and splice, or close it if the tunnel left."""
        if self.phase is not conn:
            abort_with_rst(btrans)  # the tunnel went away meanwhile
            self._log_stream(
                (conn.header, conn.opened_at), None, "tunnel-lost",
                reason="tunnel lost before the backend connected",
            )  # fmt: skip
            return
        tune_lan(btrans.get_extra_info("socket"))
        # This tunnel now carries a client: a WAN outage stalls it, not cuts it.
        carry_stream(self.transport.get_extra_info("socket"), self.hub.sockets, True)
        is_ipp = conn.header.service == ipp_relay.SERVICE
        if is_ipp and ipp_relay.loopback_backend(btrans):
            # Never hand an office's request to cupsd as a local one (printing/ipp_relay).
            abort_with_rst(btrans)
            self._refuse(wire.Status.BACKEND_DOWN, f"ipp backend {address} is loopback")
            return
        self.transport.write(wire.encode_status(wire.StatusReply(wire.Status.OK)))
        gate = None
        if is_ipp:
            gate = ipp_relay.IppFilter(
                self._ipp_info(conn.header), self._ipp_policy, self.office.count_ipp_refused
            )
        # The IPP gate's streams are never reused: it ends them itself (Forward.end).
        keep = self.reuse and gate is None
        splice = Splice(btrans, self.transport, self._stream_done, gate, keep_tunnel=keep)
        self._go(TunnelEvent.BACKEND_UP, Relaying(conn.header, conn.opened_at, splice))
        if conn.early:
            splice.tunnel_data(bytes(conn.early))
        bend.attach(splice)
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def _ipp_info(self, h: wire.OpenStream) -> StreamInfo:
        return StreamInfo(
            self.office.name, f"{h.client_host}:{h.client_port}", h.local_host, h.local_port
        )

    def _ipp_policy(self) -> PrinterPolicy:
        """The office's printer list as the registry said when the hub last loaded it."""
        return self.office.printer_policy

    def _stream_done(self, splice: Splice) -> None:
        self.office.bytes_up += splice.up
        self.office.bytes_down += splice.down
        st = self.phase
        if isinstance(st, Relaying):  # a splice exists only while relaying
            result, status, reason = streamlog.result_fields(splice.result)
            self._log_stream((st.header, st.opened_at), splice, result, status=status,
                             reason=reason)  # fmt: skip
            if not splice.keep_tunnel:
                self._go(TunnelEvent.STREAM_ENDED, Closed())
            elif splice.result is not None and splice.result.ok:
                self._reuse(splice)
            else:
                self._go(TunnelEvent.STREAM_ENDED, Closed())  # the splice cut the tunnel

    def _reuse(self, splice: Splice) -> None:
        """The stream ended cleanly on a reuse tunnel: END, then wait for the next
        header as a new tunnel does; close instead when anything is in doubt."""
        t = self.transport
        if splice.reader.after_eof or t.is_closing():
            # Bytes after the edge's EOF: it did not wait for our END (a bug or worse).
            self._go(TunnelEvent.STREAM_ENDED, Closed())
            self.close()
            return
        t.write(wire.END_FRAME)
        idle = AwaitHeader()
        self._go(TunnelEvent.STREAM_REUSED, idle)
        # Back to an idle pool tunnel: a dead WAN link is noticed in seconds again.
        carry_stream(t.get_extra_info("socket"), self.hub.sockets, False)
        self._arm(idle, self.hub.cfg.limits.idle_timeout)
        t.resume_reading()  # the splice may have paused it (backpressure)

    def _log_stream(
        self,
        stream: tuple[wire.OpenStream, float] | None,
        splice: Splice | None,
        result: str,
        level: int = logging.INFO,
        status: str | None = None,
        reason: str | None = None,
    ) -> None:
        """The stream's one line (spokeshare.tunnel.streamlog), counted by result in the
        office's ``streams_ended``: at the hub the splice's plain end is the backend, so
        ``to_hq`` is what it wrote there (``down``)."""
        h, opened_at = stream if stream is not None else (None, 0.0)
        stream_log.log(
            level,
            "%s",
            streamlog.stream_line(
                self.office.name,
                f"{h.client_host}:{h.client_port}" if h else "-",
                h.service if h else "-",
                to_hq=splice.down if splice else 0,
                to_office=splice.up if splice else 0,
                duration_s=time.monotonic() - opened_at if opened_at else 0.0,
                result=result,
                status=status,
                reason=reason,
            ),
        )
        ended = self.office.streams_ended
        ended[result] = ended.get(result, 0) + 1

    # -- control channel -------------------------------------------------------------
    def _start_control(self, header: wire.OpenControl, rest: bytes) -> None:
        office = self.office
        now = time.monotonic()
        ctl = ControlChannel(
            wire.FrameReader(allow_control=True),
            control.Heartbeat(self.hub.heartbeat_cfg, now),
        )
        self._go(TunnelEvent.OPEN_CONTROL, ctl)
        if office.control is not None:
            office.control.close()
        office.control = self
        office.version = header.edge_version
        office.last_seen = time.time()
        self.transport.write(wire.encode_status(wire.StatusReply(wire.Status.OK)))
        log.info(
            "%s",
            Line(
                "control channel up",
                office=office.name,
                peer=f"{self.peer[0]}:{self.peer[1]}",
                edge_version=header.edge_version,
            ),
        )
        self._heartbeat(ctl, ctl.heartbeat.handle_timer(now))  # the first ping, at once
        if rest:
            self._on_control_bytes(ctl, rest)

    def _on_control_bytes(self, ctl: ControlChannel, data: bytes | memoryview) -> None:
        office = self.office
        try:
            events = ctl.frames.feed(data)
            messages = [
                control.decode_json(ev.message)
                for ev in events
                if isinstance(ev, wire.ControlReceived)
            ]
        except DecodeError as exc:
            log.warning(
                "%s",
                Line("control channel lost", office=office.name,
                     reason=f"bad control frame ({exc.reason}); closing"),
            )  # fmt: skip
            self.close()
            return
        if len(messages) != len(events):
            log.warning(
                "%s",
                Line("control channel lost", office=office.name,
                     reason="a stream frame on the control channel; closing"),
            )  # fmt: skip
            self.close()
            return
        for msg in messages:
            office.last_seen = time.time()
            # time.time(): the hub's pongs carry its wall clock (the edge's skew estimate)
            self._heartbeat(ctl, ctl.heartbeat.receive(msg, time.monotonic(), wall=time.time()))

    def _wake(self, ctl: ControlChannel) -> None:
        ctl.timer = None
        if self.phase is ctl:
            self._heartbeat(ctl, ctl.heartbeat.handle_timer(time.monotonic()))

    def _heartbeat(self, ctl: ControlChannel, commands: list[control.Command]) -> None:
        """Carry out what the heartbeat decided, then sleep until it is next due."""
        office = self.office
        for cmd in commands:
            if isinstance(cmd, control.Send):
                self.send_control(cmd.message)
            elif isinstance(cmd, control.RttMeasured):
                office.rtt = cmd.rtt
            elif isinstance(cmd, control.PeerStats):
                office.edge_report = cmd.report
            elif isinstance(cmd, control.PeerPresence):
                office.presence = cmd.presence
            elif isinstance(cmd, control.PeerLost):
                log.warning(
                    "%s",
                    Line("control channel lost", office=office.name, silence_s=cmd.silence,
                         reason="no heartbeat"),
                )  # fmt: skip
                self.abort("heartbeat lost")
                return
            elif isinstance(cmd, control.Deliver):
                if isinstance(cmd.message, control.RenewRequest):
                    self._renewal_requested(cmd.message)
            # PeerRevoked: only the hub revokes; an edge saying so is ignored
        if self.phase is not ctl:
            return
        due = ctl.heartbeat.get_timer()
        if ctl.timer is not None:
            ctl.timer.cancel()
            ctl.timer = None
        if due is not None:
            delay = max(0.0, due - time.monotonic())
            ctl.timer = asyncio.get_running_loop().call_later(delay, self._wake, ctl)

    def _renewal_requested(self, req: control.RenewRequest) -> None:
        """The office asks for a new certificate (spokeshare.renewal): issue it off the
        event loop (registry lock, CA key) and answer on this channel."""
        office = self.office
        if office.renewing:
            self.send_control(control.RenewRefused(req.id, "a renewal is already in progress"))
            return
        office.renewing = True
        self.hub.spawn(self._renew(req))

    async def _renew(self, req: control.RenewRequest) -> None:
        office = self.office
        hub = self.hub
        try:
            if enrollment.has_ca_key(hub.directory, hub.cfg.ca_key):
                result = await asyncio.to_thread(
                    enrollment.renew_from_request,
                    hub.directory,
                    office.name,
                    req.csr,
                    None,
                    self._peer_serial(),
                    hub.cfg.ca_key,
                )
            else:
                result = await hub.renew_via_spool(office.name, req.csr, self._peer_serial())
        except (EnrollmentError, OSError) as exc:
            log.error("%s", Line("certificate not issued", office=office.name, error=exc))
            result = renewal.Refuse("the hub cannot issue certificates now (see its log)")
        finally:
            office.renewing = False
        if isinstance(result, renewal.Refuse):
            reason = result.reason[: control.MAX_REASON]
            office.renew_refused = (time.time(), reason)
            log.warning(
                "%s", Line("certificate renewal refused", office=office.name, reason=reason)
            )
            self.send_control(control.RenewRefused(req.id, reason))
            return
        cert, ca_cert = result
        office.renew_refused = None
        log.info(
            "%s",
            Line(
                "certificate renewed",
                office=office.name,
                serial=f"{cert.serial_number:x}",
                not_after=cert.not_valid_after_utc.isoformat(timespec="seconds"),
            ),
        )
        self.hub.reload_registry()  # the new serial is admitted from now on
        der = serialization.Encoding.DER
        chain = (cert.public_bytes(der), ca_cert.public_bytes(der))
        self.send_control(control.RenewIssued(req.id, chain))

    def _peer_serial(self) -> int | None:
        """The serial of the certificate this tunnel authenticated with."""
        sslobj = self.transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        return x509.load_der_x509_certificate(der).serial_number if der else None

    def send_control(self, message: control.ControlMessage) -> None:
        """Write one control message, if this is a control channel still open."""
        if isinstance(self.phase, ControlChannel) and not self.transport.is_closing():
            self.transport.write(control.encode(message))


class Hub:
    """The hub daemon: servers, the office table, housekeeping."""

    def __init__(
        self,
        cfg: HubConfig,
        directory: Path,
        sockets: SocketConfig | None = None,
        worker: int | None = None,
    ) -> None:
        self.cfg = cfg
        #: What every tunnel reads its edge's bytes into (relay.ReadBuffer).
        self.reads = ReadBuffer()
        #: This process's index when the hub runs several workers (None: the only one).
        self.worker = worker
        self.directory = directory
        self.sockets = sockets or cfg.sockets or SocketConfig()
        #: Sockets given by the caller stay; else a reload takes hub.toml's [sockets].
        self._sockets_given = sockets is not None
        #: 1 for the configuration the hub started with, +1 for each reload applied.
        self.config_generation = 1
        #: Reloads refused (a bad hub.toml: the configuration in use was kept).
        self.reload_failures = 0
        #: Every control channel's heartbeat: a ping each heartbeat_interval, the edge
        #: lost after three silent intervals (control.HeartbeatConfig.from_interval).
        self.heartbeat_cfg = control.HeartbeatConfig.from_interval(cfg.heartbeat_interval)
        #: Several hubs (deployment.toml lists more than one address): this hub's snapshot
        #: also goes to the shared directory (hubstatus.shared_path).
        self.shared_status = len(enrollment.hub_addresses(directory)) > 1
        self.registry: dict[str, enrollment.OfficeRecord] = {}
        #: What the registry file was when last read (mtime, size, inode; 0: absent).
        self._registry_mtime: tuple[int, int, int] | int | None = None
        self.offices: dict[str, OfficeState] = {}
        self.ssl = tls.server_context(
            (directory / "ca.crt").read_bytes(),
            (directory / "hub.crt").read_bytes(),
            (directory / "hub.key").read_bytes(),
        )
        self.listeners: list[socket.socket] = []
        self.status_server: asyncio.Server | None = None
        self.handshakes = 0
        self.handshake_failures = 0
        #: Streams opened on a tunnel that had carried one before (sequential reuse).
        self.streams_reused = 0
        #: Failed or refused connections per cause (tls.handshake_cause, "evicted", ...).
        self.refusals: dict[str, int] = {}
        #: Statuses other than OK answered (open headers, admission), by wire.Status name.
        self.refusal_statuses: dict[str, int] = {}
        #: "SERVICE HOST:PORT" -> 1/0: that SMB backend offers SMB3 multichannel or not
        #: (_check_hq).
        self.backend_multichannel: dict[str, int] = {}
        self.refusal_log = LogLimiter(REFUSAL_LOG_INTERVAL)
        #: Errors writing the status files or serving the renewal spool: once a minute each.
        self.file_log = LogLimiter(60.0)
        #: Handshakes in progress, oldest first (see HubLimits.max_handshakes).
        self._handshaking: dict[asyncio.Task[None], float] = {}
        self._evicting: set[asyncio.Task[None]] = set()
        #: Handshakes and tunnels come and go by thousands under a flood; their freed
        #: TLS buffers go back to the system once it calms down (spokeshare.heap).
        self.heap_policy = heap.ReleasePolicy(interval=HEAP_RELEASE_INTERVAL)
        self.tasks = TaskSet(log, "connection task")
        self.spawn = self.tasks.spawn
        self._stopping = asyncio.Event()
        #: Each service's backends and their health (spokeshare.tunnel.backends).
        self.backends = self._backend_sets(cfg, {})
        #: Set when a probe may be due earlier than the probe loop sleeps.
        self._probe_wake = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Hub offices={len(self.offices)} tunnels={self.tunnel_count()}>"

    def tunnel_count(self) -> int:
        return sum(len(o.tunnels) for o in self.offices.values())

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self.reload_registry(force=True)
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        for host, port in self.cfg.listen:
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, _, _, _, addr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self.worker is not None:  # the kernel spreads connections over workers
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(addr)
                sock.listen(1024)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            self.listeners.append(sock)
            self.spawn(self._accept_loop(sock))
            log.info(
                "%s",
                Line(
                    "listening",
                    address=host,
                    port=sock.getsockname()[1],
                    services=",".join(self.cfg.services),
                ),
            )
        self.spawn(self._housekeeping())
        self.spawn(self._probe_loop())
        self.spawn(self._spool_loop())
        if self.cfg.check_backends and not self.worker:  # one process asks, not every worker
            self.spawn(self._check_hq())
        if self.cfg.status_listen is not None and not self.worker:
            from spokeshare import status

            host, port = self.cfg.status_listen
            self.status_server = await status.serve(
                host, port, self.merged_statistics, self.cfg.status_token
            )

    async def _check_hq(self) -> None:
        """Ask HQ's SMB backends what they tell clients (spokeshare.hqcheck); each
        answer goes into the statistics (``backend_multichannel``) and the status file."""
        from spokeshare import hqcheck

        for name, service in sorted(self.cfg.services.items()):
            for backend in service.backends:
                if name == "smb" or backend.port == 445:
                    offered = await hqcheck.check_smb_backend(name, backend.host, backend.port)
                    if offered is not None:
                        # keyed as HubStatistics.backends: "SERVICE HOST:PORT"
                        self.backend_multichannel[f"{name} {backend.address}"] = int(offered)
                        self.write_status()

    # -- backends --------------------------------------------------------------------
    @staticmethod
    def _backend_sets(
        cfg: HubConfig, old: dict[str, backends.BackendSet]
    ) -> dict[str, backends.BackendSet]:
        """A BackendSet per service of ``cfg``, keeping what ``old`` knows of a backend
        still listed (a reload)."""
        now = time.monotonic()
        policy = probe_policy(cfg.limits)
        out = {}
        for name, svc in cfg.services.items():
            bset = backends.BackendSet(
                name, [b.address for b in svc.backends], svc.balance, policy, now
            )
            if name in old:
                bset.carry_over(old[name])
            out[name] = bset
        return out

    async def dial(self, service: str, connected: Connected) -> str | None:
        """Connect a new stream to a backend of ``service``: None when one connected
        (``connected`` was called with its transport, protocol and HOST:PORT, at once,
        from the task that connected it), else why none did.

        Backends are tried as their BackendSet chooses, each at most once; when one
        has not connected within backends.ATTEMPT_DELAY the next starts beside it
        (RFC 8305 section 5) and the first to connect wins; the others are closed
        when they connect. Every attempt reports to the backend's health, also one
        that finishes after the race is decided.
        """
        svc = self.cfg.services.get(service)
        bset = self.backends.get(service)
        if svc is None or bset is None:
            return f"no service {service!r}"
        race = _Race(connected)
        tried: list[int] = []
        running = 0
        errors: list[str] = []
        try:
            while True:
                i = bset.choose(tried)
                if i is not None:
                    tried.append(i)
                    running += 1
                    self.spawn(self._attempt(service, svc.backends[i], i, race))
                if running == 0:
                    return "; ".join(errors) or "no backend"
                wait = backends.ATTEMPT_DELAY if len(tried) < len(bset) else None
                try:
                    async with asyncio.timeout(wait):
                        k, error = await race.results.get()
                except TimeoutError:
                    continue  # still connecting: start the next beside it
                running -= 1
                if error is None:
                    return None
                errors.append(f"backend {svc.backends[k].address}: {error}")
        finally:
            race.done = True  # attempts still running close what they connect

    async def _attempt(self, service: str, b: Backend, i: int, race: _Race) -> None:
        """One connect of a stream to backend ``b`` (number ``i`` of the race)."""
        loop = asyncio.get_running_loop()
        timeout = self.cfg.limits.backend_connect_timeout
        try:
            async with asyncio.timeout(timeout):
                if b.reserved_source_port:  # RFC 1179 section 3.1: LPD wants port 721-731
                    sock = await reserved_port.connect(b.host, b.port)
                    try:
                        btrans, bend = await loop.create_connection(PlainEnd, sock=sock)
                    except BaseException:
                        sock.close()
                        raise
                else:
                    btrans, bend = await loop.create_connection(PlainEnd, b.host, b.port)
        except (OSError, TimeoutError) as exc:
            reason = _connect_error(exc, timeout)
            del exc
            self._backend_result(service, b.address, reason, "stream")
            if not race.done:
                race.results.put_nowait((i, reason))
            return
        self._backend_result(service, b.address, None, "stream")
        if race.done:
            abort_with_rst(btrans)  # another backend won, or the stream is gone
            return
        race.done = True
        race.results.put_nowait((i, None))
        # Before the loop runs anything else: a backend that closes at once must find
        # the splice in place (its PlainEnd keeps what came early), as with one backend.
        race.connected(btrans, bend, b.address)

    async def _probe(self, service: str, b: Backend) -> None:
        """A health probe of ``b``: a TCP connect, closed at once."""
        loop = asyncio.get_running_loop()
        timeout = self.cfg.limits.backend_connect_timeout
        try:
            async with asyncio.timeout(timeout):
                trans, _ = await loop.create_connection(asyncio.Protocol, b.host, b.port)
        except (OSError, TimeoutError) as exc:
            reason = _connect_error(exc, timeout)
            del exc
            self._backend_result(service, b.address, reason, "probe")
            return
        trans.close()
        self._backend_result(service, b.address, None, "probe")

    def _backend_result(self, service: str, address: str, error: str | None, via: str) -> None:
        """A connect to ``address`` of ``service`` succeeded (``error`` None) or failed:
        tell its BackendSet (the current one: a reload may have replaced it) and log
        what changed."""
        bset = self.backends.get(service)
        if bset is None or address not in bset.addresses:
            return  # no longer configured
        i = bset.addresses.index(address)
        now = time.monotonic()
        if error is None:
            events = bset.connected(i, now, via)
        else:
            events = bset.failed(i, now, error, via)
        for ev in events:
            if isinstance(ev, backends.BackendDown):
                log.warning(
                    "%s",
                    Line("backend down", service=ev.service, backend=ev.address,
                         reason=ev.reason, retry_in_s=round(ev.retry_in, 1)),
                )  # fmt: skip
            else:
                log.info(
                    "%s",
                    Line("backend up", service=ev.service, backend=ev.address,
                         down_s=round(ev.down_for, 1), via=ev.via),
                )  # fmt: skip
        self._probe_wake.set()

    async def _probe_loop(self) -> None:
        """Probe each backend when its BackendSet says (down ones until they answer,
        up ones every backend_check_interval)."""
        while True:
            now = time.monotonic()
            for name, bset in self.backends.items():
                svc = self.cfg.services[name]
                for i in bset.handle_timer(now):
                    self.spawn(self._probe(name, svc.backends[i]))
            timers = [t for b in self.backends.values() if (t := b.get_timer()) is not None]
            delay = max(0.0, min(timers) - time.monotonic()) if timers else None
            self._probe_wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._probe_wake.wait()
            except TimeoutError:
                pass

    def backend_statistics(self) -> dict[str, BackendStatistics]:
        """Every service's backends now ("SERVICE HOST:PORT" -> BackendStatistics)."""
        mono, wall = time.monotonic(), time.time()
        out = {}
        for name, bset in sorted(self.backends.items()):
            for v in bset.view():
                out[f"{name} {v.address}"] = BackendStatistics(
                    service=name,
                    address=v.address,
                    position=v.position,
                    up=v.health is backends.Health.UP,
                    since=wall - (mono - v.since),
                    last_error=v.last_error,
                    failures=v.failures,
                    streams=v.streams,
                    checked=v.checked,
                )
        return out

    @property
    def ports(self) -> list[int]:
        return [int(s.getsockname()[1]) for s in self.listeners]

    async def _accept_loop(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(lsock)
            except OSError as exc:  # EMFILE and friends: say so, breathe, go on
                if lsock.fileno() < 0:
                    return  # closed by close()
                host, port = lsock.getsockname()[:2]
                log.error(
                    "%s", Line("accept failed", address=host, port=port, error=exc.strerror or exc)
                )
                await asyncio.sleep(0.1)
                continue
            if len(self._handshaking) >= self.cfg.limits.max_handshakes:
                self._evict_oldest_handshake()
            task = self.spawn(self.handshake(sock, (str(peer[0]), int(peer[1]))))
            if not task.done():
                self._handshaking[task] = time.monotonic()
                task.add_done_callback(self._handshake_ended)

    def _evict_oldest_handshake(self) -> None:
        """At the cap: the handshake in progress the longest gives way to the new one.

        An edge's handshake completes in one round trip; one that is still running
        after hundreds of newer ones arrived is a stalled or hostile client.
        """
        task = next(iter(self._handshaking))
        del self._handshaking[task]
        self._evicting.add(task)
        task.cancel()

    def _handshake_ended(self, task: asyncio.Task[None]) -> None:
        self._handshaking.pop(task, None)
        self._evicting.discard(task)

    def refused(self, cause: str, peer: tuple[str, int], line: Line) -> None:
        """Count a failed or refused connection; log ``line`` unless its kind from its
        address was logged less than REFUSAL_LOG_INTERVAL ago (the rest are summarised)."""
        self.refusals[cause] = self.refusals.get(cause, 0) + 1
        self.heap_policy.note()
        if self.refusal_log.admit(cause, peer[0], time.monotonic()):
            log.warning("%s", line)

    def count_status(self, status: wire.Status, office: OfficeState | None = None) -> None:
        """Count a status other than OK sent to an edge (and to ``office``, if known)."""
        self.refusal_statuses[status.name] = self.refusal_statuses.get(status.name, 0) + 1
        if office is not None:
            office.refused[status.name] = office.refused.get(status.name, 0) + 1

    async def serve_forever(self) -> None:
        await self.start()
        await self._stopping.wait()
        await self.close()

    def stop(self) -> None:
        self._stopping.set()

    def reload(self, load: Callable[[], HubConfig]) -> bool:
        """Take the configuration ``load`` returns (SIGHUP: hub.toml read again), for
        what happens from now on; True when it was applied.

        Applied: ``[services]`` (a new stream dials the backend named now; a removed
        service is refused UNKNOWN_SERVICE; a running stream keeps the backend it has),
        ``[limits]`` (the next time each is checked), ``heartbeat_interval`` (control
        channels opened from now on) and ``[sockets]`` (tunnels accepted from now on,
        unless sockets were given to the constructor). :data:`RESTART_ONLY` settings
        keep their values; one warning names those that differ. ``load`` raising
        ConfigError (not TOML, an unknown key, a bad value) changes nothing: one error
        line gives the reason. Logs ``config reloaded`` with the new generation.
        """
        old = self.cfg
        try:
            new = load()
        except ConfigError as exc:
            self.reload_failures += 1
            log.error(
                "%s",
                Line(
                    "config not reloaded",
                    file=exc.source or old.source,
                    generation=self.config_generation,
                    reason=str(exc),
                ),
            )
            return False
        pending = sorted(k for f, k in RESTART_ONLY.items() if getattr(new, f) != getattr(old, f))
        self.cfg = replace(new, **{f: getattr(old, f) for f in RESTART_ONLY})
        self.heartbeat_cfg = control.HeartbeatConfig.from_interval(self.cfg.heartbeat_interval)
        if not self._sockets_given:
            self.sockets = self.cfg.sockets
        self.backends = self._backend_sets(self.cfg, self.backends)
        self._probe_wake.set()
        self.config_generation += 1
        before, after = old.services, self.cfg.services
        log.info(
            "%s",
            Line(
                "config reloaded",
                file=self.cfg.source,
                generation=self.config_generation,
                services=",".join(after),
                added=",".join(n for n in after if n not in before) or None,
                removed=",".join(n for n in before if n not in after) or None,
                changed=",".join(n for n in after if n in before and before[n] != after[n])
                or None,
                limits_changed=",".join(
                    f.name for f in fields(old.limits)
                    if getattr(old.limits, f.name) != getattr(self.cfg.limits, f.name)
                ) or None,
            ),
        )  # fmt: skip
        if pending:
            log.warning(
                "%s",
                Line(
                    "config not applied until restart",
                    file=self.cfg.source,
                    generation=self.config_generation,
                    keys=",".join(pending),
                ),
            )
        return True

    async def close(self) -> None:
        for s in self.listeners:
            s.close()
        if self.status_server is not None:
            self.status_server.close()
        for o in self.offices.values():
            for t in list(o.tunnels):
                t.abort("hub shutting down")
        await self.tasks.aclose()
        self.write_status()
        log.info("%s", Line("hub stopped", worker=self.worker))

    # -- handshake and admission -----------------------------------------------------
    async def handshake(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        tune_wan(sock, self.sockets)
        proto = Handshaking()
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: proto,
                sock,
                ssl=self.ssl,
                ssl_handshake_timeout=self.cfg.limits.handshake_timeout,
            )
        except asyncio.CancelledError:
            # Evicted at the handshake cap, or the hub is stopping.
            sock.close()
            if asyncio.current_task() in self._evicting:
                self.handshake_failures += 1
                self.refused(
                    "evicted",
                    peer,
                    Line(
                        "handshake failed",
                        peer=f"{peer[0]}:{peer[1]}",
                        cause="evicted",
                        reason=f"dropped: {self.cfg.limits.max_handshakes} handshakes in "
                        "progress (limits.max_handshakes) and it was the oldest",
                    ),
                )
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:
            self.handshake_failures += 1
            reason = tls.describe_handshake_error(exc)
            cause = tls.handshake_cause(exc)
            # Drop the exception (its traceback holds this frame) before anything else.
            del exc
            sock.close()
            self.refused(
                cause,
                peer,
                Line("handshake failed", peer=f"{peer[0]}:{peer[1]}", cause=cause, reason=reason),
            )
            return
        self.handshakes += 1
        sslobj = transport.get_extra_info("ssl_object")
        if not tls.check_alpn(sslobj):
            self.refused(
                "alpn",
                peer,
                Line("tunnel refused", peer=f"{peer[0]}:{peer[1]}", cause="alpn",
                     reason=f"ALPN is not {' or '.join(wire.ALPNS)}"),
            )  # fmt: skip
            transport.abort()
            return
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        try:
            if not der:
                raise EnrollmentError("no client certificate")
            cert = x509.load_der_x509_certificate(der)
            name = pki.office_of(cert)
        except (EnrollmentError, ValueError) as exc:
            self.refused(
                "identity",
                peer,
                Line("tunnel refused", peer=f"{peer[0]}:{peer[1]}", cause="identity",
                     reason=str(exc)),
            )  # fmt: skip
            transport.abort()
            return
        why = self._admission(name, cert.serial_number)
        if why is not None:
            status, reason = why
            self.refused(
                f"admission:{status.name}",
                peer,
                Line(
                    "tunnel refused",
                    office=name,
                    peer=f"{peer[0]}:{peer[1]}",
                    status=status.name,
                    reason=reason,
                ),
            )
            self.count_status(status)
            transport.write(wire.encode_status(wire.StatusReply(status, reason)))
            transport.close()
            return
        if proto.lost:
            return  # gone while we checked it
        office = self.office_state(name)
        if len(office.tunnels) >= self.cfg.limits.max_tunnels_per_office:
            log.warning(
                "%s",
                Line(
                    "tunnel refused",
                    office=name,
                    peer=f"{peer[0]}:{peer[1]}",
                    status=wire.Status.BUSY.name,
                    reason=f"at its tunnel limit ({len(office.tunnels)}, "
                    "limits.max_tunnels_per_office)",
                ),
            )
            self.count_status(wire.Status.BUSY, office)
            transport.write(
                wire.encode_status(wire.StatusReply(wire.Status.BUSY, "too many tunnels"))
            )
            transport.close()
            return
        tunnel = HubTunnel(self, peer, transport, office, tls.reuse_agreed(sslobj))
        transport.set_protocol(tunnel)
        tunnel.start(bytes(proto.buf))

    def office_state(self, name: str) -> OfficeState:
        """The state of office ``name``, made from the registry on its first tunnel."""
        office = self.offices.get(name)
        if office is None:
            office = self.offices[name] = OfficeState(name)
            office.apply_record(self.registry.get(name))
        return office

    def _admission(self, name: str, serial: int) -> tuple[wire.Status, str] | None:
        rec = self.registry.get(name)
        if rec is None or not rec.accepts(serial):
            # Enrolled or renewed a moment ago? Don't wait for the next poll to find out.
            self.reload_registry()
            rec = self.registry.get(name)
        if rec is None:
            return wire.Status.REVOKED, f"office {name} is not enrolled"
        if rec.revoked is not None:
            return wire.Status.REVOKED, f"office {name} is revoked"
        if not rec.accepts(serial):
            return wire.Status.REVOKED, f"certificate of office {name} has been superseded"
        return None

    # -- renewals through the CA host (spokeshare.renewal_spool) ----------------------
    async def renew_via_spool(
        self, office: str, csr: bytes, in_use: int | None
    ) -> tuple[x509.Certificate, x509.Certificate] | renewal.Refuse:
        """This hub holds no CA key: leave the request in the shared spool for the CA
        host's hub and wait for its answer, a little less than the edge waits for ours
        (renewal.answer_timeout of the office's lifetime). Raises EnrollmentError when
        no answer comes in time (the CA host's hub is not running)."""
        rec = self.registry.get(office)
        days = rec.lifetime_days if rec is not None else enrollment.DEFAULT_DAYS
        wait = max(1.0, renewal.answer_timeout(days * 86400.0) - 1.0)
        rid = await asyncio.to_thread(
            renewal_spool.submit, self.directory, office, csr, in_use, self.cfg.name
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            await asyncio.sleep(SPOOL_POLL)
            got = await asyncio.to_thread(renewal_spool.answer, self.directory, rid)
            if isinstance(got, renewal.Refuse):
                return got
            if got is not None:
                return got.certificates()
        await asyncio.to_thread(renewal_spool.withdraw, self.directory, rid)
        host = enrollment.ca_host(self.directory) or "the CA host"
        raise EnrollmentError(
            f"no answer from the hub on {host} (it holds the CA key) within {wait:.0f}s"
        )

    async def _spool_loop(self) -> None:
        """On the CA host: answer the renewal requests other hubs leave in the spool."""
        while True:
            await asyncio.sleep(SPOOL_POLL)
            if not enrollment.has_ca_key(self.directory, self.cfg.ca_key):
                continue
            try:
                done = await asyncio.to_thread(renewal_spool.serve, self.directory, self.cfg.ca_key)
            except (EnrollmentError, OSError) as exc:
                if self.file_log.admit("spool", "", time.monotonic()):
                    log.error("%s", Line("certificate not issued", office="-", error=exc))
                continue
            for office, ans in done:
                if isinstance(ans, renewal.Refuse):
                    log.warning("%s", Line("certificate renewal refused", office=office,
                                           reason=f"{ans.reason} (for another hub)"))  # fmt: skip
                else:
                    log.info("%s", Line("certificate issued for another hub", office=office))
            if done:
                self.reload_registry()

    # -- housekeeping ----------------------------------------------------------------
    def reload_registry(self, force: bool = False) -> None:
        path = self.directory / enrollment.REGISTRY
        try:
            st = os.stat(path)
            # size and inode too: a shared filesystem may keep coarse mtimes, and
            # save_registry replaces the file (a new inode) on every write
            mtime: tuple[int, int, int] | int = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            mtime = 0
        if not force and mtime == self._registry_mtime:
            return
        try:
            self.registry = enrollment.load_registry(self.directory)
        except EnrollmentError as exc:
            log.error("%s", Line("office registry not reloaded", file=path, error=exc))
            return
        self._registry_mtime = mtime
        for name, office in self.offices.items():
            rec = self.registry.get(name)
            office.apply_record(rec)
            if rec is None or rec.revoked is not None:
                self.cut_office(office, "revoked")
            else:
                for t in list(office.tunnels):
                    sslobj = t.transport.get_extra_info("ssl_object")
                    der = sslobj.getpeercert(binary_form=True) if sslobj else None
                    if der and not rec.accepts(x509.load_der_x509_certificate(der).serial_number):
                        t.abort("certificate superseded")

    def cut_office(self, office: OfficeState, reason: str) -> None:
        if not office.tunnels:
            return
        log.warning(
            "%s", Line("office cut", office=office.name, reason=reason, tunnels=len(office.tunnels))
        )
        if office.control is not None:
            office.control.send_control(control.Revoked())
        for t in list(office.tunnels):
            t.abort(f"office {reason}")

    async def _housekeeping(self) -> None:
        """Once a second: registry changes, the refusal summary, the status file. (Each
        control channel's heartbeat wakes itself: HubTunnel._heartbeat.)"""
        while True:
            self.reload_registry()
            self._calm_down(time.monotonic())
            self.write_status()
            await asyncio.sleep(1.0)

    def _calm_down(self, now: float) -> None:
        """Once a second: summarise the refusals held back from the log, and after a
        burst of connections give the freed heap back (spokeshare.heap)."""
        held = self.refusal_log.summary(now)
        if held:
            log.warning(
                "%s",
                Line(
                    "refusals not logged",
                    count=sum(held.values()),
                    interval_s=round(REFUSAL_LOG_INTERVAL),
                    causes=",".join(f"{k}:{v}" for k, v in sorted(held.items())),
                ),
            )
        calm = len(self._handshaking) < max(1, self.cfg.limits.max_handshakes // 4)
        if calm and self.heap_policy.due(now):
            heap.release_free_memory()

    def statistics(self) -> HubStatistics:
        """This process's snapshot now (spokeshare.stats; ``time`` is the wall clock)."""
        return HubStatistics(
            version=__version__,
            pid=os.getpid(),
            pids=(os.getpid(),),
            time=time.time(),
            workers=1,
            handshakes=self.handshakes,
            handshake_failures=self.handshake_failures,
            streams_reused=self.streams_reused,
            handshakes_in_progress=len(self._handshaking),
            refusals=dict(sorted(self.refusals.items())),
            refusal_statuses=dict(sorted(self.refusal_statuses.items())),
            heap_releases=self.heap_policy.releases,
            tunnels=self.tunnel_count(),
            backend_multichannel=dict(sorted(self.backend_multichannel.items())),
            hubs=(self.cfg.name,),
            offices={n: self._office_statistics(o) for n, o in sorted(self.offices.items())},
            backends=self.backend_statistics(),
        )

    def _office_statistics(self, office: OfficeState) -> OfficeStatistics:
        """The office's statistics, naming this hub for its control channel and tunnels."""
        st = office.statistics()
        return replace(
            st,
            control_hub=self.cfg.name if office.control is not None else "",
            hub_tunnels={self.cfg.name: len(office.tunnels)} if office.tunnels else {},
        )

    def merged_statistics(self) -> HubStatistics:
        """This process's statistics, merged with the fresh snapshots of the other
        workers and of the other hubs sharing the deployment directory
        (hubstatus.merge; this process first, so its pid and version lead)."""
        mine = self.statistics()
        others = [
            s
            for s in hubstatus.read_deployment(self.directory, self.cfg.state_dir)
            if not (s.get("pid") == mine.pid and s.get("hubs") == [self.cfg.name])
        ]
        if not others:
            return mine
        return hubstatus.merge([mine, *others]) or mine

    def write_status(self) -> None:
        """Write :meth:`statistics` to this process's status file (hubstatus.status_path)
        and, with several hubs, to its file in the shared directory
        (hubstatus.shared_path), atomically; an OSError is logged (once a minute per
        file), not raised."""
        text = json.dumps(to_json(self.statistics()), indent=1)
        shared = hubstatus.shared_path(self.directory, self.cfg.name, self.worker)
        paths = [hubstatus.status_path(self.cfg.state_dir, self.worker)]
        if self.shared_status:
            paths.append(shared)
        for path in paths:
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                if path is shared:
                    path.parent.mkdir(mode=0o700, exist_ok=True)
                tmp.write_text(text)
                os.replace(tmp, path)
            except OSError as exc:
                if self.file_log.admit("status-file", str(path), time.monotonic()):
                    log.error("%s", Line("state not written", file=path, error=exc))
