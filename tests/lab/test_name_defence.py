"""Probing and defending the edge's unique names, with real, independent stacks.

Before the edge starts, office nyc's PC already is ``global-nfs.local`` (its own
avahi-daemon) and answers LLMNR for ``GLOBAL-NFS`` (llmnrd): the edge must find both
when it probes (RFC 6762 §8.1 for the host name, RFC 4795 §4.1) and stay silent for
that name on those protocols while still serving GLOBAL-ENG. Then the office file
server's avahi-daemon, started later as ``global-eng``, probes a name the edge holds:
the edge defends it (RFC 6762 §8.1, §9: it answers the ANY probe) so that avahi
renames itself. Last, the PC's avahi-daemon announces ``GLOBAL-ENG.local`` with its own
address without probing (a host not requiring a unique name, or a segment joined
later, §9): the edge resets the name to probing, the PC's avahi answers the probe, and
the edge leaves the name to it, reclaiming it once the PC's record is gone.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare import logfmt
from spokeshare.lab import services, spokes
from spokeshare.lab.avahi import AvahiHost
from spokeshare.lab.topology import LAN_IFNAME, Lab
from spokeshare.lab.wire import LinkSettings
from tests.helpers import wait_for
from tests.lab.building import running_lab

pytestmark = pytest.mark.lab

EDGE, ENG, PC_IP, FS_IP = "198.18.11.1", "198.18.11.3", "198.18.11.10", "198.18.11.2"
NAMES = [("GLOBAL-NFS", "smb", ""), ("GLOBAL-ENG", "eng", ENG)]


def sh(lab: Lab, host: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return lab.exec(host, list(argv), capture_output=True, text=True, timeout=timeout)


def start_avahi(lab: Lab, host: str, hostname: str) -> Path:
    """avahi-daemon on ``host`` calling itself ``hostname`` (the lab's own
    :class:`AvahiHost`, stopped by PID with the lab); returns its log file."""
    avahi = AvahiHost(host, LAN_IFNAME, hostname, lab.host_dir(host) / "avahi")
    avahi.start(lab.registry, lab.logs_dir)
    return lab.logs_dir / f"{host}-avahi.log"


def start_edge_after_the_pc(lab: Lab, office: str) -> int:
    start_avahi(lab, "nyc-pc", "global-nfs")
    argv = ["llmnrd", "-H", "GLOBAL-NFS", "-i", LAN_IFNAME]
    services.spawn(lab.registry, "nyc-pc", argv, "llmnrd nyc-pc", lab.logs_dir / "llmnrd.log")
    services.wait_for(
        "llmnrd answering",
        lambda: f"IN A {PC_IP}" in sh(lab, "nyc-fs", "llmnr-query", "-T", "A", "GLOBAL-NFS").stdout,
        20,
    )
    return spokes.start_edge(lab, office, names=NAMES)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    hq = "198.19.0.1"
    with running_lab(
        "ss-defence-",
        ["nyc"],
        LinkSettings(rtt_ms=10),
        start_hub=functools.partial(spokes.start_hub, extra_services={"eng": f"{hq}:445"}),
        start_edge=start_edge_after_the_pc,
    ) as the_lab:
        yield the_lab


def dig(lab: Lab, server: str, port: int, name: str) -> list[str]:
    out = sh(
        lab, "nyc-fs", "dig", "+short", "+tries=1", "+time=2", "-p", str(port), f"@{server}",
        name, "A",
    ).stdout  # fmt: skip
    return [ln for ln in out.splitlines() if re.fullmatch(r"[\d.]+", ln)]


def reclaimed(log: str) -> list[tuple[str, str]]:
    """(protocol, name) of the edge's ``name reclaimed`` lines."""
    return [(ln["protocol"], ln["name"]) for ln in logfmt.find(log, "name reclaimed")]


def test_names_held_by_the_pc_are_left_to_it(lab: Lab) -> None:
    edge_log = lab.logs_dir / "edge-nyc.log"
    try:
        wait_for(lambda: spokes.edge_status(lab, "nyc").get("up"), 30, "the edge's LAN side up")
    except AssertionError:
        raise AssertionError(edge_log.read_text()[-3000:]) from None
    log = edge_log.read_text()
    conflicts = {(c["protocol"], c["name"]): c for c in logfmt.find(log, "name conflict")}
    assert "already in use" in conflicts["mdns", "GLOBAL-NFS.local"]["reason"], log
    assert conflicts["llmnr", "GLOBAL-NFS"]["owner"] == PC_IP, log
    # the edge answers neither for GLOBAL-NFS (the PC does), both for GLOBAL-ENG
    assert dig(lab, EDGE, 5353, "GLOBAL-NFS.local") == []
    assert dig(lab, PC_IP, 5353, "global-nfs.local") == [PC_IP]
    assert dig(lab, EDGE, 5355, "GLOBAL-NFS") == []
    assert dig(lab, EDGE, 5353, "GLOBAL-ENG.local") == [ENG]
    assert dig(lab, EDGE, 5355, "GLOBAL-ENG") == [ENG]
    out = sh(lab, "nyc-fs", "llmnr-query", "-T", "A", "GLOBAL-NFS").stdout
    assert re.findall(r"GLOBAL-NFS IN A (\S+)", out) == [PC_IP], out


def test_edge_defends_a_name_it_holds(lab: Lab) -> None:
    log = start_avahi(lab, "nyc-fs", "global-eng")
    # avahi reports startup before its probes end; the conflict line follows.
    wait_for(lambda: "global-eng-2" in log.read_text(errors="replace"), 15, "avahi to yield")
    assert "Host name conflict" in log.read_text(errors="replace")
    assert dig(lab, EDGE, 5353, "GLOBAL-ENG.local") == [ENG]


def test_llmnr_name_reclaimed_when_llmnrd_goes(lab: Lab) -> None:
    """RFC 4795 §4: the edge left GLOBAL-NFS to the PC's llmnrd at start; once llmnrd
    stops, the next re-check (at most llmnr.CONFLICT_RECHECK_INTERVAL, 60 s, away) meets silence
    and the edge answers for the name again, with its own address."""
    from spokeshare.lan.llmnr import CONFLICT_RECHECK_INTERVAL

    edge_log = lab.logs_dir / "edge-nyc.log"

    def llmnr_state() -> str:
        return spokes.names_held(lab, "nyc", "llmnr").get("GLOBAL-NFS", "")

    wait_for(lambda: llmnr_state() == "conflict", 30, "conflict")
    assert dig(lab, EDGE, 5355, "GLOBAL-NFS") == []
    (pid,) = [p["pid"] for p in lab.registry.processes() if p["what"] == "llmnrd nyc-pc"]
    lab.registry.kill_process(pid)
    wait_for(
        lambda: llmnr_state() == "answering",
        CONFLICT_RECHECK_INTERVAL + 15,
        "the edge reclaims GLOBAL-NFS over LLMNR",
    )
    # what the operator sees
    assert ("llmnr", "GLOBAL-NFS") in reclaimed(edge_log.read_text())
    assert dig(lab, EDGE, 5355, "GLOBAL-NFS") == [EDGE]
    out = sh(lab, "nyc-fs", "llmnr-query", "-T", "A", "GLOBAL-NFS").stdout
    assert re.findall(r"GLOBAL-NFS IN A (\S+)", out) == [EDGE], out


ANNOUNCE = Path(__file__).with_name("avahi_announce.py")


def avahi_resolve(lab: Lab, host: str, name: str) -> list[str]:
    """What ``avahi-resolve -4 -n`` on ``host`` (its own avahi-daemon) says ``name`` is."""
    env = AvahiHost(host, LAN_IFNAME, host, lab.host_dir(host) / "avahi").env()
    out = lab.exec(
        host, ["avahi-resolve", "-4", "-n", name], capture_output=True, text=True,
        timeout=30, env=env,
    ).stdout  # fmt: skip
    return re.findall(rf"^{re.escape(name)}\s+(\S+)$", out, re.M | re.I)


def test_conflict_after_start_resets_the_name_to_probing(lab: Lab) -> None:
    """RFC 6762 §9: the PC's avahi-daemon announces GLOBAL-ENG.local = the PC's address
    (cache-flush bit, no probe) while the edge holds it. The edge logs the conflict,
    withdraws the name and probes it again; avahi, holding the record, answers the
    probe, so the edge leaves GLOBAL-ENG to the PC over mDNS (other names untouched).
    Once the PC's record goes (goodbye), the edge's re-check reclaims the name."""
    from spokeshare.lan.mdns import CONFLICT_RECHECK_INTERVAL

    edge_log = lab.logs_dir / "edge-nyc.log"
    wait_for(
        lambda: spokes.names_held(lab, "nyc", "mdns").get("GLOBAL-ENG") == "published",
        30,
        "published",
    )
    assert dig(lab, EDGE, 5353, "GLOBAL-ENG.local") == [ENG]
    if not (lab.host_dir("nyc-fs") / "avahi" / "bus.sock").exists():
        start_avahi(lab, "nyc-fs", "global-eng")
    env = AvahiHost("nyc-pc", LAN_IFNAME, "nyc-pc", lab.host_dir("nyc-pc") / "avahi").env()
    out = lab.logs_dir / "avahi-announce.log"
    pid = services.spawn(
        lab.registry, "nyc-pc", ["/usr/bin/python3", str(ANNOUNCE), "GLOBAL-ENG.local", PC_IP],
        "avahi announce nyc-pc", out, env=env,
    )  # fmt: skip
    try:
        try:
            wait_for(lambda: "established" in out.read_text(), 15, "avahi announcing")
        except AssertionError:
            raise AssertionError(out.read_text()[-3000:]) from None

        def conflicts() -> list[dict[str, str]]:
            return [c for c in logfmt.find(edge_log.read_text(), "name conflict")
                    if (c["protocol"], c["name"]) == ("mdns", "GLOBAL-ENG.local")]  # fmt: skip

        # Published, then the PC's answer heard (a reset to probing), then the probe
        # meets the PC's answer: the name is in conflict, each step logged on the way.
        wait_for(
            lambda: spokes.names_held(lab, "nyc", "mdns").get("GLOBAL-ENG") == "conflict",
            30,
            "the edge leaves GLOBAL-ENG.local to the PC",
        )
        assert any(c.get("owner") == PC_IP and "after start" in c["reason"]
                   for c in conflicts())  # fmt: skip
        assert any("already in use" in c["reason"] for c in conflicts())
        assert dig(lab, EDGE, 5353, "GLOBAL-ENG.local") == []
        assert dig(lab, EDGE, 5353, "GLOBAL-NFS.local") == []  # the PC's since start
        assert avahi_resolve(lab, "nyc-fs", "GLOBAL-ENG.local") == [PC_IP]
        assert dig(lab, EDGE, 5355, "GLOBAL-ENG") == [ENG]  # LLMNR is another protocol
    finally:
        lab.registry.kill_process(pid)
    wait_for(
        lambda: spokes.names_held(lab, "nyc", "mdns").get("GLOBAL-ENG") == "published",
        CONFLICT_RECHECK_INTERVAL + 15,
        "the edge reclaims GLOBAL-ENG.local",
    )
    # what the operator sees
    assert ("mdns", "GLOBAL-ENG.local") in reclaimed(edge_log.read_text())
    assert dig(lab, EDGE, 5353, "GLOBAL-ENG.local") == [ENG]
    assert "failed" not in out.read_text()
