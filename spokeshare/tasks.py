"""The tasks a daemon owns: every one is kept, its failure logged once, here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class TaskSet:
    """Per-connection and housekeeping tasks of one daemon (hub or edge).

    A task's failure is logged once, with its traceback, and counted; nothing is
    swallowed and nothing is left running after :meth:`cancel_all`.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"<TaskSet {self._what} running={len(self._tasks)} failed={self.failures}>"

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures += 1
            self._log.error("%s failed", self._what, exc_info=task.exception())

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
