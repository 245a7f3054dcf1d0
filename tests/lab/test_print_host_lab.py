"""A printing-only office finds HQ's printers (root only, lab).

Office sf is enrolled for printing only (``--services ipp``, edge.toml without names):
its edge has no file-server name, so it answers on mDNS for its print host name
``sf-print.local`` (the default, ``<office>-print``) and points the printers' SRV records
at it. sf's PC runs its own avahi-daemon and nothing about printers; ``ippfind`` must
find HQ's shared printers with the print host as their host.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from spokeshare.lab import spokes
from spokeshare.lab.avahi import AvahiHost
from spokeshare.lab.topology import Lab
from spokeshare.lab.wire import LinkSettings
from tests.lab.building import running_avahi, running_lab
from tests.lab.test_lab import wait_until

pytestmark = pytest.mark.lab

OFFICE = "sf"
#: issue 9: HQ's printers show on the LAN within 60 s.
SYNC_BUDGET = 60.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(
        "ss-printhost-",
        [OFFICE],
        LinkSettings(rtt_ms=20),
        start_hub=functools.partial(spokes.start_hub, office_services={OFFICE: ["ipp"]}),
        start_edge=functools.partial(spokes.start_edge, printing_only=(OFFICE,)),
    ) as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def avahi(lab: Lab) -> Iterator[AvahiHost]:
    with running_avahi(lab, f"{OFFICE}-pc") as host:
        yield host


def ippfind(lab: Lab, avahi: AvahiHost, regtype: str) -> dict[str, tuple[str, str, str]]:
    """What ``ippfind`` on the office PC finds in 4 s: instance -> (host, port, rp)."""
    fmt = "{service_name}|{service_hostname}|{service_port}|{txt_rp}"
    proc = lab.exec(
        f"{OFFICE}-pc",
        ["ippfind", regtype, "-T", "4", "-x", "echo", fmt, ";"],
        capture_output=True, text=True, timeout=30, env=avahi.env(),
    )  # fmt: skip
    found: dict[str, tuple[str, str, str]] = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            found[parts[0]] = (parts[1], parts[2], parts[3])
    return found


def test_printing_only_office_finds_hq_printers_on_its_print_host(
    lab: Lab, avahi: AvahiHost
) -> None:
    wait_until(
        "HQ's printers in ippfind on the printing-only office's PC",
        lambda: "HQ laser (lab)" in ippfind(lab, avahi, "_ipp._tcp,_universal"),
        SYNC_BUDGET,
    )
    found = ippfind(lab, avahi, "_ipp._tcp,_universal")
    host, port, rp = found["HQ laser (lab)"]
    assert host.rstrip(".").lower() == f"{OFFICE}-print.local"
    assert port == "631" and rp == "printers/hq-laser"
    assert "HQ laser (lab)" in ippfind(lab, avahi, "_ipp._tcp,_print")
    # The PC resolves the print host to the edge's LAN address through mDNS alone.
    proc = lab.exec(
        f"{OFFICE}-pc", ["avahi-resolve", "-4", "-n", f"{OFFICE}-print.local"],
        capture_output=True, text=True, timeout=30, env=avahi.env(),
    )  # fmt: skip
    assert proc.stdout.split() == [f"{OFFICE}-print.local", lab.office(OFFICE).edge_ip], (
        proc.stdout + proc.stderr
    )
