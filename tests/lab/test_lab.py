"""The whole lab, for real: namespaces, the WAN emulator, Samba and CUPS (root only)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spokeshare.lab import netns
from spokeshare.lab.services import ALICE, ALICE_PASSWORD
from spokeshare.lab.topology import HQ_SERVICE_IP, Lab
from spokeshare.lab.wire import LinkSettings
from tests.lab.building import reachable_dir

pytestmark = pytest.mark.lab

RTT_MS = 100.0


def wait_until(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def run(lab: Lab, host: str, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return lab.exec(host, argv, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state dir the daemons' unprivileged users can reach (pytest's tmp dirs are 0700)."""
    with reachable_dir("ss-lab-") as path:
        yield path


@pytest.fixture(scope="class")
def lab() -> Iterator[Lab]:
    with reachable_dir("ss-lab-") as path:
        lab = Lab(path, ["nyc"], LinkSettings(rtt_ms=RTT_MS), direct_route=True)
        lab.up()
        try:
            yield lab
        finally:
            lab.down()


class TestLab:
    def test_ping_rtt_through_the_emulator(self, lab: Lab) -> None:
        proc = run(lab, "nyc-pc", ["ping", "-n", "-c", "11", "-i", "0.2", HQ_SERVICE_IP])
        times = [float(t) for t in re.findall(r"time=([\d.]+) ms", proc.stdout)]
        assert len(times) == 11, proc.stdout
        avg = sum(times[1:]) / 10  # the first includes ARP resolution at both ends
        assert abs(avg - RTT_MS) <= 0.1 * RTT_MS, times

    def test_tcp_transfer_byte_exact_under_loss(self, lab: Lab) -> None:
        payload = bytes(range(256)) * (8 * 1024)  # 2 MiB
        sink = (
            "import socket, hashlib\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('{HQ_SERVICE_IP}', 5202)); s.listen(1); print('ready', flush=True)\n"
            "c, _ = s.accept(); h = hashlib.sha256(); n = 0\n"
            "while (b := c.recv(65536)):\n    h.update(b); n += len(b)\n"
            "print(n, h.hexdigest(), flush=True)\n"
        )
        lab.wan("nyc", loss_pct=1.0)
        server = subprocess.Popen(
            netns.exec_argv("hq", [sys.executable, "-c", sink]), stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready"
            send = (
                "import socket, sys\n"
                f"c = socket.create_connection(('{HQ_SERVICE_IP}', 5202))\n"
                "c.sendall(sys.stdin.buffer.read()); c.close()\n"
            )
            lab.exec("nyc-pc", [sys.executable, "-c", send], input=payload, check=True, timeout=120)
            n, digest = server.communicate(timeout=60)[0].split()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            lab.wan("nyc", loss_pct=0.0)
        assert int(n) == len(payload)
        assert digest == hashlib.sha256(payload).hexdigest()
        stats = lab.wan_stats("nyc")["b_to_a"]
        assert isinstance(stats, dict) and stats["lost"] > 0

    def test_link_down_then_up(self, lab: Lab) -> None:
        def reachable() -> bool:
            return (
                run(lab, "nyc-edge", ["ping", "-c", "1", "-W", "1", HQ_SERVICE_IP]).returncode == 0
            )

        assert reachable()
        assert lab.wan("nyc", up=False).up is False
        try:
            assert not reachable()
        finally:
            lab.wan("nyc", up=True)
        wait_until("ping after link up", reachable, timeout=10)

    def test_hq_smbd_from_office_pc(self, lab: Lab, tmp_path: Path) -> None:
        src = tmp_path / "hello.txt"
        src.write_bytes(b"hello from nyc\n")
        share = f"//{HQ_SERVICE_IP}/share"
        put = run(lab, "nyc-pc", ["smbclient", "-N", share, "-c", f"put {src} hello.txt"])
        assert put.returncode == 0, put.stderr + put.stdout
        back = tmp_path / "back.txt"
        get = run(
            lab,
            "nyc-pc",
            ["smbclient", "-U", f"{ALICE}%{ALICE_PASSWORD}", "--client-protection=encrypt",
             share, "-c", f"get hello.txt {back}"],
        )  # fmt: skip
        assert get.returncode == 0, get.stderr + get.stdout
        assert back.read_bytes() == src.read_bytes()

    def test_cups_job_completes(self, lab: Lab, tmp_path: Path) -> None:
        doc = tmp_path / "doc.txt"
        doc.write_text("page one\n")
        server = f"{HQ_SERVICE_IP}:631"
        proc = run(lab, "nyc-pc", ["lp", "-h", server, "-d", "hq-laser", str(doc)])
        assert proc.returncode == 0, proc.stderr
        match = re.search(r"request id is (\S+)", proc.stdout)
        assert match, proc.stdout
        job = match.group(1)

        def completed() -> bool:
            out = run(lab, "nyc-pc", ["lpstat", "-h", server, "-W", "completed", "-o", "hq-laser"])
            return job in out.stdout

        wait_until(f"job {job} completed", completed, timeout=30)

    def test_pc_sees_only_its_lan_names(self, lab: Lab) -> None:
        hosts = run(lab, "nyc-pc", ["cat", "/etc/hosts"]).stdout
        assert "GLOBAL-NFS" not in hosts.upper()
        conf = run(lab, "nyc-pc", ["testparm", "-s", "--parameter-name=name resolve order"])
        assert conf.stdout.strip() == "bcast"

    @pytest.mark.slow
    def test_fs_becomes_local_master_browser(self, lab: Lab) -> None:
        office = lab.office("nyc")

        def master() -> bool:
            out = run(lab, "nyc-pc", ["nmblookup", "-M", "--", "ACME"])
            return f"{office.fs_ip} ACME<1d>" in out.stdout

        wait_until("FS-NYC local master for ACME", master, timeout=90)

        def listed() -> bool:
            out = run(
                lab,
                "nyc-pc",
                ["smbclient", "-L", office.fs_netbios_name, "-N", "-m", "NT1",
                 "--option=client use spnego=no"],
            )  # fmt: skip
            return re.search(rf"^\s*{office.fs_netbios_name}\s", out.stdout, re.M) is not None

        wait_until("FS-NYC in its own browse list", listed, timeout=60)


# --- cleanup -------------------------------------------------------------------------------


def lab_leftovers(lab: Lab, pids: list[tuple[int, int]]) -> list[str]:
    left = [f"namespace {h}" for h in lab.hosts if netns.namespace_exists(h)]
    for o in lab.offices:
        names = (o.bridge, *(o.veth_root(h) for h in o.hosts), *o.taps)
        left += [f"link {n}" for n in names if netns.link_exists(n)]
    left += [f"pid {pid}" for pid, start in pids if netns.pid_alive(pid, start)]
    left += [f"file {p}" for p in Path("/etc/netns").glob("nyc-*/**/*") if p.is_file()]
    return left


def recorded_pids(lab: Lab) -> list[tuple[int, int]]:
    return [(p["pid"], p["start"]) for p in lab.registry.processes()]


class TestCleanup:
    def test_hooks_started_and_everything_removed(self, state_dir: Path) -> None:
        calls: list[str] = []

        def start_hub(lab: Lab) -> int:
            calls.append("hub")
            return lab.spawn("hq", ["sleep", "600"], "hub")

        def start_edge(lab: Lab, office: str) -> int:
            calls.append(f"edge {office}")
            return lab.spawn(f"{office}-edge", ["sleep", "600"], f"edge {office}")

        lab = Lab(state_dir, ["nyc"], start_hub=start_hub, start_edge=start_edge)
        lab.up()
        assert calls == ["hub", "edge nyc"]
        pids = recorded_pids(lab)
        assert lab.hub_pid in [p for p, _ in pids]
        status = lab.status()
        assert all(status["hosts"].values())
        assert all(p["alive"] for p in status["processes"])
        lab.down()
        assert lab_leftovers(lab, pids) == []

    def test_failure_halfway_through_up_removes_everything(self, state_dir: Path) -> None:
        seen: list[tuple[int, int]] = []

        def broken_hub(lab: Lab) -> int:
            seen.extend(recorded_pids(lab))
            raise RuntimeError("hub failed to start")

        lab = Lab(state_dir, ["nyc"], start_hub=broken_hub)
        with pytest.raises(RuntimeError):
            lab.up()
        assert seen, "services had been started before the hook"
        assert lab_leftovers(lab, seen) == []

    def test_down_after_a_crash_uses_the_state_file(self, state_dir: Path) -> None:
        lab = Lab(state_dir, ["nyc"])
        lab.up()
        pids = recorded_pids(lab)
        # Another process, knowing only the state dir, removes it.
        code = (
            "import sys; from spokeshare.lab.topology import Lab; Lab.existing(sys.argv[1]).down()"
        )
        subprocess.run([sys.executable, "-c", code, str(state_dir)], check=True, timeout=120)
        assert lab_leftovers(lab, pids) == []

    def test_stale_lab_is_cleaned_by_up(self, state_dir: Path) -> None:
        first = Lab(state_dir, ["nyc"])
        first.up()
        old = recorded_pids(first)
        second = Lab(state_dir, ["nyc"])
        second.up()
        try:
            assert not any(netns.pid_alive(pid, start) for pid, start in old)
            assert all(second.status()["hosts"].values())
        finally:
            second.down()
