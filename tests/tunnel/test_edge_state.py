"""The edge's state tables (tunnel/edge_state.py): what they allow, what they refuse,
and the edge's tunnels moving through them on a real hub on loopback."""

from __future__ import annotations

import itertools

import pytest

from spokeshare.errors import UsageError
from spokeshare.tunnel import edge_state
from spokeshare.tunnel.edge_state import (
    HUB_TRANSITIONS,
    TUNNEL_TRANSITIONS,
    HubEvent,
    HubState,
    TunnelEvent,
    TunnelState,
    hub_transition,
    tunnel_transition,
)
from tests.helpers import Stack, wait_for


def test_a_stream_tunnel_and_the_control_channel() -> None:
    s = TunnelState.IDLE
    for ev, want in [
        (TunnelEvent.OPEN_STREAM, TunnelState.OPENING),
        (TunnelEvent.STATUS_OK, TunnelState.RELAYING),
        (TunnelEvent.CONNECTION_LOST, TunnelState.CLOSED),
    ]:
        s = tunnel_transition(s, ev)
        assert s is want
    s = tunnel_transition(TunnelState.IDLE, TunnelEvent.OPEN_CONTROL)
    assert s is TunnelState.AWAIT_CONTROL_STATUS
    assert tunnel_transition(s, TunnelEvent.STATUS_OK) is TunnelState.CONTROL
    assert tunnel_transition(s, TunnelEvent.STATUS_REFUSED) is TunnelState.CLOSED


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (TunnelState.RELAYING, TunnelEvent.OPEN_STREAM),  # one stream at a time
        (TunnelState.OPENING, TunnelEvent.OPEN_CONTROL),
        (TunnelState.RELAYING, TunnelEvent.STATUS_OK),  # a second status
        (TunnelState.CONTROL, TunnelEvent.STATUS_REFUSED),
        (TunnelState.CLOSED, TunnelEvent.OPEN_STREAM),  # never handed out once closed
        (TunnelState.CLOSED, TunnelEvent.STATUS_OK),
    ],
)
def test_illegal_tunnel_transitions_raise(state: TunnelState, event: TunnelEvent) -> None:
    with pytest.raises(UsageError, match=event.value):
        tunnel_transition(state, event)


def test_a_reused_tunnel_goes_back_to_idle_only_through_end() -> None:
    s = tunnel_transition(TunnelState.RELAYING, TunnelEvent.STREAM_ENDED)
    assert s is TunnelState.ENDING
    assert tunnel_transition(s, TunnelEvent.END_RECEIVED) is TunnelState.IDLE
    for event in (TunnelEvent.OPEN_STREAM, TunnelEvent.STATUS_OK, TunnelEvent.STATUS_REFUSED):
        with pytest.raises(UsageError):
            tunnel_transition(s, event)  # nothing is handed out or answered while ENDING
    with pytest.raises(UsageError):
        tunnel_transition(TunnelState.OPENING, TunnelEvent.STREAM_ENDED)


def test_closed_is_final_and_every_state_can_close() -> None:
    for state in TunnelState:
        assert tunnel_transition(state, TunnelEvent.CONNECTION_LOST) is TunnelState.CLOSED
    for event in TunnelEvent:
        if (TunnelState.CLOSED, event) in TUNNEL_TRANSITIONS:
            assert TUNNEL_TRANSITIONS[TunnelState.CLOSED, event] is TunnelState.CLOSED


def test_every_state_is_reachable_from_its_start() -> None:
    for table, start in (
        (TUNNEL_TRANSITIONS, TunnelState.IDLE),
        (HUB_TRANSITIONS, HubState.STARTING),
    ):
        seen = {start}
        while True:
            more = {new for (old, _), new in table.items() if old in seen} - seen
            if not more:
                break
            seen |= more
        assert seen == set(type(start))


def test_hub_revoked_outlives_failures_but_not_a_new_channel() -> None:
    assert hub_transition(HubState.REVOKED, HubEvent.UNREACHABLE) is HubState.REVOKED
    assert hub_transition(HubState.REVOKED, HubEvent.CONTROL_UP) is HubState.UP
    for state in HubState:
        assert hub_transition(state, HubEvent.REVOKED) is HubState.REVOKED
    # Several hubs: the channel moves from a hub that went away to one that is up.
    assert hub_transition(HubState.UP, HubEvent.CONTROL_UP) is HubState.UP


def test_tables_name_only_their_own_states_and_events() -> None:
    for (old, ev), new in itertools.chain(HUB_TRANSITIONS.items(), TUNNEL_TRANSITIONS.items()):
        assert type(old) is type(new)
        assert isinstance(ev, HubEvent if isinstance(old, HubState) else TunnelEvent)


def test_edge_state_module_is_pure() -> None:
    import subprocess
    import sys

    code = (
        f"import sys; import {edge_state.__name__};"
        "bad = {'asyncio', 'socket', 'ssl', 'logging'} & set(sys.modules);"
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_edge_tunnels_carry_their_states_data(stack: Stack) -> None:
    """A real edge and hub: the control channel is CONTROL with its heartbeat, pool
    tunnels IDLE, a stream's tunnel RELAYING with its client."""
    from spokeshare.tunnel.edge import Control, Idle, Relaying

    def phases() -> tuple[object, list[object], list[object]]:
        e = stack.edge
        assert e.control is not None
        return e.control.phase, [t.phase for t in e.idle], [t.phase for t in e.clients]

    ctl, idle, busy = stack.lt.call(phases)
    assert isinstance(ctl, Control) and ctl.heartbeat.heard > 0
    assert idle and all(isinstance(p, Idle) for p in idle) and busy == []
    with stack.connect() as c:
        c.sendall(b"hello")
        assert c.recv(5) == b"hello"
        _, _, busy = stack.lt.call(phases)
        (phase,) = busy
        assert isinstance(phase, Relaying) and phase.client.service == "smb"
    wait_for(lambda: stack.lt.call(lambda: not stack.edge.clients), what="stream ended")
