"""``spokeshare check`` against the real thing (root only, lab): HQ's smbd and cupsd as
the README sets them up, the hub, and office nyc's edge answering its names; then
faults a check must name: a loopback ipp backend, a cupsd that refuses the relayed
Host (an ipp backend on an address cupsd does not listen on), an office bundle others
can read, a hub address nobody answers on, and nmbd holding 137 beside the edge.

One lab for the module; every check is the real command run in the host's namespace.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare import enrollment
from spokeshare.lab import services, spokes
from spokeshare.lab.topology import HQ, HQ_SERVICE_IP, Lab
from spokeshare.lab.wire import LinkSettings
from tests.helpers import wait_for
from tests.lab.building import running_lab

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


def hq_args(lab: Lab, config: Path | None = None) -> list[str]:
    smb_conf = lab.host_dir("hq") / "samba" / "smb.conf"
    args = ["--hub", "--dir", str(lab.deploy_dir), "--smb-conf", str(smb_conf)]
    return args + (["--config", str(config)] if config else [])


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
    assert spokes.VIRTUAL_NAME in found["hub.smb.aliases"]["message"]
    assert level(found, "hub.ca.expiry") == "ok" and level(found, "hub.hub.expiry") == "ok"
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
    for sub in ("private", "lock", "state", "cache", "run", "share"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "smb.conf"
    conf.write_text(
        "\n".join(
            [
                "[global]",
                "  netbios name = HQFS2",
                "  server role = standalone server",
                f"  interfaces = {HQ_SERVICE_IP}/32",
                "  bind interfaces only = yes",
                "  smb ports = 4450",
                "  disable netbios = yes",
                *(f"  {k} directory = {root / k}" for k in ("lock", "state", "cache", "pid")),
                f"  private dir = {root / 'private'}",
                f"  ncalrpc dir = {root / 'run'}",
                f"  log file = {root / 'log.%m'}",
                "  load printers = no",
                "  printcap name = /dev/null",
                "[share]",
                f"  path = {root / 'share'}",
                "",
            ]
        )
    )
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
        args = ["--hub", "--dir", str(lab.deploy_dir), "--config", str(hub_toml)]
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
    assert level(found, "edge.lan") == "ok"
    assert level(found, "edge.lan.netbios") == "ok"
    assert level(found, "edge.lan.port") == "ok"  # the edge's own listeners are not others
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
    lab.wan("nyc", up=False)
    try:

        def withdrawn() -> dict[str, dict[str, str]] | None:
            _, found = run_check(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))
            st = found.get("edge.status")
            return found if st and st["level"] == "error" else None

        found = wait_for(withdrawn, timeout=60, what="names withdrawn", interval=1.0)
        assert "withdrawn" in found["edge.status"]["message"]
        assert level(found, "edge.hub.reach") == "error"
    finally:
        lab.wan("nyc", up=True)
    wait_for(lambda: spokes.office_connected(lab, "nyc"), timeout=60, what="nyc back")


def test_nmbd_beside_the_edge(lab: Lab, tmp_path: Path) -> None:
    """Samba's nmbd on the edge host, as on an office box that ran the old setup: the
    check names it on NetBIOS with the fix (the edge leaves NetBIOS to it)."""
    nyc = lab.office("nyc")
    root = lab.host_dir(nyc.edge) / "oldnmbd"
    for sub in ("private", "lock", "state", "cache", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "smb.conf"
    conf.write_text(
        "\n".join(
            [
                "[global]",
                "  netbios name = OLDBOX",
                "  workgroup = ACME",
                f"  interfaces = {nyc.edge_ip}/24",
                "  bind interfaces only = yes",
                "  local master = no",
                *(f"  {k} directory = {root / k}" for k in ("lock", "state", "cache", "pid")),
                f"  private dir = {root / 'private'}",
                f"  ncalrpc dir = {root / 'run'}",
                f"  log file = {root / 'log.%m'}",
                "",
            ]
        )
    )
    pid = services.spawn(
        lab.registry, nyc.edge,
        ["nmbd", "--foreground", "--debug-stdout", f"--configfile={conf}"],
        "old-nmbd", lab.logs_dir / "old-nmbd.log", new_session=False,
    )  # fmt: skip
    try:

        def nmbd_found() -> dict[str, str] | None:
            _, found = run_check(lab, nyc.edge, "--edge", "--config", str(edge_conf(lab)))
            f = found.get("edge.lan.netbios")
            return f if f and f["level"] == "warning" else None

        f = wait_for(nmbd_found, timeout=40, what="check naming nmbd on 137", interval=0.5)
        assert "nmbd (pid" in f["message"]
        assert "systemctl disable --now nmbd" in f["fix"]
    finally:
        lab.registry.kill_process(pid)
