"""The real services of the lab's hosts, each with its own generated configuration.

- HQ: ``smbd`` serving ``[share]`` (guest read/write, and user ``alice`` with password
  :data:`ALICE_PASSWORD` in a lab-private passdb), and Debian's stock ``cupsd`` after
  the README's ``cupsctl --share-printers --remote-any``, with the queues of
  :data:`HQ_PRINTERS` (shared ``hq-laser`` and ``hq-color``, unshared ``hq-private``),
  printing to ``/dev/null`` (jobs complete at once).
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
import os
import signal
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
#: The lab's virtual name (spokes.VIRTUAL_NAME), an alias of HQ's smbd as the README says.
HQ_ALIAS = "GLOBAL-NFS"
#: README, "HQ: what its servers must be told": multichannel off (it would hand office
#: PCs HQ's own addresses), the virtual name as an alias (Kerberos SPNs need a domain,
#: which the lab's standalone HQ does not have).
HQ_README_GLOBALS = (
    "  server multi channel support = no",
    f"  netbios aliases = {HQ_ALIAS}",
)
#: Samba's background queue daemon: keeps CUPS's printer list for smbd.
SAMBA_BGQD = "/usr/libexec/samba/samba-bgqd"


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
    #: The CUPS server whose printers smbd shares (HQ: its cupsd's socket); None: no
    #: printing, as on the office file servers.
    print_server: Path | None = None
    #: A node of HQ's CTDB cluster (spokeshare.lab.cluster) whose [share] is this path
    #: on the cluster filesystem: ``clustering = yes``, and smbd listens on every
    #: address (CTDB's public addresses move between nodes) instead of ``addresses``.
    clustered_share: Path | None = None

    @property
    def conf(self) -> Path:
        return self.root / "smb.conf"

    @property
    def print_spool(self) -> Path:
        """Where smbd spools a print file before handing it to CUPS (Debian: /var/tmp)."""
        return self.root / "spool"

    @property
    def share_path(self) -> Path:
        return self.clustered_share or self.root / SHARE

    def config_text(self) -> str:
        r = self.root
        lines = [
            "[global]",
            f"  netbios name = {self.netbios_name}",
            f"  workgroup = {WORKGROUP}",
            "  server role = standalone server",
            *self._listen_globals(),
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
            *self._printing_globals(),
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
            # HQ's file server, reached through the hub: the [global] lines the README
            # ("HQ: what its servers must be told") has every operator add.
            lines += ["  disable netbios = yes", "  smb ports = 445", *HQ_README_GLOBALS]
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
        if self.print_server is not None:
            # Debian's stock [printers] section (smb.conf as the samba package installs
            # it), with the lab's spool directory for /var/tmp: every CUPS printer
            # becomes a share of its own name; printing needs an authenticated user.
            lines += [
                "[printers]",
                "  comment = All Printers",
                "  browseable = no",
                f"  path = {self.print_spool}",
                "  printable = yes",
                "  guest ok = no",
                "  read only = yes",
                "  create mask = 0700",
                "",
            ]
        return "\n".join(lines)

    def _listen_globals(self) -> list[str]:
        if self.clustered_share is not None:
            # Samba's clustering guide: the same smb.conf on every node, clustering on;
            # no interface binding, since CTDB moves public addresses between nodes.
            return ["  clustering = yes"]
        return [f"  interfaces = {' '.join(self.addresses)}", "  bind interfaces only = yes"]

    def _printing_globals(self) -> list[str]:
        if self.print_server is None:
            return [
                "  load printers = no",
                "  printing = bsd",
                "  printcap name = /dev/null",
                "  disable spoolss = yes",
            ]
        # What Debian's smb.conf and Samba's defaults give a print server (README, HQ):
        # the printers come from CUPS's list, jobs go to CUPS. `cups server` only
        # because the lab's cupsd has a socket of its own; a real HQ's smbd finds
        # /run/cups/cups.sock by default.
        return [
            "  load printers = yes",
            "  printing = cups",
            "  printcap name = cups",
            f"  cups server = {self.print_server}",
        ]

    def prepare(self) -> None:
        for sub in ("private", "lock", "state", "cache", "run", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.share_path.mkdir(parents=True, exist_ok=True)
        self.share_path.chmod(0o1777)
        self.print_spool.chmod(0o1777)
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
        if self.print_server is not None:
            pids.append(self._start_bgqd(registry, log_dir))
        return pids

    def _start_bgqd(self, registry: StateRegistry, log_dir: Path) -> int:
        """Start samba-bgqd, which fetches CUPS's printer list for smbd (README, HQ).

        Samba 4.17 (Debian 12) starts it only from rpcd_spoolss, i.e. once a client has
        used the spoolss RPC pipe; until then smbd knows no printer and a print share's
        tree connect fails with NT_STATUS_BAD_NETWORK_NAME (seen here). A print server
        therefore runs it as a service of its own, as Samba's own samba-bgqd.service
        does; ready when it has written the printer list smbd reads.
        """
        pid = spawn(
            registry, self.namespace,
            [SAMBA_BGQD, "--foreground", "--debug-stdout", f"--configfile={self.conf}"],
            f"samba-bgqd {self.netbios_name}", log_dir / f"{self.namespace}-samba-bgqd.log",
            new_session=False,
        )  # fmt: skip
        start = registry.processes()[-1]["start"]
        wait_for(
            f"samba-bgqd {self.netbios_name}: printer list",
            lambda: any(self.root.glob("*/printer_list.tdb")),
            timeout=30,
            alive=lambda: netns.pid_alive(pid, start),
        )
        return pid

    def add_user(
        self,
        name: str,
        password: str,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        """Add a Samba user (the Unix account must exist in the namespace's /etc/passwd);
        ``wrap`` turns the smbpasswd argv into the one to run (a cluster node's)."""
        argv = ["smbpasswd", "-c", str(self.conf), "-s", "-a", name]
        netns.run_in(
            self.namespace,
            wrap(argv) if wrap is not None else argv,
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

#: Debian's stock cupsd.conf, as the cups-daemon package installs it.
STOCK_CUPSD_CONF = Path("/usr/share/cups/cupsd.conf.default")
#: The stock file's domain socket; each lab cupsd gets its own instead.
STOCK_DOMAIN_SOCKET = "/run/cups/cups.sock"


@dataclass(frozen=True)
class LabPrinter:
    """A queue of HQ's lab CUPS, added with ``lpadmin`` as an operator would."""

    name: str
    info: str
    location: str
    shared: bool
    #: ``lpadmin -m`` model (a driver of the cups package), or "" for a raw queue.
    #: Jobs go through the driver's filters (text to PDF to PCL/PostScript) and then
    #: to ``/dev/null``.
    model: str = ""


#: HQ's queues, with drivers of the cups package as a real HQ has (raw queues are
#: deprecated, and CUPS reports no URF for them): two shared (a black-and-white PCL
#: laser, a colour PostScript printer), one not shared that no office may ever see.
HQ_PRINTERS = (
    LabPrinter(
        PRINTER, "HQ laser (lab)", "HQ", shared=True, model="drv:///sample.drv/laserjet.ppd"
    ),
    LabPrinter(
        "hq-color", "HQ colour (lab)", "HQ, 2nd floor", shared=True,
        model="drv:///sample.drv/generic.ppd",
    ),
    LabPrinter("hq-private", "HQ private (lab)", "HQ, board room", shared=False),
)  # fmt: skip
SHARED_PRINTERS = tuple(p.name for p in HQ_PRINTERS if p.shared)
UNSHARED_PRINTERS = tuple(p.name for p in HQ_PRINTERS if not p.shared)


def _cups_unreachable(stderr: bytes) -> bool:
    """Whether a CUPS tool failed to reach cupsd at all (nothing was changed)."""
    text = stderr.decode(errors="replace")
    return "Unable to connect" in text or "Bad file descriptor" in text


@dataclass(frozen=True)
class CupsHost:
    """HQ's print server; configuration, spool and logs under ``root``.

    ``cupsd.conf`` is Debian's stock file with one lab-only substitution: the domain
    socket is ``ROOT/cups.sock`` instead of the host's ``/run/cups/cups.sock``. Then
    the README's HQ step is run for real, ``cupsctl --share-printers --remote-any``
    over that socket (it turns ``Listen localhost:631`` into ``Port 631`` and allows
    remote access), and the queues of :data:`HQ_PRINTERS` are added with ``lpadmin``
    over the socket (root is in ``SystemGroup``: peer-credential authentication).

    ``cups-files.conf`` only places every path under ``root``; ``FileDevice Yes`` lets
    the queues print to ``file:///dev/null``, the lab's stand-in for printer hardware
    (jobs complete at once). cupsd's D-Bus system bus is ``ROOT/dbus.sock``, which
    nothing serves unless a test starts a bus there, so HQ's DNS-SD never reaches a
    bus outside the lab.
    """

    namespace: str
    addresses: tuple[str, ...]  # plain addresses it answers on (port 631)
    root: Path
    #: The D-Bus system bus cupsd's DNS-SD uses (default ``ROOT/dbus.sock``: none).
    bus: Path | None = None

    @property
    def socket(self) -> Path:
        return self.root / "cups.sock"

    @property
    def dbus_socket(self) -> Path:
        return self.bus or self.root / "dbus.sock"

    def stock_config(self) -> str:
        text = STOCK_CUPSD_CONF.read_text()
        if f"Listen {STOCK_DOMAIN_SOCKET}" not in text:
            raise LabError(f"{STOCK_CUPSD_CONF}: no 'Listen {STOCK_DOMAIN_SOCKET}' line")
        return text.replace(f"Listen {STOCK_DOMAIN_SOCKET}", f"Listen {self.socket}")

    def files(self) -> dict[str, str]:
        r = self.root
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
        return {"cupsd.conf": self.stock_config(), "cups-files.conf": cups_files}

    def admin(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run a CUPS client tool (``lpadmin``, ``cupsctl``...) against this cupsd's socket.

        cupsd restarts its listeners after cupsctl's PUT and on SIGHUP; a tool whose
        connection is caught in that restart fails before sending anything ("Unable to
        connect to server", "Bad file descriptor": seen here now and then). Such a failure
        is retried, up to three tries, once the socket answers again.
        """
        full = [argv[0], "-h", str(self.socket), *argv[1:]]
        for _ in range(2):
            done = netns.run_in(self.namespace, full, check=False)
            if done.returncode == 0 or not _cups_unreachable(done.stderr):
                break
            wait_for("cupsd on its socket", self._answers, timeout=30, interval=0.1)
        else:
            done = netns.run_in(self.namespace, full, check=False)
        if check and done.returncode != 0:
            raise LabError(
                f"{' '.join(full)} exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return done

    def add_printer(self, printer: LabPrinter) -> None:
        argv = ["lpadmin", "-p", printer.name, "-v", "file:///dev/null",
                "-D", printer.info, "-L", printer.location]  # fmt: skip
        if printer.model:
            argv += ["-m", printer.model]
        argv += ["-o", f"printer-is-shared={'true' if printer.shared else 'false'}", "-E"]
        self.admin(argv)

    def remove_printer(self, name: str) -> None:
        self.admin(["lpadmin", "-x", name])

    def share(self, alive: Callable[[], bool]) -> None:
        """``cupsctl --share-printers --remote-any``, until cupsd reports both set.

        cupsctl edits the cupsd.conf of its own host when it talks to a local cupsd
        (libcups reads ``$CUPS_SERVERROOT/cupsd.conf`` directly, then PUTs the result), so
        it runs with CUPS_SERVERROOT at this cupsd's root, as an operator's cupsctl edits
        /etc/cups/cupsd.conf. Its PUT makes cupsd restart its listeners, and a cupsctl
        caught in a restart fails ("Unable to connect to server", "Bad file descriptor":
        seen here under load, three tries in a row). What counts is the setting: once
        cupsd answers again, plain ``cupsctl`` reads it back.
        """
        server = f"{self.addresses[0]}:631"
        want = ("_remote_any=1", "_share_printers=1")
        cupsctl = ["env", f"CUPS_SERVERROOT={self.root}", "cupsctl", "-h", str(self.socket)]
        now = ""
        for _ in range(3):
            netns.run_in(self.namespace, [*cupsctl, "--share-printers", "--remote-any"],
                         check=False)  # fmt: skip
            wait_for("cupsd on its socket", self._answers, timeout=30, alive=alive, interval=0.1)
            done = netns.run_in(self.namespace, cupsctl, check=False)
            now = done.stdout.decode(errors="replace")
            if all(line in now.split() for line in want):
                wait_for("cupsd on port 631", lambda: self._answers(server), timeout=30,
                         alive=alive, interval=0.1)  # fmt: skip
                return
        raise LabError(f"cupsctl --share-printers --remote-any did not take: {now.strip()!r}")

    def drop_owner_checks_if_affected(self, pid: int, alive: Callable[[], bool]) -> None:
        """The README's step for Debian's CUPS 2.4.2-3+deb12u10, when that is the cupsd
        installed here (spokeshare.printing.hq_cupsd): the ``sed`` on this cupsd's
        cupsd.conf, then a reload (SIGHUP, as ``systemctl restart cups`` restarts it),
        until cupsd answers again on its socket and on port 631."""
        from spokeshare.check import package_version
        from spokeshare.printing import hq_cupsd

        if package_version("cups-daemon") not in hq_cupsd.OWNER_CHECK_CRASH:
            return
        conf = self.root / "cupsd.conf"
        subprocess.run(
            ["sed", f"-i{hq_cupsd.BACKUP_SUFFIX}", hq_cupsd.OWNER_CHECKS_SED, str(conf)],
            check=True,
        )
        if hq_cupsd.owner_checks(conf.read_text()):
            raise LabError(f"{conf}: the README's sed left owner checks in the default policy")
        if not alive():
            raise LabError(f"cupsd (pid {pid}) exited before its reload")
        os.kill(pid, signal.SIGHUP)
        wait_for("cupsd on its socket", self._answers, timeout=30, alive=alive, interval=0.1)
        server = f"{self.addresses[0]}:631"
        wait_for("cupsd on port 631", lambda: self._answers(server), timeout=30, alive=alive,
                 interval=0.1)  # fmt: skip

    def _answers(self, server: str | None = None) -> bool:
        """Whether cupsd answers on ``server`` (``HOST:PORT``; default its socket)."""
        full = ["lpstat", "-h", server or str(self.socket), "-r"]
        return netns.run_in(self.namespace, full, check=False).returncode == 0

    def start(self, registry: StateRegistry, log_dir: Path) -> int:
        """Start stock cupsd, share it as the README says, add the queues; wait for them."""
        pid = self.start_stock(registry, log_dir)
        start = registry.processes()[-1]["start"]
        alive = lambda: netns.pid_alive(pid, start)  # noqa: E731
        # The README's step for HQ: share printers, accept remote clients.
        self.share(alive)
        self.drop_owner_checks_if_affected(pid, alive)
        server = f"{self.addresses[0]}:631"
        for printer in HQ_PRINTERS:
            self.add_printer(printer)
        self.admin(["lpadmin", "-d", PRINTER])
        wait_for(
            "cupsd printers",
            lambda: (
                netns.run_in(
                    self.namespace, ["lpstat", "-h", server, "-p", *SHARED_PRINTERS], check=False
                ).returncode
                == 0
            ),
            timeout=30,
            alive=alive,
            interval=0.1,
        )
        return pid

    def start_stock(self, registry: StateRegistry, log_dir: Path) -> int:
        """Start cupsd with Debian's stock settings and no queue (an office PC's own
        cupsd, or HQ's before its set-up); return its PID once its socket answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        for sub in ("spool", "spool/tmp", "cache", "state"):
            (self.root / sub).mkdir(exist_ok=True)
        for name, text in self.files().items():
            path = self.root / name
            path.write_text(text)
            path.chmod(0o644)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.dbus_socket}"}  # fmt: skip
        pid = spawn(
            registry,
            self.namespace,
            ["cupsd", "-f", "-c", str(self.root / "cupsd.conf"),
             "-s", str(self.root / "cups-files.conf")],
            f"cupsd {self.namespace}",
            log_dir / f"{self.namespace}-cupsd.log",
            env=env,
        )  # fmt: skip
        start = registry.processes()[-1]["start"]
        alive = lambda: netns.pid_alive(pid, start)  # noqa: E731
        wait_for("cupsd", self._answers, timeout=30, alive=alive, interval=0.1)
        return pid


# --- LPD and raw printing at HQ --------------------------------------------------------------

#: RFC 1179 section 3.1: an LPD server listens on TCP port 515.
LPD_PORT = 515
#: The raw (AppSocket/JetDirect) port of a network printer: bytes in, printed out.
RAW_PORT = 9100
CUPS_LPD = "/usr/lib/cups/daemon/cups-lpd"


@dataclass(frozen=True)
class LpdServer:
    """HQ's LPD service: CUPS's own ``cups-lpd`` in front of HQ's cupsd.

    ``cups-lpd`` is inetd-style: one process per connection, the socket on its stdin and
    stdout; it turns each LPD job into an IPP job of the local cupsd. A real HQ runs it
    from a socket unit with ``Accept=yes`` (README, HQ). The lab runs the same thing
    without PID 1: ``systemd-socket-activate --accept --inetd`` holds the listening
    socket and spawns one ``cups-lpd`` per connection, as user ``lp`` as Debian's inetd
    line does. ``-n`` turns off reverse lookups of the client (here always the hub).
    ``CUPS_SERVER`` names the lab cupsd's socket, which a real HQ's cups-lpd finds by
    default (/run/cups/cups.sock).
    """

    namespace: str
    address: str
    cups_socket: Path

    def argv(self) -> list[str]:
        return [
            "systemd-socket-activate", f"--listen={self.address}:{LPD_PORT}",
            "--accept", "--inetd", f"--setenv=CUPS_SERVER={self.cups_socket}",
            "setpriv", "--reuid=lp", "--regid=lp", "--init-groups",
            CUPS_LPD, "-n",
        ]  # fmt: skip

    def start(self, registry: StateRegistry, log_dir: Path) -> int:
        """Start the listener; return once it accepts on ``address:515``."""
        pid = spawn(registry, self.namespace, self.argv(), "cups-lpd hq",
                    log_dir / f"{self.namespace}-cups-lpd.log")  # fmt: skip
        start = registry.processes()[-1]["start"]
        wait_for(
            "cups-lpd listener",
            lambda: listening(self.namespace, LPD_PORT, self.address),
            timeout=30,
            alive=lambda: netns.pid_alive(pid, start),
        )
        return pid


@dataclass(frozen=True)
class RawPrinter:
    """A network printer's raw port at HQ (AppSocket/JetDirect, TCP 9100).

    Raw 9100 is not a CUPS service: CUPS's ``socket`` backend *sends* to such a port,
    nothing in CUPS listens on one. What an office's raw print reaches at a real HQ is
    a printer (or a print-server box) listening on 9100, so the lab has one: Debian's
    ``p910nd``, the 9100 daemon that print-server boxes run, writing every job to
    :attr:`device` (a file standing for the printer's mechanism; each job is written
    from its start, as to a device). A job is complete when p910nd has written all of
    it and closed the connection, which the client sees as end of stream.

    p910nd keeps its lock in /var/lock/p910nd and its pid file in /run; the lab gives it
    a private /run (a bind mount inside its own mount namespace, which ``ip netns exec``
    makes) so nothing of it lands on the host.
    """

    namespace: str
    address: str
    root: Path

    @property
    def device(self) -> Path:
        return self.root / "printer.out"

    def start(self, registry: StateRegistry, log_dir: Path) -> int:
        """Start p910nd on ``address:9100``; return once it accepts."""
        run_dir = self.root / "run"
        (run_dir / "lock" / "p910nd").mkdir(parents=True, exist_ok=True)
        self.device.touch()
        argv = [
            "sh", "-c", 'mount --bind "$1" /run && exec p910nd -d -f "$2" -i "$3" 0',
            "p910nd", str(run_dir), str(self.device), self.address,
        ]  # fmt: skip
        pid = spawn(registry, self.namespace, argv, "p910nd hq",
                    log_dir / f"{self.namespace}-p910nd.log")  # fmt: skip
        start = registry.processes()[-1]["start"]
        wait_for(
            "p910nd",
            lambda: listening(self.namespace, RAW_PORT, self.address),
            timeout=30,
            alive=lambda: netns.pid_alive(pid, start),
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
