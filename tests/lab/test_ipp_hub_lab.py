"""IPP through edge and hub against a stock cupsd, with CUPS's own ipptool, in the lab.

HQ runs a second cupsd, Debian's stock ``cupsd.conf`` plus exactly the README's
``cupsctl --share-printers --remote-any``, listening on port 6310 (not 631), and the
hub's ``ipp`` service points at it on HQ's service address (never loopback). Its
queues: ``hq-laser`` and ``hq-color`` shared, ``hq-private`` not. Offices ``nyc`` (all
printers) and ``sf`` (``office set sf --printers hq-laser``) print from their PCs,
which are not on 127/8 (libcups sends ``Host: localhost`` to 127/8 targets).

Checked: CUPS's get-printer-attributes.test, print-job.test and get-job-attributes.test
pass against ``ipp://EDGE:631/...``; every URI in the answers names the edge and 631
(also for a Host without a port and a bare NetBIOS Host, which cupsd alone would refuse);
``Host: localhost`` from an office does not list the unshared queue; sf gets
client-error-not-possible for hq-color and the hub logs it; bad HTTP and IPP are refused
while another connection carries on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from spokeshare import logfmt
from spokeshare.lab import netns, services, spokes
from spokeshare.lab.topology import HQ, HQ_SERVICE_IP, Lab
from spokeshare.lab.wire import LinkSettings
from spokeshare.printing import ipp
from tests.helpers import wait_for

pytestmark = pytest.mark.lab

PORT = 6310
SHARED = ("hq-laser", "hq-color")
UNSHARED = "hq-private"
MODEL = "drv:///sample.drv/laserjet.ppd"
TESTS = Path("/usr/share/cups/ipptool")
PROBE = Path(__file__).with_name("ipp_probe.py")


class AltCups:
    """A stock cupsd in HQ on port 6310, set up as the README says (cupsctl)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.root = lab.host_dir(HQ) / "cups6310"
        self.sock = self.root / "cups.sock"

    def admin(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # IPP_PORT: cupsctl writes "Port <ippPort()>" when it opens cupsd up;
        # CUPS_SERVERROOT: the cupsd.conf it edits is this cupsd's (services.CupsHost.share).
        env = dict(os.environ, IPP_PORT=str(PORT), CUPS_SERVERROOT=str(self.root))
        return self.lab.exec(HQ, [argv[0], "-h", str(self.sock), *argv[1:]], env=env,
                             capture_output=True, text=True, timeout=60, check=check)  # fmt: skip

    def start(self) -> None:
        r = self.root
        for sub in ("spool/tmp", "cache", "state"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        r.chmod(0o755)
        stock = Path("/usr/share/cups/cupsd.conf.default").read_text()
        assert "Listen localhost:631\n" in stock and "Listen /run/cups/cups.sock\n" in stock
        # The stock file on another port, the socket in the lab's directory.
        (r / "cupsd.conf").write_text(
            stock.replace("Listen localhost:631\n", f"Listen localhost:{PORT}\n").replace(
                "Listen /run/cups/cups.sock\n", f"Listen {self.sock}\n"
            )
        )
        files = services.CupsHost(HQ, (HQ_SERVICE_IP,), r).files()["cups-files.conf"]
        (r / "cups-files.conf").write_text(files)
        self.lab.spawn(HQ, ["cupsd", "-f", "-c", str(r / "cupsd.conf"),
                            "-s", str(r / "cups-files.conf")], "cupsd-6310")  # fmt: skip
        wait_for(self.running, 30, "cupsd on its socket")
        res = self.admin("cupsctl", "--share-printers", "--remote-any", check=False)
        assert res.returncode == 0, res.stderr  # the README's HQ step
        # cupsd reloads; it answers on "Port 6310" again once ready
        tcp = f"{HQ_SERVICE_IP}:{PORT}"
        wait_for(
            lambda: self.lab.exec(HQ, ["lpstat", "-h", tcp, "-r"], capture_output=True,
                                  text=True).stdout.strip() == "scheduler is running",
            30, "cupsd after cupsctl",
        )  # fmt: skip
        conf = (r / "cupsd.conf").read_text()
        assert f"\nPort {PORT}\n" in conf, conf
        if f"Listen {self.sock}" not in conf:  # cupsctl keeps only /run/cups/cups.sock
            (r / "cupsd.conf").write_text(
                conf.replace(f"\nPort {PORT}\n", f"\nPort {PORT}\nListen {self.sock}\n", 1)
            )
            pid = next(p["pid"] for p in self.lab.registry.processes()
                       if p["what"] == "cupsd-6310")  # fmt: skip
            os.kill(int(pid), 1)  # SIGHUP: cupsd re-reads cupsd.conf
            wait_for(self.running, 30, "cupsd on its socket again")
        for name in (*SHARED, UNSHARED):
            shared = "false" if name == UNSHARED else "true"
            # a driver of the cups package, as the lab's own queues have (media-col etc.)
            argv = ("lpadmin", "-p", name, "-v", "file:///dev/null", "-m", MODEL, "-E",
                    "-o", f"printer-is-shared={shared}")  # fmt: skip
            # cupsd may still be re-reading its configuration after the SIGHUP
            wait_for(lambda a=argv: self.admin(*a, check=False).returncode == 0, 30,  # type: ignore[misc]
                     f"lpadmin -p {name}")  # fmt: skip
        wait_for(
            lambda: self.lab.exec(HQ, ["lpstat", "-h", f"{HQ_SERVICE_IP}:{PORT}", "-p", *SHARED],
                                  capture_output=True).returncode == 0,
            30, "queues on port 6310",
        )  # fmt: skip

    def running(self) -> bool:
        # lpstat -r exits 0 also when it says "scheduler is not running"
        return self.admin("lpstat", "-r", check=False).stdout.strip() == "scheduler is running"

    def completed(self, printer: str) -> list[str]:
        out = self.admin("lpstat", "-W", "completed", "-o", printer, check=False).stdout
        return re.findall(rf"^({re.escape(printer)}-\d+)\s", out, re.M)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    path = Path(tempfile.mkdtemp(prefix="ss-ipphub-"))
    path.chmod(0o755)
    the_lab = Lab(
        path,
        ["nyc", "sf"],
        LinkSettings(rtt_ms=10),
        start_hub=partial(spokes.start_hub, extra_services={"ipp": f"{HQ_SERVICE_IP}:{PORT}"}),
        start_edge=spokes.start_edge,
    )
    plain_toml = spokes.edge_toml

    def edge_toml(*args: Any, **kwargs: Any) -> str:
        # This module tests the IPP path; discovery (printers.advertise) has its own tests.
        return plain_toml(*args, **kwargs) + "[printers]\nadvertise = false\n"

    try:
        with mock.patch.object(spokes, "edge_toml", edge_toml):
            the_lab.up()
        AltCups(the_lab).start()
        res = subprocess.run(
            [sys.executable, "-m", "spokeshare", "office", "set", "sf", "--dir",
             str(the_lab.deploy_dir), "--printers", "hq-laser"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "hq-laser" in res.stdout
        # the running hub re-reads the registry within about a second
        edge = the_lab.office("sf").edge_ip
        color = ipp.get_printer_attributes(f"ipp://{edge}:631/printers/hq-color")
        wait_for(
            lambda: answer_of(probe(the_lab, "sf", [ipp_req(color, "/", f"{edge}:631")])[0]).code
            == ipp.Status.CLIENT_ERROR_NOT_POSSIBLE,
            30, "the hub applying sf's printer list",
        )  # fmt: skip
        yield the_lab
    finally:
        the_lab.down()
        shutil.rmtree(path, ignore_errors=True)


def ipptool(lab: Lab, office: str, uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["ipptool", "-T", "20", "-t", "-v", uri, *args]
    return lab.exec(lab.office(office).pc, argv, capture_output=True, text=True, timeout=90)


def probe(lab: Lab, office: str, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests from the office PC on one keep-alive connection to its edge's 631."""
    plan = lab.office(office)
    res = lab.exec(plan.pc, [sys.executable, str(PROBE), plan.edge_ip, "631"],
                   input="".join(json.dumps(r) + "\n" for r in requests),
                   capture_output=True, text=True, timeout=90)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def ipp_req(msg: ipp.IppMessage, path: str, host: str | None) -> dict[str, Any]:
    return {"path": path, "host": host, "body": ipp.encode(msg).hex()}


def answer_of(out: dict[str, Any]) -> ipp.IppMessage:
    assert out.get("status") == 200, out
    return ipp.decode(bytes.fromhex(out["body"]))


def uris(msg: ipp.IppMessage) -> list[str]:
    found = []
    for g in msg.groups:
        for a in g.attributes:
            if a.name in ("printer-uri-supported", "job-uri", "printer-more-info",
                          "printer-icons"):  # fmt: skip
                found += a.strings()
    return found


def hub_log(lab: Lab) -> str:
    return (lab.logs_dir / "hub.log").read_text(errors="replace")


# -- the tests ---------------------------------------------------------------------------


def test_cups_test_files_pass_through_the_edge(lab: Lab) -> None:
    cups = AltCups(lab)
    edge = lab.office("nyc").edge_ip
    printer_uri = f"ipp://{edge}:631/printers/hq-laser"
    res = ipptool(lab, "nyc", printer_uri, str(TESTS / "get-printer-attributes.test"))
    assert res.returncode == 0, res.stdout[-2000:]
    listed = re.findall(r"printer-uri-supported \([^)]*\) = (\S+)", res.stdout)
    assert listed and all(u.startswith(f"ipp://{edge}:631/") or u.startswith(f"ipps://{edge}:631/")
                          for u in ",".join(listed).split(",")), listed  # fmt: skip
    assert f":{PORT}" not in res.stdout

    before = cups.completed("hq-laser")
    doc = lab.host_dir(lab.office("nyc").pc) / "page.txt"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("A page printed through the edge.\n")
    res = ipptool(lab, "nyc", printer_uri, "-f", str(doc), str(TESTS / "print-job.test"))
    assert res.returncode == 0, res.stdout[-2000:]
    (job_uri,) = re.findall(r"job-uri \(uri\) = (\S+)", res.stdout)[:1]
    assert job_uri.startswith(f"ipp://{edge}:631/jobs/"), job_uri

    res = ipptool(lab, "nyc", job_uri, str(TESTS / "get-job-attributes.test"))
    assert res.returncode == 0, res.stdout[-2000:]
    assert f"job-uri (uri) = {job_uri}" in res.stdout
    wait_for(lambda: len(cups.completed("hq-laser")) > len(before), 30, "the job completed at HQ")


@pytest.mark.parametrize("host", ["EDGE", "EDGE:631", "GLOBAL-NFS", "GLOBAL-NFS:631", None])
def test_uris_name_the_edge_whatever_host_the_client_sends(lab: Lab, host: str | None) -> None:
    edge = lab.office("nyc").edge_ip
    sent = host.replace("EDGE", edge) if host else None
    req = ipp.get_printer_attributes(
        f"ipp://{sent or edge}/printers/hq-color",
        requested=["printer-uri-supported", "printer-more-info", "printer-icons"],
    )
    (out,) = probe(lab, "nyc", [ipp_req(req, "/printers/hq-color", sent)])
    if host is None:  # HTTP/1.1 without Host: 400 (RFC 9112 3.2), from the hub
        assert out["status"] == 400 and b"Host" in bytes.fromhex(out["body"])
        return
    msg = answer_of(out)
    assert msg.code == ipp.Status.SUCCESSFUL_OK
    found = uris(msg)
    assert found and all(f"://{edge}:631/" in u for u in found), found


def test_host_localhost_from_an_office_gets_no_local_rights(lab: Lab) -> None:
    req = ipp.cups_get_printers(requested=["printer-name"])
    (out,) = probe(lab, "nyc", [ipp_req(req, "/", "localhost:631")])
    msg = answer_of(out)
    names = {g.get("printer-name").string() for g in msg.groups_of(ipp.GroupTag.PRINTER)}  # type: ignore[union-attr]
    assert names == set(SHARED)
    # and cupsd does list the unshared queue to a local client: the check can fail
    local = AltCups(lab).admin("lpstat", "-p").stdout
    assert UNSHARED in local


def test_office_limited_with_printers_cannot_use_another(lab: Lab) -> None:
    edge = lab.office("sf").edge_ip

    def refusals() -> int:
        return sum(1 for ln in logfmt.find(hub_log(lab), "ipp refused")
                   if (ln["office"], ln.get("printer")) == ("sf", "hq-color"))  # fmt: skip

    def fresh_count() -> int:
        """The hub's count of sf's requests refused for their printer, so far."""
        status = spokes.fresh_hub_status(lab)
        return spokes.office_counts(status, "sf", "ipp_refused").get("printer", 0)

    before, counted_before = refusals(), fresh_count()
    res = ipptool(lab, "sf", f"ipp://{edge}:631/printers/hq-color",
                  str(TESTS / "get-printer-attributes.test"))  # fmt: skip
    assert res.returncode != 0 and "client-error-not-possible" in res.stdout, res.stdout[-1500:]
    # The refusal is counted before its answer leaves the hub: the next file has it.
    assert fresh_count() == counted_before + 1
    assert refusals() == before + 1  # and its log line
    # typed by hand, as a URI on a path of an allowed printer: still the target that counts
    job = ipp.IppMessage((1, 1), ipp.Operation.PRINT_JOB, 4, (ipp.operation_attributes(
        f"ipp://{edge}:631/printers/hq-color", "mallory"),), b"%!PS\n")  # fmt: skip
    (out,) = probe(lab, "sf", [ipp_req(job, "/printers/hq-laser", f"{edge}:631")])
    assert answer_of(out).code == ipp.Status.CLIENT_ERROR_NOT_POSSIBLE
    assert not AltCups(lab).completed("hq-color")
    # its own printer works, and its printer list holds only that one
    res = ipptool(lab, "sf", f"ipp://{edge}:631/printers/hq-laser",
                  str(TESTS / "get-printer-attributes.test"))  # fmt: skip
    assert res.returncode == 0, res.stdout[-1500:]
    (out,) = probe(lab, "sf", [ipp_req(ipp.cups_get_printers(), "/", f"{edge}:631")])
    names = [g.get("printer-name").string()  # type: ignore[union-attr]
             for g in answer_of(out).groups_of(ipp.GroupTag.PRINTER)]  # fmt: skip
    assert names == ["hq-laser"]


def test_bad_input_is_refused_and_disturbs_no_other_stream(lab: Lab) -> None:
    edge = lab.office("sf").edge_ip
    host = f"{edge}:631"
    good = ipp_req(ipp.get_printer_attributes(f"ipp://{host}/printers/hq-laser"),
                   "/printers/hq-laser", host)  # fmt: skip
    plan = lab.office("nyc")
    # A keep-alive connection from nyc, open across the bad input sf sends.
    other = subprocess.Popen(
        netns.exec_argv(plan.pc, [sys.executable, str(PROBE), plan.edge_ip, "631"]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdin is not None and other.stdout is not None
        other.stdin.write(json.dumps(good | {"path": "/printers/hq-color"}) + "\n")
        other.stdin.flush()
        assert json.loads(other.stdout.readline())["status"] == 200

        garbage = {"path": "/printers/hq-laser", "host": host, "body": "0101000b000000090145ffff"}
        values = tuple(ipp.Attribute.of(f"x-{i}", ipp.Tag.TEXT, "v" * 30000) for i in range(10))
        op = ipp.AttributeGroup(ipp.GroupTag.OPERATION, values)
        long_value = ipp.IppMessage((1, 1), 0x0B, 5, (op,))  # 300 KB of attributes
        smuggle = (
            f"POST /printers/hq-laser HTTP/1.1\r\nHost: {host}\r\nContent-Length: 6\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"
        ).encode()
        outs = probe(lab, "sf", [garbage, ipp_req(long_value, "/printers/hq-laser", host),
                                 {"raw": smuggle.hex()}, good])  # fmt: skip
        assert answer_of(outs[0]).code == ipp.Status.CLIENT_ERROR_BAD_REQUEST
        assert answer_of(outs[1]).code == ipp.Status.CLIENT_ERROR_BAD_REQUEST
        raw = bytes.fromhex(outs[2]["raw"])
        assert raw.startswith(b"HTTP/1.1 400 ") and raw.count(b"HTTP/1.1") == 1, raw[:300]
        assert answer_of(outs[3]).code == ipp.Status.SUCCESSFUL_OK

        other.stdin.write(json.dumps(good | {"path": "/printers/hq-color"}) + "\n")
        other.stdin.flush()
        assert json.loads(other.stdout.readline())["status"] == 200  # same connection
    finally:
        other.kill()
        other.wait(10)
