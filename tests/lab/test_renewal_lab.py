"""Certificate renewal in the lab (root only): office nyc's certificate lives 100 s, so
its edge renews it over the WAN about a minute after it was issued. The WAN is cut just
before that moment and the hub restarted during the outage: renewal fails (logged,
reported in the edge's status file and in ``office list``), then succeeds once the link
is back, the bundle on disk holds the new certificate, and after the old certificate
has expired an office PC still reaches HQ's share through the edge (new tunnels use the
new certificate). About two minutes for the module.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from spokeshare import bundle, enrollment, logfmt
from spokeshare.lab import services, spokes
from spokeshare.lab.topology import Lab
from spokeshare.lab.wire import LinkSettings
from tests.helpers import wait_for
from tests.lab.building import running_lab

pytestmark = pytest.mark.lab

LINK = LinkSettings(rtt_ms=40.0, rate_mbit=50.0)
LIFETIME_DAYS = 100 / 86400  # 100 seconds (110 with the backdating)


def start_edge_short_lived(lab: Lab, office: str) -> int:
    """The office's edge, its certificate first re-issued for 100 seconds (``office
    renew --days``, the previous one cut), so the clock starts as the edge does."""
    out = lab.deploy_dir / f"{office}-short.bundle"
    enrollment.renew_office(lab.deploy_dir, office, out, days=LIFETIME_DAYS, cut_previous=True)
    os.replace(out, spokes.bundle_path(lab, office))
    return spokes.start_edge(lab, office)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(
        "ss-renew-", ("nyc",), LINK, start_hub=spokes.start_hub, start_edge=start_edge_short_lived
    ) as lab:
        yield lab


def _log(lab: Lab, what: str) -> str:
    try:
        return (lab.logs_dir / f"{what}.log").read_text()
    except OSError:
        return ""


def _edge_status(lab: Lab) -> dict[str, object]:
    path = lab.host_dir(lab.office("nyc").edge) / "state" / "lan-status.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    cert = data.get("certificate")
    return cert if isinstance(cert, dict) else {}


def _office_list(lab: Lab) -> dict[str, object]:
    run = lab.exec(
        "hq",
        [sys.executable, "-m", "spokeshare", "office", "list", "--dir", str(lab.deploy_dir),
         "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    (nyc,) = [o for o in json.loads(run.stdout)["offices"] if o["office"] == "nyc"]
    return dict(nyc)


def _ls_share(lab: Lab) -> subprocess.CompletedProcess[str]:
    nyc = lab.office("nyc")
    argv = ["smbclient", f"//{spokes.VIRTUAL_NAME}/{services.SHARE}", "-I", nyc.edge_ip,
            "-N", "-t", "20", "-c", "ls"]  # fmt: skip
    return lab.exec(nyc.pc, argv, capture_output=True, text=True, timeout=60)


def test_renewal_across_wan_outage_and_hub_restart(lab: Lab) -> None:
    path = spokes.bundle_path(lab, "nyc")
    old = bundle.read(path).cert
    life = (old.not_valid_after_utc - old.not_valid_before_utc).total_seconds()
    renew_at = old.not_valid_before_utc + dt.timedelta(seconds=life * 2 / 3)
    assert _ls_share(lab).returncode == 0
    # The link goes down a few seconds before the renewal is due.
    cut_at = renew_at - dt.timedelta(seconds=4)
    assert dt.datetime.now(dt.UTC) < cut_at, "the lab came up too slowly for the scenario"
    wait_for(lambda: dt.datetime.now(dt.UTC) >= cut_at, timeout=120, interval=0.1,
             what="4 s before the renewal is due")  # fmt: skip
    assert bundle.read(path).cert.serial_number == old.serial_number  # not renewed yet
    lab.wan("nyc", up=False)
    try:
        wait_for(
            lambda: int(str(_edge_status(lab).get("failures", 0))) >= 1,
            timeout=30,
            what="the failed renewal in the edge's status file",
        )
        # The status file is rewritten after the attempt's log line.
        assert logfmt.find(_log(lab, "edge-nyc"), "certificate renewal failed")
        status = _edge_status(lab)
        assert str(status.get("renew", "")).startswith("failing since"), status
        # The hub restarts while the office cannot reach it.
        assert lab.hub_pid is not None
        lab.registry.kill_process(lab.hub_pid)
        lab.hub_pid = lab.spawn("hq", [sys.executable, "-m", "spokeshare", "hub", "--dir",
                                       str(lab.deploy_dir)], "hub-restarted")  # fmt: skip
        services.wait_for(
            "the restarted hub",
            lambda: services.listening("hq", spokes.HUB_PORT, lab.hub_address),
            timeout=30,
        )
        assert bundle.read(path).cert.serial_number == old.serial_number
    finally:
        lab.wan("nyc", up=True)
    new = wait_for(
        lambda: (c := bundle.read(path).cert).serial_number != old.serial_number and c,
        timeout=40,
        what="the renewed certificate in the bundle",
    )
    assert path.stat().st_mode & 0o777 == 0o600
    renewed = logfmt.find(_log(lab, "hub-restarted"), "certificate renewed")
    assert [(r["office"], r["serial"]) for r in renewed] == [("nyc", f"{new.serial_number:x}")]
    rec = enrollment.load_registry(lab.deploy_dir)["nyc"]
    assert rec.serial == new.serial_number and rec.accepts(old.serial_number)
    assert new.not_valid_after_utc - new.not_valid_before_utc == dt.timedelta(seconds=life)
    wait_for(lambda: str(_edge_status(lab).get("renew", "")).startswith("ok "), timeout=10,
             what="renewal ok in the edge's status file")  # fmt: skip
    # The hub learns the edge's failure count from its pongs: the next one clears it.
    wait_for(lambda: str(_office_list(lab)["renewal"]).startswith("ok "), timeout=30,
             what="renewal ok in office list")  # fmt: skip
    # Once the old certificate has expired, new tunnels (which only the new one can
    # open) still carry the office's clients.
    expired = old.not_valid_after_utc + dt.timedelta(seconds=1)
    wait_for(lambda: dt.datetime.now(dt.UTC) >= expired, timeout=120, interval=0.2,
             what="the old certificate to expire")  # fmt: skip
    got = wait_for(lambda: (r := _ls_share(lab)).returncode == 0 and r, timeout=30,
                   what="a share listing through new tunnels")  # fmt: skip
    assert "blocks" in got.stdout
