"""Several backends for one hub service: which one a new stream dials, and their health.

Pure: no sockets, no clock (``now`` is a monotonic time in seconds, passed in), no
logging; the hub (:mod:`spokeshare.tunnel.hub`) carries out what this decides and
logs the events it returns.

A service in ``hub.toml`` names one backend or several, in order (``backends = [...]``,
e.g. a CTDB cluster's public addresses). Each backend is UP or DOWN:

=====  ===========================  =========================================
state  event                        what follows
=====  ===========================  =========================================
UP     a connect succeeds           stays UP; checked again ``check_interval``
                                    after the last check (0: never)
UP     a connect is refused, times  DOWN (:class:`BackendDown`), probed again
       out or fails                 ``probe_initial`` seconds later
DOWN   a probe fails                probed again after twice the last interval,
                                    at most ``probe_max`` seconds
DOWN   a probe or a stream's        UP (:class:`BackendUp`)
       connect succeeds
=====  ===========================  =========================================

Until its first connect or probe has finished (a stream's, or the first check
``check_interval`` after the hub's start) a backend counts as UP by assumption and is
reported as not checked (``BackendView.checked``), so that no report calls it up
before anything has reached it.

One failed connect is enough to mark a backend DOWN: the next stream is not made to
wait for it again. A probe is a TCP connect and close, nothing more; a stream's own
connect counts as one too (``via``).

Choosing (:meth:`BackendSet.choose`): a stream tries each backend at most once. It
takes a backend that is UP and not tried yet; only when none is left does it take a
DOWN one (in order), so that a backend that came back serves at once instead of after
its next probe. ``balance`` says which UP backend comes first:

- ``order`` (the default): the first UP one in the configured order. Right for any
  list, also one whose later entries are only standbys (a second cupsd whose queues
  differ): nothing reaches a standby while the first answers.
- ``round-robin``: each new stream starts one further along the list. Right when the
  backends are equivalent, as a CTDB cluster's public addresses are (every node
  serves the same shares from the same cluster filesystem): the offices' streams
  spread over the nodes instead of all landing on the first.

The hub starts the next attempt of a stream in parallel when the one running has not
connected within :data:`ATTEMPT_DELAY` (RFC 8305 section 5), so that a backend that
does not answer at all costs a client a quarter of a second, not the whole connect
timeout; the slow attempt goes on to its own timeout and marks its backend down.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from spokeshare.errors import UsageError

#: Seconds a stream's connect attempt runs alone before the next backend is tried in
#: parallel: RFC 8305 section 5 ("Connection Attempt Delay"), its recommended 250 ms.
ATTEMPT_DELAY = 0.25
#: Most backends one service may name (each is dialled at most once per stream).
MAX_BACKENDS = 32


class Balance(enum.Enum):
    """Which UP backend a new stream tries first (module docstring)."""

    ORDER = "order"
    ROUND_ROBIN = "round-robin"


class Health(enum.Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ProbePolicy:
    """When backends are probed, in seconds.

    - ``initial``: after a backend went DOWN, the first probe; each failed probe
      doubles the wait, up to ``maximum``;
    - ``check_interval``: an UP backend is probed this long after its last connect or
      probe (so a public address that moved away is seen without a client finding it);
      0 turns it off.

    Raises ValueError for a value out of range (``0 < initial <= maximum``,
    ``check_interval >= 0``, all finite).
    """

    initial: float = 1.0
    maximum: float = 30.0
    check_interval: float = 10.0

    def __post_init__(self) -> None:
        values = (self.initial, self.maximum, self.check_interval)
        if not all(math.isfinite(v) for v in values):
            raise UsageError("probe intervals must be finite")
        if not 0 < self.initial <= self.maximum:
            raise UsageError("need 0 < initial <= maximum")
        if self.check_interval < 0:
            raise UsageError("check_interval must not be negative")


@dataclass(frozen=True, slots=True)
class BackendDown:
    """A backend went DOWN: ``reason`` why, probed again in ``retry_in`` seconds."""

    service: str
    address: str
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class BackendUp:
    """A DOWN backend answered again after ``down_for`` seconds; ``via`` ``probe`` or
    ``stream`` (a stream's connect found it)."""

    service: str
    address: str
    down_for: float
    via: str


Event = BackendDown | BackendUp


@dataclass(frozen=True, slots=True)
class BackendView:
    """One backend as :meth:`BackendSet.view` reports it: ``since`` (monotonic seconds)
    it is in ``health``, the last failure's reason ("" before any), failed connects and
    probes, streams connected through it, when it is probed next (None: a probe is
    running, or none is planned), and whether any connect or probe to it has finished
    (``checked``; before that ``health`` is UP by assumption)."""

    address: str
    position: int
    health: Health
    since: float
    last_error: str
    failures: int
    streams: int
    next_probe: float | None
    checked: bool = True


@dataclass(slots=True)
class _Entry:
    address: str
    health: Health
    since: float
    next_probe: float | None
    interval: float = 0.0  # the wait before the current next_probe, while DOWN
    probing: bool = False
    last_error: str = ""
    failures: int = 0
    streams: int = 0
    checked: bool = False


class BackendSet:
    """The backends of one service, in configured order, and their health.

    ``addresses`` are the backends' labels (``HOST:PORT``), distinct, 1 to
    :data:`MAX_BACKENDS`; methods name a backend by its index in them. Every backend
    starts UP (nothing is known against it yet) and not checked, its first check
    ``check_interval`` after ``now``. Raises ValueError for an empty, too long or repeating list.
    """

    def __init__(
        self,
        service: str,
        addresses: Sequence[str],
        balance: Balance = Balance.ORDER,
        policy: ProbePolicy | None = None,
        now: float = 0.0,
    ) -> None:
        if not 1 <= len(addresses) <= MAX_BACKENDS:
            raise UsageError(f"a service has 1 to {MAX_BACKENDS} backends")
        if len(set(addresses)) != len(addresses):
            raise UsageError("a backend is listed twice")
        self.service = service
        self.balance = balance
        self.policy = policy or ProbePolicy()
        self._entries = [_Entry(a, Health.UP, now, self._check_at(now)) for a in addresses]
        #: Round-robin: where the next stream starts.
        self._cursor = 0

    def __repr__(self) -> str:
        states = ", ".join(f"{e.address} {e.health.value}" for e in self._entries)
        return f"<BackendSet {self.service} {self.balance.value}: {states}>"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(e.address for e in self._entries)

    def health(self, i: int) -> Health:
        return self._entries[i].health

    def _check_at(self, now: float) -> float | None:
        return now + self.policy.check_interval if self.policy.check_interval else None

    # -- choosing ------------------------------------------------------------------------
    def choose(self, tried: Collection[int] = ()) -> int | None:
        """The backend a stream should try next, given those it ``tried`` already
        (indices): an UP one not tried (the first in order, or for round-robin the
        first from the rotating start), else a DOWN one not tried, in order; None
        when every one has been tried. A stream's first choice moves the round-robin
        start on by one."""
        n = len(self._entries)
        start = self._cursor if self.balance is Balance.ROUND_ROBIN else 0
        if not tried and self.balance is Balance.ROUND_ROBIN:
            self._cursor = (self._cursor + 1) % n
        rotated = [(start + k) % n for k in range(n)]
        for i in rotated:
            if i not in tried and self._entries[i].health is Health.UP:
                return i
        for i in range(n):
            if i not in tried:
                return i
        return None

    # -- what happened -------------------------------------------------------------------
    def connected(self, i: int, now: float, via: str = "stream") -> list[Event]:
        """Backend ``i`` accepted a connect at ``now`` (``via`` ``stream`` or
        ``probe``): UP, checked again ``check_interval`` later."""
        e = self._entries[i]
        e.checked = True
        if via == "probe":
            e.probing = False
        else:
            e.streams += 1
        out: list[Event] = []
        if e.health is Health.DOWN:
            out.append(BackendUp(self.service, e.address, max(0.0, now - e.since), via))
            e.health, e.since = Health.UP, now
        if not e.probing:
            e.next_probe = self._check_at(now)
        return out

    def failed(self, i: int, now: float, reason: str, via: str = "stream") -> list[Event]:
        """A connect to backend ``i`` was refused, timed out or failed at ``now``: an
        UP backend goes DOWN (probed ``initial`` seconds later); a failed probe doubles
        the wait before the next one, up to ``maximum``. A stream that failed on a DOWN
        backend changes no schedule."""
        e = self._entries[i]
        e.checked = True
        e.failures += 1
        e.last_error = reason
        if via == "probe":
            e.probing = False
        if e.health is Health.UP:
            e.health, e.since = Health.DOWN, now
            e.interval = self.policy.initial
            if not e.probing:
                e.next_probe = now + e.interval
            return [BackendDown(self.service, e.address, reason, e.interval)]
        if via == "probe":
            e.interval = min(e.interval * 2, self.policy.maximum)
            e.next_probe = now + e.interval
        return []

    # -- probing -------------------------------------------------------------------------
    def handle_timer(self, now: float) -> list[int]:
        """The backends to probe now (their probe time has come and none is running);
        each is counted as probing until :meth:`connected` or :meth:`failed` says
        ``via="probe"``."""
        out = []
        for i, e in enumerate(self._entries):
            if not e.probing and e.next_probe is not None and e.next_probe <= now:
                e.probing = True
                e.next_probe = None
                out.append(i)
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` next has something (monotonic seconds), None: never."""
        times = [e.next_probe for e in self._entries if e.next_probe is not None]
        return min(times) if times else None

    # -- reporting and reloading ---------------------------------------------------------
    def view(self) -> tuple[BackendView, ...]:
        """Every backend now, in configured order."""
        return tuple(
            BackendView(
                e.address, i, e.health, e.since, e.last_error, e.failures, e.streams,
                e.next_probe, e.checked,
            )
            for i, e in enumerate(self._entries)
        )  # fmt: skip

    def carry_over(self, old: BackendSet) -> None:
        """Take the state of each backend ``old`` knows by the same address (a reload
        that keeps a backend keeps what is known of it; a new one starts UP, not checked)."""
        known = {e.address: e for e in old._entries}
        for k, e in enumerate(self._entries):
            prev = known.get(e.address)
            if prev is not None:
                self._entries[k] = _Entry(
                    prev.address, prev.health, prev.since, prev.next_probe, prev.interval,
                    prev.probing, prev.last_error, prev.failures, prev.streams,
                    prev.checked,
                )  # fmt: skip
        if self.balance is old.balance:
            self._cursor = old._cursor % len(self._entries)
