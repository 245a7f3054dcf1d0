"""The demo's own bookkeeping: a failed step is reported, the rest still play."""

from __future__ import annotations

from typing import cast

from spokeshare.demo import Demo, StepResult
from spokeshare.lab.netns import LabError
from spokeshare.lab.topology import Lab


def test_a_failed_step_is_reported_and_the_demo_goes_on() -> None:
    lines: list[str] = []
    demo = Demo(cast(Lab, None), out=lines.append)  # steps below never touch the lab

    def works(r: StepResult) -> None:
        r.ok = True

    def breaks(r: StepResult) -> None:
        raise LabError("no such host")

    def says_no(r: StepResult) -> None:
        r.ok = False
        r.note = "GLOBAL-NFS not listed"

    demo.step("first", works)
    demo.step("second", breaks)
    demo.step("third", says_no)
    demo.step("fourth", works)
    assert [r.ok for r in demo.results] == [True, False, False, True]
    assert demo.results[1].note == "LabError: no such host"
    assert any(line.startswith("   -> FAILED: GLOBAL-NFS not listed") for line in lines)
    assert not all(r.ok for r in demo.results)  # what run_demo_command turns into exit 1
