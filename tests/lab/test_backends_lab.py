"""Two real smbd on two loopback addresses behind one hub service: one is stopped by
PID, and a new smbclient connection through the edge and the hub still works."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LoopThread, Stack, make_deployment, wait_for
from tests.samba import running_smbd

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("smbd") is None, reason="samba not installed"),
]

SECOND = "127.0.0.2"


def _in_lab_worker() -> bool:
    """True inside tests/lab/netns-worker (its private /run/netns mount): only there may
    a test add an address to loopback, which is then the worker's own."""
    with open("/proc/self/mountinfo") as fh:
        return any(" /run/netns " in line and "spokeshare-worker" in line for line in fh)


@pytest.fixture
def second_loopback_address() -> Iterator[str]:
    """127.0.0.2 as an address of the (worker namespace's) loopback interface, so that
    an smbd with ``bind interfaces only`` listens on it."""
    if not _in_lab_worker():
        pytest.skip("run under tests/lab/netns-worker: it adds an address to loopback")
    subprocess.run(["ip", "addr", "add", f"{SECOND}/8", "dev", "lo"], check=True)
    try:
        yield SECOND
    finally:
        subprocess.run(["ip", "addr", "del", f"{SECOND}/8", "dev", "lo"], check=False)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_smbclient_still_works_when_the_first_smbd_is_stopped(
    tmp_path: Path, loop_thread: LoopThread, second_loopback_address: str
) -> None:
    with (
        running_smbd(tmp_path / "a") as a,
        running_smbd(tmp_path / "b", address=second_loopback_address) as b,
    ):
        first, other = f"127.0.0.1:{a.port}", f"{second_loopback_address}:{b.port}"
        dep = make_deployment(tmp_path / "dep", {"smb": a.port})
        dep.set_backends("smb", [first, other])
        st = Stack(dep, loop_thread, hub_limits={"backend_probe_initial": 0.2},
                   pool={"open_timeout": 10.0})  # fmt: skip
        st.start()
        try:
            one, two = tmp_path / "one.bin", tmp_path / "two.bin"
            one.write_bytes(os.urandom(300_000))
            two.write_bytes(os.urandom(300_000))
            a.smbclient(st.port, "put one.bin one.bin", cwd=tmp_path)
            assert sha(a.share / "one.bin") == sha(one)  # the first listed, while it answers
            assert not (b.share / "one.bin").exists()
            a.proc.terminate()  # stopped by PID
            a.proc.wait(15)
            # A new connection from the same client: the hub skips the stopped smbd.
            b.smbclient(st.port, "put two.bin two.bin; get two.bin back.bin", cwd=tmp_path)
            assert sha(b.share / "two.bin") == sha(two)
            assert sha(tmp_path / "back.bin") == sha(two)
            snap = st.lt.call(st.hub.backend_statistics)
            wait_for(lambda: not st.lt.call(st.hub.backend_statistics)[f"smb {first}"].up,
                     what="the stopped smbd marked down")  # fmt: skip
            assert snap[f"smb {other}"].up and snap[f"smb {other}"].streams >= 1
        finally:
            st.close()
