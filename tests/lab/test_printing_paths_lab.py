"""Printing through the edges by every path but IPP discovery, with real clients and servers.

One lab: nyc (every service) and sf, enrolled for printing only (``--services ipp``,
edge.toml without names), 20 ms from HQ. HQ runs smbd sharing its CUPS printers
(``[printers]``, ``printing = cups``), CUPS's own cups-lpd on 515 in front of cupsd, and
p910nd on 9100 standing for a network printer. From the office PCs:

- ``smbclient //GLOBAL-NFS/hq-laser -c 'print FILE'`` (SMB print share, SMB tunnel);
- ``rlpr`` (an RFC 1179 client) to the edge's 515, the hub connecting to cups-lpd from
  a reserved source port;
- a plain socket write to the edge's 9100;
- ``lp`` through sf's edge, which carries no file-server name.

Each job must complete at HQ: in cupsd's completed jobs (``lpstat -W completed`` over
HQ's socket), or, for raw, every byte written by the printer.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from spokeshare import logfmt
from spokeshare.lab import services, spokes
from spokeshare.lab.topology import HQ, Lab
from spokeshare.lab.wire import LinkSettings
from tests.helpers import wait_for
from tests.lab.building import running_lab
from tests.lab.shell import sh

pytestmark = pytest.mark.lab

PRINTING_ONLY = "sf"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(
        "ss-printing-",
        ["nyc", PRINTING_ONLY],
        LinkSettings(rtt_ms=20),
        start_hub=functools.partial(
            spokes.start_hub, office_services={PRINTING_ONLY: ["ipp"]}, lpd_reserved_port=True
        ),
        start_edge=functools.partial(spokes.start_edge, printing_only=(PRINTING_ONLY,)),
    ) as the_lab:
        yield the_lab


def cups_socket(lab: Lab) -> str:
    return str(lab.host_dir(HQ) / "cups" / "cups.sock")


def completed_jobs(lab: Lab) -> dict[str, str]:
    """HQ cupsd's completed jobs of hq-laser: job id -> owner (``lpstat -W completed``)."""
    out = sh(lab, HQ, "lpstat", "-h", cups_socket(lab), "-W", "completed", "-o",
             services.PRINTER).stdout  # fmt: skip
    return dict(re.findall(r"^(\S+)\s+(\S+)\s", out, re.M))


def new_completed_job(lab: Lab, before: dict[str, str], owner: str, what: str) -> str:
    """Wait for a job of ``owner`` that was not complete in ``before``; its id."""

    def found() -> str | None:
        new = [j for j, o in completed_jobs(lab).items() if j not in before and o == owner]
        return new[0] if new else None

    return str(wait_for(found, timeout=60, what=what, interval=0.5))


def test_smb_print_share_job_completes_at_hq(lab: Lab, tmp_path: Path) -> None:
    nyc = lab.office("nyc")
    doc = tmp_path / "smb-memo.txt"
    doc.write_text("printed at HQ from nyc over SMB\n" * 20)
    doc.chmod(0o644)
    before = completed_jobs(lab)
    argv = ["smbclient", f"//{spokes.VIRTUAL_NAME}/{services.PRINTER}", "-I", nyc.edge_ip,
            "-U", f"{services.ALICE}%{services.ALICE_PASSWORD}", "-c", f"print {doc}"]  # fmt: skip

    def printed() -> subprocess.CompletedProcess[str] | None:
        # smbd lists CUPS's printers in the background just after it starts.
        proc = sh(lab, nyc.pc, *argv)
        return proc if proc.returncode == 0 else None

    proc = wait_for(printed, timeout=60, what="smbclient print accepted", interval=1.0)
    assert "putting file" in proc.stdout + proc.stderr
    new_completed_job(lab, before, services.ALICE, "the SMB job completed at HQ")


def test_lpd_job_from_rlpr_completes_at_hq(lab: Lab, tmp_path: Path) -> None:
    nyc = lab.office("nyc")
    doc = tmp_path / "lpd-memo.txt"
    doc.write_text("printed at HQ from nyc over LPD\n")
    before = completed_jobs(lab)
    proc = sh(lab, nyc.pc, "rlpr", f"--printhost={nyc.edge_ip}",
              f"--printer={services.PRINTER}", "--user=lpduser", "--job=lpd-memo",
              str(doc))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new_completed_job(lab, before, "lpduser", "the LPD job completed at HQ")


def test_raw_9100_job_is_printed_whole_at_hq(lab: Lab) -> None:
    nyc = lab.office("nyc")
    payload = b'\x1b%-12345X@PJL JOB NAME="raw"\r\n' + os.urandom(256 * 1024).hex().encode()
    code = (
        "import socket, sys\n"
        f"s = socket.create_connection(({nyc.edge_ip!r}, {services.RAW_PORT}), timeout=30)\n"
        "s.sendall(sys.stdin.buffer.read())\n"
        "s.shutdown(socket.SHUT_WR)\n"
        "while s.recv(65536):\n"
        "    pass\n"  # the printer closes once it has taken the whole job
    )
    proc = lab.exec(nyc.pc, [sys.executable, "-c", code], input=payload, capture_output=True,
                    timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    device = lab.host_dir(HQ) / "raw-printer" / "printer.out"
    printed = device.read_bytes()[: len(payload)]
    assert hashlib.sha256(printed).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_printing_only_office_prints_and_has_no_file_server(lab: Lab, tmp_path: Path) -> None:
    sf = lab.office(PRINTING_ONLY)
    log = (lab.logs_dir / f"edge-{PRINTING_ONLY}.log").read_text()
    [up] = logfmt.find(log, "edge up")
    assert (up["office"], up["names"]) == (PRINTING_ONLY, "")
    assert logfmt.find(log, "names off")
    claimed = [(c["protocol"], c["name"]) for c in logfmt.find(log, "name claimed")]
    assert claimed == [("mdns", "sf-print.local")]  # the print host's name only (HQ's printers)
    listening = sh(lab, sf.edge, "ss", "-Hltn").stdout
    assert f"{sf.edge_ip}:631" in listening
    for port in (445, 139, services.LPD_PORT, services.RAW_PORT):
        assert f":{port} " not in listening, listening
    lookup = sh(lab, sf.pc, "nmblookup", spokes.VIRTUAL_NAME)
    assert f"{spokes.VIRTUAL_NAME}<00>" not in lookup.stdout
    doc = tmp_path / "sf-memo.txt"
    doc.write_text("printed at HQ from the printing-only office\n")
    proc = sh(lab, sf.pc, "lp", "-h", f"{sf.edge_ip}:631", "-d", services.PRINTER, str(doc))
    match = re.search(r"request id is (\S+)", proc.stdout)
    assert proc.returncode == 0 and match, proc.stdout + proc.stderr
    job = match.group(1)
    wait_for(lambda: job in completed_jobs(lab), timeout=60, what=f"{job} completed at HQ",
             interval=0.5)  # fmt: skip


FIREWALLD = Path(__file__).resolve().parents[2] / "etc" / "firewalld"


def firewalld_ports(side: str) -> set[tuple[str, int]]:
    """The (protocol, port) pairs the packaged firewalld service opens
    (/usr/lib/firewalld/services/spokeshare-SIDE.xml, firewalld.service(5))."""
    root = ElementTree.parse(FIREWALLD / f"spokeshare-{side}.xml").getroot()
    assert root.tag == "service"
    return {(p.attrib["protocol"], int(p.attrib["port"])) for p in root.iter("port")}


def listening(lab: Lab, host: str) -> set[tuple[str, int]]:
    """(protocol, port) of every TCP listener and bound UDP socket in ``host`` that is
    not on loopback, from ``ss``."""
    out = sh(lab, host, "ss", "-H", "-l", "-n", "-t", "-u").stdout
    found = set()
    for line in out.splitlines():
        proto, _state, _rq, _sq, local, *_ = line.split()
        address, _, port = local.rpartition(":")
        if address.strip("[]").split("%")[0] in ("127.0.0.1", "::1") or address.startswith("127."):
            continue
        found.add((proto, int(port)))
    return found


def test_the_firewalld_services_open_exactly_what_edge_and_hub_serve(lab: Lab) -> None:
    """nyc's edge serves everything (SMB, 139, NetBIOS, browse, WSD, mDNS, LLMNR, IPP,
    LPD, raw): the ports it listens on beyond loopback are the edge service's ports; the
    hub's namespace holds the hub alone beside HQ's servers, and its port is the hub's."""
    edge = listening(lab, lab.office("nyc").edge)
    assert edge == firewalld_ports("edge")
    hub = listening(lab, HQ)
    assert firewalld_ports("hub") <= hub
