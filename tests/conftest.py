"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Backend, Deployment, LoopThread, Stack, echo, make_deployment


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
