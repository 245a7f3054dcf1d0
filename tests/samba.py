"""A real smbd on loopback for tests: generated smb.conf, private state, stopped by PID."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port


@dataclass
class Smbd:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def share(self) -> Path:
        return self.root / "share"

    @property
    def client_conf(self) -> Path:
        return self.root / "client.conf"

    def smbclient(
        self,
        port: int,
        command: str,
        cwd: Path | None = None,
        timeout: float = 300,
        extra: list[str] | None = None,
    ) -> str:
        """Run the real smbclient against //127.0.0.1/share on ``port``; return its output."""
        argv = [
            "smbclient",
            f"--configfile={self.client_conf}",
            "//127.0.0.1/share",
            "-p",
            str(port),
            "-N",
            "-c",
            command,
            *(extra or []),
        ]
        res = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=timeout)
        out = (res.stdout + res.stderr).decode(errors="replace")
        if res.returncode != 0:
            raise AssertionError(f"smbclient {command!r} failed ({res.returncode}): {out}")
        return out


def _config(root: Path, port: int) -> str:
    return "\n".join(
        [
            "[global]",
            "  netbios name = HQ-TEST",
            "  workgroup = ACME",
            "  server role = standalone server",
            "  interfaces = 127.0.0.1/8",
            "  bind interfaces only = yes",
            f"  smb ports = {port}",
            "  disable netbios = yes",
            f"  private dir = {root}/private",
            f"  lock directory = {root}/lock",
            f"  state directory = {root}/state",
            f"  cache directory = {root}/cache",
            f"  pid directory = {root}/run",
            f"  ncalrpc dir = {root}/run/ncalrpc",
            f"  log file = {root}/log.%m",
            f"  passdb backend = tdbsam:{root}/private/passdb.tdb",
            "  map to guest = Bad User",
            "  guest account = nobody",
            "  load printers = no",
            "  printcap name = /dev/null",
            "  disable spoolss = yes",
            "",
            "[share]",
            f"  path = {root}/share",
            "  read only = no",
            "  guest ok = yes",
            "  force user = root",
            "",
        ]
    )


@contextlib.contextmanager
def running_smbd(root: Path) -> Iterator[Smbd]:
    for sub in ("private", "lock", "state", "cache", "run", "share"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = root / "smb.conf"
    conf.write_text(_config(root, port))
    (root / "client.conf").write_text(
        "[global]\n  client min protocol = SMB2\n  workgroup = ACME\n"
    )
    # Its own session: a Samba daemon signals its whole process group on shutdown.
    proc = subprocess.Popen(
        ["smbd", "--foreground", "--debug-stdout", "--no-process-group", f"--configfile={conf}"],
        stdout=open(root / "smbd.out", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("smbd did not start: " + (root / "smbd.out").read_text()[-2000:])
            time.sleep(0.05)
        yield Smbd(root, port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
