"""The edge's two state machines, as tables: every transition lives in this file.

The edge tracks the hub as a whole (:class:`HubState`) and each of its TLS tunnels to
the hub (:class:`TunnelState`). Code elsewhere never assigns a state: it names the
event that happened and asks :func:`hub_transition` or :func:`tunnel_transition` for
the next state, which is looked up in the tables below. A pair that is not in a table
is a bug on our side (the I/O shell reacted to something it should not have seen in
that state) and raises :class:`~spokeshare.errors.UsageError` instead of leaving the
tunnel in a state nobody planned for (h11's ``_state.py`` works the same way).

The hub
-------
``STARTING`` until the control channel first comes up or fails. ``UP`` while it runs;
with several hubs also while it moves from a hub that went away to another one that
is not away (spokeshare.tunnel.hubs): the other hubs' tunnels serve meanwhile.
``DOWN`` when a dial fails, the hub refuses the channel, or the heartbeat is lost: new
clients are refused at once and the pool is drained. ``REVOKED`` when the hub says so
(a status or a control message); a later failure leaves it REVOKED (the office must
be re-enrolled, "unreachable" would mislead), but a control channel the hub accepts
again (the office was re-enrolled) brings it back UP.

A tunnel
--------
Every tunnel starts ``IDLE`` (TLS done, in the pool or just dialled). A stream tunnel
goes ``OPENING`` when its open header and the client's first bytes are written (0-RTT),
then ``RELAYING`` on the hub's OK status, or ``CLOSED`` on a refusal. The control
channel's tunnel goes ``AWAIT_CONTROL_STATUS`` when its open header is written (its
dialler waits for the status), then ``CONTROL`` on OK; a refusal closes it. Any tunnel
goes ``CLOSED`` when its connection is lost, and stays there.

Sequential reuse (docs/protocol.md): a ``RELAYING`` tunnel that agreed on it and whose
stream ended with an EOF frame each way goes ``ENDING`` (the client is closed; the
hub's END frame is awaited), then ``IDLE`` again on END, back in the pool. Anything
else in ``ENDING`` (other bytes, no END in time, the connection lost) closes it.

Each state carries its own data in the shell (the client of a stream, the status
waiter of the control channel while it waits, the heartbeat once it runs), so no
field is read in a state where it means nothing.
"""

from __future__ import annotations

import enum

from spokeshare.errors import UsageError


class HubState(enum.Enum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"
    REVOKED = "revoked"


class HubEvent(enum.Enum):
    #: The hub answered the control channel's open header with OK.
    CONTROL_UP = "control-up"
    #: A dial failed, the hub refused the channel (not revoked), or it went silent.
    UNREACHABLE = "unreachable"
    #: The hub said this office is revoked (a REVOKED status or control message).
    REVOKED = "revoked"


_S, _E = HubState, HubEvent

HUB_TRANSITIONS: dict[tuple[HubState, HubEvent], HubState] = {
    (_S.STARTING, _E.CONTROL_UP): _S.UP,
    (_S.STARTING, _E.UNREACHABLE): _S.DOWN,
    (_S.STARTING, _E.REVOKED): _S.REVOKED,
    (_S.UP, _E.UNREACHABLE): _S.DOWN,
    # Several hubs: the control channel moved from a hub that went away to another.
    (_S.UP, _E.CONTROL_UP): _S.UP,
    (_S.UP, _E.REVOKED): _S.REVOKED,
    (_S.DOWN, _E.CONTROL_UP): _S.UP,
    (_S.DOWN, _E.UNREACHABLE): _S.DOWN,
    (_S.DOWN, _E.REVOKED): _S.REVOKED,
    (_S.REVOKED, _E.CONTROL_UP): _S.UP,  # re-enrolled: the hub accepts us again
    (_S.REVOKED, _E.UNREACHABLE): _S.REVOKED,  # still revoked, whatever else fails
    (_S.REVOKED, _E.REVOKED): _S.REVOKED,
}


class TunnelState(enum.Enum):
    IDLE = "idle"
    OPENING = "opening"
    RELAYING = "relaying"
    #: The control channel's open header is out; its dialler awaits the hub's status.
    AWAIT_CONTROL_STATUS = "await-control-status"
    CONTROL = "control"
    #: The stream ended cleanly on a reuse tunnel; the hub's END frame is awaited.
    ENDING = "ending"
    CLOSED = "closed"


class TunnelEvent(enum.Enum):
    #: The open header and a client's first bytes were written.
    OPEN_STREAM = "open-stream"
    #: The control channel's open header was written.
    OPEN_CONTROL = "open-control"
    STATUS_OK = "status-ok"
    #: Any status but OK.
    STATUS_REFUSED = "status-refused"
    #: The stream ended with an EOF frame each way, on a tunnel that agreed on reuse.
    STREAM_ENDED = "stream-ended"
    #: The hub's END frame: the tunnel waits for the next open header.
    END_RECEIVED = "end-received"
    CONNECTION_LOST = "connection-lost"


_T, _V = TunnelState, TunnelEvent

TUNNEL_TRANSITIONS: dict[tuple[TunnelState, TunnelEvent], TunnelState] = {
    (_T.IDLE, _V.OPEN_STREAM): _T.OPENING,
    (_T.IDLE, _V.OPEN_CONTROL): _T.AWAIT_CONTROL_STATUS,
    # A status on an idle tunnel: the hub refuses us before we asked (revoked, busy).
    (_T.IDLE, _V.STATUS_REFUSED): _T.CLOSED,
    (_T.OPENING, _V.STATUS_OK): _T.RELAYING,
    (_T.OPENING, _V.STATUS_REFUSED): _T.CLOSED,
    (_T.AWAIT_CONTROL_STATUS, _V.STATUS_OK): _T.CONTROL,
    (_T.AWAIT_CONTROL_STATUS, _V.STATUS_REFUSED): _T.CLOSED,
    (_T.RELAYING, _V.STREAM_ENDED): _T.ENDING,
    (_T.ENDING, _V.END_RECEIVED): _T.IDLE,
    **{(state, _V.CONNECTION_LOST): _T.CLOSED for state in TunnelState},
}


def hub_transition(state: HubState, event: HubEvent) -> HubState:
    """The hub's next state; raises :class:`UsageError` for a pair not in the table."""
    try:
        return HUB_TRANSITIONS[state, event]
    except KeyError:
        raise UsageError(f"hub state {state.value}: no transition on {event.value}") from None


def tunnel_transition(state: TunnelState, event: TunnelEvent) -> TunnelState:
    """A tunnel's next state; raises :class:`UsageError` for a pair not in the table."""
    try:
        return TUNNEL_TRANSITIONS[state, event]
    except KeyError:
        raise UsageError(f"tunnel state {state.value}: no transition on {event.value}") from None
