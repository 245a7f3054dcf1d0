"""A real smbd on loopback for tests: generated smb.conf, private state, stopped by PID."""

from __future__ import annotations

import contextlib
import re
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


def _config(
    root: Path, port: int, extra_globals: tuple[str, ...] = (), address: str = "127.0.0.1"
) -> str:
    return "\n".join(
        [
            "[global]",
            "  netbios name = HQ-TEST",
            "  workgroup = ACME",
            "  server role = standalone server",
            f"  interfaces = {address}/8",
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
            *(f"  {line}" for line in extra_globals),
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
def running_smbd(
    root: Path, extra_globals: tuple[str, ...] = (), address: str = "127.0.0.1"
) -> Iterator[Smbd]:
    """A real smbd on ``address`` (a free port; another address must be one of the
    loopback interface's own, or smbd binds 127.0.0.1 instead); ``extra_globals``: more
    [global] lines."""
    for sub in ("private", "lock", "state", "cache", "run", "share"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    port = free_port(address)
    conf = root / "smb.conf"
    conf.write_text(_config(root, port, extra_globals, address))
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
            with contextlib.suppress(OSError), socket.create_connection((address, port), 1):
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


#: smbtorture's NDR dump of an FSCTL_QUERY_NETWORK_INTERFACE_INFO answer (``-d 10``):
#: one ``ipv4 : ADDR`` / ``ipv6 : ADDR`` line per address the server hands out.
_NDR_ADDRESS = re.compile(r"^\s*ipv[46]\s*:\s*(\S+)\s*$", re.M)


def smbtorture_interface_addresses(
    unc: str, extra: list[str] | None = None, prefix: list[str] | None = None
) -> tuple[list[str], str]:
    """Ask a server which addresses it hands out for multichannel, as a client would.

    Runs the real ``smbtorture UNC smb2.ioctl.network_interface_info`` as guest with
    debug level 10 (``prefix``, e.g. ``ip netns exec HOST``, runs it elsewhere).
    Returns the addresses listed in the server's FSCTL_QUERY_NETWORK_INTERFACE_INFO
    answer and smbtorture's output. A server that does not offer SMB3 multichannel is
    never asked (smbtorture, like Windows and Linux clients, checks the NEGOTIATE
    capability first and reports a skip): no address.
    """
    argv = [*(prefix or []), "smbtorture", unc, "-U%", *(extra or []), "-d", "10",
            "smb2.ioctl.network_interface_info"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    if not re.search(r"^(success|skip): network_interface_info", out, re.M):
        raise RuntimeError("smbtorture failed: " + out[-2000:])
    return _NDR_ADDRESS.findall(out), out
