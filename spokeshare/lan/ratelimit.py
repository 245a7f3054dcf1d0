"""Answer budgets for the LAN responders: per source and for everyone together, sans-IO.

A responder that answers every query can be made to send traffic at a LAN host
that never asked (a spoofed source) or to flood the LAN; a per-source budget stops
one chatty host, but a spoofer has as many sources as it likes, so a global budget
bounds what the edge sends in all (docs/lan-hardening.md). Token buckets: each
holds ``burst`` tokens and refills at ``rate`` per second; an answer costs one
token from its source's bucket and one from the global one. Sources are kept in
an LRU table of bounded size (oldest forgotten first). ``now`` is a parameter.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from spokeshare.errors import UsageError

#: Sources remembered (oldest forgotten first): bounded memory under spoofing.
MAX_SOURCES = 1024


@dataclass(frozen=True)
class Budget:
    """Tokens: ``burst`` at most, refilled at ``rate`` per second (both > 0)."""

    burst: float
    rate: float

    def __post_init__(self) -> None:
        if self.burst < 1 or self.rate <= 0:
            raise UsageError("a budget needs burst >= 1 and rate > 0")


class AnswerBudget:
    """``allow(source, now)``: may we answer ``source`` now? Spends the tokens if so.

    ``refused_source`` / ``refused_global`` count refusals by the bucket that ran out.
    """

    def __init__(self, per_source: Budget, overall: Budget, max_sources: int = MAX_SOURCES) -> None:
        if max_sources < 1:
            raise UsageError("max_sources must be at least 1")
        self.per_source = per_source
        self.overall = overall
        self._max = max_sources
        self._sources: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()
        self._global = (overall.burst, float("-inf"))
        self.refused_source = 0
        self.refused_global = 0

    def __repr__(self) -> str:
        return (
            f"<AnswerBudget sources={len(self._sources)} refused="
            f"{self.refused_source}/{self.refused_global}>"
        )

    @staticmethod
    def _refill(state: tuple[float, float], budget: Budget, now: float) -> float:
        tokens, last = state
        if last == float("-inf"):
            return budget.burst
        return min(budget.burst, tokens + max(0.0, now - last) * budget.rate)

    def allow(self, source: Hashable, now: float) -> bool:
        mine = self._refill(
            self._sources.pop(source, (self.per_source.burst, now)), self.per_source, now
        )
        everyone = self._refill(self._global, self.overall, now)
        ok = mine >= 1.0 and everyone >= 1.0
        if ok:
            mine -= 1.0
            everyone -= 1.0
        elif mine < 1.0:
            self.refused_source += 1
        else:
            self.refused_global += 1
        self._sources[source] = (mine, now)
        self._global = (everyone, now)
        while len(self._sources) > self._max:
            self._sources.popitem(last=False)
        return ok
