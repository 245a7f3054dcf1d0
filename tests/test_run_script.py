"""``./run test``'s exit status: what CI reads, so it must be pytest's, whole.

The script runs the lab tests and the others side by side and decides the status from
both (tests/../run, ``run_tests``). Each case here runs the real script on a small
selection, as CI runs it (its static checks included), and reads only its exit status.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ONE_PASSING_TEST = "tests/test_cli.py::test_probe_sees_a_lab_import"


def run_test(*args: str, cwd: Path = REPO) -> int:
    """Exit status of ``bash run test ARGS`` (-p no:cacheprovider as .ci/run adds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        ["bash", str(REPO / "run"), "test", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )
    print(done.stdout[-3000:])
    return done.returncode


def test_passing_selection_exits_0() -> None:
    assert run_test(ONE_PASSING_TEST) == 0


def test_selection_without_tests_exits_5() -> None:
    assert run_test(ONE_PASSING_TEST, "-k", "no_test_has_this_name") == 5


def test_failing_test_outside_the_lab_fails_the_run(tmp_path: Path) -> None:
    failing = tmp_path / "test_fails.py"
    failing.write_text("def test_fails() -> None:\n    assert 1 == 2\n")
    assert run_test(str(failing)) == 1
