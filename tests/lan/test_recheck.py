"""The re-check schedule of a name in conflict (spokeshare.lan.recheck)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spokeshare.errors import UsageError
from spokeshare.lan.recheck import RECHECK_FIRST, RECHECK_LONGEST, recheck_delay


def test_soon_first_then_doubling_up_to_a_minute() -> None:
    assert [recheck_delay(n) for n in range(1, 8)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]


def test_a_short_longest_interval_caps_the_first_too() -> None:
    assert recheck_delay(1, longest=2.0) == 2.0 and recheck_delay(9, longest=2.0) == 2.0


@pytest.mark.parametrize(
    ("failed", "longest", "first"), [(0, 60.0, 5.0), (-1, 60.0, 5.0), (1, 0.0, 5.0), (1, 60.0, 0.0)]
)
def test_refused(failed: int, longest: float, first: float) -> None:
    with pytest.raises(UsageError):
        recheck_delay(failed, longest, first)


@given(st.integers(1, 10**6), st.floats(0.1, 3600.0), st.floats(0.1, 3600.0))
def test_property_bounded_and_never_shorter_after_another_failure(
    failed: int, longest: float, first: float
) -> None:
    delay = recheck_delay(failed, longest, first)
    assert min(first, longest) <= delay <= longest
    assert recheck_delay(failed + 1, longest, first) >= delay


def test_defaults_match_the_protocols() -> None:
    from spokeshare.lan import llmnr, mdns, netbios_core

    assert RECHECK_FIRST < RECHECK_LONGEST
    assert {
        llmnr.CONFLICT_RECHECK_INTERVAL,
        mdns.CONFLICT_RECHECK_INTERVAL,
        netbios_core.CONFLICT_RECHECK_INTERVAL,
    } == {RECHECK_LONGEST}
