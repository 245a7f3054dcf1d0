"""The hub's start-up check of HQ's smbd: SMB3 multichannel offered is one WARNING
with the fix; with the README's setting the real client learns no address."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from spokeshare import hqcheck
from spokeshare.tunnel.hub import Hub
from tests.helpers import LoopThread, make_deployment, wait_for
from tests.samba import running_smbd, smbtorture_interface_addresses

README_SETTING = "server multi channel support = no"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "multichannel" in r.getMessage()
    ]


def test_stock_smbd_hands_out_its_addresses_and_the_hub_warns_once(
    tmp_path: Path, loop_thread: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    with running_smbd(tmp_path / "smbd") as smbd:
        # What a client learns from a stock smbd: its own address (the negative control
        # for the lab test, where the edge's office PC must learn none).
        addresses, _ = smbtorture_interface_addresses("//127.0.0.1/share", ["-p", str(smbd.port)])
        assert "127.0.0.1" in addresses
        dep = make_deployment(tmp_path / "dep", {"smb": smbd.port})
        hub = Hub(dep.hub_config(check_backends=True), dep.dir)
        loop_thread.run(hub.start())
        try:
            wait_for(lambda: bool(warnings(caplog)), what="the hub's multichannel warning")
            assert len(warnings(caplog)) == 1
            assert README_SETTING in warnings(caplog)[0]
        finally:
            loop_thread.run(hub.close())


def test_readme_setting_offers_no_multichannel(
    tmp_path: Path, loop_thread: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    with running_smbd(tmp_path / "smbd", (README_SETTING,)) as smbd:
        addresses, out = smbtorture_interface_addresses("//127.0.0.1/share", ["-p", str(smbd.port)])
        assert addresses == []
        assert "SMB2_CAP_MULTI_CHANNEL" in out
        offered = loop_thread.run(hqcheck.check_smb_backend("smb", "127.0.0.1", smbd.port))
        assert offered is False
        assert warnings(caplog) == []


def test_backend_down_is_not_a_warning(
    loop_thread: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.helpers import free_port

    assert loop_thread.run(hqcheck.check_smb_backend("smb", "127.0.0.1", free_port())) is None
    assert warnings(caplog) == []
