"""When a virtual name held by another host is checked again: one schedule for the
NetBIOS name service (nbns), LLMNR and mDNS host names. Pure.

RFC 1001/1002, RFC 4795 and RFC 6762 leave a name in conflict to its other owner and
say nothing of asking again; the edge asks, so that the name comes back by itself once
that owner is gone (an old nmbd stopped, a laptop that took the name leaving, one
spoofed answer). The first check comes soon, :data:`RECHECK_FIRST` seconds after the
conflict, and each check that finds the name still held doubles the wait, up to the
protocol's longest interval (60 s by default): a departed owner costs seconds, a
present one is asked about once a minute (one query and three registrations per
name for nbns, one query for LLMNR, three probes for mDNS).
"""

from __future__ import annotations

from spokeshare.errors import UsageError

#: Seconds from a conflict to the first check of the name (our choice).
RECHECK_FIRST = 5.0
#: The longest wait between two checks, each protocol's default (our choice).
RECHECK_LONGEST = 60.0


def recheck_delay(
    checks_failed: int, longest: float = RECHECK_LONGEST, first: float = RECHECK_FIRST
) -> float:
    """Seconds until the next check of a name in conflict, after ``checks_failed``
    checks in a row (the claim that found the conflict counts as the first) found it
    held: ``first`` doubled per further failure, at most ``longest``.

    UsageError for ``checks_failed`` < 1 or a non-positive interval.
    """
    if checks_failed < 1:
        raise UsageError(f"recheck after {checks_failed} failed checks")
    if first <= 0 or longest <= 0:
        raise UsageError("re-check intervals must be positive")
    return min(longest, first * 2.0 ** min(checks_failed - 1, 16))
