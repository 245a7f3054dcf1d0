"""How many log lines a flood may cost: one per cause per source per interval, sans-IO.

A port scanner or a handshake flood against the hub's internet-facing port fails
thousands of times a second; a WARNING for each would fill the disk and bury every
other line. :class:`LogLimiter` lets the first failure of a kind (``cause``) from a
peer (``source``, its address without the port) through, then stays quiet for that
pair until ``interval`` has passed, and never lets more than ``max_lines`` through in
one interval overall (a flood from many addresses). What it holds back is counted;
the caller logs the counts once per interval (:meth:`LogLimiter.summary`) and keeps
its own per-cause totals for status and metrics.

Memory is bounded: at most ``max_sources`` (cause, source) pairs are remembered,
least recently seen forgotten first. ``now`` (seconds, monotonic) is a parameter.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from spokeshare.errors import UsageError

#: (cause, source) pairs remembered at most.
MAX_SOURCES = 1024


class LogLimiter:
    """``admit(cause, source, now)``: should this event get a log line of its own?

    Raises UsageError for a non-positive ``interval``, ``max_lines`` or ``max_sources``.
    """

    def __init__(
        self, interval: float = 60.0, max_lines: int = 50, max_sources: int = MAX_SOURCES
    ) -> None:
        if interval <= 0 or max_lines < 1 or max_sources < 1:
            raise UsageError("interval, max_lines and max_sources must be positive")
        self.interval = interval
        self.max_lines = max_lines
        self.max_sources = max_sources
        self._last: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._window_start: float | None = None
        self._lines = 0
        self._held: Counter[str] = Counter()
        self._summary_at: float | None = None

    def __repr__(self) -> str:
        return f"<LogLimiter pairs={len(self._last)} held={sum(self._held.values())}>"

    def _roll(self, now: float) -> None:
        if self._window_start is None or now - self._window_start >= self.interval:
            self._window_start = now
            self._lines = 0

    def admit(self, cause: str, source: str, now: float) -> bool:
        """True: log this one. False: it was counted under ``cause`` for the summary."""
        self._roll(now)
        key = (cause, source)
        last = self._last.pop(key, None)
        fresh = last is None or now - last >= self.interval
        ok = fresh and self._lines < self.max_lines
        self._last[key] = now if ok or last is None else last
        while len(self._last) > self.max_sources:
            self._last.popitem(last=False)
        if ok:
            self._lines += 1
        else:
            self._held[cause] += 1
        return ok

    def summary(self, now: float) -> dict[str, int]:
        """Counts held back per cause since the last summary, at most once per ``interval``.

        Empty when nothing was held back or the last summary is less than an interval old.
        """
        if not self._held:
            return {}
        if self._summary_at is not None and now - self._summary_at < self.interval:
            return {}
        self._summary_at = now
        out = dict(self._held)
        self._held.clear()
        return out
