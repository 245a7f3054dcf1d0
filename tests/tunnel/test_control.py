"""The control channel's core: message table both ways, hostile bytes, and the
heartbeat of each end (edge and hub) alone and back to back in memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spokeshare.errors import DecodeError, UsageError
from spokeshare.tunnel import control, wire
from spokeshare.tunnel.control import (
    ClockSkewMeasured,
    Heartbeat,
    HeartbeatConfig,
    PeerLost,
    PeerRevoked,
    PeerStats,
    Ping,
    Pong,
    Revoked,
    RttMeasured,
    Send,
    Unknown,
)
from tests.strategies import mutated_any

EDGE_STATS = {"clients": 2, "idle": 4, "streams_total": 90, "streams_failed": 1}
EDGE_REPORT = control.EdgeReport(clients=2, idle=4, streams_total=90, streams_failed=1)

# (message, frame) as the edge and hub wrote them before this module existed
# (wire.encode_control of the dicts in tunnel/edge.py and tunnel/hub.py): the wire
# format is unchanged. Frame header: type 2 (CONTROL), 24-bit payload length.
TABLE: list[tuple[control.ControlMessage, bytes]] = [
    (Ping(7), bytes.fromhex("02 000014") + b'{"t":"ping","seq":7}'),
    (Pong(7), bytes.fromhex("02 000014") + b'{"t":"pong","seq":7}'),  # the hub's pong
    (
        Pong(12, EDGE_STATS),  # the edge's pong
        bytes.fromhex("02 00005a")
        + b'{"t":"pong","seq":12,"stats":{"clients":2,"idle":4,'
        + b'"streams_total":90,"streams_failed":1}}',
    ),
    (Revoked(), bytes.fromhex("02 00000f") + b'{"t":"revoked"}'),
    (  # the hub's pong stamped with its wall clock (2026-11-19T00:00:00.123Z)
        Pong(7, None, 1795046400123),
        bytes.fromhex("02 000029") + b'{"t":"pong","seq":7,"time":1795046400123}',
    ),
]


def payload(frame: bytes) -> bytes:
    return frame[4:]


@pytest.mark.parametrize(("msg", "raw"), TABLE)
def test_table_both_ways(msg: control.ControlMessage, raw: bytes) -> None:
    assert control.encode(msg) == raw
    assert control.decode(payload(raw)) == msg
    # and through the tunnel's frame reader, as the shells receive it
    (ev,) = wire.FrameReader(allow_control=True).feed(raw)
    assert isinstance(ev, wire.ControlReceived)
    assert control.decode_json(ev.message) == msg


def test_old_dict_form_is_the_same_frame() -> None:
    assert control.encode(Ping(3)) == wire.encode_control({"t": "ping", "seq": 3})
    assert control.encode(Pong(3, EDGE_STATS)) == wire.encode_control(
        {"t": "pong", "seq": 3, "stats": EDGE_STATS}
    )


def test_unknown_types_and_keys_are_tolerated() -> None:
    assert control.decode(b'{"t":"resize","cols":"..."}') == Unknown("resize")
    assert control.decode(b'{"t":"ping","seq":1,"extra":[1,2]}') == Ping(1)
    # statistics a newer edge adds with non-numeric values are skipped, numbers kept
    got = control.decode(b'{"t":"pong","seq":1,"stats":{"a":1,"v":"x","r":0.5,"b":true}}')
    assert got == Pong(1, {"a": 1, "r": 0.5})


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"seq":1}', "type"),
        (b'{"t":""}', "type"),
        (b'{"t":"' + b"x" * 33 + b'"}', "type"),
        (b'{"t":"ping"}', "seq"),
        (b'{"t":"ping","seq":-1}', "seq"),
        (b'{"t":"ping","seq":true}', "seq"),
        (b'{"t":"ping","seq":1.0}', "seq"),
        (b'{"t":"pong","seq":9007199254740992}', "seq"),
        (b'{"t":"pong","seq":1,"stats":[]}', "stats"),
        (b'{"t":"pong","seq":1,"stats":{"":1}}', "statistic name"),
        (
            b'{"t":"pong","seq":1,"stats":{' + b",".join(b'"k%d":1' % i for i in range(33)) + b"}}",
            "exceed",
        ),
        (b"[" * 2000 + b"]" * 2000, "not JSON"),  # nesting deeper than the recursion limit
        (b'{"t":"ping","seq":' + b"1" * 5000 + b"}", "exceeds"),
        (b'{"t":"ping","seq":' + b"1" * 4000 + b"}", "seq"),
        (b'{"t":"\xff"}', "not JSON"),
        (b'{"t":"pong","seq":1,"time":-1}', "time"),
        (b'{"t":"pong","seq":1,"time":1.5}', "time"),
        (b'{"t":"pong","seq":1,"time":"1795046400123"}', "time"),
        (b'{"t":"pong","seq":1,"time":true}', "time"),
        (b'{"t":"pong","seq":1,"time":9007199254740992}', "time"),
    ],
)
def test_bad_messages_are_decode_errors(raw: bytes, why: str) -> None:
    with pytest.raises(DecodeError) as err:
        control.decode(raw)
    assert err.value.protocol == "tunnel-control"
    assert why in err.value.reason


def test_frame_reader_refuses_deep_nesting_with_a_decode_error() -> None:
    """The shells receive messages through wire.FrameReader, which parses the JSON
    first: nesting past the recursion limit is a DecodeError there too."""
    deep = b"[" * 2000 + b"]" * 2000
    frame = wire.frame_header(wire.FrameType.CONTROL, len(deep)) + deep
    with pytest.raises(DecodeError):
        wire.FrameReader(allow_control=True).feed(frame)


def test_control_module_is_pure() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import spokeshare.tunnel.control;"
        "bad = {'asyncio', 'socket', 'ssl', 'logging'} & set(sys.modules);"
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_constructors_refuse_what_decode_refuses() -> None:
    with pytest.raises(UsageError):
        Ping(-1)
    with pytest.raises(UsageError):
        Pong(1, {"x": float("nan")})
    with pytest.raises(UsageError):
        control.encode(Unknown("resize"))


@given(mutated_any([payload(raw) for _, raw in TABLE]))
def test_decode_of_mutated_bytes_is_a_message_or_decode_error(raw: bytes) -> None:
    try:
        msg = control.decode(raw)
    except DecodeError:
        return
    # whatever decodes is a valid message: known ones re-encode and decode the same
    if not isinstance(msg, Unknown):
        assert control.decode(payload(control.encode(msg))) == msg


SEQS = st.integers(0, control.MAX_SEQ)
STATS = st.dictionaries(
    st.text(min_size=1, max_size=control.MAX_STAT_NAME),
    st.one_of(
        st.integers(-control.MAX_STAT_VALUE, control.MAX_STAT_VALUE),
        st.floats(-1e18, 1e18, allow_nan=False, allow_infinity=False),
    ),
    max_size=control.MAX_STATS,
)
TIMES = st.one_of(st.none(), st.integers(0, control.MAX_TIME_MS))
MESSAGES = st.one_of(
    st.builds(Ping, SEQS),
    st.builds(Pong, SEQS, st.one_of(st.none(), STATS), TIMES),
    st.just(Revoked()),
)


@given(MESSAGES)
def test_round_trip(msg: control.ControlMessage) -> None:
    raw = control.encode(msg)
    assert control.decode(payload(raw)) == msg


# -- the heartbeat ---------------------------------------------------------------------------


def test_edge_and_hub_configs_follow_one_rule() -> None:
    edge = HeartbeatConfig.from_dead_after(15.0)  # the edge's hub_dead_after default
    hub = HeartbeatConfig.from_interval(5.0)  # the hub's heartbeat_interval default
    assert edge == hub == HeartbeatConfig(5.0, 15.0)
    assert HeartbeatConfig.from_dead_after(0.03) == HeartbeatConfig(0.05, 0.05)
    with pytest.raises(UsageError):
        HeartbeatConfig(2.0, 1.0)


def test_pings_on_schedule_and_measures_rtt() -> None:
    hb = Heartbeat(HeartbeatConfig(5.0, 15.0), now=100.0)
    assert hb.get_timer() == 100.0  # the first ping at once
    assert hb.handle_timer(100.0) == [Send(Ping(1))]
    assert hb.get_timer() == 105.0
    assert hb.handle_timer(104.0) == []  # woken early: nothing due
    (measured,) = hb.receive(Pong(1), 100.2)
    assert isinstance(measured, RttMeasured) and measured.rtt == pytest.approx(0.2)
    assert hb.rtt == measured.rtt and hb.in_flight == 0
    assert hb.receive(Pong(1), 100.3) == []  # a duplicate pong measures nothing
    assert hb.handle_timer(105.0) == [Send(Ping(2))]


def test_answers_pings_with_the_given_stats() -> None:
    edge = Heartbeat(HeartbeatConfig.from_dead_after(15.0), 0.0)
    assert edge.receive(Ping(9), 1.0, EDGE_REPORT) == [Send(Pong(9, EDGE_REPORT.to_stats()))]
    hub = Heartbeat(HeartbeatConfig.from_interval(5.0), 0.0)
    assert hub.receive(Ping(9), 1.0) == [Send(Pong(9))]
    # an older edge's four statistics read as a report with the rest at their defaults
    assert hub.receive(Pong(4, EDGE_STATS), 1.0) == [PeerStats(EDGE_REPORT)]


def test_revoked_and_unknown() -> None:
    hb = Heartbeat(HeartbeatConfig(5.0, 15.0), 0.0)
    assert hb.receive(Revoked(), 1.0) == [PeerRevoked()]
    assert hb.receive(Unknown("resize"), 14.0) == []
    assert hb.heard == 14.0  # any message counts as hearing the peer


def test_lost_after_dead_after_of_silence_then_quiet() -> None:
    hb = Heartbeat(HeartbeatConfig(5.0, 15.0), 0.0)
    for t in (0.0, 5.0, 10.0):
        assert hb.handle_timer(t) == [Send(Ping(int(t / 5) + 1))]
    assert hb.get_timer() == 15.0
    assert hb.handle_timer(15.0) == [PeerLost(15.0)]
    assert hb.lost and hb.get_timer() is None
    assert hb.handle_timer(20.0) == [] and hb.receive(Ping(1), 21.0) == []


def test_ping_now_keeps_the_schedule() -> None:
    hb = Heartbeat(HeartbeatConfig(5.0, 15.0), 0.0)
    hb.handle_timer(0.0)
    assert hb.ping_now(2.0) == [Send(Ping(2))]
    assert hb.get_timer() == 5.0


def test_unanswered_pings_are_bounded() -> None:
    hb = Heartbeat(HeartbeatConfig(1.0, 100.0), 0.0)
    for t in range(40):
        hb.handle_timer(float(t))
    assert hb.in_flight == control.MAX_PINGS_IN_FLIGHT
    assert hb.receive(Pong(40), 40.0) == [RttMeasured(1.0)]  # the newest still counts
    assert hb.receive(Pong(1), 40.0) == []  # the oldest was forgotten


def test_edge_and_hub_back_to_back() -> None:
    """Both cores wired to each other through encode/decode, as on the channel: both
    measure the RTT, the hub gets the edge's statistics, neither declares the other
    lost while they talk, and each does once the other falls silent."""
    one_way = 0.05
    edge = Heartbeat(HeartbeatConfig.from_dead_after(15.0), 0.0)
    hub = Heartbeat(HeartbeatConfig.from_interval(5.0), 0.0)
    in_flight: list[tuple[float, str, bytes]] = []  # (arrival, to, frame)
    seen: dict[str, list[control.Command]] = {"edge": [], "hub": []}

    def run(side: str, cmds: list[control.Command], now: float) -> None:
        for c in cmds:
            if isinstance(c, Send):
                to = "hub" if side == "edge" else "edge"
                in_flight.append((now + one_way, to, control.encode(c.message)))
            else:
                seen[side].append(c)

    now = 0.0
    while now < 60.0:
        for arrival, to, frame in sorted(in_flight):
            if arrival <= now:
                in_flight.remove((arrival, to, frame))
                msg = control.decode(payload(frame))
                if to == "edge":
                    run("edge", edge.receive(msg, now, EDGE_REPORT), now)
                else:
                    run("hub", hub.receive(msg, now), now)
        run("edge", edge.handle_timer(now), now)
        run("hub", hub.handle_timer(now), now)
        now = round(now + 0.05, 2)
    assert edge.rtt == pytest.approx(0.1) and hub.rtt == pytest.approx(0.1)
    assert PeerStats(EDGE_REPORT) in seen["hub"]
    assert not any(isinstance(c, PeerLost) for c in seen["edge"] + seen["hub"])
    # the edge falls silent: the hub declares it lost dead_after later, and only then
    last_heard = hub.heard
    while not hub.lost:
        now = round(now + 0.05, 2)
        run("hub", hub.handle_timer(now), now)
    lost = seen["hub"][-1]
    assert isinstance(lost, PeerLost)
    assert 15.0 <= lost.silence <= 15.0 + 0.05 + 1e-9  # on the first wake-up at or after
    assert lost.silence == pytest.approx(now - last_heard)


EVENTS = st.lists(
    st.tuples(
        st.floats(0.0, 4.0),
        st.sampled_from(["timer", "ping", "pong", "revoked", "suspect"]),
        st.integers(0, 50),
    ),
    max_size=60,
)


@given(EVENTS)
def test_heartbeat_invariants(events: list[tuple[float, str, int]]) -> None:
    """Any sequence of timer wake-ups and messages: the peer is declared lost once and
    only after ``dead_after`` of silence, pings stay bounded, the timer never lies."""
    cfg = HeartbeatConfig(1.0, 3.0)
    hb = Heartbeat(cfg, 0.0)
    now, lost = 0.0, 0
    for step, what, seq in events:
        now += step
        if what == "timer":
            timer = hb.get_timer()
            cmds = hb.handle_timer(now)
            if timer is not None and now < timer:
                assert cmds == []  # before the timer nothing is due
        elif what == "ping":
            cmds = hb.receive(Ping(seq), now)
        elif what == "pong":
            cmds = hb.receive(Pong(seq), now)
        elif what == "revoked":
            cmds = hb.receive(Revoked(), now)
        else:
            cmds = hb.ping_now(now)
        for c in cmds:
            if isinstance(c, PeerLost):
                lost += 1
                assert c.silence >= cfg.dead_after
            if isinstance(c, RttMeasured):
                assert c.rtt >= 0.0
        assert hb.in_flight <= control.MAX_PINGS_IN_FLIGHT
        if not hb.lost:
            timer = hb.get_timer()
            assert timer is not None and timer <= hb.heard + cfg.dead_after
    assert lost <= 1 and (lost == 1) == hb.lost


def test_redial_after_refusal_waits_longer() -> None:
    assert control.redial_failures(1, refused=False) == 1
    assert control.redial_failures(1, refused=True) == control.REFUSED_AS_FAILURES
    assert control.redial_failures(9, refused=True) == 9


# -- clock skew ------------------------------------------------------------------------------


def test_pong_time_is_optional_both_ways() -> None:
    """A pong without ``time`` (an older hub) decodes with ``time_ms`` None; a stamped
    pong differs from the old form only by the ``time`` key, which an older edge's
    decoder skips like any key it does not know (as ``extra`` below)."""
    assert control.decode(b'{"t":"pong","seq":7}') == Pong(7)
    assert control.decode(b'{"t":"pong","seq":7,"stats":{"a":1}}') == Pong(7, {"a": 1}, None)
    stamped = control.to_json(Pong(7, EDGE_STATS, 1795046400123))
    assert stamped.pop("time") == 1795046400123
    assert stamped == control.to_json(Pong(7, EDGE_STATS))
    assert control.decode(b'{"t":"ping","seq":7,"time":1795046400123}') == Ping(7)
    with pytest.raises(UsageError):
        Pong(1, None, -1)
    with pytest.raises(UsageError):
        Pong(1, None, control.MAX_TIME_MS + 1)


def test_wall_ms_truncates_and_clamps() -> None:
    assert control.wall_ms(1795046400.1239) == 1795046400123
    assert control.wall_ms(-5.0) == 0
    assert control.wall_ms(1e300) == control.MAX_TIME_MS


def test_clock_skew_formula() -> None:
    # the peer stamped 10.000 s ahead; we got its pong 0.2 s after our ping, at 1000.2
    assert control.clock_skew(1_010_100, 1000.2, 0.2) == pytest.approx(10.0)
    assert control.clock_skew(1_000_000, 1000.0, -1.0) == pytest.approx(0.0)


@given(
    offset=st.floats(-1e6, 1e6),
    sent=st.floats(1.6e9, 2.0e9),
    there=st.floats(0.0, 5.0),
    back=st.floats(0.0, 5.0),
)
def test_clock_skew_is_within_half_the_round_trip(
    offset: float, sent: float, there: float, back: float
) -> None:
    """Simulated clocks: the peer's wall clock runs ``offset`` seconds ahead of ours; our
    ping leaves at our ``sent``, takes ``there`` seconds to arrive, the pong ``back``
    seconds to return (any split, not only equal). The estimate is within RTT/2 of the
    offset, plus the millisecond the stamp truncates and float rounding."""
    stamp = control.wall_ms(sent + there + offset)  # the peer stamps on its clock
    received = sent + there + back
    rtt = there + back
    skew = control.clock_skew(stamp, received, rtt)
    assert abs(skew - offset) <= rtt / 2 + 0.001 + 1e-6


def test_heartbeat_measures_skew_from_a_stamped_pong() -> None:
    edge = Heartbeat(HeartbeatConfig(5.0, 15.0), now=100.0)
    assert edge.handle_timer(100.0) == [Send(Ping(1))]
    # the hub, 42.5 s ahead, stamped its pong; it came back 0.2 s later at wall 5000.2
    rtt_cmd, skew_cmd = edge.receive(Pong(1, None, 5_042_600), 100.2, None, wall=5000.2)
    assert isinstance(rtt_cmd, RttMeasured) and isinstance(skew_cmd, ClockSkewMeasured)
    assert skew_cmd.skew == pytest.approx(42.5) and skew_cmd.rtt == pytest.approx(0.2)
    # an older hub's pong: the RTT only
    assert edge.handle_timer(105.0) == [Send(Ping(2))]
    (only,) = edge.receive(Pong(2), 105.1, None, wall=5005.1)
    assert isinstance(only, RttMeasured)
    # a stamped pong to no ping of ours measures nothing
    assert edge.receive(Pong(99, None, 5_042_600), 106.0, None, wall=5006.0) == []
    # with a wall clock given, the pongs we send carry it
    hub = Heartbeat(HeartbeatConfig.from_interval(5.0), 0.0)
    assert hub.receive(Ping(3), 1.0, wall=5000.25) == [Send(Pong(3, None, 5_000_250))]


# -- LAN presence (pong "lan") ---------------------------------------------------------------

PRESENCE_TEXT = st.text(min_size=1, max_size=60).filter(
    lambda s: (
        0 < len(s.encode("utf-8", "surrogatepass")) <= 255
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
    )
)
PRESENCES = st.builds(
    control.Presence,
    st.dictionaries(PRESENCE_TEXT, PRESENCE_TEXT, max_size=4),
    st.lists(PRESENCE_TEXT, max_size=4).map(tuple),
    st.lists(PRESENCE_TEXT, max_size=3).map(tuple),
)


@given(SEQS, st.one_of(st.none(), STATS), TIMES, PRESENCES)
def test_pong_with_presence_round_trip(
    seq: int, stats: dict[str, int | float] | None, t: int | None, p: control.Presence
) -> None:
    msg = Pong(seq, stats, t, p)
    assert control.decode(payload(control.encode(msg))) == msg


def test_pong_presence_is_optional_both_ways() -> None:
    """An older edge's pong (no ``lan``) decodes with presence None; a newer pong
    differs from the old form only by the ``lan`` key, which older decoders skip."""
    assert control.decode(b'{"t":"pong","seq":7,"stats":{"a":1}}') == Pong(7, {"a": 1})
    p = control.Presence({"GLOBAL-NFS": "ok"}, ("Office laser",), ("llmnr: systemd-resolved",))
    raw = b'{"t":"pong","seq":7,"lan":{"names":{"GLOBAL-NFS":"ok"},' + (
        b'"printers":["Office laser"],"degraded":["llmnr: systemd-resolved"]}}'
    )
    assert control.decode(raw) == Pong(7, None, None, p)
    newer = control.to_json(Pong(7, EDGE_STATS, None, p))
    assert newer.pop("lan") == p.to_json()
    assert newer == control.to_json(Pong(7, EDGE_STATS))


@pytest.mark.parametrize(
    "lan",
    [
        b"[]",
        b'{"names":[]}',
        b'{"names":{"A":1}}',
        b'{"names":{"A":""}}',
        b'{"printers":"x"}',
        b'{"printers":[1]}',
        b'{"degraded":["' + b"x" * 256 + b'"]}',
        b'{"degraded":[' + b",".join([b'"x"'] * 17) + b"]}",
        b'{"names":{' + b",".join(b'"N%d":"ok"' % i for i in range(65)) + b"}}",
        b'{"printers":["\\ud800"]}',
    ],
)
def test_bad_presence_is_a_decode_error(lan: bytes) -> None:
    with pytest.raises(DecodeError):
        control.decode(b'{"t":"pong","seq":1,"lan":' + lan + b"}")
    with pytest.raises(UsageError):
        control.Presence({"A": "x" * 256})


def test_fit_presence_keeps_every_bound_and_fits_a_frame() -> None:
    names = {f"NAME-{i}-" + "n" * 200: "ok" for i in range(100)}
    printers = [f"printer {i} " + "p" * 300 for i in range(400)]
    degraded = [f"proto{i}: " + "why " * 100 for i in range(20)]
    p = control.fit_presence(names, printers, degraded)
    assert len(p.degraded) <= control.MAX_DEGRADED and p.degraded  # trouble kept
    assert all(len(s.encode()) <= control.MAX_PRESENCE_STRING for s in p.degraded)
    frame = control.encode(Pong(1, EDGE_STATS, control.MAX_TIME_MS, p))
    assert len(frame) - 4 <= wire.MAX_CONTROL
    small = control.fit_presence({"GLOBAL-NFS": "ok"}, ["laser"], [])
    assert small == control.Presence({"GLOBAL-NFS": "ok"}, ("laser",), ())


def test_heartbeat_carries_presence_both_ways() -> None:
    p = control.Presence({"GLOBAL-NFS": "ok"})
    edge = Heartbeat(HeartbeatConfig(1.0, 3.0), 0.0)
    [send] = edge.receive(Ping(3), 0.1, EDGE_REPORT, None, p)
    assert isinstance(send, control.Send)
    assert send.message == Pong(3, EDGE_REPORT.to_stats(), None, p)
    hub = Heartbeat(HeartbeatConfig(1.0, 3.0), 0.0)
    assert control.PeerPresence(p) in hub.receive(send.message, 0.2)


# -- the edge's report (control.EdgeReport) ------------------------------------------

_causes = st.dictionaries(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    st.integers(0, control.MAX_STAT_VALUE),
    max_size=control.MAX_REPORT_CAUSES,
)
_times = st.none() | st.floats(1.0, 4e9)


@given(
    st.tuples(*[st.integers(0, 2**40)] * 5),
    _times,
    _times,
    _causes,
    _causes,
)
def test_edge_report_survives_the_wire(
    counts: tuple[int, int, int, int, int],
    since: float | None,
    not_after: float | None,
    dials: dict[str, int],
    refused: dict[str, int],
) -> None:
    """Any report, sent in a pong and decoded, reads back the same (cause names are cut
    to fit a statistic's name, as to_stats does)."""
    report = control.EdgeReport(*counts, since, not_after, dials, refused)
    stats = report.to_stats()
    assert len(stats) <= control.MAX_STATS
    back = control.decode(payload(control.encode(Pong(1, stats))))
    assert isinstance(back, Pong) and back.stats is not None
    got = control.EdgeReport.of(back.stats)
    cut = len("dial_failed.")
    assert got.clients == report.clients and got.renew_failures == report.renew_failures
    assert (got.renew_failing_since, got.cert_not_after) == (since, not_after)
    if all(len(c) <= control.MAX_STAT_NAME - cut for c in dials):
        assert got.dial_failures == dials
    if all(len(c) <= control.MAX_STAT_NAME - len("refused.") for c in refused):
        assert got.refused == refused


def test_edge_report_of_a_stranger_pong() -> None:
    """What the hub reads of a pong it did not expect: wrong kinds read as defaults,
    unknown names are ignored, too many causes fold into "other"."""
    stats: dict[str, int | float] = {"clients": -3, "idle": 1.5, "streams_total": 7, "x": 1}
    stats.update({f"dial_failed.c{i}": 1 for i in range(20)})
    report = control.EdgeReport.of(stats)
    assert (report.clients, report.idle, report.streams_total) == (0, 0, 7)
    assert len(report.dial_failures) == control.MAX_REPORT_CAUSES
    assert report.dial_failures[control.OTHER] == 20 - (control.MAX_REPORT_CAUSES - 1)
    assert report.dial_failures["c0"] == 1  # the first causes keep their keys
    assert sum(report.dial_failures.values()) == 20


def test_add_cause_bounds_the_keys() -> None:
    counts: dict[str, int] = {}
    for i in range(100):
        control.add_cause(counts, f"tls:R{i}")
    assert len(counts) == control.MAX_REPORT_CAUSES and sum(counts.values()) == 100
    control.add_cause(counts, "tls:R0")  # a cause already counted keeps its own key
    assert counts["tls:R0"] == 2
    with pytest.raises(UsageError):
        control.EdgeReport(dial_failures={f"c{i}": 1 for i in range(13)})
    with pytest.raises(UsageError):
        control.EdgeReport(clients=-1)
