"""One direction of an emulated WAN link, sans-IO.

The model
---------
A frame offered at time ``now`` goes through three stages, in the order a real
access link imposes them:

1. **Link state.** A link that is down drops every frame, and going down also loses
   every frame still in flight (a cut cable does not deliver what it was carrying).
2. **Random loss.** With probability ``loss_pct / 100`` the frame is dropped. Loss is
   decided before queueing, so a lost frame takes no queue space (as on a lossy radio
   hop in front of the bottleneck).
3. **Bottleneck.** With a rate limit, frames are serialised one after the other at
   ``rate_mbit``; a frame that arrives while the line is busy waits in a FIFO queue.
   The queue is measured in bytes still to serialise; a frame that would push it past
   ``queue_bytes`` is tail-dropped (a plain drop-tail router). By default the queue
   holds one bandwidth-delay product (``rate * rtt``), with a floor of 64 KiB so a
   short link still absorbs a burst of a few dozen frames.
4. **Propagation.** After serialisation the frame travels ``rtt_ms / 2`` plus a jitter
   sample drawn uniformly from ``[-jitter_ms, +jitter_ms]`` (clipped at zero).

Jitter never reorders frames: a frame leaves no earlier than the frame offered before
it. Real paths reorder rarely, and a TCP receiver treats reordering as loss (three
duplicate ACKs); an emulator that reorders on every jitter sample measures its own
artefact instead of the tunnel. The price is that heavy jitter also adds some delay
(a frame held back by its predecessor), exactly like a FIFO link with variable delay.

Without a rate limit there is no queue; the number of frames in flight is still bounded
(``MAX_IN_FLIGHT_BYTES``) so a runaway sender cannot exhaust the forwarder's memory.

Time is a parameter (seconds, any monotonic origin); nothing here reads a clock, logs
or touches a socket. The caller asks :meth:`Wire.next_deadline` when to wake up and
collects due frames with :meth:`Wire.pop_due`.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from spokeshare.errors import UsageError

#: Smallest default queue: about 43 full-size Ethernet frames.
MIN_QUEUE_BYTES = 64 * 1024
#: Bound on frames held by an unlimited-rate link (memory guard, not a model feature).
MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024

P = TypeVar("P")


class Rng(Protocol):
    """The slice of :class:`random.Random` the model uses (injected, for tests)."""

    def random(self) -> float: ...


@dataclass(frozen=True)
class LinkSettings:
    """Settings of a link; both directions of a WAN link share them.

    ``rtt_ms`` is the round trip the link adds (each direction delays ``rtt_ms / 2``);
    ``jitter_ms`` the half-width of the uniform jitter per direction; ``loss_pct`` the
    per-frame loss probability in percent; ``rate_mbit`` the bottleneck rate per
    direction (0 = unlimited); ``queue_bytes`` the bottleneck queue (0 = one BDP,
    at least :data:`MIN_QUEUE_BYTES`); ``up`` whether the link carries anything.
    """

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_mbit: float = 0.0
    queue_bytes: int = 0
    up: bool = True

    def __post_init__(self) -> None:
        for name in ("rtt_ms", "jitter_ms", "rate_mbit"):
            value = getattr(self, name)
            if not value >= 0.0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if not 0.0 <= self.loss_pct <= 100.0:
            raise ValueError(f"loss_pct must be within 0..100, not {self.loss_pct!r}")
        if self.queue_bytes < 0:
            raise ValueError(f"queue_bytes must be >= 0, not {self.queue_bytes!r}")

    @property
    def one_way_s(self) -> float:
        """Propagation delay of one direction, in seconds."""
        return self.rtt_ms / 2000.0

    @property
    def bytes_per_s(self) -> float:
        """Bottleneck rate in bytes per second (0 = unlimited)."""
        return self.rate_mbit * 1e6 / 8.0

    @property
    def queue_limit(self) -> int:
        """Bottleneck queue in bytes (only meaningful with a rate limit)."""
        if self.queue_bytes:
            return self.queue_bytes
        bdp = int(self.bytes_per_s * self.rtt_ms / 1000.0)
        return max(MIN_QUEUE_BYTES, bdp)

    def changed(self, **changes: object) -> LinkSettings:
        """A copy with ``changes`` applied (validated like a new instance)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return {
            "rtt_ms": self.rtt_ms,
            "jitter_ms": self.jitter_ms,
            "loss_pct": self.loss_pct,
            "rate_mbit": self.rate_mbit,
            "queue_bytes": self.queue_bytes,
            "up": self.up,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LinkSettings:
        """Build from a dict such as :meth:`to_dict` returns; unknown keys are refused."""
        known = {"rtt_ms", "jitter_ms", "loss_pct", "rate_mbit", "queue_bytes", "up"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown link setting(s): {', '.join(sorted(unknown))}")
        kwargs: dict[str, object] = {}
        for key, value in data.items():
            if key == "up":
                if not isinstance(value, bool):
                    raise ValueError("up must be true or false")
                kwargs[key] = value
            elif key == "queue_bytes":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError("queue_bytes must be an integer")
                kwargs[key] = value
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{key} must be a number")
                kwargs[key] = float(value)
        return cls(**kwargs)  # type: ignore[arg-type]


class Fate(enum.Enum):
    """What became of an offered frame."""

    QUEUED = "queued"
    LOST = "lost"  # random loss
    QUEUE_FULL = "queue_full"  # tail drop at the bottleneck
    DOWN = "down"  # link down


@dataclass(frozen=True)
class Verdict:
    """The decision for one offered frame: its fate and, if queued, when it leaves."""

    fate: Fate
    departure: float | None = None


@dataclass(frozen=True)
class WireStats:
    """A snapshot of one direction's counters."""

    offered: int
    offered_bytes: int
    delivered: int
    delivered_bytes: int
    lost: int
    queue_full: int
    down: int
    flushed: int  # in flight when the link went down
    in_flight: int
    in_flight_bytes: int

    def to_dict(self) -> dict[str, int]:
        return {
            "offered": self.offered,
            "offered_bytes": self.offered_bytes,
            "delivered": self.delivered,
            "delivered_bytes": self.delivered_bytes,
            "lost": self.lost,
            "queue_full": self.queue_full,
            "down": self.down,
            "flushed": self.flushed,
            "in_flight": self.in_flight,
            "in_flight_bytes": self.in_flight_bytes,
        }


class Wire(Generic[P]):
    """One direction of a link: frames in with :meth:`offer`, out with :meth:`pop_due`.

    ``P`` is whatever the caller carries (the frame's bytes in the forwarder, an
    integer in tests); the model only looks at the ``length`` given with it.
    """

    def __init__(self, settings: LinkSettings, rng: Rng) -> None:
        self._settings = settings
        self._rng = rng
        # (departure, length, payload), departures non-decreasing: no reordering.
        self._queue: deque[tuple[float, int, P]] = deque()
        self._queued_bytes = 0
        self._busy_until = float("-inf")  # when the bottleneck finishes its backlog
        self._last_departure = float("-inf")
        self._offered = self._offered_bytes = 0
        self._delivered = self._delivered_bytes = 0
        self._lost = self._queue_full = self._down = self._flushed = 0

    def __repr__(self) -> str:
        return f"<Wire {self._settings!r} in_flight={len(self._queue)}>"

    @property
    def settings(self) -> LinkSettings:
        return self._settings

    def configure(self, settings: LinkSettings) -> None:
        """Apply new settings from now on.

        Frames already scheduled keep their departure times, except that taking the
        link down loses them all.
        """
        if self._settings.up and not settings.up:
            self._flushed += len(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
            self._busy_until = float("-inf")
            self._last_departure = float("-inf")
        self._settings = settings

    def offer(self, payload: P, length: int, now: float) -> Verdict:
        """Decide the fate of a frame of ``length`` bytes offered at ``now``."""
        if length <= 0:
            raise UsageError(f"frame length must be positive, not {length}")
        s = self._settings
        self._offered += 1
        self._offered_bytes += length
        if not s.up:
            self._down += 1
            return Verdict(Fate.DOWN)
        if s.loss_pct > 0.0 and self._rng.random() * 100.0 < s.loss_pct:
            self._lost += 1
            return Verdict(Fate.LOST)
        rate = s.bytes_per_s
        if rate > 0.0:
            start = max(now, self._busy_until)
            backlog = (start - now) * rate  # bytes still to serialise before this one
            if backlog + length > s.queue_limit:
                self._queue_full += 1
                return Verdict(Fate.QUEUE_FULL)
            serialised = start + length / rate
            self._busy_until = serialised
        else:
            if self._queued_bytes + length > MAX_IN_FLIGHT_BYTES:
                self._queue_full += 1
                return Verdict(Fate.QUEUE_FULL)
            serialised = now
        delay = s.one_way_s
        if s.jitter_ms > 0.0:
            j = s.jitter_ms / 1000.0
            delay = max(0.0, delay + (2.0 * self._rng.random() - 1.0) * j)
        departure = max(serialised + delay, self._last_departure)
        self._last_departure = departure
        self._queue.append((departure, length, payload))
        self._queued_bytes += length
        return Verdict(Fate.QUEUED, departure)

    def next_deadline(self) -> float | None:
        """When the next frame is due, or None when nothing is in flight."""
        return self._queue[0][0] if self._queue else None

    def pop_due(self, now: float) -> list[P]:
        """Remove and return, in order, every frame whose departure is at or before ``now``."""
        out: list[P] = []
        q = self._queue
        while q and q[0][0] <= now:
            _, length, payload = q.popleft()
            self._queued_bytes -= length
            self._delivered += 1
            self._delivered_bytes += length
            out.append(payload)
        return out

    def statistics(self) -> WireStats:
        return WireStats(
            offered=self._offered,
            offered_bytes=self._offered_bytes,
            delivered=self._delivered,
            delivered_bytes=self._delivered_bytes,
            lost=self._lost,
            queue_full=self._queue_full,
            down=self._down,
            flushed=self._flushed,
            in_flight=len(self._queue),
            in_flight_bytes=self._queued_bytes,
        )
