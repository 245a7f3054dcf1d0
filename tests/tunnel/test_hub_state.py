"""The hub's per-office state, without sockets: what the registry gives an office and
when a change applies (the same hub serving real tunnels is in test_bad_input.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from spokeshare import enrollment
from spokeshare.errors import UsageError
from spokeshare.printing.hub_ipp import PrinterPolicy, StreamInfo
from spokeshare.printing.ipp_relay import IppFilter
from spokeshare.tunnel import control, wire
from spokeshare.tunnel.hub import (
    TRANSITIONS,
    AwaitHeader,
    Closed,
    Connecting,
    ControlChannel,
    Hub,
    HubTunnel,
    Phase,
    Relaying,
    TunnelEvent,
    TunnelState,
)
from spokeshare.tunnel.relay import Splice
from tests.helpers import free_port, make_deployment
from tests.tunnel.test_splice import Call, FakeTransport, Playbook, data

GET_COLOR = b"GET /printers/hq-color HTTP/1.1\r\nHost: 198.18.12.1\r\n\r\n"


def test_a_registry_change_to_an_offices_printers_applies_to_new_streams(
    tmp_path: Path,
) -> None:
    dep = make_deployment(tmp_path, {"smb": free_port(), "ipp": free_port()})
    dep.add_office("sf", ["ipp"])
    enrollment.set_printers(dep.dir, "sf", ["hq-laser"])
    hub = Hub(dep.hub_config(), dep.dir)
    hub.reload_registry(force=True)
    sf = hub.office_state("sf")
    assert sf.printer_policy == PrinterPolicy.of(["hq-laser"])
    assert hub.office_state("sf") is sf  # one state per office

    def stream() -> Playbook:
        """A new ipp stream of office sf, its gate reading the office's policy as the
        hub's tunnel does (HubTunnel._ipp_policy)."""
        pb = Playbook(IppFilter(StreamInfo("sf", "-", "198.18.12.1", 631),
                                lambda: sf.printer_policy))  # fmt: skip
        pb.splice.tunnel_data(data(GET_COLOR))
        return pb

    refused = stream().take()
    assert not [c for c in refused if c[1] == "plain"]  # cupsd never asked
    answer = [c[2] for c in refused if len(c) == 3]
    assert answer[0][4:].startswith(b"HTTP/1.1 403 ")

    enrollment.set_printers(dep.dir, "sf", ["hq-laser", "hq-color"])
    hub.reload_registry()  # what the hub does once a second
    assert sf.printer_policy == PrinterPolicy.of(["hq-color", "hq-laser"])
    passed = stream().take()
    assert passed[0] == ("write", "plain", GET_COLOR.replace(b"Host", b"host")
                         .replace(b"198.18.12.1\r", b"198.18.12.1:631\r"))  # fmt: skip

    enrollment.set_printers(dep.dir, "sf", None)  # every printer HQ shares
    hub.reload_registry()
    assert sf.printer_policy == PrinterPolicy.of(None)


def test_an_office_the_registry_does_not_know_has_no_printers(tmp_path: Path) -> None:
    dep = make_deployment(tmp_path, {"smb": free_port(), "ipp": free_port()})
    hub = Hub(dep.hub_config(), dep.dir)
    hub.reload_registry(force=True)
    assert hub.office_state("nyc").printer_policy == PrinterPolicy.of(None)  # the default
    assert hub.office_state("ghost").printer_policy == PrinterPolicy.of(())
    assert not hub.office_state("ghost").printer_policy.allows("hq-laser")


# -- a hub tunnel's states ---------------------------------------------------------------


def _tunnel(tmp_path: Path) -> tuple[Hub, HubTunnel, list[Call]]:
    dep = make_deployment(tmp_path, {"smb": free_port()})
    hub = Hub(dep.hub_config(), dep.dir)
    hub.reload_registry(force=True)
    calls: list[Call] = []
    office = hub.office_state("nyc")
    t = HubTunnel(hub, ("198.18.0.9", 40000), FakeTransport("tunnel", calls), office)
    return hub, t, calls


def test_every_hub_tunnel_transition_not_in_the_table_raises(tmp_path: Path) -> None:
    hub, t, calls = _tunnel(tmp_path)
    header = wire.OpenStream("smb")
    splice = Splice(FakeTransport("plain", calls), t.transport, lambda s: None)
    phases: dict[TunnelState, Phase] = {
        TunnelState.AWAIT_HEADER: AwaitHeader(),
        TunnelState.CONNECTING: Connecting(header, 1.0, bytearray()),
        TunnelState.RELAYING: Relaying(header, 1.0, splice),
        TunnelState.CONTROL: ControlChannel(
            wire.FrameReader(allow_control=True), control.Heartbeat(hub.heartbeat_cfg, 0.0)
        ),
        TunnelState.CLOSED: Closed(),
    }
    assert set(phases) == set(TunnelState)
    for state, phase in phases.items():  # the splice is the relaying phase's data
        t.phase = phase
        assert t.splice is (splice if state is TunnelState.RELAYING else None)
    for state in TunnelState:
        for event in TunnelEvent:
            for target in TunnelState:
                t.phase = phases[state]
                if TRANSITIONS.get((state, event)) is target:
                    t._go(event, phases[target])
                    assert t.state is target
                else:
                    with pytest.raises(UsageError):
                        t._go(event, phases[target])
                    assert t.state is state  # a refused transition changes nothing
    # CLOSED is final: only a late connection_lost reaches it again
    assert [e for (s, e) in TRANSITIONS if s is TunnelState.CLOSED] == [TunnelEvent.LOST]


def _control_frames(calls: list[Call]) -> list[control.ControlMessage]:
    """The control messages written, decoded (after the OK status)."""
    out: list[control.ControlMessage] = []
    reader = wire.FrameReader(allow_control=True)
    for c in calls:
        if len(c) == 3 and c[0] == "write" and c[2][:1] == bytes([wire.FrameType.CONTROL]):
            for ev in reader.feed(c[2]):
                assert isinstance(ev, wire.ControlReceived)
                out.append(control.decode_json(ev.message))
    return out


def test_control_channel_answers_pings_and_learns_rtt_and_statistics(tmp_path: Path) -> None:
    async def run() -> None:
        hub, t, calls = _tunnel(tmp_path)
        office = t.office
        t.start(wire.encode_open(wire.OpenControl("9.9")))
        assert t.state is TunnelState.CONTROL and office.control is t
        assert office.version == "9.9"
        ok = wire.encode_status(wire.StatusReply(wire.Status.OK))
        assert calls[0] == ("write", "tunnel", ok)
        assert _control_frames(calls) == [control.Ping(1)]  # the first ping, at once
        calls.clear()
        stats = {"clients": 3, "idle": 4}
        before = control.wall_ms(time.time())
        t.data_received(control.encode(control.Pong(1, stats)) + control.encode(control.Ping(7)))
        (pong,) = _control_frames(calls)
        # The answer carries the hub's wall clock, for the edge's skew estimate.
        assert isinstance(pong, control.Pong) and pong.seq == 7 and pong.stats is None
        assert pong.time_ms is not None and before <= pong.time_ms <= control.wall_ms(time.time())
        assert office.rtt is not None and office.rtt >= 0
        assert office.edge_report == control.EdgeReport(clients=3, idle=4)
        assert office.statistics().clients == 3
        calls.clear()
        hub.cut_office(office, "revoked")
        assert _control_frames(calls) == [control.Revoked()]
        assert ("abort", "tunnel") in calls

    asyncio.run(run())


@pytest.mark.parametrize(
    "garbage",
    [
        wire.encode_control({"t": "pong", "seq": "x"}),  # a message out of bounds
        wire.frame_header(wire.FrameType.DATA, 1) + b"x",  # a stream frame
        b"\xff\xff\xff\xff",  # no frame at all
    ],
)
def test_control_channel_closes_on_a_bad_frame(tmp_path: Path, garbage: bytes) -> None:
    async def run() -> None:
        _, t, calls = _tunnel(tmp_path)
        t.start(wire.encode_open(wire.OpenControl("9.9")))
        calls.clear()
        t.data_received(garbage)
        assert calls == [("close", "tunnel")]

    asyncio.run(run())


def test_a_refused_header_closes_with_its_status_and_a_lost_tunnel_leaves_its_office(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        _, t, calls = _tunnel(tmp_path)
        t.start(b"")
        assert (t in t.office.tunnels, t.state) == (True, TunnelState.AWAIT_HEADER)
        t.data_received(wire.encode_open(wire.OpenStream("nope")))
        assert t.state is TunnelState.CLOSED
        first = calls[0]
        reply = wire.parse_status(first[2] if len(first) == 3 else b"")
        assert reply is not None and reply[0].status is wire.Status.UNKNOWN_SERVICE
        assert calls[1:] == [("close", "tunnel")]
        # Counted per status, for the office and the hub (spokeshare.stats).
        assert t.office.statistics().refused == {"UNKNOWN_SERVICE": 1}
        assert t.office.statistics().streams_ended == {"refused": 1}  # its stream line
        assert t.hub.statistics().refusal_statuses == {"UNKNOWN_SERVICE": 1}
        t.connection_lost(None)
        assert t not in t.office.tunnels

    asyncio.run(run())
