"""Relaying one stream: a plain TCP connection spliced to a framed tunnel.

Both ends of spokeshare do the same thing once a stream is open: the edge splices a
LAN client's TCP connection to its tunnel, the hub splices the tunnel to the backend's
TCP connection. :class:`Splice` owns that and nothing else.

How it works
------------
- plain -> tunnel: each read becomes one DATA frame (header and payload written
  together, no copy). A TCP FIN from the plain side becomes an EOF frame.
- tunnel -> plain: TLS decrypts into a buffer the daemon shares among its tunnels
  (:class:`ReadBuffer`); the DATA payloads of one read go to the plain side as views of
  it, in one write (one system call), whatever the number of frames; an EOF frame
  becomes a TCP FIN (``write_eof``) on the plain side. Half-close is explicit in both
  directions.
- Backpressure: when one transport's write buffer passes its high-water mark the
  other transport stops reading, until the buffer drains below the low-water mark.
  Memory per stream is therefore bounded by two write buffers, whatever the peers do,
  plus at most one :class:`ReadBuffer` given away to a plain side that could not send
  a view at once (while anything waits there, payloads are copied instead).
- Endings: when both EOFs have passed, both transports are closed gracefully (with
  ``keep_tunnel``, on a tunnel that agreed on sequential reuse, only the plain side:
  the owner decides whether the tunnel carries the next stream). If
  either side goes away otherwise (RST, TLS error, timeout), the other side is
  aborted: the plain side with an RST (SO_LINGER 0), the tunnel by dropping it, which
  the far end sees as a tunnel lost without EOF and turns into an RST in turn.
- A filter (:class:`StreamFilter`, the hub's IPP gate) may stand between the two: it
  then gets the plain side's bytes and FIN and the tunnel's payloads and EOF, and says
  what to write to each side and when the stream ends (:class:`Forward`). The tunnel
  side (framing, counters, backpressure, aborts) stays the splice's.

States
------
The stream as the tunnel sees it; every transition is in :data:`TRANSITIONS`, and an
event a state does not list raises :class:`UsageError` (a bug, never a peer's doing:
the callbacks check the state before they move it)::

    RELAYING --SEND_EOF--> SENT_EOF --GOT_EOF--> DONE   plain FIN first
    RELAYING --GOT_EOF--> GOT_EOF --SEND_EOF--> DONE    tunnel EOF first
    RELAYING --FILTER_END--> ENDED --GOT_EOF--> DONE    the filter ended the stream
    GOT_EOF --FILTER_END--> DONE
    any state but DONE --FAIL--> DONE                   reset, lost, bad frame, abort

``SENT_EOF``: our EOF frame is out, the tunnel still brings data for the plain side.
``GOT_EOF``: the peer's EOF frame came (the plain side got its FIN), the plain side
still sends. ``ENDED``: the filter ended the stream: our EOF frame is out and the plain
side closed; only the peer's EOF frame is awaited. How a ``DONE`` stream ended is its
:class:`Ending`.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from spokeshare.errors import DecodeError, UsageError
from spokeshare.tunnel import wire
from spokeshare.tunnel.streamlog import Ending, Result

#: Per-transport write buffer bounds (bytes). The kernel's socket buffers hold the
#: bandwidth-delay product; these only smooth the hand-off between the two sockets.
HIGH_WATER = 512 * 1024
LOW_WATER = 128 * 1024
_LINGER0 = struct.pack("ii", 1, 0)
#: Up to one TLS record's worth of payload (RFC 8446 §5.1: 2^14), copying the payload
#: behind its frame header is cheaper than a second record.
SMALL_FRAME = 16 * 1024


def abort_with_rst(transport: asyncio.Transport) -> None:
    """Close a TCP transport with an RST, so the peer sees an abortive close."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        except OSError:  # already gone: abort() below is all that is left to do
            transport.abort()
            return
    transport.abort()


class State(enum.Enum):
    """Where a :class:`Splice` is (module docstring, "States")."""

    RELAYING = "relaying"
    SENT_EOF = "sent-eof"
    GOT_EOF = "got-eof"
    ENDED = "ended"
    DONE = "done"


class Event(enum.Enum):
    """What moves a :class:`Splice` from one :class:`State` to the next."""

    SEND_EOF = "send-eof"  # the plain side's FIN: our EOF frame written
    GOT_EOF = "got-eof"  # the peer's EOF frame read
    FILTER_END = "filter-end"  # the filter ended the stream
    FAIL = "fail"  # reset, lost, bad frame or aborted from outside


#: Every transition a splice makes: (state, event) -> next state.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.RELAYING, Event.SEND_EOF): State.SENT_EOF,
    (State.RELAYING, Event.GOT_EOF): State.GOT_EOF,
    (State.RELAYING, Event.FILTER_END): State.ENDED,
    (State.SENT_EOF, Event.GOT_EOF): State.DONE,
    (State.GOT_EOF, Event.SEND_EOF): State.DONE,
    (State.GOT_EOF, Event.FILTER_END): State.DONE,
    (State.ENDED, Event.GOT_EOF): State.DONE,
    **{(s, Event.FAIL): State.DONE for s in State if s is not State.DONE},
}


@dataclass(frozen=True, slots=True)
class Forward:
    """What a :class:`StreamFilter` decided after one input: bytes for each side (in
    order) and whether the stream ends (our EOF frame, then the plain side closed)."""

    to_plain: tuple[bytes, ...] = ()
    to_tunnel: tuple[bytes, ...] = ()
    end: bool = False


class StreamFilter(Protocol):
    """What stands between the two sides of a filtered :class:`Splice`.

    Each call gets one input and returns what to forward. ``plain_eof`` may be called
    again after the plain side closed (a clean close counts as its FIN); a filter that
    cares ignores the repeat.
    """

    @property
    def reading_tunnel(self) -> bool:
        """False while the tunnel must not be read (e.g. an answer is on its way)."""
        ...

    def plain_data(self, data: bytes) -> Forward: ...

    def plain_eof(self) -> Forward: ...

    def tunnel_data(self, data: bytes) -> Forward: ...

    def tunnel_eof(self) -> Forward: ...


class Splice:
    """One stream's relay between ``plain`` (TCP) and ``tunnel`` (TLS, framed).

    ``on_done`` is called once, when the stream reaches ``DONE`` (``result`` set), except
    after :meth:`refused`. ``up`` and ``down`` count payload bytes towards and from the
    tunnel. With a ``filter`` the plain side's bytes and the tunnel's payloads go through
    it (:class:`StreamFilter`) instead of straight across.

    ``keep_tunnel`` (a tunnel that agreed on sequential reuse, docs/protocol.md): a
    clean ending closes only the plain side and leaves the tunnel to ``on_done``'s
    owner, and bytes the peer sends after its EOF frame are kept in
    ``reader.after_eof`` once the stream is ``DONE`` (before that they are a bad frame,
    as without it). Failures end the tunnel as always.
    """

    __slots__ = (
        "plain",
        "tunnel",
        "reader",
        "up",
        "down",
        "state",
        "result",
        "filter",
        "keep_tunnel",
        "_on_done",
        "_plain_full",
    )

    def __init__(
        self,
        plain: asyncio.Transport,
        tunnel: asyncio.Transport,
        on_done: Callable[[Splice], None],
        filter: StreamFilter | None = None,
        keep_tunnel: bool = False,
    ) -> None:
        self.plain = plain
        self.tunnel = tunnel
        self.keep_tunnel = keep_tunnel
        self.reader = wire.FrameReader(keep_after_eof=keep_tunnel)
        self.up = 0  # bytes plain -> tunnel
        self.down = 0  # bytes tunnel -> plain
        self.state = State.RELAYING
        self.result: Ending | None = None
        self.filter = filter
        self._on_done = on_done
        #: The plain side's write buffer is above HIGH_WATER: the tunnel is not read.
        self._plain_full = False
        plain.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        tunnel.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def __repr__(self) -> str:
        return (
            f"<Splice {self.state.value} up={self.up} down={self.down} result={self.result}"
            f"{' filter=' + repr(self.filter) if self.filter is not None else ''}>"
        )

    def _move(self, event: Event) -> State:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise UsageError(f"splice in state {self.state.value} cannot {event.value}") from None
        return self.state

    # -- plain side ------------------------------------------------------------------
    def plain_data(self, data: bytes) -> None:
        st = self.state
        if st is not State.RELAYING and st is not State.GOT_EOF:
            return
        if self.filter is not None:
            self._apply(self.filter.plain_data(data))
        elif len(data) <= SMALL_FRAME:  # the common case, inline (see _send)
            self.up += len(data)
            self.tunnel.write(wire.data_header(len(data)) + data)
        else:
            self._send(data)

    def plain_eof_received(self) -> None:
        if self.state not in (State.RELAYING, State.GOT_EOF):
            return
        if self.filter is not None:
            self._apply(self.filter.plain_eof())
            return
        self.tunnel.write(wire.EOF_FRAME)
        if self._move(Event.SEND_EOF) is State.DONE:
            self._finish()

    def plain_lost(self, exc: Exception | None) -> None:
        if self.state in (State.DONE, State.ENDED):
            return  # ENDED: we closed it ourselves
        if self.filter is not None and exc is None:
            # A filter's peer may end by closing (HTTP's close-delimited answer).
            if self.state in (State.RELAYING, State.GOT_EOF):
                self._apply(self.filter.plain_eof())
                return
        self._fail(Ending(Result.PLAIN_RESET if exc else Result.PLAIN_CLOSED))
        self.tunnel.abort()

    def plain_pause_writing(self) -> None:
        self._plain_full = True
        self._update_tunnel_reading()

    def plain_resume_writing(self) -> None:
        self._plain_full = False
        self._update_tunnel_reading()

    # -- tunnel side -----------------------------------------------------------------
    def tunnel_data(self, data: bytes | memoryview) -> None:
        """Bytes from the tunnel: their DATA payloads go to the plain side in one write
        (views of ``data``, no copy), an EOF frame among them ends our read side."""
        if self.state is State.DONE:
            return
        reader = self.reader
        had_eof = reader.eof
        try:
            parts = reader.payloads(data)
        except DecodeError as exc:
            self._fail(Ending(Result.BAD_FRAME, exc.reason))
            self.tunnel.abort()
            abort_with_rst(self.plain)
            return
        if parts:
            if self.filter is None:
                plain = self.plain
                if plain.get_write_buffer_size():
                    # Queued behind what is waiting anyway: a copy, so that a slow
                    # reader holds its bytes and never more than one read buffer
                    # (TunnelEnd.buffer_updated gives that one away).
                    data = b"".join(parts)
                    self.down += len(data)
                    plain.write(data)
                elif len(parts) == 1:
                    part = parts[0]
                    self.down += len(part)
                    plain.write(part)
                else:
                    self.down += sum(map(len, parts))
                    plain.writelines(parts)  # one system call for the whole read
            else:
                for part in parts:
                    if self.result is not None:
                        return
                    self.down += len(part)
                    if self.state is not State.ENDED:
                        self._apply(self.filter.tunnel_data(bytes(part)))
        if reader.eof and not had_eof and self.result is None:
            self._got_eof()
        if reader.after_eof and self.result is None:
            # The peer went on after its EOF while our side of the stream still runs.
            self._fail(Ending(Result.BAD_FRAME, "bytes after EOF frame"))
            self.tunnel.abort()
            abort_with_rst(self.plain)

    def _got_eof(self) -> None:
        before = self.state
        if self._move(Event.GOT_EOF) is State.DONE:
            self._finish()
        elif self.filter is not None:
            if before is State.RELAYING:
                self._apply(self.filter.tunnel_eof())
        elif self.plain.can_write_eof():
            self.plain.write_eof()

    def tunnel_lost(self, exc: Exception | None) -> None:
        if self.state is State.DONE:
            return
        self._fail(Ending(Result.TUNNEL_LOST, "" if exc is None else str(exc)))
        abort_with_rst(self.plain)

    def tunnel_pause_writing(self) -> None:
        self.plain.pause_reading()

    def tunnel_resume_writing(self) -> None:
        if self.state in (State.RELAYING, State.GOT_EOF):
            self.plain.resume_reading()

    # -- the filter ------------------------------------------------------------------
    def _apply(self, fwd: Forward) -> None:
        for chunk in fwd.to_plain:
            if chunk and not self.plain.is_closing():
                self.plain.write(chunk)
        if self.state in (State.RELAYING, State.GOT_EOF):
            for chunk in fwd.to_tunnel:
                if chunk:
                    self._send(chunk)
            if fwd.end:
                self.tunnel.write(wire.EOF_FRAME)
                if self._move(Event.FILTER_END) is State.DONE:
                    self._finish()
                    return
                self.plain.close()
        self._update_tunnel_reading()

    def _update_tunnel_reading(self) -> None:
        if self.state is State.DONE:
            return
        # ENDED: the filter is done; the tunnel is read for the peer's EOF frame.
        reading = self.filter is None or self.state is State.ENDED or self.filter.reading_tunnel
        if self._plain_full or not reading:
            self.tunnel.pause_reading()
        elif not self.tunnel.is_closing():
            self.tunnel.resume_reading()

    def _send(self, data: bytes) -> None:
        """``data`` to the tunnel as DATA frames."""
        n = len(data)
        self.up += n
        if n <= SMALL_FRAME:
            # One write, one TLS record: the transport would seal header and payload
            # as two records (measured: 4.7 -> 2.9 us per 1 KiB message).
            self.tunnel.write(wire.data_header(n) + data)
            return
        if n <= wire.MAX_FRAME:
            self.tunnel.writelines((wire.frame_header(wire.FrameType.DATA, n), data))
            return
        view = memoryview(data)
        for i in range(0, n, wire.MAX_FRAME):
            part = view[i : i + wire.MAX_FRAME]
            self.tunnel.writelines((wire.frame_header(wire.FrameType.DATA, len(part)), part))

    # -- endings ---------------------------------------------------------------------
    def abort(self, reason: str) -> None:
        """Cut the stream from outside (revocation, shutdown); ``reason`` is logged."""
        if self.state is State.DONE:
            return
        self._fail(Ending(Result.ABORTED, reason))
        self.tunnel.abort()
        abort_with_rst(self.plain)

    def refused(self, status: str) -> None:
        """The hub refused the stream with ``status`` (its name): the splice is done
        without touching either transport (the caller closes them) and without
        ``on_done`` (the caller logs)."""
        if self.state is State.DONE:
            return
        self._move(Event.FAIL)
        self.result = Ending(Result.REFUSED, status)

    def _finish(self) -> None:
        self.result = Ending(Result.OK)
        self.plain.close()
        if not self.keep_tunnel:
            self.tunnel.close()
        self._on_done(self)

    def _fail(self, ending: Ending) -> None:
        self._move(Event.FAIL)
        self.result = ending
        self._on_done(self)


class PlainEnd(asyncio.Protocol):
    """Protocol of the plain TCP side; forwards everything to its :class:`Splice`.

    What arrives before the splice is attached (a backend that speaks first, while the
    hub is still writing its status) is kept, reading paused, and replayed on attach.
    """

    __slots__ = ("splice", "transport", "_early", "_early_eof", "_early_lost")

    def __init__(self) -> None:
        self.splice: Splice | None = None
        self.transport: asyncio.Transport | None = None
        self._early: list[bytes] = []
        self._early_eof = False
        self._early_lost: tuple[bool, Exception | None] = (False, None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def attach(self, splice: Splice) -> None:
        self.splice = splice
        early, self._early = self._early, []
        for chunk in early:
            splice.plain_data(chunk)
        if self._early_eof:
            splice.plain_eof_received()
        lost, exc = self._early_lost
        if lost:
            splice.plain_lost(exc)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def detach(self, pending: bytes, eof: bool) -> None:
        """Leave the splice (its tunnel is given up before the peer's status): from here
        ``pending`` and the EOF (if ``eof``) are kept, reading paused, and replayed on
        the next :meth:`attach`, as bytes that came before any splice."""
        self.splice = None
        self._early = [pending] if pending else []
        self._early_eof = eof
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self.splice is not None:
            self.splice.plain_data(data)
        else:
            self._early.append(data)
            if self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        if self.splice is not None:
            self.splice.plain_eof_received()
        else:
            self._early_eof = True
        return True  # keep the write direction open: half-close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.splice is not None:
            self.splice.plain_lost(exc)
        else:
            self._early_lost = (True, exc)

    def pause_writing(self) -> None:
        if self.splice is not None:
            self.splice.plain_pause_writing()

    def resume_writing(self) -> None:
        if self.splice is not None:
            self.splice.plain_resume_writing()


class ReadBuffer:
    """The memory a daemon's tunnels read TLS plaintext into, shared by all of them.

    The TLS layer decrypts straight into it (``get_buffer``/``buffer_updated``: no
    object per read, and none of the 256 KiB allocation that an ``SSLObject.read``
    per read costs, mmap and munmap included); the splice passes views of it to the
    plain side. A transport that could not send such a view at once keeps the view
    (uvloop does not copy it), so then :meth:`release` gives the buffer away to it and
    the next read gets a new one. One buffer per daemon, not per tunnel: reads are
    handled one at a time on the event loop, each to its end before the next.
    """

    __slots__ = ("size", "replaced", "_view", "_busy")

    #: uvloop decrypts at most this much per read (its SSL_READ_MAX_SIZE): one read
    #: fits, so a read is never split over two event-loop turns.
    SIZE = 256 * 1024

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        #: Buffers given away to a transport that kept a view of them.
        self.replaced = 0
        self._view = memoryview(bytearray(size))
        self._busy = False

    def __repr__(self) -> str:
        return f"<ReadBuffer {self.size} bytes, replaced {self.replaced}>"

    def get(self) -> memoryview:
        """The buffer to read into (all of it). A read that brings no application
        data (a partial TLS record) is never :meth:`filled`: nothing changes."""
        if self._busy:  # asked again while a read is handled: its views live on
            self._replace()
        return self._view

    def filled(self, nbytes: int) -> memoryview:
        """The ``nbytes`` just read, as a view of the buffer; :meth:`release` follows."""
        self._busy = True
        return self._view[:nbytes]

    def release(self, kept: bool) -> None:
        """The read is handled; ``kept``: something still holds a view of it."""
        self._busy = False
        if kept:
            self._replace()

    def _replace(self) -> None:
        self._view = memoryview(bytearray(self.size))
        self.replaced += 1


class TunnelEnd(asyncio.BufferedProtocol):
    """What both ends' tunnel protocols share: the TLS transport, flow control handed
    to the splice of the stream it carries, and the two ways to end.

    The splice is state data: it belongs to the subclass's phase that carries a stream
    (the edge's Opening and Relaying, the hub's Relaying), and :attr:`splice` reads it
    from there, so no phase can keep a splice it does not own.

    Reads land in ``reads`` (a :class:`ReadBuffer` the daemon shares among its tunnels)
    and go to :meth:`data_received` as a view of it, valid until it returns: a
    subclass copies what it keeps (``bytearray +=``, ``bytes()``).
    """

    def __init__(self, reads: ReadBuffer) -> None:
        self.transport: asyncio.Transport | None = None
        self.reads = reads

    @property
    def splice(self) -> Splice | None:
        """The splice of the stream the current phase carries; None in any other phase."""
        return None

    def data_received(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reads.get()

    def buffer_updated(self, nbytes: int) -> None:
        reads = self.reads
        splice = self.splice  # before: the stream may end while this read is handled
        kept = True  # unless the read is handled to its end and nothing waits
        try:
            self.data_received(reads.filled(nbytes))
            kept = splice is not None and splice.plain.get_write_buffer_size() > 0
        finally:
            reads.release(kept)

    def pause_writing(self) -> None:
        if self.splice is not None:
            self.splice.tunnel_pause_writing()

    def resume_writing(self) -> None:
        if self.splice is not None:
            self.splice.tunnel_resume_writing()

    def close(self) -> None:
        """Graceful: pending writes go out, then TLS close_notify."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self, reason: str) -> None:
        """Abortive: the stream's plain side is reset, the tunnel dropped."""
        if self.splice is not None:
            self.splice.abort(reason)
        elif self.transport is not None:
            self.transport.abort()
