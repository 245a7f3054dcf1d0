"""Fixtures for the lab tests: root-only tests are skipped elsewhere."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare.lab import netns

NEEDED_TOOLS = ("ip", "ping", "smbd", "nmbd", "smbclient", "nmblookup", "cupsd", "lp", "lpstat")


def _lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = [t for t in NEEDED_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (./run setup installs them)"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _lab_unavailable()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("lab") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def namespaces() -> Iterator[netns.StateRegistry]:
    """A state registry in a private dir; everything recorded is torn down after the test."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ss-lab-test-") as d:
        registry = netns.StateRegistry(Path(d) / "state.json")
        try:
            yield registry
        finally:
            registry.teardown()
