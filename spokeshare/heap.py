"""Giving freed heap memory back to the system after a burst of short-lived connections.

Every TLS handshake allocates native memory (OpenSSL's SSL object and its record
buffers, the event loop's SSL protocol buffers) and frees it when the connection
ends. glibc's malloc returns freed memory to the system only from the top of its
heap (M_TRIM_THRESHOLD); a burst of thousands of handshakes in progress at once
leaves the heap large and full of free holes below a few live blocks, and the
process keeps that memory as RSS for good. ``malloc_trim(0)`` releases the free
pages anywhere in the heap (glibc 2.8+, malloc_trim(3)). Elsewhere it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

from spokeshare.errors import UsageError


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return free heap pages to the system; True if any were released."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


class ReleasePolicy:
    """When to give freed heap back, as a pure function of what happened and ``now``.

    After at least ``churn`` connections have ended since the last release, and no
    more often than every ``interval`` seconds (a release walks the whole heap: a few
    milliseconds for a few hundred MiB, so a busy daemon may well do it every interval).
    Raises UsageError for non-positive arguments.
    """

    def __init__(self, churn: int = 1, interval: float = 10.0) -> None:
        if churn < 1 or interval <= 0:
            raise UsageError("churn and interval must be positive")
        self.churn = churn
        self.interval = interval
        self._ended = 0
        self._last: float | None = None
        self.releases = 0

    def __repr__(self) -> str:
        return f"<ReleasePolicy ended={self._ended} releases={self.releases}>"

    def note(self, ended: int = 1) -> None:
        """``ended`` connections (handshakes failed, tunnels closed) went away."""
        self._ended += ended

    def due(self, now: float) -> bool:
        """True (and counted as done) if a release should run now."""
        if self._ended < self.churn:
            return False
        if self._last is not None and now - self._last < self.interval:
            return False
        self._ended = 0
        self._last = now
        self.releases += 1
        return True
