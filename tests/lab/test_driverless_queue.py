"""An office PC sets up an HQ printer the driverless way (root only, lab).

Issue 9's real-client check: the office PC runs its own stock cupsd and an
avahi-daemon, as a Linux desktop does, and nothing about printers. It finds
``hq-laser`` with ``ippfind`` (the edge's DNS-SD answers), makes a queue with
``lpadmin -m everywhere`` (CUPS asks the printer for its IPP attributes, through the
edge and the hub, and writes the PPD from them), prints a PDF with ``lp``, and the job
completes at HQ's cupsd.

``lpadmin`` is given the printer's URI with the host resolved by ``avahi-resolve``:
the PC has no nss-mdns, so libcups cannot resolve ``GLOBAL-NFS.local`` itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare.lab import services, spokes
from spokeshare.lab.avahi import AvahiHost
from spokeshare.lab.topology import HQ, Lab
from spokeshare.lab.wire import LinkSettings
from tests.helpers import wait_for
from tests.lab.building import running_avahi, running_lab

pytestmark = pytest.mark.lab

OFFICE = "nyc"
PC = f"{OFFICE}-pc"
QUEUE = "hq-laser-everywhere"
#: Issue 9: a printer shows on the LAN within 60 s.
FIND_BUDGET = 60.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(
        "ss-driverless-", (OFFICE,), LinkSettings(rtt_ms=40),
        start_hub=spokes.start_hub, start_edge=spokes.start_edge,
    ) as the_lab:  # fmt: skip
        yield the_lab


@pytest.fixture(scope="module")
def avahi(lab: Lab) -> Iterator[AvahiHost]:
    """The PC's own avahi-daemon (stopped by PID; lab.down would too)."""
    with running_avahi(lab, PC) as host:
        yield host


@pytest.fixture(scope="module")
def pc_cups(lab: Lab) -> Iterator[services.CupsHost]:
    """The PC's own cupsd: Debian's stock settings, no queue (stopped by PID)."""
    cups = services.CupsHost(PC, (lab.office(OFFICE).pc_ip,), lab.host_dir(PC) / "cups")
    pid = cups.start_stock(lab.registry, lab.logs_dir)
    try:
        yield cups
    finally:
        lab.registry.kill_process(pid)


def discovered_uri(lab: Lab, avahi: AvahiHost, resource: str) -> str | None:
    """The ``ipp://`` URI ippfind reports for ``resource``, its host resolved over mDNS."""
    fmt = "{service_hostname}|{service_port}|{txt_rp}"
    found = lab.exec(
        PC, ["ippfind", "_ipp._tcp,_universal", "-T", "4", "-x", "echo", fmt, ";"],
        capture_output=True, text=True, timeout=30, env=avahi.env(),
    ).stdout  # fmt: skip
    for line in found.splitlines():
        host, port, rp = (line.split("|") + ["", "", ""])[:3]
        if rp != resource:
            continue
        resolved = lab.exec(
            PC, ["avahi-resolve-host-name", "-4", host.rstrip(".")],
            capture_output=True, text=True, timeout=30, env=avahi.env(),
        ).stdout.split()  # fmt: skip
        if len(resolved) == 2:
            return f"ipp://{resolved[1]}:{port}/{rp}"
    return None


def hq_completed_jobs(lab: Lab) -> set[str]:
    sock = str(lab.host_dir(HQ) / "cups" / "cups.sock")
    out = lab.exec(
        HQ, ["lpstat", "-h", sock, "-W", "completed", "-o", services.PRINTER],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    return set(re.findall(r"^(\S+)\s", out, re.M))


#: A one-page PDF (PDF 1.4, ISO 32000-1 section 7.5 layout), offsets computed below.
def one_page_pdf() -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length 55 >>\nstream\nBT /F1 24 Tf 72 720 Td (driverless from nyc) Tj ET\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref,
    )  # fmt: skip
    return bytes(out)


def test_everywhere_queue_on_the_discovered_uri_prints_at_hq(
    lab: Lab, avahi: AvahiHost, pc_cups: services.CupsHost, tmp_path: Path
) -> None:
    resource = f"printers/{services.PRINTER}"
    uri = wait_for(
        lambda: discovered_uri(lab, avahi, resource), timeout=FIND_BUDGET,
        what=f"{resource} in ippfind on {PC}", interval=1.0,
    )  # fmt: skip
    edge_ip = lab.office(OFFICE).edge_ip
    assert uri == f"ipp://{edge_ip}:631/{resource}"
    # CUPS builds the queue's PPD from the printer's IPP attributes (through edge and hub)
    pc_cups.admin(["lpadmin", "-p", QUEUE, "-E", "-v", str(uri), "-m", "everywhere"])

    # The queue's options come from that PPD (media sizes the printer reported). cupsd
    # writes it after lpadmin returns (seen here: the queue exists first, its PPD later).
    def page_sizes() -> str | None:
        listed = pc_cups.admin(["lpoptions", "-p", QUEUE, "-l"], check=False)
        text = (listed.stdout + listed.stderr).decode(errors="replace")
        return text if re.search(r"^PageSize/.*\bA4\b", text, re.M) else None

    wait_for(page_sizes, timeout=60, what=f"{QUEUE}'s PPD with A4", interval=1.0)
    before = hq_completed_jobs(lab)
    doc = tmp_path / "memo.pdf"
    doc.write_bytes(one_page_pdf())
    doc.chmod(0o644)
    printed = pc_cups.admin(["lp", "-d", QUEUE, str(doc)])
    match = re.search(rb"request id is (\S+)", printed.stdout)
    assert match, printed.stdout + printed.stderr
    wait_for(
        lambda: hq_completed_jobs(lab) - before, timeout=90,
        what="the PC's job completed at HQ", interval=0.5,
    )  # fmt: skip
