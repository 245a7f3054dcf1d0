"""The log budget for floods: a line per cause per source per interval, the rest counted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spokeshare.errors import UsageError
from spokeshare.loglimit import LogLimiter


def test_first_of_a_kind_per_source_then_quiet_until_the_interval() -> None:
    lim = LogLimiter(interval=60.0)
    assert lim.admit("timeout", "192.0.2.1", 0.0)
    assert not lim.admit("timeout", "192.0.2.1", 1.0)
    assert lim.admit("reset", "192.0.2.1", 1.0)  # another cause
    assert lim.admit("timeout", "192.0.2.2", 1.0)  # another source
    assert not lim.admit("timeout", "192.0.2.1", 59.9)
    assert lim.admit("timeout", "192.0.2.1", 60.0)


def test_held_back_lines_are_summarised_once_per_interval() -> None:
    lim = LogLimiter(interval=10.0)
    for i in range(100):
        lim.admit("tls:WRONG_VERSION_NUMBER", "192.0.2.1", i * 0.01)
    assert lim.summary(1.0) == {"tls:WRONG_VERSION_NUMBER": 99}
    lim.admit("tls:WRONG_VERSION_NUMBER", "192.0.2.1", 2.0)
    assert lim.summary(5.0) == {}  # less than an interval since the last summary
    assert lim.summary(11.0) == {"tls:WRONG_VERSION_NUMBER": 1}
    assert lim.summary(30.0) == {}  # nothing held back


def test_many_sources_are_capped_by_max_lines() -> None:
    lim = LogLimiter(interval=60.0, max_lines=5)
    logged = sum(lim.admit("timeout", f"10.0.{i // 256}.{i % 256}", 0.0) for i in range(1000))
    assert logged == 5
    assert lim.summary(0.0) == {"timeout": 995}
    assert lim.admit("timeout", "10.9.9.9", 60.0)  # a new interval


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        LogLimiter(interval=0)
    with pytest.raises(UsageError):
        LogLimiter(max_lines=0)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5000), st.floats(0, 5)),
        max_size=400,
    )
)
def test_memory_and_lines_bounded(events: list[tuple[str, int, float]]) -> None:
    """Whatever arrives: at most max_sources pairs kept, at most max_lines per interval,
    and every event either logged or counted."""
    lim = LogLimiter(interval=10.0, max_lines=7, max_sources=16)
    now, logged = 0.0, 0
    for cause, source, step in events:
        now += step
        logged += lim.admit(cause, str(source), now)
        assert len(lim._last) <= 16
    held = sum(lim._held.values())
    assert logged + held == len(events)
    assert logged <= 7 * (int(now // 10.0) + 1)


def test_heap_release_policy() -> None:
    from spokeshare.heap import ReleasePolicy

    policy = ReleasePolicy(churn=3, interval=10.0)
    assert not policy.due(0.0)  # nothing ended
    policy.note(2)
    assert not policy.due(1.0)
    policy.note()
    assert policy.due(2.0) and policy.releases == 1
    policy.note(5)
    assert not policy.due(5.0)  # less than an interval since the last release
    assert policy.due(12.0) and policy.releases == 2
    with pytest.raises(UsageError):
        ReleasePolicy(churn=0)
