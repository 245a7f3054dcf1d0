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
"""

from __future__ import annotations

from dataclasses import dataclass

from spokeshare.config import PoolConfig


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
