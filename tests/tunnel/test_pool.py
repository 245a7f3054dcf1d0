"""The warm pool's policy: tables for the cases that matter, properties for the rest."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare.config import PoolConfig
from spokeshare.errors import UsageError
from spokeshare.tunnel.pool import (
    LAST_TRY_STATUS_SECONDS,
    Evaluation,
    Pool,
    PoolState,
    backoff_delay,
    decide,
    expired,
    status_timeout,
)

CFG = PoolConfig(
    min_idle=4, max_idle=16, max_connecting=3, max_age=60.0, backoff_initial=0.5, backoff_max=8.0
)


def state(
    idle: int = 0,
    connecting: int = 0,
    waiters: int = 0,
    failures: int = 0,
    last_failure: float | None = None,
    jitter: float = 1.0,
) -> PoolState:
    return PoolState(idle, connecting, waiters, failures, last_failure, jitter)


def test_fills_to_min_idle_in_steps_of_max_connecting() -> None:
    assert decide(CFG, state(), 0).open == 3
    assert decide(CFG, state(connecting=3), 0).open == 0
    assert decide(CFG, state(idle=3, connecting=0), 0).open == 1
    assert decide(CFG, state(idle=4), 0).open == 0


def test_grows_for_waiting_clients_up_to_max_idle() -> None:
    assert decide(CFG, state(idle=0, waiters=10), 0).open == 10  # one per waiter
    assert decide(CFG, state(idle=0, waiters=2), 0).open == 3  # max_connecting
    assert decide(CFG, state(idle=10, connecting=2, waiters=100), 0).open == 4
    assert decide(CFG, state(idle=16, waiters=100), 0).open == 0


def test_backoff_waits_then_probes_once() -> None:
    s = state(failures=3, last_failure=100.0)
    d = decide(CFG, s, 100.5)
    assert d.open == 0 and d.wake_at == 100.0 + 2.0
    assert decide(CFG, s, 102.0).open == 1
    assert decide(CFG, state(connecting=1, failures=3, last_failure=100.0), 102.0).open == 0


def test_backoff_doubles_and_caps_with_jitter() -> None:
    assert [backoff_delay(CFG, n, 1.0) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 8]
    assert backoff_delay(CFG, 3, 0.5) == 1.0
    assert backoff_delay(CFG, 3, 0.1) == 1.0  # jitter factor clamped to [0.5, 1]
    assert backoff_delay(CFG, 0, 1.0) == 0.0


def test_expired() -> None:
    assert expired(CFG, [0.0, 30.0, 59.0, 61.0], 120.0) == [0, 1, 2]
    assert expired(CFG, [100.0], 120.0) == []


@given(
    st.integers(0, 40),
    st.integers(0, 10),
    st.integers(0, 100),
    st.integers(0, 40),
    st.one_of(st.none(), st.floats(0, 1000)),
    st.floats(0.5, 1.0),
    st.floats(0, 2000),
)
def test_policy_invariants(
    idle: int,
    connecting: int,
    waiters: int,
    failures: int,
    last: float | None,
    jitter: float,
    now: float,
) -> None:
    s = state(idle, connecting, waiters, failures, last, jitter)
    d = decide(CFG, s, now)
    assert d.open >= 0
    # in flight: max_connecting, or one per waiting client in a burst; never beyond max_idle
    limit = max(CFG.max_connecting, min(waiters, CFG.max_idle))
    assert connecting + d.open <= max(connecting, limit)
    assert idle + connecting + d.open <= max(idle + connecting, CFG.max_idle)
    if failures and last is not None:
        if now < last + backoff_delay(CFG, failures, jitter):
            assert d.open == 0  # never opens inside the backoff window
        else:
            assert d.open <= 1  # one probe at a time after a failure
    if d.wake_at is not None:
        assert d.wake_at > now


def test_status_timeout_is_open_timeout_or_four_rtts() -> None:
    assert status_timeout(CFG, None) == CFG.open_timeout
    assert status_timeout(CFG, 0.1) == CFG.open_timeout  # 0.4 s < 1 s
    assert status_timeout(CFG, 0.5) == 2.0
    # With no other hub left to try, the hub gets time to answer for itself.
    assert status_timeout(CFG, None, last_try=True) == LAST_TRY_STATUS_SECONDS
    assert status_timeout(CFG, 3.0, last_try=True) == 12.0


# -- the execution state -------------------------------------------------------------------

AGED = PoolConfig(
    min_idle=2, max_idle=6, max_connecting=2, max_age=10.0, backoff_initial=0.5, backoff_max=4.0
)


def test_take_hands_the_oldest_live_tunnel_and_returns_expired_ones() -> None:
    p: Pool[str, str] = Pool(AGED)
    assert p.tunnel_ready("a", 0.0) is None
    assert p.tunnel_ready("b", 5.0) is None
    assert p.take(10.0) == ("b", ["a"])  # "a" is 10 s old: never handed out
    assert p.take(10.0) == (None, [])


def test_ready_tunnel_goes_to_the_first_live_waiter() -> None:
    p: Pool[str, str] = Pool(AGED)
    p.evaluate(0.0)
    p.wait("pc1")
    p.wait("pc2")
    p.wait("pc3")
    assert p.client_gone("pc2") and not p.client_gone("pc2")
    assert p.tunnel_ready("a", 1.0, live=lambda c: c != "pc1") == "pc3"
    assert p.waiting == 0 and p.idle == []
    assert p.tunnel_ready("b", 1.0) is None and p.idle == ["b"]


def test_lost_idle_tunnel_is_forgotten() -> None:
    p: Pool[str, str] = Pool(AGED)
    p.tunnel_ready("a", 0.0)
    assert p.tunnel_lost("a") and not p.tunnel_lost("a")
    assert p.take(1.0) == (None, [])


def test_evaluate_retires_expired_and_wakes_at_the_next_expiry() -> None:
    p: Pool[str, str] = Pool(AGED)
    ev = p.evaluate(0.0)
    assert ev.open == 2 and p.connecting == 2
    p.tunnel_ready("a", 1.0)
    p.tunnel_ready("b", 3.0)
    ev = p.evaluate(3.0)
    assert ev.close == () and ev.open == 0 and ev.wake_at == 11.0
    ev = p.evaluate(11.0)
    assert ev.close == ("a",) and ev.open == 1 and ev.wake_at == 13.0
    assert p.evaluate(20.0, dial=False) == Evaluation(("b",), 0, None)


def test_failures_back_off_and_success_resets() -> None:
    p: Pool[str, str] = Pool(AGED)
    p.evaluate(0.0)
    p.dial_failed(1.0, 1.0)
    p.dial_failed(1.0, 1.0)
    assert (p.failures, p.last_failure, p.connecting) == (2, 1.0, 0)
    ev = p.evaluate(1.5)
    assert ev.open == 0 and ev.wake_at == 2.0  # 0.5 * 2 after the second failure
    assert p.evaluate(2.0).open == 1  # one probe
    p.tunnel_ready("a", 2.5)
    assert (p.failures, p.last_failure) == (0, None)


def test_the_hub_heard_on_a_held_tunnel_ends_the_backoff_window_once_per_initial() -> None:
    p: Pool[str, str] = Pool(CFG)  # backoff 0.5 s doubling to 8 s
    assert p.hub_heard(0.0) is False  # no backoff running: nothing to cut
    p.evaluate(0.0)
    for _ in range(6):
        p.dial_failed(10.0, 1.0)  # six failures: an 8 s window, to 18.0
    assert p.evaluate(10.2).wake_at == 18.0
    # heard 0.2 s after the last failure: the window ends at backoff_initial, not now
    assert p.hub_heard(10.2) is True
    ev = p.evaluate(10.2)
    assert ev.open == 0 and ev.wake_at == pytest.approx(10.5)
    assert p.evaluate(10.5).open == 1  # one probe, the failure count kept
    assert p.failures == 6 and p.hub_heard(10.6) is False  # window over already
    p.dial_failed(11.0, 1.0)  # the probe failed: a full window again (8 s)
    assert p.evaluate(11.0).wake_at == 19.0
    assert p.hub_heard(12.0) is True and p.evaluate(12.0).open == 1
    p.tunnel_ready("a", 12.3)
    assert (p.failures, p.last_failure) == (0, None)


def test_returned_tunnel_goes_to_a_waiter_or_idle_or_is_one_too_many() -> None:
    p: Pool[str, str] = Pool(AGED)
    p.evaluate(0.0)
    assert p.tunnel_ready("a", 0.0) is None
    assert p.take(1.0) == ("a", [])
    connecting = p.connecting
    p.wait("pc1")
    p.wait("pc2")
    p.client_gone("pc1")
    assert p.tunnel_returned("a", 2.0, live=lambda c: c != "pc1") == ("pc2", True)
    assert p.connecting == connecting  # a return is not a dial
    assert p.tunnel_returned("a", 3.0) == (None, True) and p.idle == ["a"]
    # Its age counts from the return: at 3 + 9.9 s it is still handed out.
    assert p.take(12.9) == ("a", [])
    for i in range(AGED.max_idle):
        p.tunnel_ready(f"t{i}", 13.0)
    assert p.tunnel_returned("a", 13.0) == (None, False)  # max_idle idle already


def test_returning_an_idle_tunnel_is_a_bug() -> None:
    p: Pool[str, str] = Pool(AGED)
    p.tunnel_ready("a", 0.0)
    with pytest.raises(UsageError):
        p.tunnel_returned("a", 1.0)


def test_drain_empties_idle_and_waiters() -> None:
    p: Pool[str, str] = Pool(AGED)
    p.tunnel_ready("a", 0.0)
    p.wait("pc1")
    assert p.drain() == (["a"], ["pc1"])
    assert p.idle == [] and p.waiting == 0


# Steps of time that land exactly on max_age (10 s) and backoff ends as well as between.
STEP = st.one_of(st.sampled_from([0.0, 0.5, 2.5, 5.0, 10.0]), st.floats(0, 12))
EVENT = st.one_of(
    st.tuples(st.just("arrive"), STEP),
    st.tuples(st.just("ready"), STEP),
    st.tuples(st.just("fail"), STEP),
    st.tuples(st.just("lost"), st.integers(0, 30)),
    st.tuples(st.just("gone"), st.integers(0, 30)),
    st.tuples(st.just("evaluate"), STEP),
    st.tuples(st.just("drain"), st.just(0)),
    # a handed-out tunnel's stream ended cleanly: it comes back (sequential reuse)
    st.tuples(st.just("return"), st.integers(0, 30)),
)


@settings(max_examples=300)
@given(st.lists(EVENT, max_size=80))
def test_a_tunnel_leaves_the_pool_once_and_never_stale(
    events: list[tuple[str, float]],
) -> None:
    """Random sequences of client arrivals, tunnels ready, dials failed, tunnels lost,
    clients gone, evaluations as time passes, drains (the hub away) and handed-out
    tunnels returned after a clean stream: a tunnel handed to a client is never closed
    or handed to another until it is returned; once returned (or new) it is handed to
    one client or closed, once; never handed after it was lost or at ``max_age`` (of
    its last return); a client gets at most one tunnel, never after it left or was
    refused."""
    p: Pool[int, int] = Pool(AGED)
    now = 0.0
    ready_at: dict[int, float] = {}
    handed: dict[int, int] = {}  # tunnel -> client
    closed: list[int] = []
    lost: set[int] = set()
    gone: set[int] = set()  # clients that left, timed out or were refused
    served: set[int] = set()
    clients = 0

    def hand(tunnel: int, client: int) -> None:
        assert tunnel not in handed and tunnel not in closed and tunnel not in lost
        assert tunnel not in p.idle  # handed out means out of the pool
        assert now - ready_at[tunnel] < AGED.max_age
        assert client not in served and client not in gone
        handed[tunnel] = client
        served.add(client)

    def close(tunnels: list[int] | tuple[int, ...]) -> None:
        for t in tunnels:
            assert t not in handed and t not in closed and t not in lost
            closed.append(t)

    for what, arg in events:
        if what in ("arrive", "ready", "fail", "evaluate"):
            now += float(arg)
        if what == "arrive":
            clients += 1
            tunnel, stale = p.take(now)
            close(stale)
            if tunnel is None:
                p.wait(clients)
            else:
                hand(tunnel, clients)
        elif what == "ready":
            t = len(ready_at)
            ready_at[t] = now
            client = p.tunnel_ready(t, now, live=lambda c: c not in gone)
            if client is not None:
                hand(t, client)
        elif what == "fail":
            p.dial_failed(now, 0.75)
        elif what == "lost" and ready_at:
            t = int(arg) % len(ready_at)
            if t not in handed and t not in closed:
                p.tunnel_lost(t)
                lost.add(t)
        elif what == "gone" and clients:
            c = int(arg) % clients + 1
            p.client_gone(c)
            if c not in served:
                gone.add(c)
        elif what == "evaluate":
            close(p.evaluate(now).close)
        elif what == "drain":
            idle, waiters = p.drain()
            close(idle)
            gone.update(waiters)
        elif what == "return" and handed:
            t = sorted(handed)[int(arg) % len(handed)]
            del handed[t]  # its stream ended: it may carry another
            ready_at[t] = now
            client, keep = p.tunnel_returned(t, now, live=lambda c: c not in gone)
            if client is not None:
                assert keep
                hand(t, client)
            elif not keep:
                assert len(p.idle) >= AGED.max_idle
                close([t])
        assert p.connecting >= 0
        assert not set(p.idle) & (set(handed) | set(closed) | lost)
        assert len(p.idle) <= len(ready_at)
