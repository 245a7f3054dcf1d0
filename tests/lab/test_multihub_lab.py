"""Two hub hosts at 100 ms RTT: one becomes unreachable (its WAN wire drops everything)
and a new TCP connection from the office goes through the other (bench.multihub builds
the lab; the switch time is measured there, in the benchmark, not here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.multihub import two_hub_lab
from tests.helpers import wait_for

pytestmark = pytest.mark.lab


def test_new_connection_goes_through_the_other_hub_when_one_host_is_unreachable(
    tmp_path: Path,
) -> None:
    with two_hub_lab(tmp_path, rtt_ms=100.0) as lab:
        assert lab.connect()[0]
        lab.cut(0)
        results = [lab.connect()[0] for _ in range(4)]
        assert all(results), results
        # hub 0's host comes back and hub 1's process dies: the edge finds hub 0 again
        lab.links[0].set(up=True)
        lab.kill_hub(1)
        wait_for(lambda: lab.connect()[0], timeout=90, interval=1.0,
                 what="a new connection through hub 0 again")  # fmt: skip
