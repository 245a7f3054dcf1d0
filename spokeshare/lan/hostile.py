"""How the LAN services treat input from the office LAN: hostile until proven otherwise.

Every LAN service (NetBIOS 137/138, session 139, WS-Discovery 3702/5357, LLMNR,
mDNS) follows the same rule: whatever a LAN host sends, the edge writes at most a
rate-limited DEBUG line and bumps a counter in the service's ``statistics()``;
never an ERROR, never a traceback (zeroconf's ``_listener.py`` does the same with
its "invalid packet" lines). A flood of bad packets must cost the edge a counter
increment each, not a log write each (docs/lan-hardening.md).

- :class:`RateLimitedLog`: one line per key per interval, a count of everything;
- :class:`GuardedDatagramProtocol`: the top of every datagram handler. An
  exception escaping ``datagram_received`` would reach the event loop's exception
  handler, which logs it at ERROR with a traceback, once per packet; here it is
  caught once, counted and logged at DEBUG (rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from spokeshare.errors import UsageError
from spokeshare.logfmt import Line

#: At most one line per key per this many seconds (zeroconf logs bad packets the same way).
LOG_INTERVAL = 10.0
#: Keys remembered; beyond that the table is cleared (bounded memory under spoofing).
MAX_KEYS = 1024
#: Lines per counter per interval, whatever the keys (a spoofer has many sources).
MAX_LINES_PER_INTERVAL = 5


class RateLimitedLog:
    """Log at most one line per ``key`` per ``interval`` seconds, and at most
    MAX_LINES_PER_INTERVAL per ``what`` whatever the key; count every call.

    ``counts`` maps each ``what`` (a short counter name) to how often it happened,
    logged or not; services merge it into their ``statistics()``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._window: dict[str, tuple[float, int]] = {}
        self.counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<RateLimitedLog {self._logger.name} {self.counts}>"

    def __call__(
        self, what: str, key: str, msg: str | Line, *args: object, level: int = logging.DEBUG
    ) -> bool:
        """Count ``what``; log ``msg % args`` unless ``(what, key)`` logged recently.

        ``msg`` is prose (DEBUG only) or a :class:`~spokeshare.logfmt.Line` of
        spokeshare.logevents, which may be logged at any ``level`` and is written with
        the count so far as its ``count`` field. Returns whether the line was written;
        raises UsageError for prose above DEBUG (an operator's lines are events).
        """
        if not isinstance(msg, Line) and level != logging.DEBUG:
            raise UsageError("a line above DEBUG must be a logfmt.Line")
        self.counts[what] = self.counts.get(what, 0) + 1
        now = self._clock()
        last = self._last.get((what, key))
        if last is not None and now - last < self._interval:
            return False
        start, lines = self._window.get(what, (now, 0))
        if now - start >= self._interval:
            start, lines = now, 0
        if lines >= MAX_LINES_PER_INTERVAL:
            return False
        self._window[what] = (start, lines + 1)
        if len(self._last) >= MAX_KEYS:
            self._last.clear()
        self._last[(what, key)] = now
        if isinstance(msg, Line):
            self._logger.log(level, "%s", msg.adding(count=self.counts[what]))
        else:
            self._logger.debug(msg + " (%s so far)", *args, self.counts[what])
        return True


class GuardedDatagramProtocol(asyncio.DatagramProtocol):
    """Hands each datagram to ``handler(data, addr)``; nothing it raises escapes.

    The handler catches what it expects (its decoders' :class:`DecodeError`);
    anything else is a bug on our side that one packet triggered: counted as
    ``internal_errors`` in ``log.counts`` and logged at DEBUG, rate-limited, so that a
    flood of such packets cannot flood the log.
    """

    def __init__(
        self, handler: Callable[[bytes, Any], None], log: RateLimitedLog, what: str
    ) -> None:
        self._handler = handler
        self._log = log
        self._what = what

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self._handler(data, addr)
        except Exception as exc:  # noqa: BLE001 - the top of the handler (see class doc)
            source = str(addr[0]) if isinstance(addr, tuple) and addr else "?"
            self._log(
                "internal_errors",
                self._what,
                "%s: packet from %s raised %r; dropped",
                self._what,
                source,
                exc,
            )

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for our answers (port unreachable after a spoofed query).
        self._log("socket_errors", self._what, "%s: socket error: %s", self._what, exc)
