"""The edge on an office LAN, checked with real, independent clients in the lab.

One lab, office nyc 40 ms from HQ; its edge carries two virtual names: GLOBAL-NFS
(hub service smb, the edge's own address) and GLOBAL-ENG (hub service eng, a second
address, since port 445 cannot tell two SMB services apart). From nyc-pc the real
nmblookup, smbclient (445 and 139), wsdd, llmnr-query and dig must see them; a real
nmbd master browser (FS-NYC) must list them; withdrawing while HQ is away and a clean
stop must make them disappear.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spokeshare import logfmt
from spokeshare.lab import spokes
from spokeshare.lab.topology import Lab
from spokeshare.lab.wire import LinkSettings
from tests.helpers import wait_for
from tests.lab import wsdd_client
from tests.lab.building import running_lab
from tests.lab.shell import sh

pytestmark = pytest.mark.lab

EDGE = "198.18.11.1"
ENG = "198.18.11.3"
FS = "198.18.11.2"  # FS-NYC: the office's master browser and WINS server
NAMES = [("GLOBAL-NFS", "smb", ""), ("GLOBAL-ENG", "eng", ENG)]
BROWSE = ["-m", "NT1", "--option=client min protocol=NT1", "--option=client use spnego=no"]


def wait_until(what: str, cond: Callable[[], object], timeout: float) -> object:
    """Poll every half second: each check runs a real client in the PC."""
    return wait_for(cond, timeout, what, interval=0.5)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    hq = "198.19.0.1"
    with running_lab(
        "ss-edge-lan-",
        ["nyc"],
        LinkSettings(rtt_ms=40),
        start_hub=functools.partial(spokes.start_hub, extra_services={"eng": f"{hq}:445"}),
        start_edge=functools.partial(spokes.start_edge, names=NAMES, wins_server=FS),
    ) as the_lab:
        yield the_lab


def resolves(lab: Lab, name: str) -> str | None:
    out = sh(lab, "nyc-pc", "nmblookup", name).stdout
    m = re.search(rf"^(\S+) {name}<00>$", out, re.M)
    return m.group(1) if m else None


def browse_list(lab: Lab) -> str:
    return sh(lab, "nyc-pc", "smbclient", "-L", "FS-NYC", "-N", *BROWSE).stdout


def wsdd_discovers(lab: Lab, seconds: float) -> set[str]:
    """Run the real wsdd in discovery mode on nyc-pc; which names it lists in ACME."""
    return wsdd_client.wsdd_discovers(
        "nyc-pc", "lan0", "5b0d4e29-6f5e-4b4a-9a4f-3f0c3b3a1c11", seconds
    )


def test_names_resolve_to_their_addresses(lab: Lab) -> None:
    assert resolves(lab, "GLOBAL-NFS") == EDGE
    assert resolves(lab, "GLOBAL-ENG") == ENG
    assert resolves(lab, "NOT-OURS") is None


def test_names_registered_with_the_wins_server(lab: Lab) -> None:
    """FS-NYC's real nmbd, a WINS server, holds the edge's registrations."""
    for name, address in (("GLOBAL-NFS", EDGE), ("GLOBAL-ENG", ENG)):
        out = sh(lab, "nyc-pc", "nmblookup", "-U", FS, "--recursion", name).stdout
        assert re.search(rf"^{re.escape(address)} {name}<00>$", out, re.M), out


def test_node_status(lab: Lab) -> None:
    """Node status lists only the names served at the address it was asked on."""
    pairs = ((EDGE, "GLOBAL-NFS", "GLOBAL-ENG"), (ENG, "GLOBAL-ENG", "GLOBAL-NFS"))
    for address, name, other in pairs:
        out = sh(lab, "nyc-pc", "nmblookup", "-A", address).stdout
        for line in (
            rf"{name}\s+<00> -\s+B <ACTIVE>",
            rf"{name}\s+<20> -\s+B <ACTIVE>",
            r"ACME\s+<00> - <GROUP> B <ACTIVE>",
        ):
            assert re.search(line, out), out
        assert other not in out, out


def _nb_name(name: str, suffix: int) -> bytes:
    """RFC 1001 §14.1 first-level encoding, written out here independently of the
    edge's codec: 15 bytes space-padded plus the suffix, each nibble as 'A' + n."""
    raw = name.upper().ljust(15).encode() + bytes([suffix])
    return b"\x20" + bytes(b for c in raw for b in (0x41 + (c >> 4), 0x41 + (c & 0xF))) + b"\0"


@pytest.mark.parametrize("generic", ["*SMBSERVER", "*SMBSERV"])
def test_generic_called_names_on_139(lab: Lab, generic: str) -> None:
    """Samba's client and the kernel call *SMBSERVER<20>, XP-era clients *SMBSERV<20>:
    with one name per address, each address answers them as its own name."""
    request = b"\x81\x00\x00\x44" + _nb_name(generic, 0x20) + _nb_name("NYC-PC", 0x00)
    assert len(request) == 4 + 0x44
    probe = (
        "import socket,sys;"
        "c=socket.create_connection((sys.argv[1],139),5);c.sendall(bytes.fromhex(sys.argv[2]));"
        "print(c.recv(64).hex())"
    )
    for address in (EDGE, ENG):
        res = sh(lab, "nyc-pc", sys.executable, "-c", probe, address, request.hex())
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "82000000", (address, res.stdout)


def test_smbclient_retry_as_smbserver_reaches_the_share(lab: Lab) -> None:
    """smbclient given a name the edge does not serve there gets 0x82, calls
    *SMBSERVER<20> again on the same connection attempt, and reaches the share."""
    res = sh(
        lab, "nyc-pc", "smbclient", "//OLD-ALIAS/share", "-N", "-I", ENG, "-p", "139", "-c", "ls"
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_files_by_name_on_445_and_139(lab: Lab, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(3 << 20))
    for port, remote in (("445", "via445.bin"), ("139", "via139.bin")):
        res = sh(
            lab,
            "nyc-pc",
            "smbclient",
            "//GLOBAL-NFS/share",
            "-N",
            "-p",
            port,
            "-c",
            f"put {src} {remote}; get {remote} {tmp_path / remote}",
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert (
            hashlib.sha256((tmp_path / remote).read_bytes()).digest()
            == hashlib.sha256(src.read_bytes()).digest()
        )


def test_wrong_called_name_is_refused_on_139(lab: Lab) -> None:
    """A session request for a name the edge does not own gets 0x82, "called name not
    present" (RFC 1002 §4.3.4); smbclient then retries as *SMBSERVER, as with Samba."""
    probe = (
        "import socket,sys;"
        "from spokeshare.lan import netbios, netbios_session as s;"
        "req=s.SessionRequest(netbios.NetbiosName.create('NOT-OURS',0x20),"
        "netbios.NetbiosName.create('NYC-PC',0));"
        f"c=socket.create_connection(('{EDGE}',139),5);c.sendall(s.encode(req));"
        "print(c.recv(64).hex())"
    )
    res = sh(lab, "nyc-pc", sys.executable, "-c", probe)
    assert res.returncode == 0, res.stderr
    # NEGATIVE SESSION RESPONSE (0x83), flags 0, length 1, error 0x82
    assert res.stdout.strip() == "8300000182"
    # The refusal is counted and logged at debug level, rate-limited (lan/hostile.py).


def test_second_name_reaches_its_own_service(lab: Lab) -> None:
    def ended_ok(status: dict[str, object]) -> int:
        return spokes.office_counts(status, "nyc", "streams_ended").get("ok", 0)

    before = ended_ok(spokes.fresh_hub_status(lab))
    res = sh(lab, "nyc-pc", "smbclient", "//GLOBAL-ENG/share", "-N", "-c", "ls")
    assert res.returncode == 0, res.stdout + res.stderr
    # The hub counts and logs a stream when it ends, just after smbclient exits.
    settled = functools.partial(spokes.streams_ended, lab, "nyc", time.time())
    ended = wait_until("the stream ended at the hub", settled, 10)
    assert isinstance(ended, dict) and ended.get("ok", 0) > before, ended
    pattern = r"stream office=nyc client=198\.18\.11\.10:\d+ service=eng .*result=ok"
    assert re.search(pattern, (lab.logs_dir / "hub.log").read_text())


def test_master_browser_lists_both_names(lab: Lab) -> None:
    listing = wait_until(
        "FS-NYC to list GLOBAL-NFS and GLOBAL-ENG",
        lambda: (lambda t: t if "GLOBAL-NFS" in t and "GLOBAL-ENG" in t else None)(
            browse_list(lab)
        ),
        timeout=90,
    )
    assert re.search(r"GLOBAL-NFS\s+HQ files via nyc edge", str(listing))


def test_wsdd_llmnr_mdns_see_both_names(lab: Lab) -> None:
    assert wsdd_discovers(lab, 8) >= {"GLOBAL-NFS", "GLOBAL-ENG"}
    out = sh(lab, "nyc-pc", "llmnr-query", "-T", "A", "GLOBAL-ENG").stdout
    assert f"GLOBAL-ENG IN A {EDGE}" in out or f"GLOBAL-ENG IN A {ENG}" in out, out
    assert "No LLMNR response" in sh(lab, "nyc-pc", "llmnr-query", "-T", "A", "NOT-OURS").stdout
    srv = sh(
        lab,
        "nyc-pc",
        "dig",
        "+short",
        "+tries=2",
        "-p",
        "5353",
        f"@{EDGE}",
        "GLOBAL-NFS._smb._tcp.local",
        "SRV",
    ).stdout
    assert "445 GLOBAL-NFS.local." in srv, srv


def test_withdrawn_while_hq_is_away_and_back_after(lab: Lab) -> None:
    lab.wan("nyc", up=False)
    try:
        # hub_dead_after (6 s) + withdraw_after (10 s) in the lab's edge.toml
        wait_until("GLOBAL-NFS withdrawn", lambda: resolves(lab, "GLOBAL-NFS") is None, 40)
        assert (
            "No LLMNR response" in sh(lab, "nyc-pc", "llmnr-query", "-T", "A", "GLOBAL-NFS").stdout
        )
        answer = sh(
            lab,
            "nyc-pc",
            "dig",
            "+short",
            "+tries=1",
            "+time=2",
            "-p",
            "5353",
            f"@{EDGE}",
            "global-nfs.local",
        ).stdout
        assert EDGE not in answer.splitlines()  # no A record, only dig's own remarks
        assert "GLOBAL-NFS" not in wsdd_discovers(lab, 5)
    finally:
        lab.wan("nyc", up=True)
    wait_until("GLOBAL-NFS back", lambda: resolves(lab, "GLOBAL-NFS") == EDGE, 40)
    wait_until(
        "llmnr answers again",
        lambda: f"IN A {EDGE}" in sh(lab, "nyc-pc", "llmnr-query", "-T", "A", "GLOBAL-NFS").stdout,
        20,
    )
    assert "GLOBAL-NFS" in wsdd_discovers(lab, 8)
    res = sh(lab, "nyc-pc", "smbclient", "//GLOBAL-NFS/share", "-N", "-c", "ls")
    assert res.returncode == 0, res.stdout + res.stderr
    log = (lab.logs_dir / "edge-nyc.log").read_text()
    [gone] = logfmt.find(log, "lan withdrawn")
    assert (gone["office"], gone["names"], gone["reason"]) == (
        "nyc", "GLOBAL-NFS,GLOBAL-ENG", "hub unreachable")  # fmt: skip
    [back] = logfmt.find(log, "lan announced")
    assert (back["office"], back["names"]) == ("nyc", "GLOBAL-NFS,GLOBAL-ENG")
    # each protocol withdrew both names and announced them again
    for event in ("names withdrawn", "names announced"):
        protocols = {ln["protocol"] for ln in logfmt.find(log, event)
                     if ln["names"] == "GLOBAL-NFS,GLOBAL-ENG"}  # fmt: skip
        assert {"llmnr", "wsd"} <= protocols, (event, protocols)


def test_clean_stop_leaves_the_browse_list(lab: Lab) -> None:
    """Last in this module: stops the edge (SIGTERM by PID) and watches the names go."""
    wait_until("GLOBAL-NFS listed", lambda: "GLOBAL-NFS" in browse_list(lab), 90)
    edges = [p for p in lab.registry.processes() if p["what"] == "edge nyc"]
    assert len(edges) == 1
    lab.registry.kill_process(edges[0]["pid"])  # SIGTERM, start time checked
    log = (lab.logs_dir / "edge-nyc.log").read_text()
    assert logfmt.find(log, "edge stopped") == [{"office": "nyc"}] and "SIGKILL" not in log
    wait_until(
        "GLOBAL-NFS gone from FS-NYC's list", lambda: "GLOBAL-NFS" not in browse_list(lab), 60
    )
    assert resolves(lab, "GLOBAL-NFS") is None
    assert {"protocol": "netbios", "address": "198.18.11.1"} in logfmt.find(log, "protocol stopped")
    assert not wsdd_discovers(lab, 5) & {"GLOBAL-NFS", "GLOBAL-ENG"}  # Bye was sent
