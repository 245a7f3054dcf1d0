"""``spokeshare check`` against the real thing (root only, lab): HQ's smbd and cupsd as
the README sets them up, the hub, and office nyc's edge answering its names; then
faults a check must name: a loopback ipp backend, an ipp backend where nothing
listens, HQ's cupsd with Debian's stock cupsd.conf (localhost only) and with its port
opened by hand but remote clients not allowed (HTTP 403), a TLS server without the
tunnel's ALPN holding the hub's certificate, the hub of another deployment, an
office bundle others can read, a hub address nobody answers on, nmbd holding 137
and smbd holding 445 and 139 on the office box.

One lab for the module; every check is the real command run in the host's namespace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spokeshare import bundle, check, enrollment, logfmt
from spokeshare.lab import services, spokes
from spokeshare.lab.topology import HQ, HQ_SERVICE_IP, LAN_IFNAME, Lab
from spokeshare.lab.wire import LinkSettings
from spokeshare.printing import hq_cupsd
from tests.helpers import wait_for
from tests.lab.building import running_avahi, running_lab
from tests.lab.shell import sh
from tests.lab.test_coexist import EDGE_HOST, OldBox

pytestmark = pytest.mark.lab

LINK = LinkSettings(rtt_ms=10.0, rate_mbit=100.0)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(
        "ss-check-", ("nyc",), LINK, start_hub=spokes.start_hub, start_edge=spokes.start_edge
    ) as lab:
        yield lab


def run_check(lab: Lab, host: str, *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    """The command in ``host``: (exit status, findings by code; for a code found more
    than once, the worst)."""
    argv = [sys.executable, "-m", "spokeshare", "check", "--json", *args]
    run = lab.exec(host, argv, capture_output=True, text=True, timeout=90)
    assert run.stdout.startswith("["), run.stderr
    rank = {"ok": 0, "info": 1, "warning": 2, "error": 3}
    found: dict[str, dict[str, str]] = {}
    for f in json.loads(run.stdout):
        if f["code"] not in found or rank[f["level"]] > rank[found[f["code"]]["level"]]:
            found[f["code"]] = f
    return run.returncode, found


def level(found: dict[str, dict[str, str]], code: str) -> str:
    assert code in found, sorted(found)
    return found[code]["level"]


def run_all(lab: Lab, host: str, *args: str, clock: str = "") -> tuple[int, list[dict[str, str]]]:
    """The command in ``host``, every finding in order; with ``clock`` (a libfaketime
    FAKETIME offset such as ``-1d``) the command runs on a wall clock that far off, as
    on a box whose clock is wrong (its monotonic clock left true)."""
    fake = ["env", "LD_PRELOAD=/usr/$LIB/faketime/libfaketime.so.1", f"FAKETIME={clock}",
            "FAKETIME_DONT_FAKE_MONOTONIC=1"] if clock else []  # fmt: skip
    argv = [*fake, sys.executable, "-m", "spokeshare", "check", "--json", *args]
    run = lab.exec(host, argv, capture_output=True, text=True, timeout=90)
    assert run.stdout.startswith("["), run.stderr
    findings: list[dict[str, str]] = json.loads(run.stdout)
    return run.returncode, findings


def one(findings: list[dict[str, str]], code: str, has: str = "") -> dict[str, str]:
    """The finding ``code`` whose message contains ``has``."""
    got = [f for f in findings if f["code"] == code and has in f["message"]]
    assert len(got) == 1, (code, has, [f for f in findings if f["code"] == code])
    return got[0]


def hq_args(lab: Lab, config: Path | None = None) -> list[str]:
    smb_conf = lab.host_dir("hq") / "samba" / "smb.conf"
    args = ["--hub", "--dir", str(lab.deploy_dir), "--smb-conf", str(smb_conf),
            "--cupsd-conf", str(hq_cupsd_conf(lab))]  # fmt: skip
    return args + (["--config", str(config)] if config else [])


def hq_cupsd_conf(lab: Lab) -> Path:
    """The lab HQ's cupsd.conf, as its set-up left it (stock + the README's steps)."""
    return lab.host_dir("hq") / "cups" / "cupsd.conf"


def edge_conf(lab: Lab) -> Path:
    return lab.host_dir(lab.office("nyc").edge) / "edge.toml"


def test_hq_as_the_readme_sets_it_up(lab: Lab) -> None:
    status, found = run_check(lab, "hq", *hq_args(lab))
    assert level(found, "hub.listen") == "ok"
    assert level(found, "hub.address") == "ok"
    assert level(found, "hub.backend") == "ok"
    assert level(found, "hub.ipp.answer") == "ok"
    assert "shared printer(s)" in found["hub.ipp.answer"]["message"]
    assert level(found, "hub.ipp.uri") == "ok"  # URIs on the Host the edge relays
    assert level(found, "hub.smb.multichannel") == "ok"
    assert level(found, "hub.smb.aliases") == "ok"
    assert level(found, "hub.ipp.cupsd") == "ok"  # whatever the version: the README's step
    assert spokes.VIRTUAL_NAME in found["hub.smb.aliases"]["message"]
    # compared with the names the running offices advertise (the hub's status)
    assert "every name the running offices advertise" in found["hub.smb.aliases"]["message"]
    assert level(found, "hub.ca.expiry") == "ok" and level(found, "hub.hub.expiry") == "ok"
    assert level(found, "hub.chain") == "ok"
    assert status == 0, found


def test_hq_faults(lab: Lab, tmp_path: Path) -> None:
    text = (lab.deploy_dir / "hub.toml").read_text()
    hq = lab.hub_address
    loop = tmp_path / "loop" / "hub.toml"
    loop.parent.mkdir()
    loop.write_text(text.replace(f'"{hq}:631"', '"127.0.0.1:631"'))
    status, found = run_check(lab, "hq", *hq_args(lab, loop))
    assert status == 2
    assert level(found, "hub.ipp.loopback") == "error"
    assert "cupsctl --share-printers --remote-any" in found["hub.ipp.loopback"]["fix"]
    # An ipp backend where nothing listens (cupsd listens on the service address only).
    wan = lab.office("nyc").wan_hq_ip
    elsewhere = tmp_path / "elsewhere" / "hub.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(text.replace(f'"{hq}:631"', f'"{wan}:632"'))
    status, found = run_check(lab, "hq", *hq_args(lab, elsewhere))
    assert status == 2
    assert level(found, "hub.backend") == "error"
    assert "ipp" in found["hub.backend"]["message"]


def test_hq_smbd_with_stock_settings(lab: Lab, tmp_path: Path) -> None:
    """A second smbd at HQ without the README's two settings (Debian's defaults:
    multichannel offered, no netbios aliases), as the smb backend of a hub.toml copy:
    both named with their fix."""
    root = lab.host_dir(HQ) / "stock-smbd"
    conf = private_smb_conf(root, "HQFS2", f"{HQ_SERVICE_IP}/32", "  smb ports = 4450",
                            "  disable netbios = yes", *SHARE_ONLY,
                            f"  path = {root / 'share'}")  # fmt: skip
    pid = services.spawn(
        lab.registry, HQ, ["smbd", "--foreground", "--debug-stdout", f"--configfile={conf}"],
        "stock-smbd", lab.logs_dir / "stock-smbd.log", new_session=False,
    )  # fmt: skip
    try:
        services.wait_for(
            "stock smbd on 4450", lambda: services.listening(HQ, 4450, HQ_SERVICE_IP), 30
        )
        hub_toml = tmp_path / "hub.toml"
        text = (lab.deploy_dir / "hub.toml").read_text()
        hub_toml.write_text(text.replace(f'"{HQ_SERVICE_IP}:445"', f'"{HQ_SERVICE_IP}:4450"'))
        args = ["--hub", "--dir", str(lab.deploy_dir), "--config", str(hub_toml),
                "--cupsd-conf", str(hq_cupsd_conf(lab))]  # fmt: skip
        status, found = run_check(lab, HQ, *args, "--smb-conf", str(conf))
        assert level(found, "hub.smb.multichannel") == "error"
        assert "server multi channel support = no" in found["hub.smb.multichannel"]["fix"]
        assert level(found, "hub.smb.aliases") == "warning"
        assert "netbios aliases = GLOBAL-NFS" in found["hub.smb.aliases"]["fix"]
        assert status == 2
    finally:
        lab.registry.kill_process(pid)


def test_hq_shares_no_printer(lab: Lab) -> None:
    """Every HQ queue unshared (lpadmin at HQ's cupsd): the relayed request is answered,
    with no printer, a warning naming the fix; shared again afterwards."""
    cups = services.CupsHost(HQ, (HQ_SERVICE_IP,), lab.host_dir(HQ) / "cups")

    def share(on: bool) -> None:
        for name in services.SHARED_PRINTERS:
            cups.admin(["lpadmin", "-p", name, "-o", f"printer-is-shared={str(on).lower()}"])

    share(False)
    try:
        status, found = run_check(lab, "hq", *hq_args(lab))
        assert level(found, "hub.ipp.shared") == "warning"
        assert "printer-is-shared=true" in found["hub.ipp.shared"]["fix"]
        assert status == 1, found
    finally:
        share(True)
    _, found = run_check(lab, "hq", *hq_args(lab))
    assert level(found, "hub.ipp.answer") == "ok"


def test_office_edge_running(lab: Lab) -> None:
    nyc = lab.office("nyc")

    def mdns_registered() -> tuple[int, dict[str, dict[str, str]]] | None:
        # The edge starts once NetBIOS holds the name; mDNS answers after probing
        # (RFC 6762 §8.1), so the check is asked again until then.
        status, found = run_check(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))
        mdns = found.get("edge.name.mdns")
        return (status, found) if mdns and mdns["level"] == "ok" else None

    status, found = wait_for(mdns_registered, timeout=30, what="mDNS answering", interval=0.5)
    assert level(found, "edge.bundle") == "ok"
    assert level(found, "edge.bundle.mode") == "ok"
    assert level(found, "edge.bundle.chain") == "ok"
    assert level(found, "edge.hub.reach") == "ok"
    assert "RTT" in found["edge.hub.reach"]["message"]
    assert level(found, "edge.hub.cert") == "ok"
    assert level(found, "edge.hub.alpn") == "ok"
    for code in ("edge.bundle.cert.expiry", "edge.bundle.ca.expiry", "edge.bundle.renewal"):
        assert level(found, code) == "ok", found[code]
    assert level(found, "edge.hub.clock") == "ok"  # one clock for the whole lab
    assert level(found, "edge.lan") == "ok"
    assert level(found, "edge.lan.netbios") == "ok"
    assert level(found, "edge.lan.port") == "ok"  # the edge's own listeners are not others
    assert "held by the running edge" in found["edge.lan.port"]["message"]
    names = {p: found.get(f"edge.name.{p}") for p in ("netbios", "llmnr", "mdns")}
    bad = [f"{p}: {f}" for p, f in names.items() if f is None or f["level"] != "ok"]
    assert not bad, "\n".join(bad)
    assert status == 0, found


def test_office_faults(lab: Lab, tmp_path: Path) -> None:
    nyc = lab.office("nyc")
    original = spokes.bundle_path(lab, "nyc")
    # A bundle others can read, at a copy (the running edge keeps its own).
    loose = tmp_path / "loose.bundle"
    shutil.copy(original, loose)
    loose.chmod(0o644)
    status, found = run_check(
        lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)), "--bundle", str(loose)
    )
    assert status == 2
    assert level(found, "edge.bundle.mode") == "error"
    assert found["edge.bundle.mode"]["fix"] == f"chmod 600 {loose}"
    # A hub address nobody answers on: the bundle lists the hub at port 1 too.
    text = original.read_text()
    hq = lab.hub_address
    moved = tmp_path / "moved.bundle"
    moved.write_text(text.replace(f'"{hq}:{spokes.HUB_PORT}"', f'"{hq}:1"'))
    moved.chmod(0o600)
    status, found = run_check(
        lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)), "--bundle", str(moved)
    )
    assert status == 2
    assert level(found, "edge.hub.reach") == "error"
    assert f"{hq}:1" in found["edge.hub.reach"]["message"]
    # A certificate that expires in ten days: a warning, nothing else wrong.
    soon = tmp_path / "soon.bundle"
    enrollment.add_office(lab.deploy_dir, "soon", None, soon, days=10)
    status, found = run_check(
        lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)), "--bundle", str(soon)
    )
    assert level(found, "edge.bundle.cert.expiry") == "warning"
    assert "office renew soon" in found["edge.bundle.cert.expiry"]["fix"]
    assert level(found, "edge.hub.reach") == "ok"
    assert status == 1, found
    # A certificate issued an hour from now: this box's clock is before its issue
    # time, and the hub (whose clock is this one) refuses it too.
    later = tmp_path / "later.bundle"
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    enrollment.add_office(lab.deploy_dir, "later", None, later, not_before=start)
    status, found = run_check(
        lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)), "--bundle", str(later)
    )
    assert level(found, "edge.bundle.cert.clock") == "error"
    assert "timedatectl" in found["edge.bundle.cert.clock"]["fix"]
    assert status == 2
    # lan.address on no interface of the box.
    moved_lan = tmp_path / "edge.toml"
    moved_lan.write_text(edge_conf(lab).read_text().replace(nyc.edge_ip, "198.18.11.77"))
    status, found = run_check(lab, nyc.edge, "--edge", "--config", str(moved_lan))
    assert level(found, "edge.lan") == "error"
    assert "ip addr add 198.18.11.77/24" in found["edge.lan"]["fix"]
    assert status == 2


def test_wan_down_names_withdrawn(lab: Lab) -> None:
    """The WAN cut: the hub unreachable, and once the edge withdraws its names
    (withdraw_after), the check says so; the WAN back, all is fine again."""
    nyc = lab.office("nyc")
    log = lab.logs_dir / "edge-nyc.log"

    def goodbyes() -> int:
        """mDNS withdrawals of the office's name logged so far (spokeshare.logevents)."""
        lines = logfmt.find(log.read_text(errors="replace"), "names withdrawn")
        return sum(1 for f in lines if f.get("protocol") == "mdns"
                   and spokes.VIRTUAL_NAME in f.get("names", "").split(","))  # fmt: skip

    def withdrawals() -> int:
        """mDNS withdrawals done so far, as lan-status.json counts them."""
        done = spokes.edge_status(lab, "nyc").get("withdrawals")
        return int(done.get("mdns", 0)) if isinstance(done, dict) else 0

    before, counted_before = goodbyes(), withdrawals()
    lab.wan("nyc", up=False)
    try:

        def withdrawn() -> dict[str, dict[str, str]] | None:
            _, found = run_check(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))
            st = found.get("edge.status")
            return found if st and st["level"] == "error" else None

        found = wait_for(withdrawn, timeout=60, what="names withdrawn", interval=1.0)
        assert "withdrawn" in found["edge.status"]["message"]
        assert level(found, "edge.hub.reach") == "error"
        # Withdrawn names are not answered: mDNS asked at the name's address says so,
        # once the edge has sent its goodbyes (counted after they are sent and logged).
        wait_for(
            lambda: withdrawals() > counted_before,
            timeout=30,
            what="mDNS goodbyes sent",
        )
        assert goodbyes() > before
        _, found = run_check(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))
        mdns = found["edge.name.mdns"]
        assert mdns["level"] == "error" and "gets no answer" in mdns["message"], mdns
        assert "withdrawn while the hub is down" in mdns["fix"]
    finally:
        lab.wan("nyc", up=True)
    wait_for(lambda: spokes.office_connected(lab, "nyc"), timeout=60, what="nyc back")


def private_smb_conf(root: Path, netbios_name: str, interfaces: str, *extra: str) -> Path:
    """``root/smb.conf`` for a Samba daemon of a test's own (``netbios_name``, bound to
    ``interfaces`` only), every state path under ``root``; ``extra`` lines follow the
    [global] ones as given (more settings, or sections)."""
    for sub in ("private", "lock", "state", "cache", "pid", "run", "share"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "smb.conf"
    conf.write_text(
        "\n".join(
            [
                "[global]",
                f"  netbios name = {netbios_name}",
                f"  interfaces = {interfaces}",
                "  bind interfaces only = yes",
                *(f"  {k} directory = {root / k}" for k in ("lock", "state", "cache", "pid")),
                f"  private dir = {root / 'private'}",
                f"  ncalrpc dir = {root / 'run'}",
                f"  log file = {root / 'log.%m'}",
                *extra,
                "",
            ]
        )
    )
    return conf


#: An smbd that serves one share and no printers (the office box's or HQ's second one).
SHARE_ONLY = ("  server role = standalone server", "  load printers = no",
              "  printcap name = /dev/null", "[share]")  # fmt: skip


def nmbd_conf(lab: Lab, host: str, address: str, netbios_name: str) -> Path:
    """smb.conf for an nmbd of its own on ``host`` (``netbios_name``, on ``address``'s
    /24 only, no browsing), state under the host's lab dir."""
    return private_smb_conf(lab.host_dir(host) / "oldnmbd", netbios_name, f"{address}/24",
                            "  workgroup = ACME", "  local master = no")  # fmt: skip


def test_nmbd_beside_the_edge(lab: Lab, tmp_path: Path) -> None:
    """Samba's nmbd on the edge host, as on an office box that ran the old setup: the
    check names it on NetBIOS with the fix (the edge leaves NetBIOS to it)."""
    nyc = lab.office("nyc")
    conf = nmbd_conf(lab, nyc.edge, nyc.edge_ip, "OLDBOX")
    pid = services.spawn(
        lab.registry, nyc.edge,
        ["nmbd", "--foreground", "--debug-stdout", f"--configfile={conf}"],
        "old-nmbd", lab.logs_dir / "old-nmbd.log", new_session=False,
    )  # fmt: skip
    try:

        def nmbd_found() -> dict[str, dict[str, str]] | None:
            _, found = run_check(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))
            f = found.get("edge.lan.netbios")
            left = "edge.status.netbios" in found  # the edge left NetBIOS to nmbd
            return found if f and f["level"] == "warning" and left else None

        found = wait_for(nmbd_found, timeout=40, what="check naming nmbd on 137", interval=0.5)
        f = found["edge.lan.netbios"]
        assert f"nmbd (pid {pid})" in f["message"]
        assert "systemctl disable --now nmbd" in f["fix"]
        status = found["edge.status.netbios"]
        assert status["level"] == "warning" and f"nmbd (pid {pid})" in status["message"]
        assert "edge.name.netbios" not in found  # left to nmbd, not an error of its own
    finally:
        lab.registry.kill_process(pid)


# -- faults provoked for real: HQ's cupsd, the hub's address, the office box ------------


def _cupsd_pid(lab: Lab) -> int:
    return int(next(p["pid"] for p in lab.registry.processes() if p["what"] == f"cupsd {HQ}"))


def _reload_cupsd(lab: Lab, text: str, ready: Callable[[], bool], what: str) -> None:
    """Write HQ's cupsd.conf and make cupsd re-read it (SIGHUP by PID, as cupsctl
    does); wait for ``ready``."""
    (lab.host_dir(HQ) / "cups" / "cupsd.conf").write_text(text)
    os.kill(_cupsd_pid(lab), signal.SIGHUP)
    wait_for(ready, timeout=30, what=what, interval=0.2)


def test_hq_cupsd_without_the_readme_step(lab: Lab) -> None:
    """HQ's cupsd with Debian's stock cupsd.conf (the README's cupsctl --share-printers
    --remote-any not run): it listens on localhost only, and the ipp backend is refused.
    Then the port opened by hand (``Port 631``, the usual advice) but remote clients
    still not allowed: cupsd answers the relayed request 403. Both name the README's
    step. Then the step done but TLS demanded of every client (``Encryption Required``):
    cupsd answers 426, which the hub's plain IPP cannot meet. The lab's cupsd.conf is
    put back after."""
    cups = services.CupsHost(HQ, (HQ_SERVICE_IP,), lab.host_dir(HQ) / "cups")
    conf = cups.root / "cupsd.conf"
    configured = conf.read_text()
    stock = cups.stock_config()
    assert "Listen localhost:631" in stock and "Allow all" not in stock
    by_hand = stock.replace("Listen localhost:631", "Port 631")
    cupsctl = "cupsctl --share-printers --remote-any"
    try:
        _reload_cupsd(
            lab, stock,
            lambda: not services.listening(HQ, 631, "0.0.0.0")
            and not services.listening(HQ, 631, HQ_SERVICE_IP),
            "cupsd on localhost only",
        )  # fmt: skip
        status, found = run_check(lab, HQ, *hq_args(lab))
        assert level(found, "hub.backend") == "error"
        assert f"{HQ_SERVICE_IP}:631" in found["hub.backend"]["message"]
        assert cupsctl in found["hub.backend"]["fix"]
        assert "hub.ipp.answer" not in found  # nothing to ask
        assert status == 2
        # Debian's stock default policy checks the job's owner: on the cupsd version that
        # crashes on it, an error naming the README's sed; on any other, nothing to do.
        owner = found["hub.ipp.cupsd"]
        if check.package_version("cups-daemon") in hq_cupsd.OWNER_CHECK_CRASH:
            assert owner["level"] == "error" and hq_cupsd.OWNER_CHECKS_SED in owner["fix"]
        else:
            assert owner["level"] == "ok", owner
        _reload_cupsd(
            lab, by_hand, lambda: services.listening(HQ, 631, "0.0.0.0"), "cupsd on Port 631"
        )
        status, found = run_check(lab, HQ, *hq_args(lab))
        assert level(found, "hub.backend") == "ok"
        assert level(found, "hub.ipp.answer") == "error"
        assert "HTTP 403" in found["hub.ipp.answer"]["message"]
        assert cupsctl in found["hub.ipp.answer"]["fix"]
        assert "hub.ipp.uri" not in found
        assert status == 2
        # The README's step done, and TLS demanded of every client besides.
        assert "<Location />\n" in configured
        tls = configured.replace("<Location />\n", "<Location />\n  Encryption Required\n", 1)

        def demands_tls() -> bool:
            found = run_check(lab, HQ, *hq_args(lab))[1]
            return "HTTP 426" in found.get("hub.ipp.answer", {}).get("message", "")

        _reload_cupsd(lab, tls, demands_tls, "cupsd demanding TLS")
        status, found = run_check(lab, HQ, *hq_args(lab))
        assert level(found, "hub.ipp.answer") == "error"
        assert "Encryption Required" in found["hub.ipp.answer"]["fix"]
        assert status == 2
    finally:
        conf.write_text(configured)
        os.kill(_cupsd_pid(lab), signal.SIGHUP)

        def answering() -> bool:
            found = run_check(lab, HQ, *hq_args(lab))[1]
            return found.get("hub.ipp.answer", {}).get("level") == "ok"

        wait_for(answering, timeout=60, what="cupsd as the README sets it up", interval=0.5)


@contextlib.contextmanager
def _tls_server(lab: Lab, port: int) -> Iterator[int]:
    """``openssl s_server`` in HQ on the hub's address and ``port``, with the hub's own
    certificate and key, TLS 1.3, asking for a client certificate, no ALPN: another
    TLS server an HQ admin gave the hub's certificate. Yields its PID; stopped after."""
    d = lab.deploy_dir
    argv = ["openssl", "s_server", "-accept", f"{HQ_SERVICE_IP}:{port}", "-tls1_3",
            "-cert", str(d / "hub.crt"), "-key", str(d / "hub.key"),
            "-verify", "1", "-CAfile", str(d / "ca.crt"), "-quiet"]  # fmt: skip
    pid = lab.spawn(HQ, argv, f"s_server-{port}")
    try:
        services.wait_for(
            "openssl s_server", lambda: services.listening(HQ, port, HQ_SERVICE_IP), 30
        )
        yield pid
    finally:
        lab.registry.kill_process(pid)


def _bundle_at(lab: Lab, tmp_path: Path, port: int) -> Path:
    """A copy of nyc's bundle whose hub address is the hub's host at ``port``."""
    hq = lab.hub_address
    text = spokes.bundle_path(lab, "nyc").read_text()
    assert f'"{hq}:{spokes.HUB_PORT}"' in text
    moved = tmp_path / f"at-{port}.bundle"
    moved.write_text(text.replace(f'"{hq}:{spokes.HUB_PORT}"', f'"{hq}:{port}"'))
    moved.chmod(0o600)
    return moved


def test_hub_address_without_the_tunnel_alpn(lab: Lab, tmp_path: Path) -> None:
    """A TLS 1.3 server holding the deployment's hub certificate that does not speak
    ALPN spokeshare/1 (openssl s_server): at the office the handshake and certificate
    pass and edge.hub.alpn says it is not a hub; at HQ, as the hub's listen address,
    hub.listen names the process instead of taking it for the hub."""
    port = spokes.HUB_PORT + 2
    with _tls_server(lab, port) as pid:
        bundle_copy = _bundle_at(lab, tmp_path, port)
        conf = edge_conf(lab)
        status, found = run_check(
            lab, lab.office("nyc").edge, "--edge", "--config", str(conf),
            "--bundle", str(bundle_copy),
        )  # fmt: skip
        assert level(found, "edge.hub.reach") == "ok"
        assert level(found, "edge.hub.cert") == "ok"  # the deployment's own certificate
        alpn = found["edge.hub.alpn"]
        assert alpn["level"] == "error", alpn
        assert "agreed on no ALPN" in alpn["message"] and "spokeshare/1" in alpn["message"]
        assert f"ss -ltnp 'sport = :{port}'" in alpn["fix"]
        assert status == 2
        hub_toml = tmp_path / "hub.toml"
        text = (lab.deploy_dir / "hub.toml").read_text()
        listen = f'"{lab.hub_address}:{spokes.HUB_PORT}"'
        assert listen in text
        hub_toml.write_text(text.replace(listen, f'"{lab.hub_address}:{port}"'))
        status, found = run_check(lab, HQ, *hq_args(lab, hub_toml))
        held = found["hub.listen"]
        assert held["level"] == "error", held
        assert f"openssl (pid {pid})" in held["message"]
        assert "no ALPN spokeshare/1" in held["message"]
        assert "stop openssl" in held["fix"]
        assert status == 2


def test_hub_of_another_deployment(lab: Lab, tmp_path: Path) -> None:
    """A second deployment made by spokeshare init (same hub name, its own CA), its hub
    running at HQ where a copy of nyc's bundle points: edge.hub.cert says the hub
    belongs to another deployment, with the way out."""
    port = spokes.HUB_PORT + 3
    other = tmp_path / "other-deployment"
    init = lab.exec(
        HQ,
        [sys.executable, "-m", "spokeshare", "init", "--dir", str(other),
         "--hub-name", spokes.HUB_NAME, "--address", f"{lab.hub_address}:{port}",
         "--listen", f"{lab.hub_address}:{port}",
         "--service", f"smb={HQ_SERVICE_IP}:445", "--service", f"ipp={HQ_SERVICE_IP}:631",
         "--state-dir", str(other / "state")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    pid = lab.spawn(
        HQ, [sys.executable, "-m", "spokeshare", "hub", "--dir", str(other)], "other-hub"
    )
    try:
        services.wait_for(
            "the other hub", lambda: services.listening(HQ, port, lab.hub_address), 30
        )
        bundle_copy = _bundle_at(lab, tmp_path, port)
        status, found = run_check(
            lab, lab.office("nyc").edge, "--edge", "--config", str(edge_conf(lab)),
            "--bundle", str(bundle_copy),
        )  # fmt: skip
        cert = found["edge.hub.cert"]
        assert cert["level"] == "error", cert
        assert f"{lab.hub_address}:{port}" in cert["message"]
        assert "another CA of the same name" in cert["message"]
        assert "another deployment" in cert["message"]
        assert "spokeshare office add OFFICE" in cert["fix"]
        assert level(found, "edge.bundle.chain") == "ok"  # the bundle itself is sound
        assert status == 2
    finally:
        lab.registry.kill_process(pid)
    # Files of the two deployments mixed up: HQ's directory with the other hub.crt, a
    # bundle with the other CA.
    mixed = tmp_path / "mixed"
    shutil.copytree(lab.deploy_dir, mixed)
    shutil.copy(other / "hub.crt", mixed / "hub.crt")
    status, listed = run_all(lab, HQ, "--hub", "--dir", str(mixed), "--smb-conf",
                            str(lab.host_dir(HQ) / "samba" / "smb.conf"))  # fmt: skip
    f = one(listed, "hub.chain")
    assert f["level"] == "error" and "not issued by the deployment's CA" in f["message"]
    assert "different deployments" in f["fix"] and status == 2
    b = bundle.read(spokes.bundle_path(lab, "nyc"))
    swapped = tmp_path / "swapped.bundle"
    bundle.write(swapped, dataclasses.replace(b, ca_pem=(other / "ca.crt").read_bytes()))
    status, listed = run_all(lab, lab.office("nyc").edge, "--edge", "--config",
                            str(edge_conf(lab)), "--bundle", str(swapped))  # fmt: skip
    f = one(listed, "edge.bundle.chain")
    assert f["level"] == "error" and "office renew nyc" in f["fix"]
    assert status == 2


def test_office_port_held_before_the_edge_starts(lab: Lab) -> None:
    """The edge stopped and Samba's smbd started on the office box (as one that served
    files before), holding 445 and 139 on the LAN address: the check names smbd on
    each port with the fix; then smbd stopped and the edge started again."""
    nyc = lab.office("nyc")
    root = lab.host_dir(nyc.edge) / "oldsmbd"
    conf = private_smb_conf(root, "OLDBOX", f"{nyc.edge_ip}/24", *SHARE_ONLY,
                            f"  path = {root / 'share'}")  # fmt: skip
    lab.registry.kill_process(lab.edge_pids.pop("nyc"))
    services.wait_for(
        "the edge's ports free", lambda: not services.listening(nyc.edge, 445, nyc.edge_ip), 30
    )
    pid = services.spawn(
        lab.registry, nyc.edge, ["smbd", "--foreground", "--debug-stdout", f"--configfile={conf}"],
        "old-smbd", lab.logs_dir / "old-smbd.log", new_session=False,
    )  # fmt: skip
    try:
        services.wait_for(
            "smbd on 445 and 139",
            lambda: all(services.listening(nyc.edge, p, nyc.edge_ip) for p in (445, 139)),
            30,
        )
        argv = [sys.executable, "-m", "spokeshare", "check", "--json", "--edge",
                "--config", str(edge_conf(lab))]  # fmt: skip
        run = lab.exec(nyc.edge, argv, capture_output=True, text=True, timeout=90)
        findings = json.loads(run.stdout)
        held = {
            f["message"].split(": ")[0]: f
            for f in findings
            if f["code"] == "edge.lan.port" and f["level"] == "error"
        }
        name = next(f for f in findings if f["code"] == "edge.name")
        assert name["level"] == "info" and "systemctl start spokeshare-edge" in name["fix"]
        for port in (445, 139):
            what = f"smbd (pid {pid}) holds {nyc.edge_ip}:{port}"
            assert what in held, sorted(held)
            assert "systemctl disable --now smbd" in held[what]["fix"]
        assert run.returncode == 2
    finally:
        lab.registry.kill_process(pid)
        services.wait_for(
            "445 free again", lambda: not services.listening(nyc.edge, 445, nyc.edge_ip), 30
        )
        lab.edge_pids["nyc"] = spokes.start_edge(lab, "nyc")


def test_hq_config_faults(lab: Lab, tmp_path: Path) -> None:
    """What an operator gets wrong in hub.toml or on the command line: a misspelt key,
    the wrong --dir, a listen address not on this host, backends on the wrong ports
    (cupsd's port as smb, smbd's as ipp), an smb.conf that is not there, a damaged
    office registry, an address without a port in deployment.toml. Each is named with
    its fix."""
    text = (lab.deploy_dir / "hub.toml").read_text()
    hq = lab.hub_address

    def hub_toml(name: str, new: str) -> Path:
        path = tmp_path / name / "hub.toml"
        path.parent.mkdir()
        path.write_text(new)
        return path

    typo = hub_toml("typo", text.replace("[hub]\n", "[hub]\nlisten_adress = []\n", 1))
    status, found = run_all(lab, HQ, *hq_args(lab, typo))
    assert [f["code"] for f in found] == ["hub.config"]
    assert "listen_adress" in found[0]["message"] and found[0]["fix"] == "correct hub.toml"
    assert found[0]["level"] == "error" and status == 2

    status, found = run_all(lab, HQ, "--hub", "--dir", str(tmp_path), "--config",
                            str(lab.deploy_dir / "hub.toml"))  # fmt: skip
    for code in ("hub.ca", "hub.hub"):
        f = one(found, code)
        assert f["level"] == "error" and "cannot read" in f["message"]
        assert "--dir" in f["fix"]
    assert status == 2

    listen = f'"{hq}:{spokes.HUB_PORT}"'
    nowhere = hub_toml("nowhere", text.replace(listen, f'"198.18.255.254:{spokes.HUB_PORT}"'))
    status, found = run_all(lab, HQ, *hq_args(lab, nowhere))
    f = one(found, "hub.listen")
    assert f["level"] == "error" and "cannot listen" in f["message"]
    assert "[hub] listen" in f["fix"] and status == 2

    crossed = text.replace(f'"{hq}:445"', '"SMB"').replace(f'"{hq}:631"', f'"{hq}:445"')
    swapped = hub_toml("swapped", crossed.replace('"SMB"', f'"{hq}:631"'))
    status, found = run_all(lab, HQ, *hq_args(lab, swapped))
    nego = one(found, "hub.smb.negotiate")
    assert nego["level"] == "error" and f"{hq}:631" in nego["message"]
    assert "SMB port" in nego["fix"]
    answer = one(found, "hub.ipp.answer")
    assert answer["level"] == "error" and f"{hq}:445" in answer["message"]
    assert "did not answer" in answer["message"]
    assert status == 2

    status, found = run_all(lab, HQ, "--hub", "--dir", str(lab.deploy_dir),
                            "--smb-conf", str(tmp_path / "no-smb.conf"))  # fmt: skip
    aliases = one(found, "hub.smb.aliases")
    assert aliases["level"] == "info" and "not readable" in aliases["message"]
    assert "netbios aliases = GLOBAL-NFS" in aliases["fix"]

    copy = tmp_path / "deploy-copy"
    shutil.copytree(lab.deploy_dir, copy)
    (copy / "offices.json").write_text("{not json")
    dep = (copy / "deployment.toml").read_text()
    assert f'"{hq}:{spokes.HUB_PORT}"' in dep
    (copy / "deployment.toml").write_text(dep.replace(f'"{hq}:{spokes.HUB_PORT}"', f'"{hq}"'))
    status, found = run_all(lab, HQ, "--hub", "--dir", str(copy), "--smb-conf",
                            str(lab.host_dir(HQ) / "samba" / "smb.conf"))  # fmt: skip
    reg = one(found, "hub.registry")
    assert reg["level"] == "error" and "offices.json" in reg["message"]
    assert reg["fix"] == "restore offices.json" and status == 2
    dial = one(found, "hub.address")
    assert dial["level"] == "error" and dial["fix"] == "correct deployment.toml"


def test_wrong_clocks(lab: Lab) -> None:
    """The check run on a wall clock that is off (libfaketime), at HQ and at the office,
    as on a box whose clock is wrong or far in the future: a clock before the
    certificates' issue, an office certificate past its renewal, near its end and
    expired, the hub's certificate near expiry and expired, the CA near expiry and
    expired. Each is the finding an operator would see that day."""
    hq = hq_args(lab)
    edge = lab.office("nyc").edge
    office = ["--edge", "--config", str(edge_conf(lab))]

    status, found = run_all(lab, HQ, *hq, clock="-1d")
    for code in ("hub.ca.clock", "hub.hub.clock"):
        f = one(found, code)
        assert f["level"] == "error" and "timedatectl set-ntp true" in f["fix"]
    assert status == 2
    status, found = run_all(lab, edge, *office, clock="-1d")
    for code in ("edge.bundle.cert.clock", "edge.bundle.ca.clock", "edge.hub.cert.clock"):
        f = one(found, code)
        assert f["level"] == "error" and "timedatectl set-ntp true" in f["fix"]
    assert status == 2

    # Office certificates last 825 days and renew from two thirds: 600 days on, the
    # renewal is overdue (its edge would have renewed it: a warning).
    status, found = run_all(lab, HQ, *hq, clock="+600d")
    f = one(found, "hub.office.renewal", "nyc:")
    assert f["level"] == "warning" and "certificate renewal" in f["fix"]
    status, found = run_all(lab, edge, *office, clock="+600d")
    f = one(found, "edge.bundle.renewal")
    assert f["level"] == "warning" and "renewal due" in f["message"]
    assert status == 1, found

    # 800 days on: the last tenth of the office's lifetime, 25 days to go for the
    # office's and the hub's certificates.
    status, found = run_all(lab, HQ, *hq, clock="+800d")
    assert one(found, "hub.office.renewal", "nyc:")["level"] == "error"
    f = one(found, "hub.hub.expiry")
    assert f["level"] == "warning" and "spokeshare init" in f["fix"]
    status, found = run_all(lab, edge, *office, clock="+800d")
    f = one(found, "edge.bundle.renewal")
    assert f["level"] == "error" and "office renew nyc" in f["fix"]
    f = one(found, "edge.bundle.cert.expiry")
    assert f["level"] == "warning" and "office renew nyc" in f["fix"]
    f = one(found, "edge.hub.cert.expiry")
    assert f["level"] == "warning" and "renew the hub's certificate" in f["fix"]
    assert status == 2

    status, found = run_all(lab, HQ, *hq, clock="+830d")
    assert one(found, "hub.hub.expiry")["level"] == "error"
    status, found = run_all(lab, edge, *office, clock="+830d")
    assert one(found, "edge.bundle.cert.expiry")["level"] == "error"
    assert one(found, "edge.hub.cert.expiry")["level"] == "error"
    assert "expired" in one(found, "edge.bundle.renewal")["message"]

    # The CA lasts 3650 days: ten days before its end, and a day after.
    for clock, what in (("+3640d", "warning"), ("+3651d", "error")):
        _, found = run_all(lab, HQ, *hq, clock=clock)
        f = one(found, "hub.ca.expiry")
        assert f["level"] == what and "spokeshare init" in f["fix"]
        _, found = run_all(lab, edge, *office, clock=clock)
        f = one(found, "edge.bundle.ca.expiry")
        assert f["level"] == what and "a new deployment" in f["fix"]


def test_office_bundle_faults(lab: Lab, tmp_path: Path) -> None:
    """What goes wrong with the bundle and edge.toml at an office: a misspelt key, no
    bundle where edge.toml says, a damaged one, one that belongs to root when the
    check (as the edge) runs as another user, one naming another hub name."""
    nyc = lab.office("nyc")
    conf = edge_conf(lab)
    typo = tmp_path / "typo.toml"
    typo.write_text(conf.read_text().replace("[lan]\n", '[lan]\nadress = "x"\n', 1))
    status, found = run_all(lab, nyc.edge, "--edge", "--config", str(typo))
    assert [f["code"] for f in found] == ["edge.config"] and "adress" in found[0]["message"]
    assert found[0]["fix"] == "correct edge.toml" and status == 2

    status, found = run_all(lab, nyc.edge, "--edge", "--config", str(conf),
                            "--bundle", str(tmp_path / "none.bundle"))  # fmt: skip
    f = one(found, "edge.bundle")
    assert f["level"] == "error" and "copy the office's bundle there" in f["fix"]

    original = spokes.bundle_path(lab, "nyc")
    damaged = tmp_path / "damaged.bundle"
    damaged.write_text(original.read_text()[:-200])
    damaged.chmod(0o600)
    status, found = run_all(lab, nyc.edge, "--edge", "--config", str(conf),
                            "--bundle", str(damaged))  # fmt: skip
    f = one(found, "edge.bundle")
    assert f["level"] == "error" and "spokeshare office renew" in f["fix"]
    assert status == 2

    # Copied in by root; the edge (and the check) run as another user.
    # (The lab's directories are 0755, as /etc/spokeshare is: the user reaches it.)
    rooted = lab.host_dir(nyc.edge) / "root-owned.bundle"
    shutil.copy(original, rooted)
    rooted.chmod(0o600)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    argv = [*as_nobody, sys.executable, "-m", "spokeshare", "check", "--json", "--edge",
            "--config", str(conf), "--bundle", str(rooted)]  # fmt: skip
    try:
        run = lab.exec(nyc.edge, argv, capture_output=True, text=True, timeout=90)
    finally:
        rooted.unlink()
    assert run.stdout.startswith("["), run.stderr
    found = json.loads(run.stdout)
    f = one(found, "edge.bundle.owner")
    assert f["level"] == "error" and f["fix"] == f"chown nobody: {rooted}"
    assert run.returncode == 2
    # A bundle in a directory the user cannot enter (pytest's, 0700, root's).
    hidden = tmp_path / "nyc.bundle"
    shutil.copy(original, hidden)
    argv[argv.index(str(rooted))] = str(hidden)
    run = lab.exec(nyc.edge, argv, capture_output=True, text=True, timeout=90)
    f = one(json.loads(run.stdout), "edge.bundle")
    assert f["level"] == "error" and "Permission denied" in f["message"]
    assert "uid 65534" in f["fix"] and "search" in f["fix"]

    renamed = tmp_path / "renamed.bundle"
    renamed.write_text(original.read_text().replace(f'"{spokes.HUB_NAME}"', '"hub.elsewhere"'))
    renamed.chmod(0o600)
    status, found = run_all(lab, nyc.edge, "--edge", "--config", str(conf),
                            "--bundle", str(renamed))  # fmt: skip
    f = one(found, "edge.hub.name")
    assert f["level"] == "error" and spokes.HUB_NAME in f["message"]
    assert "hub.elsewhere" in f["message"] and status == 2


def test_hub_stopped(lab: Lab) -> None:
    """The hub process stopped at HQ: its listen address is free (the hub is not
    running) and the address offices dial does not answer, both warnings with the
    fix; the office cannot reach it. The hub started again after, and nyc back."""
    assert lab.hub_pid is not None
    lab.registry.kill_process(lab.hub_pid)
    lab.hub_pid = None
    try:
        services.wait_for(
            "the hub's port free",
            lambda: not services.listening(HQ, spokes.HUB_PORT, lab.hub_address),
            30,
        )
        status, found = run_all(lab, HQ, *hq_args(lab))
        listen = one(found, "hub.listen")
        assert listen["level"] == "warning" and "the hub is not running" in listen["message"]
        assert "systemctl start spokeshare-hub" in listen["fix"]
        dial = one(found, "hub.address")
        assert dial["level"] == "warning"
        assert f"{lab.hub_address}:{spokes.HUB_PORT}" in dial["message"]
        assert "NAT" in dial["fix"]
        assert status == 1, found
        status, found = run_all(lab, lab.office("nyc").edge, "--edge", "--config",
                                str(edge_conf(lab)))  # fmt: skip
        reach = one(found, "edge.hub.reach")
        assert reach["level"] == "error" and "refused" in reach["message"]
        assert status == 2
    finally:
        lab.hub_pid = lab.spawn(
            HQ, [sys.executable, "-m", "spokeshare", "hub", "--dir", str(lab.deploy_dir)],
            "hub-again",
        )  # fmt: skip
        wait_for(lambda: spokes.office_connected(lab, "nyc"), timeout=60, what="nyc back")


def test_avahi_beside_the_edge(lab: Lab) -> None:
    """avahi-daemon on the office box (as on most Linux installs): the check names it
    on mDNS with the fix, and once the edge has left mDNS to it, says the edge does
    not serve mDNS; avahi stopped after, the edge takes mDNS back."""
    nyc = lab.office("nyc")
    with running_avahi(lab, nyc.edge):

        def left_to_avahi() -> list[dict[str, str]] | None:
            _, found = run_all(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))
            status = [f for f in found if f["code"] == "edge.status.mdns"]
            return found if status else None

        found = wait_for(left_to_avahi, timeout=40, what="mDNS left to avahi", interval=0.5)
        lan = one(found, "edge.lan.mdns")
        assert lan["level"] == "warning" and "avahi-daemon (pid" in lan["message"]
        assert "systemctl disable --now avahi-daemon.socket avahi-daemon" in lan["fix"]
        status = one(found, "edge.status.mdns")
        assert status["level"] == "warning" and "avahi-daemon" in status["message"]
        assert status["fix"] == "see edge.lan.mdns above"

    def mdns_back() -> bool:
        lan = spokes.edge_status(lab, "nyc").get("lan")
        return isinstance(lan, dict) and lan.get("mdns") == "ok"

    wait_for(
        mdns_back,
        timeout=40,
        what="mDNS back at the edge",
        interval=0.5,
    )


def test_wsdd_and_resolved_beside_the_edge(lab: Lab) -> None:
    """wsdd and systemd-resolved (LLMNR and mDNS on) started on the office box beside
    the running edge, as on a box that ran the old setup: the check names each on its
    protocol with the fix, and once the edge has left the protocol to it, says so; both
    stopped after, the edge takes the protocols back."""
    nyc = lab.office("nyc")
    box = OldBox(lab)
    assert nyc.edge == EDGE_HOST
    try:
        box.start_wsdd()
        box.start_resolved()
        resolved = f"systemd-resolve (pid {box.pids['systemd-resolved']})"  # comm: 15 chars
        expected = {
            "wsd": (f"wsdd (pid {box.pids['wsdd']})", "systemctl disable --now wsdd"),
            "llmnr": (resolved, "LLMNR=no in /etc/systemd/resolved.conf"),
            "mdns": (resolved, "MulticastDNS=no in /etc/systemd/resolved.conf"),
        }

        def left_to_them() -> list[dict[str, str]] | None:
            _, found = run_all(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))
            degraded = {f["code"] for f in found if f["code"].startswith("edge.status.")}
            return found if degraded >= {f"edge.status.{p}" for p in expected} else None

        found = wait_for(left_to_them, timeout=40, what="protocols left to them", interval=0.5)
        for protocol, (daemon, fix) in expected.items():
            lan = one(found, f"edge.lan.{protocol}")
            assert lan["level"] == "warning" and daemon in lan["message"], lan
            assert fix in lan["fix"], lan
            status = one(found, f"edge.status.{protocol}")
            assert status["level"] == "warning" and daemon in status["message"], status
        # The edge no longer answers LLMNR: the check does not call that an error.
        assert "edge.name.llmnr" not in {f["code"] for f in found}
    finally:
        for what in list(box.pids):
            box.stop(what)

    def taken_back() -> bool:
        lan = spokes.edge_status(lab, "nyc").get("lan")
        return isinstance(lan, dict) and all(lan.get(p) == "ok" for p in ("wsd", "llmnr", "mdns"))

    wait_for(taken_back, timeout=40, what="the edge serving them again", interval=0.5)


def test_office_clock_off_from_the_hub(lab: Lab) -> None:
    """The office box's clock off from HQ's (the edge run under libfaketime, as on a
    box without NTP): the running edge measures the skew on its control channel and
    the check says so, a warning at 2 minutes, an error at 10; the edge started again
    on the true clock after."""
    nyc = lab.office("nyc")
    fake = ["env", "LD_PRELOAD=/usr/$LIB/faketime/libfaketime.so.1",
            "FAKETIME_DONT_FAKE_MONOTONIC=1"]  # fmt: skip
    edge = [sys.executable, "-m", "spokeshare", "edge", "--config", str(edge_conf(lab))]
    try:
        for offset, side, level_, status in (("-2m", "ahead of", "warning", 1),
                                             ("+10m", "behind", "error", 2)):  # fmt: skip
            lab.registry.kill_process(lab.edge_pids.pop("nyc"))
            lab.edge_pids["nyc"] = lab.spawn(
                nyc.edge, [*fake, f"FAKETIME={offset}", *edge], f"edge-nyc{offset}"
            )

            def measured(
                side: str = side, offset: str = offset
            ) -> tuple[int, list[dict[str, str]]] | None:
                """The check, on the box's clock as the edge, once this edge has
                measured: the status file holds the last edge's measurement until then
                (about 0 s, then 120 s ahead)."""
                conf = str(edge_conf(lab))
                status, found = run_all(lab, nyc.edge, "--edge", "--config", conf, clock=offset)
                clock = [f for f in found if f["code"] == "edge.hub.clock"]
                skew = re.search(r"clock is ([0-9.]+) s (ahead of|behind)",
                                 clock[0]["message"] if clock else "")  # fmt: skip
                return (status, found) if skew and float(skew[1]) > 30 and skew[2] == side else None

            got, found = wait_for(measured, timeout=40, what=f"skew {offset}", interval=0.5)
            f = one(found, "edge.hub.clock")
            assert f["level"] == level_, f
            assert "timedatectl set-ntp true" in f["fix"]
            assert got >= status
    finally:
        lab.registry.kill_process(lab.edge_pids.pop("nyc"))
        lab.edge_pids["nyc"] = spokes.start_edge(lab, "nyc")


ANNOUNCE = Path(__file__).with_name("avahi_announce.py")


def test_names_held_by_an_office_pc(lab: Lab) -> None:
    """An office PC already answering for the edge's name when the edge starts (the PC
    was called that before the office moved to spokeshare): its llmnrd answers LLMNR for
    it and its avahi-daemon publishes ``NAME.local`` with the PC's address. The edge,
    restarted, finds both conflicts and leaves the name to the PC on those protocols
    (RFC 4795 §4.1, RFC 6762 §9); the check calls each an error naming the name. The
    PC's daemons stopped after, the edge started again."""
    nyc = lab.office("nyc")
    name = spokes.VIRTUAL_NAME
    pids: list[int] = []
    lab.registry.kill_process(lab.edge_pids.pop("nyc"))
    try:
        pids.append(services.spawn(
            lab.registry, nyc.pc, ["llmnrd", "-H", name, "-i", LAN_IFNAME],
            "llmnrd nyc-pc", lab.logs_dir / "pc-llmnrd.log",
        ))  # fmt: skip
        with running_avahi(lab, nyc.pc) as avahi:
            out = lab.logs_dir / "pc-avahi-announce.log"
            pids.append(services.spawn(
                lab.registry, nyc.pc,
                ["/usr/bin/python3", str(ANNOUNCE), f"{name}.local", nyc.pc_ip],
                "avahi announce nyc-pc", out, env=avahi.env(),
            ))  # fmt: skip
            wait_for(lambda: "established" in out.read_text(), 15, "the PC publishing the name")
            lab.edge_pids["nyc"] = spokes.start_edge(lab, "nyc")
            keys = ("llmnr", "mdns")

            def both_left() -> list[dict[str, str]] | None:
                held = {spokes.names_held(lab, "nyc", p).get(name) for p in keys}
                if held != {"conflict"}:
                    return None
                return run_all(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))[1]

            found = wait_for(both_left, timeout=60, what="the name left to the PC", interval=0.5)
            for protocol in keys:
                f = one(found, f"edge.name.{protocol}", f"{name} is held by another host")
                assert f["level"] == "error" and "rename it" in f["fix"], f
            assert f"avahi-resolve -4 -n {name}.local" in one(found, "edge.name.mdns")["fix"]
            # The PC's answer really is the PC's address (what office PCs get).
            run = lab.exec(nyc.pc, ["avahi-resolve", "-4", "-n", f"{name}.local"],
                           capture_output=True, text=True, timeout=30, env=avahi.env())  # fmt: skip
            assert nyc.pc_ip in run.stdout, run
            for pid in reversed(pids):
                lab.registry.kill_process(pid)
            pids.clear()
    finally:
        for pid in reversed(pids):
            lab.registry.kill_process(pid)
        if "nyc" in lab.edge_pids:
            lab.registry.kill_process(lab.edge_pids.pop("nyc"))
        lab.edge_pids["nyc"] = spokes.start_edge(lab, "nyc")
    wait_for(lambda: spokes.office_connected(lab, "nyc"), timeout=60, what="nyc back")


def test_edge_stopped_clock_not_measured(lab: Lab) -> None:
    """The edge stopped (its status file left behind, with the skew it last measured):
    the check tells no skew it cannot measure now (info, start the edge), and no names
    are asked; the edge started again after."""
    nyc = lab.office("nyc")
    assert "hub_clock" in spokes.edge_status(lab, "nyc")
    lab.registry.kill_process(lab.edge_pids.pop("nyc"))
    try:
        services.wait_for(
            "the edge's ports free",
            lambda: not services.listening(nyc.edge, 445, nyc.edge_ip),
            30,
        )
        _, found = run_all(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))
        f = one(found, "edge.hub.clock")
        assert f["level"] == "info" and "no edge running" in f["message"], f
        assert "systemctl start spokeshare-edge" in f["fix"]
        assert one(found, "edge.name")["level"] == "info"
    finally:
        lab.edge_pids["nyc"] = spokes.start_edge(lab, "nyc")
    wait_for(lambda: spokes.office_connected(lab, "nyc"), timeout=60, what="nyc back")


def test_renewal_failing_while_the_edge_runs(lab: Lab) -> None:
    """The office's certificate re-issued for 100 seconds (``office renew --days``, the
    previous one cut) and the WAN cut once the edge runs on it: the edge's renewal, due
    at two thirds, fails and the edge reports it; the check warns from that report long
    before the dates would. The WAN back after, and a certificate of the usual lifetime
    installed."""
    nyc = lab.office("nyc")
    path = spokes.bundle_path(lab, "nyc")
    lab.registry.kill_process(lab.edge_pids.pop("nyc"))
    cut = False
    try:
        short = lab.deploy_dir / "nyc-short.bundle"
        enrollment.renew_office(lab.deploy_dir, "nyc", short, days=100 / 86400, cut_previous=True)
        os.replace(short, path)
        lab.edge_pids["nyc"] = spokes.start_edge(lab, "nyc")
        lab.wan("nyc", up=False)
        cut = True

        def failing() -> list[dict[str, str]] | None:
            cert = spokes.edge_status(lab, "nyc").get("certificate")
            if not (isinstance(cert, dict) and int(cert.get("failures") or 0) > 0):
                return None
            return run_all(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))[1]

        found = wait_for(failing, timeout=120, what="a failed renewal reported", interval=1.0)
        f = one(found, "edge.bundle.renewal")
        assert f["level"] == "warning" and "certificate renewal failed" in f["fix"], f
        assert "renewal due since" not in f["message"], f  # the report, not the dates
    finally:
        if cut:
            lab.wan("nyc", up=True)
        if "nyc" in lab.edge_pids:
            lab.registry.kill_process(lab.edge_pids.pop("nyc"))
        usual = lab.deploy_dir / "nyc-usual.bundle"
        enrollment.renew_office(lab.deploy_dir, "nyc", usual, cut_previous=True)
        os.replace(usual, path)
        lab.edge_pids["nyc"] = spokes.start_edge(lab, "nyc")
    _, found = run_check(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))
    assert level(found, "edge.bundle.renewal") == "ok"


def test_netbios_name_held_by_an_office_pcs_nmbd(lab: Lab) -> None:
    """An office PC whose own nmbd is already GLOBAL-NFS (its old name) when the edge
    starts: the edge's registration is refused (RFC 1002 §4.2.6, ACT_ERR) and it leaves
    the name to the PC over NetBIOS; the check calls that an error naming the name and
    the fix. nmbd must have finished its own registration first (a broadcast lookup
    answered): before that it neither defends nor answers broadcasts. The PC's nmbd
    stopped after, the edge started again."""
    nyc = lab.office("nyc")
    name = spokes.VIRTUAL_NAME
    lab.registry.kill_process(lab.edge_pids.pop("nyc"))
    conf = nmbd_conf(lab, nyc.pc, nyc.pc_ip, name)
    nmbd = services.spawn(
        lab.registry, nyc.pc,
        ["nmbd", "--foreground", "--debug-stdout", f"--configfile={conf}"],
        "pc-nmbd", lab.logs_dir / "pc-nmbd.log", new_session=False,
    )  # fmt: skip
    edge = 0
    try:
        bcast = f"{nyc.lan_prefix}.255"

        def pc_holds_it() -> bool:
            out = sh(lab, nyc.fs, "nmblookup", "-B", bcast, name).stdout
            return f"{nyc.pc_ip} {name}<00>" in out

        wait_for(pc_holds_it, timeout=30, what="the PC's nmbd registered", interval=0.5)
        # Started as spokes.start_edge does, without waiting for a claim that cannot come.
        edge = lab.spawn(nyc.edge, spokes._cli("edge", "--config", str(edge_conf(lab))),
                         "edge-nyc")  # fmt: skip

        def left() -> list[dict[str, str]] | None:
            if spokes.names_held(lab, "nyc", "netbios").get(f"{name}<00>") != "conflict":
                return None
            return run_all(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))[1]

        found = wait_for(left, timeout=60, what="the name left to the PC's nmbd", interval=0.5)
        f = one(found, "edge.name.netbios", f"{name} is held by another host")
        assert f["level"] == "error" and "rename it" in f["fix"], f
        assert pc_holds_it()  # office PCs still get the PC for that name
    finally:
        lab.registry.kill_process(nmbd)
        if edge:
            lab.registry.kill_process(edge)
        lab.edge_pids["nyc"] = spokes.start_edge(lab, "nyc")
    wait_for(lambda: spokes.office_connected(lab, "nyc"), timeout=60, what="nyc back")
