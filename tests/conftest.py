"""Fixtures shared by the whole suite.

Every test fails when something under test logged an ERROR (through the root logger,
from any thread) or a task of a hub, edge or LAN service died with an exception
(:attr:`spokeshare.tasks.TaskSet.crashed`), unless it is marked
``@pytest.mark.expect_errors`` because it provokes one on purpose.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare import tasks
from tests.helpers import Backend, Deployment, LoopThread, Stack, echo, make_deployment


class _ErrorRecords(logging.Handler):
    """Keeps every record at ERROR or above that reaches the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_errors_logged_or_tasks_crashed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test (at teardown, after every other fixture closed what it started)
    on an ERROR logged or a task crashed while it ran; opt out with expect_errors."""
    handler = _ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    before = {ts: ts.failures for ts in tasks.live_sets()}
    try:
        yield
    finally:
        root.removeHandler(handler)
    if request.node.get_closest_marker("expect_errors") is not None:
        return
    crashed = [
        f"{ts!r}: {exc!r}"
        for ts in tasks.live_sets()
        if ts.failures > before.get(ts, 0)
        for exc in list(ts.crashed)[-(ts.failures - before.get(ts, 0)) :]
    ]
    logged = [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        + (f" ({r.exc_info[1]!r})" if r.exc_info and r.exc_info[1] else "")
        for r in handler.records
    ]
    if crashed or logged:
        pytest.fail(
            "errors while the test ran (mark it expect_errors if they are the point):\n"
            + "\n".join(crashed + logged),
            pytrace=False,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (network namespaces, privileged daemons)")
        for item in items:
            if "lab" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def echo_backend() -> Iterator[Backend]:
    b = Backend(echo)
    yield b
    b.close()


@pytest.fixture
def deployment(tmp_path: Path, echo_backend: Backend) -> Deployment:
    return make_deployment(tmp_path, {"smb": echo_backend.port})


@pytest.fixture
def stack(deployment: Deployment, loop_thread: LoopThread) -> Iterator[Stack]:
    s = Stack(deployment, loop_thread, hub_limits={"header_timeout": 2.0})
    s.start()
    yield s
    s.close()
