"""What a real WAN and a real HQ bring (root only, lab): HQ's smbd with the README's
settings hands an office PC no address of its own, and open files survive WAN blips
(a large smbclient get through the edge, the WAN down for 12 s and for 45 s in the
middle of it, the file identical).

SMB clients tolerate an unanswered request for a while (Windows about 60 s, smbclient
what ``-t`` says); a stream through spokeshare must not be cut sooner. The tunnel
carrying it uses ``sockets.stream_user_timeout``, not the pool's short user timeout.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare import logfmt
from spokeshare.lab import netns, services, spokes
from spokeshare.lab.topology import Lab
from spokeshare.lab.wire import LinkSettings
from tests.lab.building import running_lab
from tests.lab.test_lab import wait_until
from tests.samba import smbtorture_interface_addresses

pytestmark = pytest.mark.lab

#: 64 MiB at 40 Mbit/s take about 14 s: long enough for an outage two seconds in.
SIZE = 64 * 1024 * 1024
LINK = LinkSettings(rtt_ms=20.0, rate_mbit=40.0)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(
        "ss-blips-", ("nyc",), LINK, start_hub=spokes.start_hub, start_edge=spokes.start_edge
    ) as lab:
        yield lab


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def test_office_pc_is_told_no_hq_address(lab: Lab) -> None:
    """SMB3 multichannel: the real smbtorture, from the office PC through the edge,
    asks for the server's interfaces (FSCTL_QUERY_NETWORK_INTERFACE_INFO) as Windows
    would; HQ's smbd runs with the README's `server multi channel support = no`."""
    nyc = lab.office("nyc")
    unc = f"//{nyc.edge_ip}/{services.SHARE}"
    addresses, out = smbtorture_interface_addresses(unc, prefix=netns.exec_argv(nyc.pc, []))
    assert addresses == [], out[-2000:]
    assert "SMB2_CAP_MULTI_CHANNEL" in out  # the client saw no multichannel offered
    # The hub asked HQ's smbd at start and found nothing to warn about.
    hub_log = lab.logs_dir / "hub.log"
    wait_until(
        "the hub's multichannel check",
        lambda: bool(logfmt.find(hub_log.read_text(), "smb multichannel")),
        30,
    )
    checked = logfmt.find(hub_log.read_text(), "smb multichannel")
    assert checked and all(c["offered"] == "no" for c in checked), checked


@pytest.mark.parametrize("outage_s", [12.0, 45.0])
def test_get_survives_a_wan_outage_mid_transfer(lab: Lab, tmp_path: Path, outage_s: float) -> None:
    share = lab.host_dir("hq") / "samba" / services.SHARE
    src = share / f"big-{int(outage_s)}.bin"
    src.write_bytes(os.urandom(SIZE))
    src.chmod(0o666)
    dst = tmp_path / "got.bin"
    nyc = lab.office("nyc")
    argv = ["smbclient", f"//{spokes.VIRTUAL_NAME}/{services.SHARE}", "-I", nyc.edge_ip,
            "-N", "-t", "120", "-c", f"get {src.name} {dst}"]  # fmt: skip
    proc = subprocess.Popen(
        netns.exec_argv(nyc.pc, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        # Two seconds' worth of the link into the transfer, the WAN goes down.
        started = lambda: dst.exists() and dst.stat().st_size > SIZE // 7  # noqa: E731
        wait_until("2 s of the transfer", started, 60)
        lab.wan("nyc", up=False)
        at_down = dst.stat().st_size
        try:
            time.sleep(outage_s)  # the outage itself
        finally:
            lab.wan("nyc", up=True)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert at_down < SIZE, "the transfer ended before the outage"
    assert proc.returncode == 0, out.decode(errors="replace")
    assert _sha256(dst) == _sha256(src)
    src.unlink()
