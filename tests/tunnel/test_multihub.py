"""Several hubs, one deployment: the edge's spread over hubs and its failover.

The hub-choice core (spokeshare.tunnel.hubs) is checked as values; then real hubs on
loopback (127.0.0.2, .3, .4) sharing one deployment directory, each in the loop thread
or as its own process, with an in-process edge whose bundle lists them all.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare.config import PoolConfig
from spokeshare.errors import UsageError
from spokeshare.tunnel.hubs import HubSet
from tests.helpers import Backend, LoopThread, wait_for
from tests.tunnel.multihub import (
    echo_through,
    load,
    make_edge,
    make_hubs,
    stop_in_loop,
    wait_spread,
)

CFG = PoolConfig(backoff_initial=0.5, backoff_max=30.0)


# -- the core --------------------------------------------------------------------------


def test_dials_go_to_the_least_loaded_hub_that_is_not_away() -> None:
    hs = HubSet(3, CFG)
    assert hs.dial_target([2, 1, 1], 0.0) == 1  # fewest, lowest index on a tie
    hs.dial_failed(1, 0.0, 1.0)
    assert hs.dial_target([2, 1, 1], 0.1) == 2
    assert hs.away(1) and not hs.away(2)
    hs.dial_ok(1)
    assert hs.dial_target([2, 0, 1], 0.2) == 1


def test_a_hub_away_is_probed_once_its_window_ends_then_rejoins() -> None:
    hs = HubSet(2, CFG)
    hs.dial_failed(0, 10.0, 1.0)  # window 0.5 s
    assert hs.probes(10.2) == []
    assert hs.next_wake(10.2) == pytest.approx(10.5)
    assert hs.probes(10.5) == [0]
    assert hs.probes(10.6) == []  # one probe in flight at a time
    hs.dial_failed(0, 10.7, 1.0)  # window 1.0 s now
    assert hs.probes(11.5) == []
    assert hs.probes(11.7) == [0]
    hs.dial_ok(0)
    assert hs.dial_target([0, 5], 12.0) == 0


def test_every_hub_away_waits_for_the_first_window_then_probes_one() -> None:
    hs = HubSet(2, CFG)
    hs.dial_failed(0, 0.0, 1.0)
    hs.dial_failed(1, 0.1, 1.0)
    assert hs.all_away()
    assert hs.dial_target([0, 0], 0.3) is None
    assert hs.control_target(0.3, None) is None
    assert hs.dial_target([0, 0], 0.5) == 0
    assert hs.dial_target([0, 0], 0.55) is None  # 0 is probing, 1's window runs
    assert hs.probes(0.7) == []  # all away: the pool's own dials probe


def test_control_goes_to_the_next_hub_not_away() -> None:
    hs = HubSet(3, CFG)
    assert hs.control_target(0.0, None) == 0
    hs.lost(0, 0.0, 1.0)
    assert hs.control_target(0.0, 0) == 1
    hs.dial_failed(1, 0.0, 1.0)
    assert hs.control_target(0.0, 1) == 2
    assert hs.control_target(0.0, 2) == 2  # 0 and 1 away: 2 again


def test_one_hub_behaves_as_before() -> None:
    hs = HubSet(1, CFG)
    hs.lost(0, 0.0, 1.0)  # losing the control channel of the only hub: no failure
    assert not hs.away(0)
    hs.dial_failed(0, 0.0, 1.0)
    assert hs.dial_target([0], 0.0) == 0  # the pool's backoff decides when
    assert hs.control_target(0.0, 0) == 0
    assert hs.probes(100.0) == []
    with pytest.raises(UsageError):
        HubSet(0, CFG)
    with pytest.raises(UsageError):
        hs.dial_target([0, 0], 0.0)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 4),
    st.lists(
        st.tuples(st.sampled_from(["fail", "ok", "lost", "target", "probe"]), st.integers(0, 3),
                  st.floats(0, 5)),
        max_size=60,
    ),
)  # fmt: skip
def test_choices_are_hubs_not_away_when_there_are_some(
    n: int, events: list[tuple[str, int, float]]
) -> None:
    """Whatever happened: a dial target is a hub not away if one exists; a probe is a
    hub away whose window ended; nothing is probed twice at once."""
    hs = HubSet(n, CFG)
    now = 0.0
    in_flight: set[int] = set()
    for kind, i, dt in events:
        now += dt
        i %= n
        if kind == "fail":
            hs.dial_failed(i, now, 0.75)
            in_flight.discard(i)
        elif kind == "ok":
            hs.dial_ok(i)
            in_flight.discard(i)
        elif kind == "lost":
            hs.lost(i, now, 0.75)
        elif kind == "target":
            t = hs.dial_target([0] * n, now)
            if n > 1 and not hs.all_away():
                assert t is not None and not hs.away(t)
        else:
            for p in hs.probes(now):
                assert hs.away(p) and hs.window_end(p) <= now
                assert p not in in_flight
                in_flight.add(p)


# -- real hubs on loopback ---------------------------------------------------------------


def test_pool_spreads_over_every_hub(
    tmp_path: Path, echo_backend: Backend, loop_thread: LoopThread
) -> None:
    hubs = make_hubs(tmp_path, 3, {"smb": echo_backend.port})
    running = hubs.start_in_loop(loop_thread)
    edge, port = make_edge(hubs, min_idle=6)
    loop_thread.run(edge.start())
    try:
        wait_spread(loop_thread, edge, [0, 1, 2], at_least=2)
        assert loop_thread.call(lambda: edge.control_hub) is not None
        wait_for(lambda: all(loop_thread.call(h.tunnel_count) >= 2 for h in running),
                 what="every hub holding the office's tunnels")  # fmt: skip
        payload = random.randbytes(100_000)
        for _ in range(6):
            assert echo_through(port, payload) == payload
    finally:
        stop_in_loop(loop_thread, edge, running)


def _other(i: int | None) -> int:
    assert i is not None
    return 1 - i


def test_killed_hub_process_new_clients_go_through_the_other(
    tmp_path: Path, echo_backend: Backend, loop_thread: LoopThread
) -> None:
    """The hub process holding the control channel is killed (SIGKILL by PID): its
    tunnels reset; every client connecting right after gets its bytes echoed intact
    through the other hub, and the control channel moves there at once: the edge's
    heartbeat here is 100 s apart (hub_dead_after 300 s), so a channel that waited
    for its next heartbeat to notice the reset would not move within wait_for's 10 s."""
    hubs = make_hubs(tmp_path, 2, {"smb": echo_backend.port})
    with hubs.process(0) as p0, hubs.process(1) as p1:
        edge, port = make_edge(hubs, hub_dead_after=300.0, min_idle=4)
        loop_thread.run(edge.start())
        try:
            wait_spread(loop_thread, edge, [0, 1], at_least=2)
            wait_for(lambda: loop_thread.call(lambda: edge.control_hub) is not None,
                     what="control channel up")  # fmt: skip
            ctl = loop_thread.call(lambda: edge.control_hub)
            victim = (p0, p1)[ctl]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            for _ in range(8):
                payload = random.randbytes(50_000)
                assert echo_through(port, payload) == payload
            wait_for(lambda: loop_thread.call(lambda: edge.control_hub) == _other(ctl),
                     what="control channel moved to the other hub")  # fmt: skip
            assert loop_thread.call(lambda: edge.hub_state.value) == "up"
            assert load(loop_thread, edge)[ctl] == 0  # no tunnel to the dead hub is kept
            seen = loop_thread.call(lambda: edge.statistics().hubs)
            host, port = hubs.addresses[ctl]
            assert seen[f"{host}:{port}"] == "away"
            assert sorted(seen.values()) == ["away", "control"]
        finally:
            loop_thread.run(edge.close())


@pytest.mark.parametrize("which", ["control", "other"])
def test_silent_hub_open_is_retried_on_another_without_losing_bytes(
    tmp_path: Path, echo_backend: Backend, loop_thread: LoopThread, which: str
) -> None:
    """A hub stops answering (its process stopped by PID: TCP stays up, nothing comes
    back). Clients that get a tunnel to it have their open, and the bytes sent so far,
    given to the other hub once no status came; each gets its bytes back intact."""
    hubs = make_hubs(tmp_path, 2, {"smb": echo_backend.port})
    with hubs.process(0) as p0, hubs.process(1) as p1:
        edge, port = make_edge(hubs, min_idle=4)
        loop_thread.run(edge.start())
        stopped = None
        try:
            wait_spread(loop_thread, edge, [0, 1], at_least=2)
            wait_for(lambda: loop_thread.call(lambda: edge.control_hub) is not None,
                     what="control channel up")  # fmt: skip
            ctl = loop_thread.call(lambda: edge.control_hub)
            target = ctl if which == "control" else _other(ctl)
            stopped = (p0, p1)[target]
            os.kill(stopped.pid, signal.SIGSTOP)
            for _ in range(6):
                payload = random.randbytes(20_000)
                assert echo_through(port, payload) == payload
            assert loop_thread.call(lambda: edge.streams_retried) >= 1
            assert loop_thread.call(lambda: edge.hubs.away(target))
            if which == "control":
                wait_for(lambda: loop_thread.call(lambda: edge.control_hub) == _other(ctl),
                         what="control channel moved to the other hub")  # fmt: skip
        finally:
            if stopped is not None:
                os.kill(stopped.pid, signal.SIGCONT)
            loop_thread.run(edge.close())


def test_hub_choice_module_is_pure() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import spokeshare.tunnel.hubs;"
        "bad = {'asyncio', 'socket', 'ssl', 'logging'} & set(sys.modules);"
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_streams_through_two_hubs_reuse_their_tunnels_instead_of_redialling(
    tmp_path: Path, echo_backend: Backend, loop_thread: LoopThread
) -> None:
    """Eight clients loop short streams through an edge spread over two hubs: the pool
    grows to the streams in flight and then reuses its tunnels. The spread counts the
    tunnels carrying a stream, so taking one from a hub is not an imbalance to correct
    by retiring an idle tunnel there and dialling another (a TLS handshake per stream
    or so, as bench/capacity.py --hubs showed before)."""
    hubs = make_hubs(tmp_path, 2, {"smb": echo_backend.port})
    running = hubs.start_in_loop(loop_thread)
    edge, port = make_edge(hubs, min_idle=4)
    loop_thread.run(edge.start())
    clients, rounds = 8, 30

    def handshakes() -> int:
        return int(loop_thread.call(lambda: sum(h.statistics().handshakes for h in running)))

    def loop_streams(_: int) -> None:
        for _ in range(rounds):
            payload = random.randbytes(200)
            assert echo_through(port, payload) == payload

    try:
        wait_spread(loop_thread, edge, [0, 1], at_least=2)
        before = handshakes()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(loop_streams, range(clients)))
        dialled = handshakes() - before
        total = loop_thread.call(lambda: edge.streams_total)
        assert total >= clients * rounds
        # At most: the pool growing to every client in flight plus min_idle, twice over
        # for the spread's own moves; a redial per stream would be hundreds.
        assert dialled <= 2 * (clients + 4), (dialled, total)
    finally:
        stop_in_loop(loop_thread, edge, running)
