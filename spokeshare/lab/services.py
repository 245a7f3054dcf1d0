"""The real services of the lab's hosts, each with its own generated configuration.

- HQ: ``smbd`` serving ``[share]`` (guest read/write, and user ``alice`` with password
  :data:`ALICE_PASSWORD` in a lab-private passdb), and ``cupsd`` with one shared raw
  printer ``hq-laser`` whose backend writes to ``/dev/null`` (jobs complete at once).
- Office file server ``NAME-fs``: ``smbd`` + ``nmbd`` as ``FS-NAME`` in workgroup
  ``ACME``; ``nmbd`` is made to win the local master browser election (os level 65,
  preferred master), ``smbd`` accepts NT1 so the browse list can be read.
- Office PC ``NAME-pc``: no daemon, only ``/etc/netns/NAME-pc/`` files: ``smb.conf`` for
  the Samba client tools (workgroup ACME, broadcast-only name resolution), ``hosts``
  without any entry for the virtual names, and CUPS ``client.conf`` naming the edge.

Every daemon runs in the foreground in a session of its own: Samba daemons signal their
whole process group on shutdown, which must never be the caller's. ``smbd``/``nmbd
--foreground`` (without ``--no-process-group``) call ``setsid()`` themselves and refuse to
start if they already lead a session, so they are spawned plainly; everything else gets
``start_new_session``. Each is recorded by PID and start time and stopped by PID.

HQ's ``alice`` needs a Unix account for ``smbpasswd``; she gets one in HQ's private
``/etc/netns/hq/passwd`` (a copy of the host's with one line added), which
``ip netns exec hq`` mounts over ``/etc/passwd`` for HQ's processes only.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spokeshare.lab import netns
from spokeshare.lab.netns import LabError, StateRegistry

log = logging.getLogger(__name__)

WORKGROUP = "ACME"
SHARE = "share"
PRINTER = "hq-laser"
ALICE = "alice"
ALICE_PASSWORD = "alice-lab-pw"
ALICE_UID = 2001
NETNS_ETC = Path("/etc/netns")


# --- process helpers -----------------------------------------------------------------


def spawn(
    registry: StateRegistry,
    namespace: str,
    argv: Sequence[str],
    what: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    new_session: bool = True,
) -> int:
    """Start ``argv`` in ``namespace`` in a new session, output to ``log_path``; record it.

    ``new_session=False`` is for Samba daemons, which call ``setsid()`` themselves when
    run with ``--foreground`` (and fail to start if they already lead a session).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            netns.exec_argv(namespace, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
            env=env,
        )
    registry.add_process(proc.pid, what)
    log.info("started %s in %s: pid %s", what, namespace, proc.pid)
    return proc.pid


def wait_for(
    what: str,
    condition: Callable[[], bool],
    timeout: float,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` or as soon as ``alive`` is false."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not alive():
            raise LabError(f"{what}: the process exited")
        if time.monotonic() > deadline:
            raise LabError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)


def listening(namespace: str, port: int, address: str | None = None) -> bool:
    """Whether something in ``namespace`` listens on TCP ``port`` (on ``address``)."""
    proc = netns.run_in(namespace, ["ss", "-Hltn", f"sport = :{port}"], check=False)
    text = proc.stdout.decode()
    if address is None:
        return bool(text.strip())
    return f"{address}:{port}" in text


def write_file(registry: StateRegistry | None, path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path``; files outside the state dir are recorded for removal."""
    if registry is not None:
        for d in [p for p in reversed(path.parents) if not p.exists()]:
            registry.add("dirs", str(d))
        registry.add("files", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def netns_etc_file(registry: StateRegistry, host: str, relative: str, text: str) -> Path:
    """Write ``/etc/netns/HOST/RELATIVE`` (seen as ``/etc/RELATIVE`` by HOST's processes)."""
    path = NETNS_ETC / host / relative
    write_file(registry, path, text)
    return path


# --- Samba --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SambaHost:
    """A Samba instance of one lab host; all its state lives under ``root``."""

    namespace: str
    netbios_name: str
    addresses: tuple[str, ...]  # CIDRs it listens on, "198.19.0.1/32"
    root: Path
    master_browser: bool = False  # run nmbd as the local master browser, allow NT1

    @property
    def conf(self) -> Path:
        return self.root / "smb.conf"

    @property
    def share_path(self) -> Path:
        return self.root / SHARE

    def config_text(self) -> str:
        r = self.root
        lines = [
            "[global]",
            f"  netbios name = {self.netbios_name}",
            f"  workgroup = {WORKGROUP}",
            "  server role = standalone server",
            f"  interfaces = {' '.join(self.addresses)}",
            "  bind interfaces only = yes",
            f"  private dir = {r}/private",
            f"  lock directory = {r}/lock",
            f"  state directory = {r}/state",
            f"  cache directory = {r}/cache",
            f"  pid directory = {r}/run",
            f"  ncalrpc dir = {r}/run/ncalrpc",
            f"  log file = {r}/log.%m",
            "  max log size = 1000",
            f"  passdb backend = tdbsam:{r}/private/passdb.tdb",
            "  map to guest = Bad User",
            "  guest account = nobody",
            "  load printers = no",
            "  printing = bsd",
            "  printcap name = /dev/null",
            "  disable spoolss = yes",
            "  dns proxy = no",
        ]
        if self.master_browser:
            lines += [
                # MS-BRWS 3.2.6: the highest os level wins the election; 65 beats every
                # Windows version, "preferred master" forces an election at start.
                "  local master = yes",
                "  preferred master = yes",
                "  os level = 65",
                "  domain master = no",
                # The office server is also the office's WINS server, as is common.
                "  wins support = yes",
                # The browse list (NetServerEnum over RAP) is only served over SMB1.
                "  server min protocol = NT1",
                "  smb ports = 445 139",
            ]
        else:
            lines += ["  disable netbios = yes", "  smb ports = 445"]
        lines += [
            "",
            f"[{SHARE}]",
            f"  path = {self.share_path}",
            "  read only = no",
            "  guest ok = yes",
            "  create mask = 0666",
            "  directory mask = 0777",
            "",
        ]
        return "\n".join(lines)

    def prepare(self) -> None:
        for sub in ("private", "lock", "state", "cache", "run", SHARE):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.share_path.chmod(0o1777)
        self.conf.write_text(self.config_text())

    def start(self, registry: StateRegistry, listen_address: str, log_dir: Path) -> list[int]:
        """Start smbd (and nmbd for a master browser); wait until smbd accepts on 445."""
        self.prepare()
        pids = [
            spawn(
                registry, self.namespace,
                ["smbd", "--foreground", "--debug-stdout", f"--configfile={self.conf}"],
                f"smbd {self.netbios_name}", log_dir / f"{self.namespace}-smbd.log",
                new_session=False,
            )
        ]  # fmt: skip
        if self.master_browser:
            pids.append(
                spawn(
                    registry, self.namespace,
                    ["nmbd", "--foreground", "--debug-stdout", f"--configfile={self.conf}"],
                    f"nmbd {self.netbios_name}", log_dir / f"{self.namespace}-nmbd.log",
                    new_session=False,
                )
            )  # fmt: skip
        smbd = pids[0]
        start = registry.processes()[-len(pids)]["start"]
        wait_for(
            f"smbd {self.netbios_name}",
            lambda: listening(self.namespace, 445, listen_address),
            timeout=30,
            alive=lambda: netns.pid_alive(smbd, start),
        )
        return pids

    def add_user(self, name: str, password: str) -> None:
        """Add a Samba user (the Unix account must exist in the namespace's /etc/passwd)."""
        netns.run_in(
            self.namespace,
            ["smbpasswd", "-c", str(self.conf), "-s", "-a", name],
            input=f"{password}\n{password}\n".encode(),
        )


def add_hq_unix_user(registry: StateRegistry, host: str) -> None:
    """Give ``host`` its own /etc/passwd and /etc/group with user ``alice`` added."""
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    line = f"{ALICE}:x:{ALICE_UID}:{ALICE_UID}:Alice (lab):/nonexistent:/usr/sbin/nologin\n"
    netns_etc_file(registry, host, "passwd", passwd.rstrip("\n") + "\n" + line)
    netns_etc_file(registry, host, "group", group.rstrip("\n") + f"\n{ALICE}:x:{ALICE_UID}:\n")


# --- CUPS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CupsHost:
    """HQ's print server; configuration, spool and logs under ``root``."""

    namespace: str
    addresses: tuple[str, ...]  # plain addresses it listens on
    root: Path

    def files(self) -> dict[str, str]:
        r = self.root
        listen = "\n".join(f"Listen {a}:631" for a in self.addresses)
        cupsd_conf = f"""\
LogLevel info
{listen}
Listen {r}/cups.sock
Browsing No
WebInterface No
DefaultAuthType None
DefaultShared Yes
ServerAlias *
PreserveJobHistory Yes
MaxJobs 500
<Location />
  Order allow,deny
  Allow all
</Location>
<Location /admin>
  Order allow,deny
  Allow all
</Location>
<Policy default>
  <Limit All>
    Order allow,deny
    Allow all
  </Limit>
</Policy>
"""
        cups_files = f"""\
ServerRoot {r}
RequestRoot {r}/spool
TempDir {r}/spool/tmp
CacheDir {r}/cache
StateDir {r}/state
ServerBin /usr/lib/cups
DataDir /usr/share/cups
DocumentRoot /usr/share/cups/doc-root
AccessLog {r}/access_log
ErrorLog stderr
PageLog {r}/page_log
Printcap {r}/printcap
FileDevice Yes
Sandboxing Relaxed
User lp
Group lp
SystemGroup root
"""
        printers = f"""\
<DefaultPrinter {PRINTER}>
Info HQ laser (lab)
Location HQ
DeviceURI file:///dev/null
State Idle
StateTime 0
Type 4
Accepting Yes
Shared Yes
JobSheets none none
QuotaPeriod 0
PageLimit 0
KLimit 0
OpPolicy default
ErrorPolicy abort-job
</DefaultPrinter>
"""
        return {"cupsd.conf": cupsd_conf, "cups-files.conf": cups_files, "printers.conf": printers}

    def start(self, registry: StateRegistry, log_dir: Path) -> int:
        """Start cupsd and wait until ``hq-laser`` answers on the first address."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        for sub in ("spool", "spool/tmp", "cache", "state"):
            (self.root / sub).mkdir(exist_ok=True)
        for name, text in self.files().items():
            path = self.root / name
            path.write_text(text)
            path.chmod(0o640 if name == "printers.conf" else 0o644)
        pid = spawn(
            registry,
            self.namespace,
            ["cupsd", "-f", "-c", str(self.root / "cupsd.conf"),
             "-s", str(self.root / "cups-files.conf")],
            "cupsd hq",
            log_dir / f"{self.namespace}-cupsd.log",
        )  # fmt: skip
        start = registry.processes()[-1]["start"]
        server = f"{self.addresses[0]}:631"
        wait_for(
            "cupsd",
            lambda: (
                netns.run_in(
                    self.namespace, ["lpstat", "-h", server, "-p", PRINTER], check=False
                ).returncode
                == 0
            ),
            timeout=30,
            alive=lambda: netns.pid_alive(pid, start),
            interval=0.1,
        )
        return pid


# --- the office PC's configuration ----------------------------------------------------------


def write_pc_config(
    registry: StateRegistry, host: str, address: str, root: Path, print_server: str
) -> None:
    """``/etc/netns/HOST/``: smb.conf, hosts and CUPS client.conf of an office PC.

    Names resolve by broadcast only (``name resolve order = bcast``), as a PC with no
    WINS server does; ``hosts`` knows only the PC itself, so nothing shortcuts the
    NetBIOS lookup of a virtual name. The Samba client caches live under ``root``, so
    no lookup result leaks between lab runs or hosts.
    """
    root.mkdir(parents=True, exist_ok=True)
    smb_conf = f"""\
[global]
  workgroup = {WORKGROUP}
  netbios name = {host.upper()}
  name resolve order = bcast
  interfaces = {address}
  bind interfaces only = yes
  client min protocol = NT1
  lock directory = {root}/lock
  state directory = {root}/state
  cache directory = {root}/cache
  private dir = {root}/private
  log file = {root}/log.%m
"""
    hosts = f"127.0.0.1\tlocalhost\n{address.split('/')[0]}\t{host}\n"
    netns_etc_file(registry, host, "samba/smb.conf", smb_conf)
    netns_etc_file(registry, host, "hosts", hosts)
    netns_etc_file(registry, host, "hostname", f"{host}\n")
    netns_etc_file(registry, host, "cups/client.conf", f"ServerName {print_server}\n")
