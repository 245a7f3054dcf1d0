"""The tasks a daemon owns: every one is kept, its failure logged once, here.

Every task the hub, the edge and the LAN services start goes through a
:class:`TaskSet`; closing one (:meth:`TaskSet.aclose`) cancels its tasks and waits
until each has ended, so nothing of a stopped daemon runs on. A task that ends with an
exception (not a cancellation) is logged at ERROR with its traceback, counted and kept
in :attr:`TaskSet.crashed`; the test suite fails a test on either (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Coroutine
from typing import Any

from spokeshare.logfmt import Line

#: Exceptions a TaskSet keeps (the oldest dropped first); ``failures`` counts them all.
MAX_CRASHED = 16
#: Rounds of cancel-and-wait in :meth:`TaskSet.aclose` (a task ending may start another).
MAX_CLOSE_ROUNDS = 8

_every: weakref.WeakSet[TaskSet] = weakref.WeakSet()


def live_sets() -> list[TaskSet]:
    """Every TaskSet of this process not yet garbage-collected (for the test suite)."""
    return list(_every)


class TaskSet:
    """Per-connection and housekeeping tasks of one daemon or service.

    A task's failure is logged once, with its traceback, counted in ``failures`` and
    kept in ``crashed``; nothing is swallowed and nothing is left running after
    :meth:`aclose`.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0
        #: The exceptions that ended tasks, newest last (at most MAX_CRASHED).
        self.crashed: collections.deque[BaseException] = collections.deque(maxlen=MAX_CRASHED)
        _every.add(self)

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"<TaskSet {self._what} running={len(self._tasks)} failed={self.failures}>"

    def spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> asyncio.Task[None]:
        """Run ``coro`` as a task of this set; returns the task."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failures += 1
            self.crashed.append(exc)
            self._log.error("%s", Line("task failed", tasks=self._what, error=exc), exc_info=exc)

    async def aclose(self) -> None:
        """Cancel every task and wait until each has ended.

        The calling task is left alone when it belongs to the set (a task may close its
        own daemon). A task that fails instead of ending cancelled is logged and kept
        like any other failure. Cancelling the caller cancels the wait, not the close:
        the tasks have been told to stop either way.
        """
        me = asyncio.current_task()
        for _ in range(MAX_CLOSE_ROUNDS):
            tasks = [t for t in self._tasks if t is not me]
            if not tasks:
                return
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)
        left = [t for t in self._tasks if t is not me]
        if left:
            self._log.error("%s", Line("tasks still running", tasks=self._what, count=len(left)))
