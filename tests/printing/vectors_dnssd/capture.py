#!/usr/bin/env python3
"""Capture what a real CUPS publishes over DNS-SD, and the IPP attributes it came from.

Usage (as root, from the repository root, under the lab lock: it builds a namespace)::

    flock /run/spokeshare/lab.lock .venv/bin/python tests/printing/vectors_dnssd/capture.py

In a private network namespace ``ss-cap-dnssd`` (a veth pair ``cap0``/``cap1`` with
198.18.250.1/.2, nothing else) it starts, and stops again by PID in a ``finally``:

- a private D-Bus system bus and avahi-daemon (host name ``hq``), as
  :mod:`spokeshare.lab.avahi` runs them for an office PC;
- the lab's HQ cupsd (:class:`spokeshare.lab.services.CupsHost`: Debian's stock
  cupsd.conf, ``cupsctl --share-printers --remote-any``, the lab's three queues),
  whose DNS-SD registers with that avahi.

Then it writes, next to this file:

- ``get-printers.bin``: cupsd's answer (the IPP body) to CUPS-Get-Printers with the
  requested-attributes of :data:`spokeshare.printing.dnssd.REQUESTED_ATTRIBUTES`, asked
  from 198.18.250.2 (not a loopback peer, so only shared queues are listed);
- ``avahi-browse.txt``: ``avahi-browse -rpt _ipp._tcp`` (and ``_printer._tcp``), i.e.
  the instance names, ports and TXT records CUPS itself published.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from spokeshare.lab import netns
from spokeshare.lab.avahi import AvahiHost
from spokeshare.lab.netns import StateRegistry
from spokeshare.lab.services import SHARED_PRINTERS, CupsHost, wait_for
from spokeshare.printing import dnssd, ipp

HERE = Path(__file__).resolve().parent
NS = "ss-cap-dnssd"
HQ_IP, CLIENT_IP = "198.18.250.1", "198.18.250.2"

FETCH = """
import http.client, socket, sys
body = sys.stdin.buffer.read()
c = http.client.HTTPConnection(sys.argv[1], 631, timeout=10, source_address=(sys.argv[2], 0))
c.request("POST", "/", body, {"Content-Type": "application/ipp"})
r = c.getresponse()
sys.stdout.buffer.write(r.read())
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def browse(avahi: AvahiHost, service: str) -> str:
    argv = netns.exec_argv(NS, ["avahi-browse", "-rpt", service])
    out = subprocess.run(argv, capture_output=True, text=True, env=avahi.env(), timeout=30)
    return out.stdout


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="ss-cap-dnssd-"))
    root.chmod(0o755)
    registry = StateRegistry(root / "state.json")
    ip("netns", "add", NS)
    try:
        ip("-n", NS, "link", "set", "lo", "up")
        ip("-n", NS, "link", "add", "cap0", "type", "veth", "peer", "name", "cap1")
        ip("-n", NS, "addr", "add", f"{HQ_IP}/24", "dev", "cap0")
        ip("-n", NS, "addr", "add", f"{CLIENT_IP}/24", "dev", "cap1")
        ip("-n", NS, "link", "set", "cap0", "up")
        ip("-n", NS, "link", "set", "cap1", "up")
        ip("-n", NS, "route", "add", "224.0.0.0/4", "dev", "cap0")
        avahi = AvahiHost(NS, "cap0", "hq", root / "avahi")
        avahi.start(registry, root / "logs")
        cups = CupsHost(NS, (HQ_IP,), root / "cups", bus=avahi.bus_socket)
        cups.start(registry, root / "logs")

        def published() -> bool:
            out = browse(avahi, "_ipp._tcp")
            return all(f"rp=printers/{p}" in out for p in SHARED_PRINTERS)

        wait_for("CUPS's DNS-SD", published, timeout=30, interval=0.5)
        request = ipp.encode(ipp.cups_get_printers(1, dnssd.REQUESTED_ATTRIBUTES))
        fetched = subprocess.run(
            netns.exec_argv(NS, [sys.executable, "-c", FETCH, HQ_IP, CLIENT_IP]),
            input=request, capture_output=True, check=True, timeout=30,
        )  # fmt: skip
        (HERE / "get-printers.bin").write_bytes(fetched.stdout)
        text = browse(avahi, "_ipp._tcp") + browse(avahi, "_printer._tcp")
        (HERE / "avahi-browse.txt").write_text(text)
        print(text)
    finally:
        for entry in reversed(registry.processes()):
            registry.kill_process(entry["pid"])
        ip("netns", "del", NS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
