"""``spokeshare check``: each finding provoked, the decisions as pure functions and the
probes on loopback (a real hub, a real TLS handshake, real testparm); what needs
cupsd, smbd, nmbd and a running edge is in tests/lab/test_check_lab.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from spokeshare import bundle, check, pki
from spokeshare.check import Finding, Level
from spokeshare.lan import coexist
from tests.helpers import Deployment, LoopThread, free_port, make_deployment

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def levels(findings: list[Finding]) -> dict[str, Level]:
    return {f.code: f.level for f in findings}


# -- pure: certificates and the clock ---------------------------------------------------


def test_certificate_valid_near_expiry_expired_and_clock_before_issue() -> None:
    ca = pki.make_ca("t", days=100, now=NOW)
    ok = check.certificate("hub.ca", "CA", ca.cert, NOW, "renew")
    assert [(f.level, f.code) for f in ok] == [(Level.OK, "hub.ca.expiry")]
    near = check.certificate("hub.ca", "CA", ca.cert, NOW + dt.timedelta(days=80), "renew")
    assert [(f.level, f.code) for f in near] == [(Level.WARNING, "hub.ca.expiry")]
    assert "in 20 days" in near[0].message and near[0].fix == "renew"
    gone = check.certificate("hub.ca", "CA", ca.cert, NOW + dt.timedelta(days=101), "renew")
    assert [(f.level, f.code) for f in gone] == [(Level.ERROR, "hub.ca.expiry")]
    early = check.certificate("hub.ca", "CA", ca.cert, NOW - dt.timedelta(hours=1), "renew")
    assert [(f.level, f.code) for f in early] == [(Level.ERROR, "hub.ca.clock")]
    assert "timedatectl" in early[0].fix


def test_exit_status_and_json_shape() -> None:
    ok = Finding(Level.OK, "a", "fine")
    info = Finding(Level.INFO, "b", "note", "do")
    warn = Finding(Level.WARNING, "c", "hm", "fix it")
    err = Finding(Level.ERROR, "d", "bad", "fix it now")
    assert check.exit_status([]) == 0
    assert check.exit_status([ok, info]) == 0
    assert check.exit_status([ok, warn]) == 1
    assert check.exit_status([warn, err, ok]) == 2
    assert err.to_json() == {"level": "error", "code": "d", "message": "bad",
                             "fix": "fix it now"}  # fmt: skip
    assert err.line() == "error   d: bad -> fix it now"
    assert ok.line() == "ok      a: fine"


# -- HQ --------------------------------------------------------------------------------


def test_dial_address() -> None:
    assert check.dial_address("hq.example:7443", None).level == Level.OK
    f = check.dial_address("hq.example:7443", "Connection refused")
    assert f.level == Level.WARNING and "NAT" in f.fix


def test_backend_reachable_and_not() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        rtt, error = check.tcp_connect("127.0.0.1", port)
        assert error is None and rtt is not None
        assert check.backend("smb", "127.0.0.1", port, error).level == Level.OK
    _, error = check.tcp_connect("127.0.0.1", port)
    f = check.backend("ipp", "127.0.0.1", port, error)
    assert f.level == Level.ERROR and f.code == "hub.backend"
    assert "refused" in f.message and "cupsctl --share-printers --remote-any" in f.fix


def test_several_backends_one_down_is_a_warning_all_down_an_error() -> None:
    f = check.backend("smb", "198.18.0.12", 445, "Connection refused", total=3, answering=2)
    assert f.level == Level.WARNING and "2 of its 3 backends answer" in f.message
    assert "[services.smb] backends" in f.fix
    f = check.backend("smb", "198.18.0.12", 445, "Connection refused", total=3, answering=0)
    assert f.level == Level.ERROR and "none of its 3 backends answers" in f.message
    ok = check.backend("smb", "198.18.0.11", 445, None, total=3, answering=2)
    assert ok.level == Level.OK


def test_ipp_loopback_backend_is_an_error() -> None:
    from spokeshare.printing import ipp_relay

    f = check.ipp_loopback(ipp_relay.resolves_loopback("localhost", 631))
    assert f is not None and f.level == Level.ERROR and f.code == "hub.ipp.loopback"
    assert "loopback" in f.message and "cupsctl --share-printers --remote-any" in f.fix
    assert check.ipp_loopback(ipp_relay.resolves_loopback("198.18.0.1", 631)) is None


@pytest.mark.parametrize(
    ("http", "ipp", "printers", "error", "level", "code"),
    [
        (200, 0x0000, 2, None, Level.OK, "hub.ipp.answer"),
        (200, 0x0406, 0, None, Level.WARNING, "hub.ipp.shared"),
        (200, 0x0000, 0, None, Level.WARNING, "hub.ipp.shared"),
        (400, None, 0, None, Level.ERROR, "hub.ipp.answer"),
        (403, None, 0, None, Level.ERROR, "hub.ipp.answer"),
        (500, None, 0, None, Level.ERROR, "hub.ipp.answer"),
        (426, None, 0, None, Level.ERROR, "hub.ipp.answer"),
        (200, 0x0500, 0, None, Level.ERROR, "hub.ipp.answer"),
        (None, None, 0, "timed out", Level.ERROR, "hub.ipp.answer"),
    ],
)
def test_cups_answer(
    http: int | None, ipp: int | None, printers: int, error: str | None, level: Level, code: str
) -> None:
    f = check.cups_answer("198.18.0.1", 631, "198.18.0.1:631", http, ipp, printers, error)
    assert (f.level, f.code) == (level, code)
    if level != Level.OK:
        assert f.fix


def test_printer_uris_on_the_relayed_host() -> None:
    relay = "198.18.0.1:631"
    ok = check.printer_uris(relay, ["ipp://198.18.0.1:631/printers/a"])
    assert ok.level == Level.OK and ok.code == "hub.ipp.uri"
    bad = check.printer_uris(relay, ["ipp://198.18.0.1:631/printers/a", "ipp://hq:631/printers/b"])
    assert bad.level == Level.ERROR and "ipp://hq:631/printers/b" in bad.message


def test_ipp_probe_relay_host_is_an_ip_literal_on_631() -> None:
    assert check.relay_host_for("127.0.0.1", 8631) == "127.0.0.1:631"
    assert check.relay_host_for("::1", 8631) == "[::1]:631"


def test_multichannel_findings() -> None:
    assert check.multichannel("smb", "h", 445, False, None).level == Level.OK
    offered = check.multichannel("smb", "h", 445, True, None)
    assert offered.level == Level.ERROR and "server multi channel support = no" in offered.fix
    silent = check.multichannel("smb", "h", 445, None, "Connection reset")
    assert silent.level == Level.ERROR and silent.code == "hub.smb.negotiate"


def test_smb_negotiate_without_a_server() -> None:
    offered, error = check.smb_negotiate("127.0.0.1", free_port())
    assert offered is None and error
    assert check.multichannel("smb", "127.0.0.1", 1, offered, error).level == Level.ERROR


@pytest.mark.skipif(shutil.which("testparm") is None, reason="testparm (samba) not installed")
def test_netbios_aliases_read_with_testparm(tmp_path: Path) -> None:
    conf = tmp_path / "smb.conf"
    conf.write_text("[global]\n  netbios aliases = global-nfs files-hq\n")
    aliases = check.smb_aliases(conf)
    assert aliases == ["GLOBAL-NFS", "FILES-HQ"]
    assert check.netbios_aliases(aliases, str(conf)).level == Level.OK
    conf.write_text("[global]\n  workgroup = ACME\n")
    none = check.smb_aliases(conf)
    assert none == []
    f = check.netbios_aliases(none, str(conf))
    assert f.level == Level.WARNING and "netbios aliases = GLOBAL-NFS" in f.fix
    assert "setspn" in f.fix
    missing = check.netbios_aliases(check.smb_aliases(tmp_path / "nope.conf"), "nope")
    assert missing.level == Level.INFO


def test_aliases_against_the_names_offices_advertise() -> None:
    """Each virtual name a running office advertises must be one of smbd's own names."""
    advertised = {"GLOBAL-NFS": ["nyc", "bos"], "GLOBAL-ENG": ["nyc"]}
    ok = check.netbios_aliases(["GLOBAL-NFS", "global-eng"], "smb.conf", advertised)
    assert ok.level == Level.OK and "every name the running offices advertise" in ok.message
    f = check.netbios_aliases(["GLOBAL-NFS"], "smb.conf", advertised)
    assert f.level == Level.WARNING
    assert "GLOBAL-ENG (advertised by nyc)" in f.message and "GLOBAL-NFS (" not in f.message
    assert "netbios aliases = GLOBAL-NFS GLOBAL-ENG in [global]" in f.fix
    # no hub status to compare with: smbd's aliases alone decide
    assert check.netbios_aliases(["FILES"], "smb.conf", None).level == Level.OK
    unread = check.netbios_aliases(None, "smb.conf", advertised)
    assert unread.level == Level.INFO and "GLOBAL-NFS GLOBAL-ENG" in unread.fix


@pytest.fixture
def dep(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    t = LoopThread()
    yield t
    t.close()


def _hub_cert(dep: Deployment) -> x509.Certificate:
    return pki.load_cert((dep.dir / "hub.crt").read_bytes())


def test_listen_free_hub_and_other(dep: Deployment, lt: LoopThread) -> None:
    from spokeshare.tunnel.hub import Hub

    port = dep.hub_port
    state, _, _ = check.listen_probe("127.0.0.1", port, _hub_cert(dep))
    assert state == "free"
    assert check.listen("127.0.0.1", port, state, "", None).level == Level.WARNING
    hub = Hub(dep.hub_config(), dep.dir)
    lt.run(hub.start())
    try:
        state, _, error = check.listen_probe("127.0.0.1", port, _hub_cert(dep))
        assert (state, error) == ("hub", None)
        assert check.listen("127.0.0.1", port, state, "", None).level == Level.OK
    finally:
        lt.run(hub.close())
    with socket.socket() as other:
        # the probe's connection to the hub may linger in TIME_WAIT on this port
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        state, holder, error = check.listen_probe("127.0.0.1", port, _hub_cert(dep))
        assert state == "other" and error
        f = check.listen("127.0.0.1", port, state, holder, error)
        assert f.level == Level.ERROR and f.code == "hub.listen"
    state, _, error = check.listen_probe("198.18.255.254", port, _hub_cert(dep))
    assert state == "bad" and error
    assert check.listen("198.18.255.254", port, state, "", error).level == Level.ERROR


def test_listen_on_every_address_while_the_port_is_held_on_one(dep: Deployment) -> None:
    """hub.toml says 0.0.0.0:PORT, the port is held on 127.0.0.2 only (as by a hub with
    a listen of its own): who holds it on which address, not "another process"."""
    port = free_port("127.0.0.2")
    with socket.socket() as other:
        other.bind(("127.0.0.2", port))
        other.listen()
        state, holder, _ = check.listen_probe("0.0.0.0", port, _hub_cert(dep))
        assert state == "elsewhere", (state, holder)
        assert holder.endswith(f" on 127.0.0.2:{port}"), holder
        f = check.listen("0.0.0.0", port, state, holder, None)
        assert f.level == Level.WARNING and "--config" in f.fix


def test_check_hub_tries_every_backend_of_a_service(dep: Deployment) -> None:
    """One of two smb backends answers: a warning for the other; both down: errors."""
    now = dt.datetime.now(dt.UTC)
    with socket.socket() as srv:
        srv.bind(("127.0.0.2", 0))
        srv.listen()
        up = f"127.0.0.2:{srv.getsockname()[1]}"
        down = f"127.0.0.3:{free_port('127.0.0.3')}"
        dep.set_backends("smb", [down, up])
        found = [
            f for f in check.check_hub(dep.dir, dep.dir / "hub.toml", Path("/x"), now)
            if f.code == "hub.backend" and "service smb" in f.message
        ]  # fmt: skip
        assert [(f.level, up in f.message, down in f.message) for f in found] == [
            (Level.WARNING, False, True), (Level.OK, True, False)
        ]  # fmt: skip
    found = [
        f for f in check.check_hub(dep.dir, dep.dir / "hub.toml", Path("/x"), now)
        if f.code == "hub.backend" and "service smb" in f.message
    ]  # fmt: skip
    assert [f.level for f in found] == [Level.ERROR, Level.ERROR]


def test_check_hub_on_loopback_deployment(dep: Deployment) -> None:
    """The whole HQ check on a deployment whose backends are down: the certificates
    are fine, the backends errors, the hub not running a warning."""
    dep.set_backend("smb", free_port())
    now = dt.datetime.now(dt.UTC)
    found = levels(check.check_hub(dep.dir, dep.dir / "hub.toml", Path("/nonexistent"), now))
    assert found["hub.ca.expiry"] == Level.OK
    assert found["hub.hub.expiry"] == Level.OK
    assert found["hub.chain"] == Level.OK
    assert found["hub.listen"] == Level.WARNING
    assert found["hub.address"] == Level.WARNING  # offices dial it; nothing answers
    assert found["hub.backend"] == Level.ERROR
    assert found["hub.smb.aliases"] == Level.INFO
    later = levels(
        check.check_hub(dep.dir, dep.dir / "hub.toml", Path("/x"), now + dt.timedelta(days=3700))
    )
    assert later["hub.ca.expiry"] == Level.ERROR
    earlier = levels(check.check_hub(dep.dir, dep.dir / "hub.toml", Path("/x"), NOW))
    assert earlier["hub.ca.clock"] == Level.ERROR  # this host's clock before the CA's issue


# -- the office ------------------------------------------------------------------------


def test_bundle_file_mode_and_owner(dep: Deployment) -> None:
    path = dep.bundles["nyc"]
    st = path.stat()
    me = check.EdgeUser("me", st.st_uid, "this user")
    ok = check.bundle_file(path, st.st_mode & 0o7777, st.st_uid, "me", me)
    assert levels(ok) == {"edge.bundle.mode": Level.OK}
    edge = check.EdgeUser("spokeshare", 1001, "User= in spokeshare-edge.service")
    bad = check.bundle_file(path, 0o644, 1000, "alice", edge)
    assert levels(bad) == {"edge.bundle.mode": Level.ERROR, "edge.bundle.owner": Level.ERROR}
    assert bad[0].fix == f"chmod 600 {path}"
    assert bad[1].fix == f"chown spokeshare: {path}"
    assert "belongs to alice, not to spokeshare" in bad[1].message
    root = check.EdgeUser("root", 0, "no unit")
    assert check.bundle_file(path, 0o600, 1000, "alice", root)[0].level == Level.OK  # root reads it


EDGE_UNIT_TEXT = """[Unit]
Description=spokeshare edge

[Service]
User=spokeshare
Group=spokeshare
ExecStart=/usr/bin/spokeshare edge --config /etc/spokeshare/edge.toml
"""


def _uids(**known: int) -> Callable[[str], int]:
    """A passwd lookup knowing only ``known`` (name=uid): KeyError for anyone else."""

    def uid_of(name: str) -> int:
        return known[name]

    return uid_of


def test_edge_user_from_the_unit_then_the_service_user_then_root(tmp_path: Path) -> None:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    lib.mkdir()
    etc.mkdir()
    dirs = [etc, lib]
    # No unit: the package's user if it exists, else root.
    assert check.edge_user(dirs, _uids(spokeshare=4242)) == check.EdgeUser(
        "spokeshare", 4242, "the spokeshare user"
    )
    assert check.edge_user(dirs, _uids()).uid == 0
    # The installed unit's User= wins.
    (lib / "spokeshare-edge.service").write_text(
        EDGE_UNIT_TEXT.replace("User=spokeshare", "User=edge")
    )
    got = check.edge_user(dirs, _uids(spokeshare=4242, edge=4343))
    assert (got.name, got.uid) == ("edge", 4343)
    assert got.source == f"User= in {lib / 'spokeshare-edge.service'}"
    # An admin's drop-in overrides it; a unit without User= runs as root.
    dropin = etc / "spokeshare-edge.service.d"
    dropin.mkdir()
    (dropin / "override.conf").write_text("[Service]\nUser=office\n")
    assert check.edge_user(dirs, _uids(edge=4343, office=4444)).name == "office"
    (dropin / "override.conf").write_text("[Service]\nUser=\n")
    assert check.edge_user(dirs, _uids(spokeshare=4242, edge=4343)).uid == 0


def test_check_edge_as_root_judges_the_bundle_for_the_units_user(
    dep: Deployment, tmp_path: Path
) -> None:
    """The packaged edge runs as User=spokeshare: a bundle root copied in (0600, root's)
    is an error for it, though root itself could read it, and the fix names the user."""
    path = dep.bundles["nyc"]
    conf = _edge_toml(tmp_path, path, "127.0.0.1")
    units = tmp_path / "units"
    units.mkdir()
    (units / "spokeshare-edge.service").write_text(EDGE_UNIT_TEXT)
    owner = path.stat().st_uid  # root's, as copied in by root (this test's user otherwise)
    edge = check.edge_user([units], _uids(spokeshare=owner + 4242))
    found = check.check_edge(conf, None, NOW, edge)
    owned = next(f for f in found if f.code == "edge.bundle.owner")
    assert owned.level == Level.ERROR
    assert owned.fix == f"chown spokeshare: {path}"
    assert "the user the edge runs as (User= in " in owned.message
    assert check.exit_status(found) == 2
    # Owned by the unit's user: fine.
    same = check.edge_user([units], _uids(spokeshare=owner))
    assert levels(check.check_edge(conf, None, NOW, same))["edge.bundle.mode"] == Level.OK


def test_chain_to_the_bundles_ca(dep: Deployment, tmp_path: Path) -> None:
    b = bundle.read(dep.bundles["nyc"])
    ca = pki.load_cert(b.ca_pem)
    assert check.chain(b.cert, ca, "office certificate", "edge.bundle.chain").level == Level.OK
    stranger = pki.make_ca("another deployment")
    f = check.chain(b.cert, stranger.cert, "office certificate", "edge.bundle.chain")
    assert f.level == Level.ERROR and "not issued" in f.message


def test_hub_certificate_judged_against_the_bundle(dep: Deployment) -> None:
    b = bundle.read(dep.bundles["nyc"])
    ca_cert = pki.load_cert(b.ca_pem)
    der = _hub_cert(dep).public_bytes(Encoding.DER)
    now = dt.datetime.now(dt.UTC)
    assert {f.level for f in check.hub_certificate("h:1", der, ca_cert, "hub.test", now)} == {
        Level.OK
    }
    wrong = levels(check.hub_certificate("h:1", der, ca_cert, "other.test", now))
    assert wrong["edge.hub.name"] == Level.ERROR
    skew = levels(
        check.hub_certificate("h:1", der, ca_cert, "hub.test", now - dt.timedelta(days=1))
    )
    assert skew["edge.hub.cert.clock"] == Level.ERROR
    stranger = pki.make_ca("another deployment")
    foreign = check.hub_certificate("h:1", der, stranger.cert, "hub.test", now)
    assert levels(foreign) == {"edge.hub.cert": Level.ERROR}
    assert "another deployment" in foreign[0].message
    assert "another CA of the same name" not in foreign[0].message
    assert "spokeshare office add OFFICE" in foreign[0].fix
    # Two deployments made with one hub name: their CAs share a name, not a key.
    name = ca_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    namesake = pki.make_ca(str(name))
    same = check.hub_certificate("h:1", der, namesake.cert, "hub.test", now)
    assert "another CA of the same name" in same[0].message
    assert levels(check.hub_certificate("h:1", None, ca_cert, "hub.test", now)) == {
        "edge.hub.cert": Level.ERROR
    }


def test_hub_alpn() -> None:
    from spokeshare.tunnel.wire import ALPN, ALPN_REUSE

    assert check.hub_alpn("h:7443", ALPN).level == Level.OK
    # the edge offers reuse first (docs/protocol.md, "Sequential reuse"): a hub agrees on it
    assert check.hub_alpn("h:7443", ALPN_REUSE).level == Level.OK
    none = check.hub_alpn("h:7443", None)
    assert none.level == Level.ERROR and none.code == "edge.hub.alpn"
    assert "agreed on no ALPN" in none.message and ALPN in none.message
    assert "ss -ltnp 'sport = :7443'" in none.fix
    other = check.hub_alpn("[::1]:7443", "spokeshare/2")
    assert other.level == Level.ERROR and "'spokeshare/2'" in other.message
    assert "sport = :7443" in other.fix


def test_netbios_session_listeners_are_the_edges_ports(dep: Deployment, tmp_path: Path) -> None:
    """139 on every address carrying a name (the edge answers NetBIOS session requests
    there), none with NetBIOS off."""
    from spokeshare.config import load_edge

    conf = tmp_path / "edge.toml"
    conf.write_text(
        f'[edge]\nbundle = "{dep.bundles["nyc"]}"\n[lan]\naddress = "198.18.1.1"\n'
        '[[names]]\nname = "GLOBAL-NFS"\nservice = "smb"\n'
        '[[names]]\nname = "FILES-B"\nservice = "smb"\naddress = "198.18.1.2"\n'
    )
    cfg = load_edge(conf, {})
    assert check._session_listeners(cfg) == {
        ("198.18.1.1", 139): "nbss",
        ("198.18.1.2", 139): "nbss",
    }
    conf.write_text(conf.read_text() + "[netbios]\nenabled = false\n")
    assert check._session_listeners(load_edge(conf, {})) == {}


def _edge_toml(tmp_path: Path, b: Path, address: str, interface: str = "") -> Path:
    """edge.toml without virtual names and LAN listeners (nothing to bind here)."""
    conf = tmp_path / "edge.toml"
    lines = ["names = []", "[edge]", f'bundle = "{b}"', "[lan]", f'address = "{address}"']
    if interface:
        lines.append(f'interface = "{interface}"')
    lines += ["[ports]", "smb = 0", "ipp = 0", "lpd = 0", "raw = 0", ""]
    conf.write_text("\n".join(lines))
    return conf


def test_check_edge_hub_reachable_with_rtt(dep: Deployment, lt: LoopThread, tmp_path: Path) -> None:
    from spokeshare.tunnel.hub import Hub

    conf = _edge_toml(tmp_path, dep.bundles["nyc"], "127.0.0.1")
    now = dt.datetime.now(dt.UTC)
    down = check.check_edge(conf, None, now)
    assert levels(down)["edge.hub.reach"] == Level.ERROR
    hub = Hub(dep.hub_config(), dep.dir)
    lt.run(hub.start())
    try:
        found = check.check_edge(conf, None, now)
    finally:
        lt.run(hub.close())
    got = levels(found)
    assert got["edge.bundle"] == Level.OK
    assert got["edge.bundle.mode"] == Level.OK
    assert got["edge.bundle.chain"] == Level.OK
    assert got["edge.bundle.cert.expiry"] == Level.OK
    assert got["edge.hub.reach"] == Level.OK
    assert got["edge.hub.cert"] == Level.OK
    assert got["edge.lan"] == Level.OK  # 127.0.0.1 is on lo
    reach = next(f for f in found if f.code == "edge.hub.reach")
    assert "TLS 1.3" in reach.message and " ms" in reach.message
    assert got["edge.name"] == Level.INFO  # no edge running here


def test_check_edge_bundle_faults(dep: Deployment, tmp_path: Path) -> None:
    path = dep.bundles["nyc"]
    conf = _edge_toml(tmp_path, path, "127.0.0.1")
    path.chmod(0o644)
    got = levels(check.check_edge(conf, None, NOW))
    assert got["edge.bundle.mode"] == Level.ERROR
    path.chmod(0o600)
    path.write_text(path.read_text().replace("[pem]", "[pem-broken]"))
    path.chmod(0o600)
    corrupt = check.check_edge(conf, None, NOW)
    assert levels(corrupt)["edge.bundle"] == Level.ERROR
    missing = check.check_edge(conf, tmp_path / "none.bundle", NOW)
    assert levels(missing) == {"edge.bundle": Level.ERROR}


def test_check_edge_expired_office_certificate(dep: Deployment, tmp_path: Path) -> None:
    conf = _edge_toml(tmp_path, dep.bundles["nyc"], "127.0.0.1")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=900)
    got = levels(check.check_edge(conf, None, later))
    assert got["edge.bundle.cert.expiry"] == Level.ERROR


def test_lan_interface_and_address() -> None:
    assert check.lan("127.0.0.1", "", "lo").level == Level.OK
    assert check.lan("127.0.0.1", "eth9", "lo").level == Level.ERROR
    missing = check.lan("198.18.1.1", "", None)
    assert missing.level == Level.ERROR and "ip addr add 198.18.1.1/24" in missing.fix
    assert check.lan("0.0.0.0", "", None).level == Level.ERROR


def test_lan_address_absent_from_this_host(dep: Deployment, tmp_path: Path) -> None:
    conf = _edge_toml(tmp_path, dep.bundles["nyc"], "198.18.255.253")
    got = levels(check.check_edge(conf, None, NOW))
    assert got["edge.lan"] == Level.ERROR


def test_coexisting_daemon_and_port_holder() -> None:
    line = coexist.describe("netbios", [coexist.Owner(42, "nmbd")], 137)
    f = check.coexisting("netbios", line)
    assert f.level == Level.WARNING and "nmbd (pid 42)" in f.message
    assert f.fix.startswith("stop it (systemctl disable --now nmbd)")
    assert check.coexisting("netbios", None).level == Level.OK
    held = check.port_holder("198.18.1.1", 445, "smbd (pid 7)")
    assert held.level == Level.ERROR and "systemctl disable --now smbd" in held.fix
    free = check.port_holder("198.18.1.1", 445, None)
    assert free.level == Level.OK and "free for the edge" in free.message
    ours = check.port_holder("198.18.1.1", 445, None, edge_holds=True)
    assert ours.level == Level.OK and "held by the running edge" in ours.message


def test_name_answer() -> None:
    assert check.name_answer("llmnr", "X", "198.18.1.1", ["198.18.1.1"], None).level == Level.OK
    other = check.name_answer("llmnr", "X", "198.18.1.1", ["198.18.1.9"], None)
    assert other.level == Level.ERROR and "198.18.1.9" in other.message
    silent = check.name_answer("netbios", "X", "198.18.1.1", None, "no answer within 3 s")
    assert silent.level == Level.ERROR and silent.code == "edge.name.netbios"


def test_name_query_unanswered_on_loopback() -> None:
    """Nobody answers LLMNR on loopback's 5355 here: the probe says so in time."""
    found, error = check.dns_query("127.0.0.1", free_port(), "global-nfs")
    assert found is None and error


def test_served_from_the_edge_status() -> None:
    names = ["GLOBAL-NFS"]
    both = {"netbios": True, "llmnr": True}
    assert levels(check.served(None, names, both)) == {
        "edge.name.netbios": Level.OK,
        "edge.name.llmnr": Level.OK,
    }
    assert "nmblookup GLOBAL-NFS" in check.served(None, names, {"netbios": True})[0].fix
    gone = check.served(None, names, {"netbios": False})
    assert levels(gone) == {"edge.name.netbios": Level.ERROR}
    withdrawn = levels(check.served({"lan": {"netbios": "ok"}, "withdrawn": True}, names, {}))
    assert withdrawn == {"edge.status": Level.ERROR}
    why = "nmbd (pid 9) already serves netbios on port 137 of this host: stop it"
    degraded = levels(check.served({"lan": {"netbios": why}}, names, {"netbios": False}))
    assert degraded == {"edge.status.netbios": Level.WARNING}


def test_names_another_host_holds() -> None:
    """A name the running edge reports in conflict (lan-status.json's ``names``, as
    EdgeDaemon.names_status writes it) is an error of its protocol, naming the name;
    names it holds, and states it has not settled on, are not."""
    status: dict[str, object] = {
        "lan": {"llmnr": "ok", "mdns": "ok"},
        "names": {
            "llmnr": {"GLOBAL-NFS": "conflict", "GLOBAL-ENG": "answering"},
            "mdns": {"GLOBAL-NFS": "conflict", "GLOBAL-ENG": "published"},
            "netbios": {
                "GLOBAL-ENG<00>": "registering",
                "GLOBAL-NFS<00>": "conflict",
                "GLOBAL-NFS<20>": "conflict",
            },
        },
    }
    found = check.served(status, ["GLOBAL-NFS", "GLOBAL-ENG"], {"llmnr": True})
    errors = [f for f in found if f.level == Level.ERROR]
    assert [(f.code, "GLOBAL-NFS is held by another host" in f.message) for f in errors] == [
        ("edge.name.llmnr", True),
        ("edge.name.mdns", True),
        ("edge.name.netbios", True),
    ]
    assert "avahi-resolve -4 -n GLOBAL-NFS.local" in errors[1].fix
    assert "(GLOBAL-NFS<00>, GLOBAL-NFS<20>)" in errors[2].message
    assert "nmblookup GLOBAL-NFS from" in errors[2].fix
    assert check.in_conflict(status, "mdns") == ["GLOBAL-NFS"]
    assert check.in_conflict({"names": {"mdns": "bad"}}, "mdns") == []
    assert check.in_conflict(None, "llmnr") == []


# -- the command -----------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spokeshare", "check", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_cli_check_json_and_exit_status(dep: Deployment, tmp_path: Path) -> None:
    dep.set_backend("smb", free_port())
    run = _cli("--dir", str(dep.dir), "--json", "--smb-conf", "/nonexistent")
    assert run.returncode == 2, run.stderr
    found = json.loads(run.stdout)
    assert {"level", "code", "message", "fix"} <= set(found[0])
    assert any(f["code"] == "hub.backend" and f["level"] == "error" for f in found)
    text = _cli("--hub", "--dir", str(dep.dir), "--smb-conf", "/nonexistent")
    assert text.returncode == 2
    assert any(line.startswith("error   hub.backend:") for line in text.stdout.splitlines())
    conf = _edge_toml(tmp_path, dep.bundles["nyc"], "127.0.0.1")
    edge = _cli("--config", str(conf), "--json")
    assert edge.returncode == 2  # the hub is not running
    assert any(f["code"] == "edge.hub.reach" for f in json.loads(edge.stdout))
    nothing = _cli("--dir", str(tmp_path / "empty"))
    assert nothing.returncode == 2 and "give --hub or --edge" in nothing.stderr


# -- clock skew against the hub (lan-status.json's hub_clock) ------------------------------


def _clock(skew_ms: int, at: dt.datetime, rtt_ms: float = 20.0) -> dict[str, object]:
    """A status file's hub_clock, as Edge.hub_clock_status writes it."""
    when = at.isoformat(timespec="seconds")
    return {"hub_clock": {"skew_ms": skew_ms, "rtt_ms": rtt_ms, "measured_at": when}}


@pytest.mark.parametrize(
    ("skew_ms", "level"),
    [
        (0, Level.OK),
        (-60_000, Level.OK),  # exactly a minute: not yet a warning
        (60_001, Level.WARNING),
        (-90_000, Level.WARNING),
        (300_000, Level.WARNING),  # Kerberos's 5 minutes, not beyond
        (300_001, Level.ERROR),
        (-3_600_000, Level.ERROR),
    ],
)
def test_hub_clock_thresholds(skew_ms: int, level: Level) -> None:
    got = check.hub_clock(_clock(skew_ms, NOW - dt.timedelta(seconds=4)), NOW)
    assert got.code == "edge.hub.clock" and got.level is level
    side = "ahead of" if skew_ms >= 0 else "behind"
    assert f"{abs(skew_ms) / 1000:.1f} s {side}" in got.message
    assert "within 0.010 s" in got.message
    if level is not Level.OK:
        assert "timedatectl set-ntp true" in got.fix and "chrony" in got.fix


@pytest.mark.parametrize(
    "status",
    [
        None,  # no status file: the edge never ran here
        {"up": True},  # an edge older than the measurement
        {"hub_clock": None},  # connected to no hub yet, or to one that sends no time
        _clock(600_000, NOW - check.SKEW_STALE - dt.timedelta(seconds=1)),  # stale
        _clock(600_000, NOW + check.SKEW_STALE + dt.timedelta(seconds=1)),  # from ahead
        {"hub_clock": {"skew_ms": "1", "rtt_ms": 1, "measured_at": NOW.isoformat()}},
        {"hub_clock": {"skew_ms": 1, "rtt_ms": 1, "measured_at": "yesterday"}},
        {"hub_clock": {"skew_ms": 1, "rtt_ms": 1, "measured_at": "2026-11-30T12:00:00"}},
    ],
)
def test_hub_clock_cannot_tell(status: dict[str, object] | None) -> None:
    got = check.hub_clock(status, NOW)
    assert got.level is Level.INFO and got.code == "edge.hub.clock"
    assert "systemctl start spokeshare-edge" in got.fix and "date -u" in got.fix


def test_hub_clock_of_a_stopped_edge() -> None:
    """The edge's status file outlives it: a fresh measurement of 10 minutes off, left by
    an edge that is no longer running, is no verdict on the clocks now."""
    left = _clock(600_000, NOW - dt.timedelta(seconds=4))
    assert check.hub_clock(left, NOW).level is Level.ERROR
    got = check.hub_clock(left, NOW, running=False)
    assert got.level is Level.INFO and "no edge running" in got.message
    assert "systemctl start spokeshare-edge" in got.fix


def test_check_edge_one_hub_of_two_down_is_a_warning_both_down_an_error(
    tmp_path: Path, lt: LoopThread
) -> None:
    from spokeshare.tunnel.hub import Hub
    from tests.tunnel.multihub import make_hubs

    hubs = make_hubs(tmp_path / "dep", 2, {"smb": 445})
    conf = _edge_toml(tmp_path, hubs.dep.bundles["nyc"], "127.0.0.1")
    now = dt.datetime.now(dt.UTC)

    def reach() -> dict[str, Level]:
        found = check.check_edge(conf, None, now)
        out = {}
        for f in found:
            if f.code == "edge.hub.reach":
                out[f.message.split()[1].rstrip(":")] = f.level
        return out

    first, second = (f"{h}:{p}" for h, p in hubs.addresses)
    assert reach() == {first: Level.ERROR, second: Level.ERROR}
    hub = Hub(hubs.config(1), hubs.dir)
    lt.run(hub.start())
    try:
        assert reach() == {first: Level.WARNING, second: Level.OK}
    finally:
        lt.run(hub.close())


def test_unit_sandbox_read_with_its_drop_ins(tmp_path: Path) -> None:
    """The sandbox of the unit the package installs (etc/systemd), and an admin's
    drop-in adding a writable path."""
    units = tmp_path / "units"
    units.mkdir()
    shipped = Path(__file__).resolve().parent.parent / "etc" / "systemd" / check.EDGE_UNIT
    (units / check.EDGE_UNIT).write_text(shipped.read_text())
    edge = check.edge_user([units], _uids(spokeshare=4242), lambda _: (4242, 27))
    assert edge.gids == (4242, 27)
    assert edge.sandbox["ProtectHome"] == "yes" and edge.sandbox["ProtectSystem"] == "strict"
    assert edge.sandbox["ReadWritePaths"].split() == ["/var/lib/spokeshare/edge", "/etc/spokeshare"]
    dropin = units / "spokeshare-edge.service.d"
    dropin.mkdir()
    (dropin / "paths.conf").write_text("[Service]\nReadWritePaths=/srv/office\n")
    more = check.edge_user([units], _uids(spokeshare=4242), lambda _: ())
    assert more.sandbox["ReadWritePaths"].split()[-1] == "/srv/office"  # added, not replaced


def _dir(mode: int, uid: int = 0, gid: int = 0) -> os.stat_result:
    return os.stat_result((0o040000 | mode, 0, 0, 2, uid, gid, 0, 0, 0, 0))


def test_bundle_reach_under_the_units_sandbox_and_permissions() -> None:
    """Where the packaged edge (User=spokeshare, ProtectHome, PrivateTmp,
    ProtectSystem=strict) can read its bundle and rewrite it when it renews."""
    box = {"ProtectHome": "yes", "PrivateTmp": "yes", "ProtectSystem": "strict",
           "ReadWritePaths": "/var/lib/spokeshare/edge /etc/spokeshare"}  # fmt: skip
    edge = check.EdgeUser("spokeshare", 4242, "User= in unit", (4242,), box)

    def open_dirs(_: Path) -> os.stat_result:
        return _dir(0o755)

    def reach(path: str, stat: Callable[[Path], os.stat_result] = open_dirs) -> check.Finding:
        (finding,) = check.bundle_reach(Path(path), edge, traverse=True, stat=stat)
        return finding

    assert reach("/etc/spokeshare/nyc.bundle").level == Level.OK
    hidden = reach("/root/nyc.bundle")
    assert hidden.level == Level.ERROR and "under /root" in hidden.message
    assert "install -o spokeshare -m 600" in hidden.fix
    assert reach("/tmp/nyc.bundle").level == Level.ERROR  # PrivateTmp: another /tmp
    read_only = reach("/opt/office/nyc.bundle")
    assert read_only.level == Level.WARNING and "cannot renew" in read_only.message
    # a directory on the way the edge's user may not search
    closed = {Path("/etc/spokeshare"): _dir(0o700)}
    blocked = reach("/etc/spokeshare/nyc.bundle", lambda d: closed.get(d, _dir(0o755)))
    assert blocked.level == Level.ERROR and "/etc/spokeshare is mode 700" in blocked.message
    group = {Path("/etc/spokeshare"): _dir(0o750, gid=4242)}
    assert reach("/etc/spokeshare/nyc.bundle", lambda d: group.get(d, _dir(0o755))).level == (
        Level.OK
    )
    own = {Path("/etc/spokeshare"): _dir(0o700, uid=4242)}
    assert reach("/etc/spokeshare/nyc.bundle", lambda d: own.get(d, _dir(0o755))).level == (
        Level.OK
    )
    # without a unit, and checked as the edge's own user: nothing to judge but the file
    bare = check.EdgeUser("office", 1000, "this user")
    (alone,) = check.bundle_reach(Path("/home/office/nyc.bundle"), bare, traverse=False)
    assert alone.level == Level.OK
