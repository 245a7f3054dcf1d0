"""The backend choice and health core (spokeshare.tunnel.backends), sans I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare.errors import UsageError
from spokeshare.tunnel.backends import (
    BackendDown,
    BackendSet,
    BackendUp,
    Balance,
    Health,
    ProbePolicy,
)

A, B, C = "198.18.0.11:445", "198.18.0.12:445", "198.18.0.13:445"
POLICY = ProbePolicy(initial=1.0, maximum=8.0, check_interval=10.0)


def test_order_takes_the_first_up_and_skips_one_that_failed() -> None:
    s = BackendSet("smb", [A, B, C], Balance.ORDER, POLICY, now=0.0)
    assert s.choose() == 0
    assert s.failed(0, 1.0, "Connection refused") == [
        BackendDown("smb", A, "Connection refused", 1.0)
    ]
    assert s.health(0) is Health.DOWN
    assert s.choose() == 1  # the next connection skips it
    assert s.choose([1]) == 2  # the same stream, B failed too: C
    assert s.choose([1, 2]) == 0  # every UP one tried: the DOWN one, last resort
    assert s.choose([0, 1, 2]) is None


def test_round_robin_spreads_new_streams_over_the_up_ones() -> None:
    s = BackendSet("smb", [A, B, C], Balance.ROUND_ROBIN, POLICY, now=0.0)
    assert [s.choose() for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    s.failed(1, 1.0, "timeout")
    firsts = [s.choose() for _ in range(6)]
    assert 1 not in firsts and set(firsts) == {0, 2}
    # Within one stream the later choices do not move the rotation.
    start = s.choose()
    assert start is not None
    nxt = s.choose([start])
    assert nxt is not None and nxt != start and s.health(nxt) is Health.UP


def test_a_down_backend_is_probed_at_doubling_intervals_up_to_the_maximum() -> None:
    no_checks = ProbePolicy(initial=1.0, maximum=8.0, check_interval=0.0)
    s = BackendSet("smb", [A, B], Balance.ORDER, no_checks, now=0.0)
    s.failed(0, 0.0, "Connection refused")
    when, waits = 0.0, []
    for _ in range(6):
        due_at = s.get_timer()
        assert due_at is not None
        waits.append(due_at - when)
        assert s.handle_timer(due_at - 0.001) == []
        assert s.handle_timer(due_at) == [0]
        assert s.handle_timer(due_at) == []  # one probe at a time
        when = due_at
        assert s.failed(0, when, "Connection refused", via="probe") == []
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    due_at = s.get_timer()
    assert due_at is not None and s.handle_timer(due_at) == [0]
    assert s.connected(0, due_at + 0.5, via="probe") == [BackendUp("smb", A, due_at + 0.5, "probe")]
    assert s.health(0) is Health.UP and s.choose() == 0


def test_a_stream_that_finds_a_down_backend_up_brings_it_back() -> None:
    s = BackendSet("smb", [A], Balance.ORDER, POLICY, now=0.0)
    s.failed(0, 5.0, "no answer within 2 s")
    assert s.choose() == 0  # the only one: tried anyway
    assert s.connected(0, 6.0) == [BackendUp("smb", A, 1.0, "stream")]
    v = s.view()[0]
    assert (v.health, v.failures, v.streams, v.last_error) == (
        Health.UP, 1, 1, "no answer within 2 s"
    )  # fmt: skip


def test_up_backends_are_checked_every_check_interval_and_not_when_off() -> None:
    s = BackendSet("smb", [A, B], Balance.ORDER, POLICY, now=100.0)
    assert s.get_timer() == 110.0
    assert s.handle_timer(110.0) == [0, 1]
    assert s.connected(0, 110.1, via="probe") == []
    assert s.failed(1, 110.2, "No route to host", via="probe") == [
        BackendDown("smb", B, "No route to host", 1.0)
    ]
    assert s.view()[0].next_probe == pytest.approx(120.1)
    off = BackendSet("smb", [A], Balance.ORDER, ProbePolicy(1.0, 8.0, 0.0), now=0.0)
    assert off.get_timer() is None


def test_a_reload_keeps_what_is_known_of_the_backends_still_listed() -> None:
    old = BackendSet("smb", [A, B], Balance.ORDER, POLICY, now=0.0)
    old.failed(1, 1.0, "Connection refused")
    new = BackendSet("smb", [B, C], Balance.ORDER, POLICY, now=2.0)
    new.carry_over(old)
    assert [v.health for v in new.view()] == [Health.DOWN, Health.UP]
    assert new.view()[0].last_error == "Connection refused"
    assert new.choose() == 1


def test_bad_lists_and_policies_are_refused() -> None:
    with pytest.raises(UsageError):
        BackendSet("smb", [], Balance.ORDER, POLICY)
    with pytest.raises(UsageError):
        BackendSet("smb", [A, A], Balance.ORDER, POLICY)
    with pytest.raises(UsageError):
        ProbePolicy(initial=5.0, maximum=1.0)
    with pytest.raises(UsageError):
        ProbePolicy(initial=0.0)
    with pytest.raises(UsageError):
        ProbePolicy(check_interval=-1.0)
    with pytest.raises(UsageError):
        ProbePolicy(maximum=float("inf"))


# -- properties ------------------------------------------------------------------------

# One step of what the hub does to a BackendSet: a stream picks and connects or fails,
# a probe comes back, time passes.
STEP = st.one_of(
    st.tuples(st.just("stream"), st.lists(st.booleans(), min_size=1, max_size=5)),
    st.tuples(st.just("probe"), st.booleans()),
    st.tuples(st.just("wait"), st.floats(0.0, 40.0)),
)


@settings(max_examples=300)
@given(
    n=st.integers(1, 5),
    balance=st.sampled_from(Balance),
    initial=st.floats(0.1, 5.0),
    factor=st.floats(1.0, 20.0),
    check=st.sampled_from([0.0, 3.0, 10.0]),
    steps=st.lists(STEP, max_size=60),
)
def test_never_a_down_backend_while_an_up_one_is_left_and_every_down_one_is_probed_in_time(
    n: int,
    balance: Balance,
    initial: float,
    factor: float,
    check: float,
    steps: list[tuple[str, object]],
) -> None:
    policy = ProbePolicy(initial, initial * factor, check)
    addrs = [f"198.18.0.{10 + i}:445" for i in range(n)]
    s = BackendSet("smb", addrs, balance, policy, now=0.0)
    now = 0.0
    probing: list[int] = []
    #: When each DOWN backend last had a probe planned (went down, or a probe ended).
    planned: dict[int, float] = {}

    def check_invariants() -> None:
        views = s.view()
        for v in views:
            if v.health is Health.DOWN and v.position not in probing:
                # Re-probed within its bound: planned at most `maximum` ahead.
                assert v.next_probe is not None
                assert v.next_probe <= planned[v.position] + policy.maximum + 1e-9
            if v.health is Health.UP and v.position not in probing and check:
                assert v.next_probe is not None and v.next_probe <= now + check + 1e-9
        timer = s.get_timer()
        planned_times = [v.next_probe for v in views if v.next_probe is not None]
        assert timer == (min(planned_times) if planned_times else None)

    for kind, arg in steps:
        if kind == "stream":
            assert isinstance(arg, list)
            tried: list[int] = []
            for ok in arg:
                up_untried = [i for i in range(n) if i not in tried and s.health(i) is Health.UP]
                i = s.choose(tried)
                if i is None:
                    assert len(tried) == n
                    break
                assert i not in tried
                if up_untried:  # never a DOWN one while an UP one is left
                    assert s.health(i) is Health.UP
                tried.append(i)
                was_down = s.health(i) is Health.DOWN
                if ok:
                    s.connected(i, now)
                    planned.pop(i, None)
                    break
                s.failed(i, now, "refused")
                if not was_down:
                    planned[i] = now
        elif kind == "probe":
            due = s.handle_timer(now)
            probing += due
            if probing:
                i = probing.pop(0)
                if arg:
                    s.connected(i, now, via="probe")
                    planned.pop(i, None)
                else:
                    s.failed(i, now, "refused", via="probe")
                    if s.health(i) is Health.DOWN:
                        planned[i] = now
        else:
            assert isinstance(arg, float)
            now += arg
            # The shell probes whatever is due before it sleeps again.
            timer = s.get_timer()
            if timer is not None and timer <= now:
                probing += s.handle_timer(now)
        check_invariants()
    # Every DOWN backend not being probed comes due by its bound at the latest.
    down = [i for i in range(n) if s.health(i) is Health.DOWN and i not in probing]
    if down:
        latest = max(planned[i] for i in down) + policy.maximum + 1e-9
        assert set(down) <= set(s.handle_timer(latest))


def test_a_backend_is_reported_unchecked_until_a_connect_or_probe_to_it_finishes() -> None:
    s = BackendSet("smb", [A, B, C], Balance.ORDER, POLICY, now=50.0)
    assert [v.checked for v in s.view()] == [False, False, False]
    s.connected(0, 51.0)  # a stream's connect
    assert [v.checked for v in s.view()] == [True, False, False]
    assert s.handle_timer(60.0) == [1, 2]  # the first checks
    assert [v.checked for v in s.view()] == [True, False, False]  # still running
    s.failed(1, 60.2, "Connection refused", via="probe")
    s.connected(2, 60.3, via="probe")
    assert [(v.checked, v.health) for v in s.view()] == [
        (True, Health.UP), (True, Health.DOWN), (True, Health.UP)
    ]  # fmt: skip
    # A reload keeps what is known; a backend new to it starts unchecked.
    new = BackendSet("smb", [C, "198.18.0.99:445"], Balance.ORDER, POLICY, now=70.0)
    new.carry_over(s)
    assert [v.checked for v in new.view()] == [True, False]
