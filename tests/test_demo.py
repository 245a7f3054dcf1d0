"""The demo's own bookkeeping: a failed step is reported, the rest still play."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import cast

import pytest

from spokeshare.demo import OFFICES, Demo, StepResult
from spokeshare.lab import services, spokes
from spokeshare.lab.netns import LabError
from spokeshare.lab.topology import Lab
from spokeshare.lab.wire import LinkSettings


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


# --- the printing scene -------------------------------------------------------------------


@pytest.mark.lab
def test_printing_scene_discovers_prints_and_completes_at_hq() -> None:
    """Step 4 on a real lab: ippfind on sf-pc finds hq-laser at sf's edge, lp prints to
    the address found, and the job shows completed in HQ's cupsd."""
    path = Path(tempfile.mkdtemp(prefix="ss-demo-print-"))
    path.chmod(0o755)
    lab = Lab(
        path, OFFICES, LinkSettings(rtt_ms=20),
        start_hub=spokes.start_hub, start_edge=spokes.start_edge,
    )  # fmt: skip
    lines: list[str] = []
    try:
        lab.up()
        demo = Demo(lab, out=lines.append)
        demo.step("print", demo.print_job)
    finally:
        lab.down()
        shutil.rmtree(path, ignore_errors=True)
    text = "\n".join(lines)
    result = demo.results[0]
    assert result.ok, text
    assert result.note.startswith("found by DNS-SD"), text
    sf = lab.office("sf")
    assert f"lp -h {sf.edge_ip}:631 -d {services.PRINTER}" in text


#: ``ippfind _ipp._tcp,_universal -T 5 -x echo IPPFIND_FORMAT ;`` on nyc-pc (avahi-daemon
#: 0.8, cups-ipp-utils 2.4.2), nyc's edge advertising HQ's two shared queues.
IPPFIND_CAPTURED = (
    "HQ colour (lab)|GLOBAL-NFS.local|631|printers/hq-color|application/pdf,"
    "application/postscript,image/jpeg,image/png,image/pwg-raster,image/urf\n"
    "HQ laser (lab)|GLOBAL-NFS.local|631|printers/hq-laser|application/pdf,"
    "application/postscript,image/jpeg,image/png,image/pwg-raster,image/urf\n"
)
#: ``avahi-resolve-host-name -4 GLOBAL-NFS.local`` on nyc-pc.
RESOLVE_CAPTURED = "GLOBAL-NFS.local\t198.18.11.1\n"
#: ``lpstat -h HQ-SOCKET -W completed -o hq-laser`` at HQ after one job from nyc-pc.
LPSTAT_CAPTURED = "hq-laser-1              remroot           1024   Mon Nov 30 17:29:46 2026\n"


def test_ippfind_output_gives_each_printer_host_and_port() -> None:
    from spokeshare.demo import _ippfind_printers

    assert _ippfind_printers(IPPFIND_CAPTURED) == {
        "printers/hq-color": ("GLOBAL-NFS.local", 631),
        "printers/hq-laser": ("GLOBAL-NFS.local", 631),
    }
    noisy = "ippfind: Unable to browse\nbroken|row\nX|h|notaport|printers/x|pdf\n"
    assert _ippfind_printers(noisy + IPPFIND_CAPTURED).keys() == {
        "printers/hq-color",
        "printers/hq-laser",
    }


def test_resolved_address_and_completed_jobs_from_the_real_tools() -> None:
    from spokeshare.demo import _completed_jobs, _resolved_address

    assert _resolved_address(RESOLVE_CAPTURED, "GLOBAL-NFS.local") == "198.18.11.1"
    assert _resolved_address(RESOLVE_CAPTURED, "GLOBAL-NFS.local.") == "198.18.11.1"
    assert _resolved_address("Failed to resolve host name\n", "GLOBAL-NFS.local") is None
    assert _completed_jobs(LPSTAT_CAPTURED) == {"hq-laser-1"}
    assert _completed_jobs("") == set()
