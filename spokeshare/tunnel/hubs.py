"""Which hub to dial: the health of each of a deployment's hubs, as a pure core.

A bundle lists every hub of the deployment (``[hub] addresses``; they run active-active
on one shared deployment directory, docs/scale-out.md). The edge keeps its warm pool
spread over all hubs it can reach and its one control channel on one of them. This
module decides, with ``now`` a parameter (monotonic seconds), which hub the next dial
goes to; the edge's shell (spokeshare.tunnel.edge) dials and reports back.

Per hub
-------
- ``failures``: dials to it that failed in a row (TCP refused or timed out, TLS failed),
  plus the times it was found *away*: its control channel fell silent or reset, or a
  stream opened on one of its tunnels got no status in time. One successful dial
  clears it.
- While it has failures it is *away*: a backoff window runs from the last failure
  (``backoff_initial`` doubling to ``backoff_max``, times the jitter the shell drew,
  as the pool's own backoff, spokeshare.tunnel.pool.backoff_delay). No pooled dial goes
  to it inside the window; after it, one probe at a time.

Decisions
---------
- A pooled dial goes to the hub that is not away and holds the fewest tunnels (idle plus
  dialling), lowest index on a tie: the pool spreads evenly, and a hub that comes back
  gets the next dials until it holds its share.
- When every hub is away, the dial goes to the hub whose window ended first (a probe);
  none while all windows run (``next_wake`` says when to ask again).
- A hub that is away and whose window has ended gets a probe dial even while the pool
  is full (:meth:`HubSet.probes`), so a hub that returns rejoins the spread; while the
  idle tunnels of hubs not away differ by two or more, one idle tunnel of the most
  loaded is retired (:meth:`HubSet.rebalance`) and the refill goes to the least.
- The control channel goes to the first hub not away, starting after the one it was
  lost on; when every hub is away, to the first whose window ended.

With a single hub nothing here changes the edge's behaviour of old: every dial goes to
it, when to dial is left to the pool's backoff and the control loop's, and losing its
control channel is no failure of its own (the control loop redials at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spokeshare.config import PoolConfig
from spokeshare.errors import UsageError
from spokeshare.tunnel.pool import backoff_delay


@dataclass(slots=True)
class HubHealth:
    """One hub's dial record (module docstring)."""

    failures: int = 0
    #: Monotonic seconds of the last failure (None: none since the last success).
    last_failure: float | None = None
    #: The jitter of the current backoff window, in [0.5, 1.0].
    jitter: float = 1.0
    #: A probe dial is in flight while the hub is away.
    probing: bool = False


@dataclass(frozen=True, slots=True)
class HubView:
    """One hub as statistics show it: its index, whether it is away, failures."""

    index: int
    away: bool
    failures: int


class HubSet:
    """The health of ``count`` hubs (indexes into the bundle's ``hub_addresses``)."""

    __slots__ = ("cfg", "hubs")

    def __init__(self, count: int, cfg: PoolConfig) -> None:
        if count < 1:
            raise UsageError("a deployment has at least one hub address")
        self.cfg = cfg
        self.hubs = [HubHealth() for _ in range(count)]

    def __repr__(self) -> str:
        return (
            "<HubSet "
            + " ".join(f"{i}:{'away' if h.failures else 'up'}" for i, h in enumerate(self.hubs))
            + ">"
        )

    def __len__(self) -> int:
        return len(self.hubs)

    def _check(self, i: int) -> HubHealth:
        if not 0 <= i < len(self.hubs):
            raise UsageError(f"no hub {i} (the bundle lists {len(self.hubs)})")
        return self.hubs[i]

    # -- queries ---------------------------------------------------------------------------
    def away(self, i: int) -> bool:
        return self._check(i).failures > 0

    def all_away(self) -> bool:
        return all(h.failures for h in self.hubs)

    def window_end(self, i: int) -> float:
        """When hub ``i``'s backoff window ends (its last failure if it has none)."""
        h = self._check(i)
        if not h.failures or h.last_failure is None:
            return float("-inf")
        return h.last_failure + backoff_delay(self.cfg, h.failures, h.jitter)

    def next_wake(self, now: float) -> float | None:
        """The earliest end of a running backoff window (None: none runs)."""
        ends = [self.window_end(i) for i, h in enumerate(self.hubs) if h.failures]
        later = [e for e in ends if e > now]
        return min(later) if later else None

    def view(self) -> tuple[HubView, ...]:
        return tuple(HubView(i, h.failures > 0, h.failures) for i, h in enumerate(self.hubs))

    # -- decisions -------------------------------------------------------------------------
    def dial_target(self, load: Sequence[int], now: float) -> int | None:
        """The hub for the next pooled dial, given each hub's tunnels (idle plus
        dialling) in ``load``; None while every hub is away inside its window. A probe
        chosen here counts as in flight until :meth:`dial_ok` or :meth:`dial_failed`."""
        if len(load) != len(self.hubs):
            raise UsageError(f"load of {len(load)} hubs, not {len(self.hubs)}")
        if len(self.hubs) == 1:
            return 0  # the pool's own backoff decides when (as before several hubs)
        up = [i for i, h in enumerate(self.hubs) if not h.failures]
        if up:
            return min(up, key=lambda i: (load[i], i))
        return self._probe_one(now)

    def _probe_one(self, now: float) -> int | None:
        due = [i for i, h in enumerate(self.hubs) if not h.probing and self.window_end(i) <= now]
        if not due:
            return None
        i = min(due, key=lambda j: (self.window_end(j), j))
        self.hubs[i].probing = True
        return i

    def probes(self, now: float) -> list[int]:
        """Hubs that are away, out of their window and not being probed, while some
        other hub is up: each gets one probe dial now (marked in flight). With every
        hub away the pool's own dials probe (:meth:`dial_target`)."""
        if len(self.hubs) == 1 or self.all_away():
            return []
        out = []
        for i, h in enumerate(self.hubs):
            if h.failures and not h.probing and self.window_end(i) <= now:
                h.probing = True
                out.append(i)
        return out

    def rebalance(self, held: Sequence[int], dialing: int) -> int | None:
        """The hub one idle tunnel should be retired from so the pool's refill goes to a
        hub holding fewer (``held``: tunnels per hub, idle and carrying a stream, since
        a stream's tunnel comes back to the pool; only while no dial is in flight): the
        most loaded hub not away, when it holds at least two more than the least loaded
        one not away. None: the spread is even enough."""
        if len(held) != len(self.hubs):
            raise UsageError(f"tunnels of {len(held)} hubs, not {len(self.hubs)}")
        up = [i for i, h in enumerate(self.hubs) if not h.failures]
        if dialing or len(up) < 2:
            return None
        most = max(up, key=lambda i: (held[i], -i))
        least = min(up, key=lambda i: (held[i], i))
        return most if held[most] - held[least] >= 2 else None

    def control_target(self, now: float, after: int | None) -> int | None:
        """The hub for the control channel: the first not away, in order from the one
        after ``after`` (where it was lost; None: from the first); else the first
        whose window has ended; None while every window runs."""
        n = len(self.hubs)
        if n == 1:
            return 0  # the control loop backs off itself (as before several hubs)
        start = 0 if after is None else (after + 1) % n
        order = [(start + k) % n for k in range(n)]
        for i in order:
            if not self.hubs[i].failures:
                return i
        for i in order:
            if self.window_end(i) <= now:
                return i
        return None

    # -- events ----------------------------------------------------------------------------
    def dial_ok(self, i: int) -> None:
        """A dial to hub ``i`` succeeded: it is up."""
        h = self._check(i)
        h.failures, h.last_failure, h.probing = 0, None, False

    def dial_failed(self, i: int, now: float, jitter: float) -> None:
        """A dial to hub ``i`` failed at ``now``; ``jitter`` is a fresh draw in [0.5, 1]."""
        h = self._check(i)
        h.failures += 1
        h.last_failure = now
        h.jitter = jitter
        h.probing = False

    def lost(self, i: int, now: float, jitter: float) -> None:
        """Hub ``i`` was found away without a dial: its control channel fell silent or
        reset, or a stream on its tunnel got no status. Counts as a failed dial when
        there are other hubs to go to; with one hub it changes nothing (the control
        loop redials and backs off itself)."""
        h = self._check(i)
        if len(self.hubs) > 1:
            # A probe dial in flight stays in flight: it reports itself.
            h.failures += 1
            h.last_failure = now
            h.jitter = jitter
