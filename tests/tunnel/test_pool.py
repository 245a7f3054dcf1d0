"""The warm pool's policy: tables for the cases that matter, properties for the rest."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from spokeshare.config import PoolConfig
from spokeshare.tunnel.pool import PoolState, backoff_delay, decide, expired

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
