"""The sans-IO link model: tables of single decisions, and properties over random traffic."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare.errors import UsageError
from spokeshare.lab.wire import (
    MIN_QUEUE_BYTES,
    Fate,
    LinkSettings,
    Verdict,
    Wire,
)


class FixedRng:
    """Returns the given values in turn (then repeats the last)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values) or [0.5]

    def random(self) -> float:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


# (settings, rng values, offers as (length, now), expected verdicts)
TABLE: list[tuple[str, LinkSettings, tuple[float, ...], list[tuple[int, float]], list[Verdict]]] = [
    (
        "zero link forwards at once",
        LinkSettings(),
        (),
        [(100, 1.0)],
        [Verdict(Fate.QUEUED, 1.0)],
    ),
    (
        "half the RTT each way",
        LinkSettings(rtt_ms=100),
        (),
        [(100, 1.0), (1500, 1.01)],
        [Verdict(Fate.QUEUED, 1.05), Verdict(Fate.QUEUED, 1.06)],
    ),
    (
        "1 Mbit/s serialises 125 bytes in 1 ms, back to back",
        LinkSettings(rate_mbit=1),
        (),
        [(125, 0.0), (125, 0.0), (125, 0.0)],
        [Verdict(Fate.QUEUED, 0.001), Verdict(Fate.QUEUED, 0.002), Verdict(Fate.QUEUED, 0.003)],
    ),
    (
        "rate then delay",
        LinkSettings(rtt_ms=20, rate_mbit=1),
        (),
        [(1250, 0.0)],
        [Verdict(Fate.QUEUED, 0.02)],
    ),
    (
        "tail drop when the queue is full",
        LinkSettings(rate_mbit=8, queue_bytes=2000),
        (),
        [(1000, 0.0), (1000, 0.0), (1000, 0.0)],
        [Verdict(Fate.QUEUED, 0.001), Verdict(Fate.QUEUED, 0.002), Verdict(Fate.QUEUE_FULL)],
    ),
    (
        "loss below the threshold drops",
        LinkSettings(loss_pct=10),
        (0.05, 0.5),
        [(100, 0.0), (100, 0.0)],
        [Verdict(Fate.LOST), Verdict(Fate.QUEUED, 0.0)],
    ),
    (
        "jitter: uniform in [-j, +j] around the one-way delay",
        LinkSettings(rtt_ms=100, jitter_ms=10),
        (0.0, 1.0),
        [(100, 0.0), (100, 1.0)],
        [Verdict(Fate.QUEUED, 0.04), Verdict(Fate.QUEUED, 1.06)],
    ),
    (
        "jitter never reorders: a fast sample waits for its predecessor",
        LinkSettings(rtt_ms=100, jitter_ms=10),
        (1.0, 0.0),
        [(100, 0.0), (100, 0.001)],
        [Verdict(Fate.QUEUED, 0.06), Verdict(Fate.QUEUED, 0.06)],
    ),
    (
        "down drops everything",
        LinkSettings(up=False),
        (),
        [(100, 0.0)],
        [Verdict(Fate.DOWN)],
    ),
]


@pytest.mark.parametrize(
    ("label", "link", "rng", "offers", "expected"), TABLE, ids=[t[0] for t in TABLE]
)
def test_decisions(
    label: str,
    link: LinkSettings,
    rng: tuple[float, ...],
    offers: list[tuple[int, float]],
    expected: list[Verdict],
) -> None:
    wire: Wire[int] = Wire(link, FixedRng(*rng))
    got = [wire.offer(i, length, now) for i, (length, now) in enumerate(offers)]
    assert [v.fate for v in got] == [v.fate for v in expected]
    for g, e in zip(got, expected, strict=True):
        if e.departure is not None:
            assert g.departure is not None
            assert math.isclose(g.departure, e.departure, abs_tol=1e-9)


def test_pop_due_in_order_and_deadline() -> None:
    wire: Wire[str] = Wire(LinkSettings(rtt_ms=10), FixedRng())
    wire.offer("a", 10, 0.0)
    wire.offer("b", 10, 0.001)
    assert wire.next_deadline() == pytest.approx(0.005)
    assert wire.pop_due(0.0049) == []
    assert wire.pop_due(0.0055) == ["a"]
    assert wire.pop_due(1.0) == ["b"]
    assert wire.next_deadline() is None
    s = wire.statistics()
    assert (s.offered, s.delivered, s.delivered_bytes, s.in_flight) == (2, 2, 20, 0)


def test_going_down_loses_frames_in_flight() -> None:
    link = LinkSettings(rtt_ms=100)
    wire: Wire[int] = Wire(link, FixedRng())
    wire.offer(1, 100, 0.0)
    wire.offer(2, 100, 0.0)
    wire.configure(link.changed(up=False))
    assert wire.pop_due(10.0) == []
    assert wire.statistics().flushed == 2
    wire.configure(link)
    assert wire.offer(3, 100, 11.0) == Verdict(Fate.QUEUED, 11.05)


def test_settings_validate() -> None:
    with pytest.raises(ValueError):
        LinkSettings(rtt_ms=-1)
    with pytest.raises(ValueError):
        LinkSettings(loss_pct=101)
    with pytest.raises(ValueError):
        LinkSettings(rate_mbit=float("nan"))
    with pytest.raises(ValueError):
        LinkSettings.from_dict({"rtt": 5})
    with pytest.raises(ValueError):
        LinkSettings.from_dict({"up": 1})
    s = LinkSettings(rtt_ms=100, jitter_ms=1, loss_pct=0.5, rate_mbit=10, queue_bytes=5000)
    assert LinkSettings.from_dict(s.to_dict()) == s


def test_default_queue_is_one_bdp_with_a_floor() -> None:
    assert LinkSettings(rate_mbit=100, rtt_ms=100).queue_limit == 1_250_000
    assert LinkSettings(rate_mbit=1, rtt_ms=1).queue_limit == MIN_QUEUE_BYTES
    assert LinkSettings(rate_mbit=1, queue_bytes=3000).queue_limit == 3000


def test_zero_length_frame_is_misuse() -> None:
    wire: Wire[int] = Wire(LinkSettings(), FixedRng())
    with pytest.raises(UsageError):
        wire.offer(0, 0, 0.0)


def test_core_is_pure() -> None:
    code = (
        "import sys; before = set(sys.modules); import spokeshare.lab.wire; "
        "bad = {'asyncio', 'socket', 'ssl', 'logging', 'time', 'select'}; "
        "print(sorted(bad & (set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- properties -------------------------------------------------------------------------

arrivals = st.lists(
    st.tuples(st.integers(min_value=60, max_value=1514), st.floats(min_value=0, max_value=0.01)),
    min_size=1,
    max_size=200,
)


def _run(
    link: LinkSettings, traffic: list[tuple[int, float]], seed: int
) -> list[tuple[int, float, int, Verdict]]:
    """Offer frames at increasing times; returns (index, now, length, verdict)."""
    wire: Wire[int] = Wire(link, random.Random(seed))
    now = 0.0
    out = []
    for i, (length, gap) in enumerate(traffic):
        now += gap
        out.append((i, now, length, wire.offer(i, length, now)))
    return out


@given(
    traffic=arrivals,
    rtt=st.floats(min_value=0, max_value=500),
    jitter=st.floats(min_value=0, max_value=50),
    rate=st.sampled_from([0.0, 0.5, 10.0, 1000.0]),
    seed=st.integers(0, 2**32),
)
def test_never_before_delay_and_never_reordered(
    traffic: list[tuple[int, float]], rtt: float, jitter: float, rate: float, seed: int
) -> None:
    link = LinkSettings(rtt_ms=rtt, jitter_ms=jitter, rate_mbit=rate)
    min_delay = max(0.0, link.one_way_s - jitter / 1000.0)
    last = -math.inf
    for _, now, length, v in _run(link, traffic, seed):
        if v.fate is not Fate.QUEUED:
            continue
        assert v.departure is not None
        serialise = length / link.bytes_per_s if rate else 0.0
        assert v.departure >= now + min_delay + serialise - 1e-9
        if jitter == 0.0:
            assert v.departure >= now + link.one_way_s + serialise - 1e-9
        assert v.departure >= last  # order within a direction is kept
        last = v.departure


@given(traffic=arrivals, seed=st.integers(0, 2**32))
def test_pop_due_returns_frames_in_offer_order(traffic: list[tuple[int, float]], seed: int) -> None:
    link = LinkSettings(rtt_ms=30, jitter_ms=10, rate_mbit=10)
    wire: Wire[int] = Wire(link, random.Random(seed))
    now = 0.0
    delivered: list[int] = []
    queued: list[int] = []
    for i, (length, gap) in enumerate(traffic):
        now += gap
        delivered += wire.pop_due(now)
        if wire.offer(i, length, now).fate is Fate.QUEUED:
            queued.append(i)
    delivered += wire.pop_due(math.inf)
    assert delivered == queued


@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    lengths=st.lists(st.integers(60, 1514), min_size=1, max_size=300),
    queue=st.integers(min_value=1514, max_value=10**6),
)
def test_rate_respected(rate: float, lengths: list[int], queue: int) -> None:
    """Frames offered all at once leave no faster than the rate, and the queue bound holds."""
    link = LinkSettings(rate_mbit=rate, queue_bytes=queue)
    wire: Wire[int] = Wire(link, random.Random(0))
    sent = 0
    last = 0.0
    for i, length in enumerate(lengths):
        v = wire.offer(i, length, 0.0)
        if v.fate is Fate.QUEUED:
            assert v.departure is not None
            sent += length
            last = v.departure
            assert sent <= queue  # everything offered at t=0 is still queued
    if sent:
        assert last >= sent / link.bytes_per_s - 1e-9


@settings(max_examples=20, deadline=None)
@given(loss=st.floats(min_value=0, max_value=100), seed=st.integers(0, 2**32))
def test_loss_ratio(loss: float, seed: int) -> None:
    """Over n frames the loss count stays within 5 standard deviations of n * p."""
    n = 20_000
    wire: Wire[int] = Wire(LinkSettings(loss_pct=loss), random.Random(seed))
    for i in range(n):
        wire.offer(i, 100, i * 1e-6)
        wire.pop_due(i * 1e-6)
    p = loss / 100.0
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(wire.statistics().lost - n * p) <= 5 * sigma + 1
