"""``spokeshare demo``: HQ and two offices 100 ms away, and what spokeshare is for.

The demo builds the lab (:class:`~spokeshare.lab.topology.Lab` with the real hub and
edges from :mod:`spokeshare.lab.spokes`) and then plays the scenario with the real
client tools, run in the office PCs, printing their output as it comes:

1. on nyc's LAN the name ``GLOBAL-NFS`` resolves (by broadcast) to nyc's edge;
2. the workgroup browse list kept by ``FS-NYC`` (the office's own master browser)
   shows ``GLOBAL-NFS`` beside ``FS-NYC``;
3. nyc-pc writes a file to ``\\\\GLOBAL-NFS\\share``; sf-pc reads the same bytes back
   through its own edge (SHA-256 of both shown);
4. sf-pc, with nothing configured for printers, finds HQ's printers on its LAN with
   ``ippfind`` (DNS-SD answered by its edge; the PC runs avahi as a Linux desktop
   does), prints to ``hq-laser`` at the address found, and the job completes at HQ
   (``lpstat -W completed`` over HQ's cupsd socket); should discovery fail, the step
   says so and prints by the edge's URI;
5. the hub's office list: both offices connected, with their RTT.

A step that fails says why and the demo carries on with the next one (when
``GLOBAL-NFS`` does not resolve, the file steps tell smbclient the edge's address);
the exit status is 1 if any step failed. By default the lab is left up for looking
around; ``--down`` removes it at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spokeshare.lab import services, spokes
from spokeshare.lab.avahi import AvahiHost
from spokeshare.lab.netns import LabError
from spokeshare.lab.topology import DEFAULT_STATE_DIR, HQ, LAN_IFNAME, Lab
from spokeshare.lab.wire import LinkSettings

log = logging.getLogger(__name__)

OFFICES = ("nyc", "sf")
#: Bytes nyc-pc writes to the share (random, so the SHA-256 proves the round trip).
DEMO_FILE_SIZE = 1024 * 1024
DEMO_FILE_NAME = "quarterly-report.bin"
#: How long a single tool may run before the step counts as failed, seconds.
TOOL_TIMEOUT = 60.0
#: Name registration takes RFC 1002's 3 x 250 ms; allow for a slow start.
NAME_TIMEOUT = 5.0
#: A fresh nmbd needs ~20 s to win the election; the edge then announces (MS-BRWS).
DEFAULT_BROWSE_TIMEOUT = 90.0
#: ... and when GLOBAL-NFS did not even resolve, a shorter look is enough.
UNRESOLVED_BROWSE_TIMEOUT = 20.0
#: Samba 4.17 warns about ``client use spnego`` on every run; it is noise here.
_NOISE = re.compile(r"^lpcfg_do_global_parameter: WARNING: The \"client use spnego\" option")
PRINT_TIMEOUT = 30.0
#: The edge publishes HQ's printers after its first sync (printers.sync_interval 20 s).
DISCOVER_TIMEOUT = 60.0
#: Seconds each ``ippfind`` run browses.
IPPFIND_SECONDS = 5
IPPFIND_FORMAT = "{service_name}|{service_hostname}|{service_port}|{txt_rp}|{txt_pdl}"
#: The hub learns an office's RTT from the control channel's first heartbeat.
OFFICE_LIST_TIMEOUT = 20.0

SMB1_BROWSE_OPTIONS = (
    "-N",
    "-m",
    "NT1",
    "--option=client min protocol=NT1",
    "--option=client use spnego=no",
)

Out = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass
class StepResult:
    """What one step of the scenario showed."""

    title: str
    ok: bool = False
    seconds: float = 0.0
    note: str = ""


@dataclass
class Demo:
    """The scenario, played on a lab that is up. ``out`` receives every line shown."""

    lab: Lab
    out: Out = _print
    browse_timeout: float = DEFAULT_BROWSE_TIMEOUT
    results: list[StepResult] = field(default_factory=list)
    #: The edge's IP per office when GLOBAL-NFS did not resolve there (``smbclient -I``).
    _fallback_ip: dict[str, str] = field(default_factory=dict)

    # --- running tools ------------------------------------------------------------------

    def run(
        self,
        host: str,
        argv: Sequence[str],
        show: bool = True,
        timeout: float = TOOL_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``host``; show the command and its output, indented."""
        if show:
            self.out(f"  {host}$ {_shell_words(argv)}")
        try:
            proc = self.lab.exec(
                host, list(argv), capture_output=True, text=True, timeout=timeout, env=env
            )
        except subprocess.TimeoutExpired as exc:
            text = _decode(exc.stdout) + _decode(exc.stderr)
            proc = subprocess.CompletedProcess(list(argv), 124, text, "")
            proc.stderr = f"(no answer within {timeout:.0f} s)\n"
            if show:
                self._show(text + proc.stderr)
            return proc
        if show:
            self._show(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                self.out(f"    (exit status {proc.returncode})")
        return proc

    def _show(self, text: str) -> None:
        for line in text.rstrip().splitlines():
            if not _NOISE.match(line):
                self.out(f"    {line}")

    def step(self, title: str, body: Callable[[StepResult], None]) -> None:
        """Run one step, time it, record it; an exception in it fails only this step."""
        n = len(self.results) + 1
        result = StepResult(title)
        self.out("")
        self.out(f"== {n}. {title}")
        t0 = time.monotonic()
        try:
            body(result)
        except (OSError, LabError, ValueError) as exc:
            log.debug("demo step %r failed", title, exc_info=True)
            result.ok = False
            result.note = result.note or f"{type(exc).__name__}: {exc}"
        result.seconds = time.monotonic() - t0
        verdict = "ok" if result.ok else "FAILED"
        note = f": {result.note}" if result.note else ""
        self.out(f"   -> {verdict}{note} [{result.seconds:.1f} s]")
        self.results.append(result)

    # --- the scenario -------------------------------------------------------------------

    def play(self) -> bool:
        """Play every step, also after one failed; True when all of them worked."""
        self.step("nyc-pc looks up GLOBAL-NFS by broadcast on its LAN", self.resolve)
        self.step("FS-NYC's browse list shows GLOBAL-NFS beside FS-NYC", self.browse)
        self.step("nyc-pc writes to \\\\GLOBAL-NFS\\share, sf-pc reads it back", self.files)
        self.step("sf-pc finds HQ's printers on its LAN, prints; the job completes at HQ",
                  self.print_job)  # fmt: skip
        self.step("the hub's office list: who is connected, at what RTT", self.office_list)
        return all(r.ok for r in self.results)

    def resolve(self, result: StepResult) -> None:
        self.out("   Nothing on the PC names GLOBAL-NFS (no hosts entry, no WINS): it asks")
        self.out("   its LAN, as Windows does, and the office's edge answers for the name.")
        failed: list[str] = []
        for office in OFFICES:
            plan = self.lab.office(office)
            proc = self._nmblookup(plan.pc, spokes.VIRTUAL_NAME)
            answers = _nmblookup_addresses(proc.stdout, spokes.VIRTUAL_NAME)
            if plan.edge_ip not in answers:
                self._fallback_ip[office] = plan.edge_ip
                failed.append(f"{office} (answers: {', '.join(answers) or 'none'})")
        if failed:
            result.note = (
                f"GLOBAL-NFS did not resolve to the edge on {'; '.join(failed)}: the edge's "
                "NetBIOS name service is not answering; the next steps use the edge's IP"
            )
            return
        result.ok = True
        result.note = "each office's PC finds GLOBAL-NFS at its own edge"

    def _nmblookup(self, pc: str, name: str) -> subprocess.CompletedProcess[str]:
        """``nmblookup NAME`` until it answers or NAME_TIMEOUT passes; show the last run."""
        deadline = time.monotonic() + NAME_TIMEOUT
        argv = ["nmblookup", name]
        while True:
            proc = self.run(pc, argv, show=False, timeout=TOOL_TIMEOUT)
            if proc.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.out(f"  {pc}$ {_shell_words(argv)}")
        self._show(proc.stdout + proc.stderr)
        return proc

    def browse(self, result: StepResult) -> None:
        plan = self.lab.office("nyc")
        fs = plan.fs_netbios_name
        self.out(f"   {fs} is nyc's own file server and the local master browser of")
        self.out(f"   {services.WORKGROUP}; the edge announces GLOBAL-NFS to it like any server.")
        argv = ["smbclient", "-L", fs, *SMB1_BROWSE_OPTIONS]
        timeout = self.browse_timeout
        if "nyc" in self._fallback_ip:
            # Without the name service the edge's announcer is most likely absent too.
            timeout = min(timeout, UNRESOLVED_BROWSE_TIMEOUT)
            self.out(f"   (GLOBAL-NFS did not resolve: waiting at most {timeout:.0f} s)")
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        next_report = t0 + 10
        while True:
            proc = self.run(plan.pc, argv, show=False)
            servers = _browse_servers(proc.stdout)
            if spokes.VIRTUAL_NAME in servers and fs in servers:
                break
            now = time.monotonic()
            if now > deadline:
                break
            if now >= next_report:
                seen = ", ".join(sorted(servers)) or "nothing yet"
                self.out(f"   waiting for announcements ({now - t0:.0f} s so far; listed: {seen})")
                next_report = now + 10
            time.sleep(2)
        self.out(f"  {plan.pc}$ {_shell_words(argv)}")
        self._show(proc.stdout + proc.stderr)
        if spokes.VIRTUAL_NAME in servers and fs in servers:
            result.ok = True
            result.note = f"{fs} lists GLOBAL-NFS after {time.monotonic() - t0:.0f} s"
        else:
            result.note = (
                f"after {timeout:.0f} s the list shows {', '.join(sorted(servers)) or 'no servers'}"
            )

    def _unc_args(self, office: str) -> list[str]:
        share = f"//{spokes.VIRTUAL_NAME}/{services.SHARE}"
        ip = self._fallback_ip.get(office)
        if ip is None:
            return [share]
        self.out(f"   ({office}: GLOBAL-NFS did not resolve, so smbclient is told the edge's IP)")
        return [share, "-I", ip]

    def files(self, result: StepResult) -> None:
        nyc, sf = self.lab.office("nyc"), self.lab.office("sf")
        self.out(f"   nyc-pc saves {DEMO_FILE_SIZE // 1024} KiB on HQ's share, 100 ms away; sf-pc,")
        self.out("   at another office, opens the same file through its own edge.")
        src = self.lab.host_dir(nyc.pc) / "demo" / DEMO_FILE_NAME
        dst = self.lab.host_dir(sf.pc) / "demo" / DEMO_FILE_NAME
        for d in (src.parent, dst.parent):
            d.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        src.write_bytes(os.urandom(DEMO_FILE_SIZE))
        put = self.run(nyc.pc, ["smbclient", *self._unc_args("nyc"), "-N",
                                "-c", f"put {src} {DEMO_FILE_NAME}"])  # fmt: skip
        sum_nyc = self.run(nyc.pc, ["sha256sum", str(src)])
        if put.returncode != 0:
            result.note = "nyc-pc could not write the file"
            return
        get = self.run(sf.pc, ["smbclient", *self._unc_args("sf"), "-N",
                               "-c", f"get {DEMO_FILE_NAME} {dst}"])  # fmt: skip
        sum_sf = self.run(sf.pc, ["sha256sum", str(dst)])
        if get.returncode != 0 or not dst.exists():
            result.note = "sf-pc could not read the file"
            return
        a, b = _first_word(sum_nyc.stdout), _first_word(sum_sf.stdout)
        expected = hashlib.sha256(src.read_bytes()).hexdigest()
        result.ok = a == b == expected
        result.note = "same SHA-256 on both sides" if result.ok else f"SHA-256 differs: {a} vs {b}"

    def print_job(self, result: StepResult) -> None:
        sf = self.lab.office("sf")
        self.out("   sf-pc has no driver, no queue and no route to HQ. Like a Mac, or Windows'")
        self.out("   'Add a printer', it looks for printers on its LAN (DNS-SD); its edge")
        self.out("   answers with HQ's shared queues, and the job travels to HQ's CUPS.")
        found = self._discover(sf.pc, services.PRINTER)
        if found is None:
            address, port, resource = sf.edge_ip, 631, f"printers/{services.PRINTER}"
            self.out(f"   (not found by DNS-SD: printing by the edge's URI, "
                     f"ipp://{address}:{port}/{resource})")  # fmt: skip
        else:
            address, port, resource = found
        doc = self.lab.host_dir(sf.pc) / "demo" / "memo.txt"
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text("Memo from the sf office, printed at HQ through spokeshare.\n")
        queue = resource.rsplit("/", 1)[-1]
        lp = self.run(sf.pc, ["lp", "-h", f"{address}:{port}", "-d", queue, str(doc)])
        match = re.search(r"request id is (\S+)", lp.stdout)
        if lp.returncode != 0 or match is None:
            result.note = "the job was not accepted"
            return
        job = match.group(1)
        socket_path = self.lab.host_dir(HQ) / "cups" / "cups.sock"
        argv = ["lpstat", "-h", str(socket_path), "-W", "completed", "-o", queue]
        deadline = time.monotonic() + PRINT_TIMEOUT
        while True:
            proc = self.run(HQ, argv, show=False)
            done = job in _completed_jobs(proc.stdout)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.out(f"  {HQ}$ lpstat -W completed -o {queue}      (HQ's cupsd, on its socket)")
        self._show(proc.stdout + proc.stderr)
        result.ok = done and found is not None
        if not done:
            result.note = f"{job} not completed at HQ after {PRINT_TIMEOUT:.0f} s"
        elif found is None:
            result.note = f"{job} completed at HQ, but sf-pc did not find the printer by DNS-SD"
        else:
            result.note = f"found by DNS-SD, {job} completed at HQ"

    def _discover(self, pc: str, printer: str) -> tuple[str, int, str] | None:
        """``ippfind`` on ``pc`` until ``printer`` shows; its (address, port, resource).

        The PC gets an avahi-daemon (what ippfind talks to on any Linux desktop); the
        host name in the answer is resolved over mDNS as nss-mdns would.
        """
        avahi = AvahiHost(pc, LAN_IFNAME, pc, self.lab.host_dir(pc) / "avahi")
        if not avahi.bus_socket.exists():
            avahi.start(self.lab.registry, self.lab.logs_dir)
        argv = ["ippfind", "_ipp._tcp,_universal", "-T", str(IPPFIND_SECONDS),
                "-x", "echo", IPPFIND_FORMAT, ";"]  # fmt: skip
        deadline = time.monotonic() + DISCOVER_TIMEOUT
        while True:
            proc = self.run(pc, argv, show=False, env=avahi.env())
            hit = _ippfind_printers(proc.stdout).get(f"printers/{printer}")
            if hit is not None or time.monotonic() > deadline:
                break
        self.out(f"  {pc}$ ippfind _ipp._tcp,_universal -T {IPPFIND_SECONDS} -x echo "
                 "'{service_name} {service_hostname}:{service_port} rp={txt_rp}' ';'")  # fmt: skip
        for row in _ippfind_rows(proc.stdout):
            self.out("    {} {}:{} rp={} pdl={}".format(*row))
        if hit is None:
            self.out(f"    ({printer} not found within {DISCOVER_TIMEOUT:.0f} s)")
            return None
        host, port = hit
        resolve = self.run(pc, ["avahi-resolve-host-name", "-4", host], env=avahi.env())
        address = _resolved_address(resolve.stdout, host)
        if address is None:
            return None
        return address, port, f"printers/{printer}"

    def office_list(self, result: StepResult) -> None:
        self.out("   At HQ, one command shows every office, its tunnel and its latency.")
        deadline = time.monotonic() + OFFICE_LIST_TIMEOUT
        while time.monotonic() < deadline and not all(
            _office_rtt(self.lab, o) is not None for o in OFFICES
        ):
            time.sleep(0.5)
        argv = [sys.executable, "-m", "spokeshare", "office", "list",
                "--dir", str(self.lab.deploy_dir)]  # fmt: skip
        self.out(f"  hq$ spokeshare office list --dir {self.lab.deploy_dir}")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
        self._show(proc.stdout + proc.stderr)
        rtts = {o: _office_rtt(self.lab, o) for o in OFFICES}
        missing = [o for o, rtt in rtts.items() if rtt is None]
        result.ok = proc.returncode == 0 and not missing
        result.note = (
            f"not connected or no RTT yet: {', '.join(missing)}"
            if missing
            else ", ".join(f"{o} {rtt:.0f} ms" for o, rtt in rtts.items() if rtt is not None)
        )


# --- parsing tool output ------------------------------------------------------------------


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def _shell_words(argv: Sequence[str]) -> str:
    import shlex

    shown = ["spokeshare" if a == sys.executable else a for a in argv]
    return shlex.join(shown)


def _first_word(text: str) -> str:
    words = text.split()
    return words[0] if words else ""


def _nmblookup_addresses(stdout: str, name: str) -> list[str]:
    """Addresses in ``nmblookup NAME`` output (``198.18.11.1 GLOBAL-NFS<00>``)."""
    pattern = re.compile(rf"^(\d+\.\d+\.\d+\.\d+)\s+{re.escape(name)}<00>", re.M | re.I)
    return pattern.findall(stdout)


def _browse_servers(stdout: str) -> set[str]:
    """Server names in the ``Server  Comment`` table of ``smbclient -L``."""
    servers: set[str] = set()
    in_table = False
    for line in stdout.splitlines():
        words = line.split()
        if words[:2] == ["Server", "Comment"]:
            in_table = True
            continue
        if not in_table:
            continue
        if words[:2] == ["Workgroup", "Master"]:
            break
        if words and not set(words[0]) <= {"-"}:
            servers.add(words[0].upper())
    return servers


def _ippfind_rows(stdout: str) -> list[tuple[str, str, str, str, str]]:
    """Rows of ``ippfind -x echo IPPFIND_FORMAT ;``: name, host, port, rp, pdl."""
    rows = []
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 5:
            rows.append((parts[0], parts[1], parts[2], parts[3], parts[4]))
    return rows


def _ippfind_printers(stdout: str) -> dict[str, tuple[str, int]]:
    """``rp`` -> (host, port) of each printer in ``ippfind`` output (bad rows skipped)."""
    out: dict[str, tuple[str, int]] = {}
    for _, host, port, rp, _ in _ippfind_rows(stdout):
        if port.isdigit() and host:
            out[rp] = (host.rstrip("."), int(port))
    return out


def _resolved_address(stdout: str, host: str) -> str | None:
    """The IPv4 address in ``avahi-resolve-host-name -4 HOST`` output."""
    pattern = rf"^{re.escape(host.rstrip('.'))}\.?\s+(\d+\.\d+\.\d+\.\d+)\s*$"
    m = re.search(pattern, stdout, re.M | re.I)
    return m.group(1) if m else None


def _completed_jobs(stdout: str) -> set[str]:
    """Job ids in ``lpstat -W completed -o`` output (``hq-laser-3  alice  1024  date``)."""
    return set(re.findall(r"^(\S+-\d+)\s", stdout, re.M))


def _office_rtt(lab: Lab, office: str) -> float | None:
    offices = spokes.hub_status(lab).get("offices", {})
    if not isinstance(offices, dict):
        return None
    st = offices.get(office, {})
    rtt = st.get("rtt_ms") if isinstance(st, dict) and st.get("connected") else None
    return float(rtt) if isinstance(rtt, int | float) else None


# --- the command --------------------------------------------------------------------------


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``demo`` to ``subparsers``; the parsed arguments carry ``func=run_demo_command``."""
    p = subparsers.add_parser(
        "demo",
        help="build the lab (HQ, nyc, sf at 100 ms) and play what spokeshare is for",
        description="Build the lab: HQ with Samba, CUPS and the hub; offices nyc and sf,\n"
        "each with an edge, a PC and a local file server, behind an emulated WAN.\n"
        "Then, with the real client tools: resolve GLOBAL-NFS on nyc's LAN, read\n"
        "FS-NYC's browse list, write a file from nyc and read it back in sf, find\n"
        "HQ's printers on sf's LAN (ippfind) and print to one, the job completing at\n"
        "HQ, and show the hub's office list. Exits 1 if a step failed.\n"
        "Needs root; see docs/lab.md.",
        epilog="afterwards: spokeshare lab exec nyc-pc -- smbclient //GLOBAL-NFS/share -N\n"
        "           spokeshare lab down",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rtt", type=float, default=100.0, metavar="MS",
                   help="round-trip time of each office's WAN, ms (default 100)")  # fmt: skip
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"the lab's state dir (default {DEFAULT_STATE_DIR})")  # fmt: skip
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep", dest="keep", action="store_true", default=True,
                      help="leave the lab up at the end for looking around (default)")  # fmt: skip
    keep.add_argument("--down", dest="keep", action="store_false",
                      help="remove the lab at the end")  # fmt: skip
    p.add_argument("--browse-timeout", type=float, default=DEFAULT_BROWSE_TIMEOUT, metavar="S",
                   help="how long to wait for GLOBAL-NFS in the browse list "
                   f"(default {DEFAULT_BROWSE_TIMEOUT:.0f})")  # fmt: skip
    p.set_defaults(func=run_demo_command)
    return p  # type: ignore[no-any-return]


def _progress(step: str, elapsed: float) -> None:
    print(f"  [{elapsed:5.1f} s] {step}", flush=True)


def run_demo_command(args: argparse.Namespace) -> int:
    """Build the lab, play the scenario, say how to look around; returns the exit status."""
    if os.geteuid() != 0:
        print("spokeshare demo: needs root (it builds network namespaces)", file=sys.stderr)
        return 2
    if not getattr(args, "verbose", False):
        # The lab's own progress lines say what happens; its INFO log would repeat it.
        logging.getLogger("spokeshare.lab").setLevel(logging.WARNING)
    state_dir: Path = args.state_dir
    lab = Lab(
        state_dir, OFFICES, LinkSettings(rtt_ms=args.rtt),
        start_hub=spokes.start_hub, start_edge=spokes.start_edge,
    )  # fmt: skip
    print(f"Building the lab: HQ and offices {', '.join(OFFICES)}, {args.rtt:g} ms RTT to HQ")
    t0 = time.monotonic()
    try:
        lab.up(_progress)
    except (LabError, OSError, ValueError) as exc:
        print(f"spokeshare demo: the lab did not come up: {exc}", file=sys.stderr)
        print(f"  (logs in {lab.logs_dir})", file=sys.stderr)
        return 1
    print(f"Lab ready in {time.monotonic() - t0:.1f} s.")
    demo = Demo(lab, browse_timeout=args.browse_timeout)
    ok = False
    try:
        ok = demo.play()
    finally:
        _summary(demo, time.monotonic() - t0)
        if args.keep:
            _look_around(lab)
        else:
            print("\nRemoving the lab.")
            lab.down()
    return 0 if ok else 1


def _summary(demo: Demo, total: float) -> None:
    print("\n== Summary")
    for n, r in enumerate(demo.results, start=1):
        print(f"  {n}. {'ok' if r.ok else 'FAILED':<6} {r.seconds:5.1f} s  {r.title}")
    print(f"  total {total:.1f} s")


def _command() -> str:
    """How to call this very spokeshare again (``./run demo`` does not put it on PATH)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "spokeshare" and shutil.which("spokeshare") != str(argv0.resolve()):
        return str(argv0.resolve())
    return "spokeshare"


def _look_around(lab: Lab) -> None:
    sd = "" if lab.state_dir == DEFAULT_STATE_DIR else f" --state-dir {lab.state_dir}"
    cmd = _command()
    print("\nThe lab is still up. Look around:")
    print(f"  {cmd} lab{sd} exec nyc-pc -- smbclient //GLOBAL-NFS/share -N -c ls")
    print(f"  {cmd} lab{sd} exec sf-pc -- nmblookup GLOBAL-NFS")
    print(f"  {cmd} lab{sd} exec nyc-pc -- smbclient -L FS-NYC -N -m NT1 "
          "--option='client use spnego=no'")  # fmt: skip
    print(f"  {cmd} lab{sd} wan nyc --loss 1       (or --down / --up, --rtt MS)")
    print(f"  {cmd} lab{sd} status")
    print(f"  {cmd} office list --dir {lab.deploy_dir}")
    print("Tear down:")
    print(f"  {cmd} lab{sd} down")
