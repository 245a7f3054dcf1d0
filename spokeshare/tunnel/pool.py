"""The warm pool's policy, as a pure function of (state, now).

The edge keeps TLS tunnels to the hub open and idle so that a new LAN client
connection never waits for a TCP or TLS handshake across the WAN. This module decides
*what* the pool should do; the edge's I/O shell does it and calls back in.

Policy
------
- Target idle count = ``min_idle`` + clients waiting for a tunnel, capped at
  ``max_idle``. The pool opens the difference (counting tunnels already connecting),
  at most ``max_connecting`` at once: it grows under load and shrinks back as tunnels
  are used up and not replaced beyond the target. While clients wait, it dials
  for all of them at once (up to ``max_idle``): a burst costs one handshake time.
- An idle tunnel older than ``max_age`` is retired and replaced, so the pool never
  hands out a tunnel that a NAT box or the hub's idle timeout has silently killed.
- Failures back off exponentially (``backoff_initial`` doubling to ``backoff_max``)
  with jitter supplied by the caller (a factor in [0.5, 1.0]), and only one probe is in
  flight while backing off. One success resets the backoff.

Invariants (property-tested): never more than ``max_connecting`` connecting (or one
per waiting client, up to ``max_idle``, during a burst); never
opens while the backoff window is running; never asks to open beyond ``max_idle``.

Execution state
---------------
:class:`Pool` holds what the policy is applied to: the idle tunnels with the time each
became ready, the clients waiting for one, the dials in flight, the failure count and
the jitter of the current backoff window. The edge's shell dials, writes and closes;
every choice of *which* tunnel goes to *which* client, and which is closed, is made
here, with ``now`` a parameter. This is where pools break (httpcore's bug history:
a connection closed while handed out, or handed out twice, or past its age), so its
promises are property-tested over random event sequences:

- a tunnel leaves the pool once: handed to one client, or returned to be closed,
  never both and never twice; one the shell reported lost is never handed out;
- a tunnel whose stream ended cleanly may come back (:meth:`Pool.tunnel_returned`,
  sequential reuse, docs/protocol.md): only one that is handed out (not idle, closed
  or lost), and from then on it is handed to one client or closed, once, like a new one;
- a tunnel is never handed out at or past ``max_age``;
- a client is handed at most one tunnel, and none after it left or timed out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from spokeshare.config import PoolConfig
from spokeshare.errors import UsageError

#: A client's open header is answered after about one RTT; a status slower than this
#: many measured RTTs (and than ``open_timeout``) means the hub or the path is in
#: trouble, not merely far away.
STATUS_RTTS = 4


@dataclass(frozen=True, slots=True)
class PoolState:
    idle: int
    connecting: int
    waiters: int
    failures: int
    last_failure: float | None
    #: The jitter factor drawn for the current backoff window, in [0.5, 1.0].
    jitter: float = 1.0


@dataclass(frozen=True, slots=True)
class PoolDecision:
    open: int
    #: When the policy should be asked again even if nothing happens (backoff end).
    wake_at: float | None


def backoff_delay(cfg: PoolConfig, failures: int, jitter: float) -> float:
    if failures <= 0:
        return 0.0
    base = min(cfg.backoff_max, cfg.backoff_initial * (2 ** min(failures - 1, 30)))
    return float(base * min(1.0, max(0.5, jitter)))


def decide(cfg: PoolConfig, s: PoolState, now: float) -> PoolDecision:
    target = min(cfg.max_idle, cfg.min_idle + s.waiters)
    missing = max(0, target - s.idle - s.connecting)
    if s.failures and s.last_failure is not None:
        until = s.last_failure + backoff_delay(cfg, s.failures, s.jitter)
        if now < until:
            return PoolDecision(0, until if missing else None)
        # Backoff over: one probe at a time until something succeeds.
        return PoolDecision(1 if missing and s.connecting == 0 else 0, None)
    # A burst of clients is waiting: dial for all of them at once (each dial costs a
    # TCP and a TLS handshake across the WAN; in steps of max_connecting a burst of 50
    # at 200 ms RTT would wait 2.4 s).
    limit = max(cfg.max_connecting, min(s.waiters, cfg.max_idle))
    room = max(0, limit - s.connecting)
    return PoolDecision(min(missing, room), None)


def expired(cfg: PoolConfig, created: list[float], now: float) -> list[int]:
    """Indexes of idle tunnels (by creation time) that are too old to hand out."""
    return [i for i, t in enumerate(created) if now - t >= cfg.max_age]


#: Seconds a stream waits for its status when no other hub is left to try: longer than
#: a hub takes to answer on its own (it dials each backend for at most
#: ``limits.backend_connect_timeout``, 2 s by default, and then answers BACKEND_DOWN), so
#: that a slow backend or a busy hub is answered by the hub, not cut by the edge. A hub
#: that is silent for good is the heartbeat's to find (``hub_dead_after``).
LAST_TRY_STATUS_SECONDS = 10.0


def status_timeout(cfg: PoolConfig, rtt: float | None, last_try: bool = False) -> float:
    """Seconds a client's stream may wait for the hub's status once its open header is
    out: ``open_timeout``, or :data:`STATUS_RTTS` measured round trips on a slower link,
    after which the open goes to another hub; with none left to try (``last_try``) at
    least :data:`LAST_TRY_STATUS_SECONDS`."""
    base = max(cfg.open_timeout, STATUS_RTTS * (rtt or 0.0))
    return max(base, LAST_TRY_STATUS_SECONDS) if last_try else base


T = TypeVar("T", bound=Hashable)
C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Evaluation(Generic[T]):
    """What the shell does after :meth:`Pool.evaluate`: close ``close`` (expired idle
    tunnels), start ``open`` dials, and evaluate again at ``wake_at`` (None: only when
    something happens)."""

    close: tuple[T, ...]
    open: int
    wake_at: float | None


class Pool(Generic[T, C]):
    """The warm pool's execution state: idle tunnels (``T``), waiting clients (``C``),
    dials in flight and failures (module docstring). Pure: the shell reports events and
    carries out what each call returns; ``now`` is monotonic seconds."""

    __slots__ = ("cfg", "_idle", "_waiters", "connecting", "failures", "last_failure", "jitter")

    def __init__(self, cfg: PoolConfig) -> None:
        self.cfg = cfg
        #: Idle tunnels, oldest first, each with the time it became ready.
        self._idle: deque[tuple[T, float]] = deque()
        self._waiters: deque[C] = deque()
        #: Dials started and not yet reported (:meth:`tunnel_ready`, :meth:`dial_failed`).
        self.connecting = 0
        self.failures = 0
        self.last_failure: float | None = None
        #: The jitter factor of the current backoff window, in [0.5, 1.0].
        self.jitter = 1.0

    def __repr__(self) -> str:
        return (
            f"<Pool idle={len(self._idle)} waiting={len(self._waiters)} "
            f"connecting={self.connecting} failures={self.failures}>"
        )

    @property
    def idle(self) -> list[T]:
        """The idle tunnels, oldest first (a copy)."""
        return [t for t, _ in self._idle]

    @property
    def waiters(self) -> list[C]:
        """The waiting clients, first come first (a copy)."""
        return list(self._waiters)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def is_waiting(self, client: C) -> bool:
        return client in self._waiters

    def state(self) -> PoolState:
        return PoolState(
            len(self._idle),
            self.connecting,
            len(self._waiters),
            self.failures,
            self.last_failure,
            self.jitter,
        )

    # -- clients -------------------------------------------------------------------------
    def take(self, now: float) -> tuple[T | None, list[T]]:
        """A tunnel for a client that arrived at ``now`` (None: none is ready), and the
        expired idle tunnels met on the way, which the shell closes."""
        stale: list[T] = []
        while self._idle:
            tunnel, ready = self._idle.popleft()
            if now - ready < self.cfg.max_age:
                return tunnel, stale
            stale.append(tunnel)
        return None, stale

    def wait(self, client: C) -> None:
        """``client`` waits for the next tunnel (the shell has found none to take)."""
        self._waiters.append(client)

    def client_gone(self, client: C) -> bool:
        """``client`` closed or timed out while waiting; True if it was waiting."""
        try:
            self._waiters.remove(client)
        except ValueError:
            return False
        return True

    # -- dials -----------------------------------------------------------------------------
    def tunnel_ready(
        self, tunnel: T, now: float, live: Callable[[C], bool] = lambda c: True
    ) -> C | None:
        """A dial succeeded: the first waiting client that is still ``live`` gets the
        tunnel (returned; the shell starts its stream), else it becomes idle. Waiters
        found not live on the way are dropped. Resets the backoff."""
        self.connecting = max(0, self.connecting - 1)
        self.reachable()
        while self._waiters:
            client = self._waiters.popleft()
            if live(client):
                return client
        self._idle.append((tunnel, now))
        return None

    def tunnel_returned(
        self, tunnel: T, now: float, live: Callable[[C], bool] = lambda c: True
    ) -> tuple[C | None, bool]:
        """A tunnel handed out earlier finished its stream cleanly and may carry another
        (sequential reuse). Returns ``(client, keep)``: the first waiting client still
        ``live`` gets it (the shell starts its stream); else it becomes idle again, its
        age counted from ``now`` (it has just proved alive), unless ``max_idle`` tunnels
        are idle already: then ``keep`` is False and the shell closes it. Dials and
        backoff are not touched. Raises UsageError for a tunnel that is idle already."""
        if any(t == tunnel for t, _ in self._idle):
            raise UsageError(f"tunnel {tunnel!r} returned while idle in the pool")
        while self._waiters:
            client = self._waiters.popleft()
            if live(client):
                return client, True
        if len(self._idle) >= self.cfg.max_idle:
            return None, False
        self._idle.append((tunnel, now))
        return None, True

    def dial_failed(self, now: float, jitter: float) -> None:
        """A pooled dial failed at ``now``; ``jitter`` is a fresh draw in [0.5, 1.0]."""
        self.connecting = max(0, self.connecting - 1)
        self.unreachable(now, jitter)

    def dial_started(self) -> None:
        """The shell started a dial of its own accord (a probe of a hub that was away,
        spokeshare.tunnel.hubs): it counts as connecting until reported."""
        self.connecting += 1

    def dial_ended(self) -> None:
        """A dial failed, or was not started, without putting the whole pool in backoff
        (another hub is still reachable, spokeshare.tunnel.hubs)."""
        self.connecting = max(0, self.connecting - 1)

    def drop(self, which: Callable[[T], bool]) -> list[T]:
        """Take every idle tunnel for which ``which`` is true out of the pool (their hub
        is away): the shell closes them; they are never handed out."""
        gone = [t for t, _ in self._idle if which(t)]
        if gone:
            self._idle = deque((t, r) for t, r in self._idle if not which(t))
        return gone

    def unreachable(self, now: float, jitter: float) -> None:
        """Any dial to the hub failed (a pooled one or the control channel's): one more
        failure, and a new backoff window from ``now`` with ``jitter``."""
        self.failures += 1
        self.last_failure = now
        self.jitter = jitter

    def reachable(self) -> None:
        """A dial succeeded (or the control channel is up): the backoff is over."""
        self.failures, self.last_failure = 0, None

    def hub_heard(self, now: float) -> bool:
        """The hub answered at ``now`` on a tunnel already held (a heartbeat, a stream's
        end) while dials back off: the path works again, so the backoff window ends now
        (the next evaluation sends one probe dial), yet no sooner than ``backoff_initial``
        after the last failure, so that a hub that answers on its tunnels but fails new
        dials is probed at that pace at most. The failure count stays: a probe that
        fails backs off as before. True if a window was cut short."""
        if not self.failures or self.last_failure is None:
            return False
        end = self.last_failure + backoff_delay(self.cfg, self.failures, self.jitter)
        new_end = max(now, self.last_failure + self.cfg.backoff_initial)
        if new_end >= end:
            return False
        # decide() ends the window at last_failure + backoff_delay(...): move that.
        self.last_failure = new_end - backoff_delay(self.cfg, self.failures, self.jitter)
        return True

    def tunnel_lost(self, tunnel: T) -> bool:
        """An idle tunnel closed under us (the hub or the WAN closed it); True if it was
        idle here (it is forgotten and never handed out)."""
        for i, (t, _) in enumerate(self._idle):
            if t == tunnel:
                del self._idle[i]
                return True
        return False

    def drain(self) -> tuple[list[T], list[C]]:
        """The hub is away: every idle tunnel (to close) and waiting client (to refuse)
        leave the pool; it refills once the hub is back."""
        idle = [t for t, _ in self._idle]
        waiters = list(self._waiters)
        self._idle.clear()
        self._waiters.clear()
        return idle, waiters

    # -- the policy ------------------------------------------------------------------------
    def evaluate(self, now: float, dial: bool = True) -> Evaluation[T]:
        """Retire expired idle tunnels, then apply :func:`decide` (only when ``dial``:
        a revoked office dials no more). The dials asked for count as connecting from
        here; ``wake_at`` includes the next idle tunnel's expiry."""
        close: list[T] = []
        while self._idle and now - self._idle[0][1] >= self.cfg.max_age:
            close.append(self._idle.popleft()[0])
        # Ages are not always in order (a tunnel reported ready late): check the rest.
        if any(now - ready >= self.cfg.max_age for _, ready in self._idle):
            keep = [(t, r) for t, r in self._idle if now - r < self.cfg.max_age]
            close += [t for t, r in self._idle if now - r >= self.cfg.max_age]
            self._idle = deque(keep)
        if not dial:
            return Evaluation(tuple(close), 0, None)
        decision = decide(self.cfg, self.state(), now)
        self.connecting += decision.open
        wake = decision.wake_at
        if self._idle:
            oldest = min(r for _, r in self._idle) + self.cfg.max_age
            wake = oldest if wake is None else min(wake, oldest)
        return Evaluation(tuple(close), decision.open, wake)
