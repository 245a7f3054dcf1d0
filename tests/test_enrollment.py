"""Enrollment at HQ through the real command line: init, office add/list/revoke."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from spokeshare import __version__, bundle, enrollment, pki
from spokeshare.errors import EnrollmentError
from spokeshare.printing import ipp_relay
from tests.helpers import Stack, wait_for


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spokeshare", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_init_add_list(tmp_path: Path) -> None:
    d = tmp_path / "dep"
    res = cli(
        "init",
        "--dir",
        str(d),
        "--hub-name",
        "hq.example",
        "--address",
        "203.0.113.7:7443",
        "--address",
        "hq.example:7443",
        "--service",
        "smb=10.0.0.5:445",
    )
    assert res.returncode == 0, res.stderr
    assert mode(d) == 0o700
    assert mode(d / "ca.key") == 0o600 and mode(d / "hub.key") == 0o600
    hub_cert = pki.load_cert((d / "hub.crt").read_bytes())
    san = hub_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "hq.example" in san.get_values_for_type(x509.DNSName)
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["203.0.113.7"]
    assert 'backend = "10.0.0.5:445"' in (d / "hub.toml").read_text()
    # ipp defaults to this host's own LAN address: never loopback (see printing.ipp_relay)
    default_ipp = ipp_relay.default_backend()
    assert default_ipp is not None and not ipp_relay.is_loopback(default_ipp.split(":")[0])
    assert f'backend = "{default_ipp}"' in (d / "hub.toml").read_text()

    again = cli("init", "--dir", str(d), "--hub-name", "x", "--address", "x:1")
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr

    res = cli("office", "add", "NYC", "--dir", str(d), "--services", "smb", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "spokeshare edge --bundle" in res.stdout
    assert "systemctl enable --now spokeshare-edge" in res.stdout
    b = tmp_path / "nyc.bundle"
    assert mode(b) == 0o600
    loaded = bundle.read(b)
    assert loaded.office == "nyc" and loaded.services == ("smb",)
    assert loaded.hub_addresses == (("203.0.113.7", 7443), ("hq.example", 7443))
    assert pki.office_of(loaded.cert) == "nyc"
    assert "PRIVATE KEY" not in repr(loaded)

    for bad, reason in [
        ("nyc", "already exists"),
        ("-nyc", "not a DNS label"),
        ("a" * 64, "not a DNS label"),
        ("new_york", "not a DNS label"),
    ]:
        res = cli("office", "add", "--dir", str(d), "--out", str(tmp_path / "x.bundle"), "--", bad)
        assert res.returncode == 2 and reason in res.stderr, (bad, res.stderr)
    res = cli(
        "office",
        "add",
        "sf",
        "--dir",
        str(d),
        "--services",
        "smb,fax",
        "--out",
        str(tmp_path / "sf.bundle"),
    )
    assert res.returncode == 2 and "unknown service(s) fax" in res.stderr

    res = cli("office", "list", "--dir", str(d), "--json")
    data = json.loads(res.stdout)
    assert data["hub_running"] is False
    assert [o["office"] for o in data["offices"]] == ["nyc"]

    res = cli("office", "renew", "nyc", "--dir", str(d), "--out", str(tmp_path / "nyc2.bundle"))
    assert res.returncode == 0, res.stderr
    assert "previous certificate keeps working" in res.stdout
    reg = json.loads((d / "offices.json").read_text())["offices"]["nyc"]
    assert reg["previous"] == [format(loaded.cert.serial_number, "x")]
    assert int(reg["serial"], 16) == bundle.read(tmp_path / "nyc2.bundle").cert.serial_number
    res = cli("office", "revoke", "nyc", "--dir", str(d))
    assert res.returncode == 0
    res = cli("office", "list", "--dir", str(d))
    assert "nyc" in res.stdout and " yes " in res.stdout
    assert cli("office", "revoke", "nyc", "--dir", str(d)).returncode == 2
    assert cli("office", "revoke", "paris", "--dir", str(d)).returncode == 2
    renew = cli("office", "renew", "nyc", "--dir", str(d), "--out", str(tmp_path / "n3.bundle"))
    assert renew.returncode == 2 and "revoked" in renew.stderr


def test_init_refuses_a_loopback_ipp_backend(tmp_path: Path) -> None:
    for backend in ("127.0.0.1:631", "localhost:631", "[::1]:631"):
        res = cli("init", "--dir", str(tmp_path / "d"), "--hub-name", "hq", "--address",
                  "hq:7443", "--service", f"ipp={backend}")  # fmt: skip
        assert res.returncode == 2, res.stderr
        (line,) = res.stderr.strip().splitlines()
        assert "is loopback" in line and "cupsctl --share-printers --remote-any" in line
        assert not (tmp_path / "d").exists()


def test_hub_start_refuses_a_loopback_ipp_backend(tmp_path: Path) -> None:
    d = tmp_path / "dep"
    enrollment.init(d, "hq", ["127.0.0.1:7443"], {"ipp": "localhost:631"},
                    listen=["127.0.0.1:7443"])  # fmt: skip
    res = cli("hub", "--dir", str(d))
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "services.ipp.backend" in line and "is loopback" in line and "cupsctl" in line


def test_office_printers_add_set_list(tmp_path: Path) -> None:
    d = tmp_path / "dep"
    assert cli("init", "--dir", str(d), "--hub-name", "hq", "--address", "hq:7443",
               "--service", "ipp=198.18.0.1:631").returncode == 0  # fmt: skip
    res = cli("office", "add", "nyc", "--dir", str(d), "--printers", "hq-laser,HQ-Color",
              cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "printers HQ-Color,hq-laser" in res.stdout
    assert enrollment.load_registry(d)["nyc"].printers == ("HQ-Color", "hq-laser")
    assert cli("office", "add", "sf", "--dir", str(d), cwd=tmp_path).returncode == 0
    assert enrollment.load_registry(d)["sf"].printers is None  # all by default

    listed = json.loads(cli("office", "list", "--dir", str(d), "--json").stdout)
    assert {o["office"]: o["printers"] for o in listed["offices"]} == {
        "nyc": ["HQ-Color", "hq-laser"],
        "sf": None,
    }
    assert "HQ-Color,hq-laser" in cli("office", "list", "--dir", str(d)).stdout

    assert cli("office", "set", "sf", "--dir", str(d), "--printers", "hq-laser").returncode == 0
    assert enrollment.load_registry(d)["sf"].printers == ("hq-laser",)
    assert cli("office", "set", "nyc", "--dir", str(d), "--printers", "all").returncode == 0
    assert enrollment.load_registry(d)["nyc"].printers is None
    bad = cli("office", "set", "nyc", "--dir", str(d), "--printers", "a b")
    assert bad.returncode == 2 and "not a CUPS printer name" in bad.stderr
    assert cli("office", "set", "paris", "--dir", str(d), "--printers", "x").returncode == 2
    # renewing and revoking keep the list
    cli("office", "renew", "sf", "--dir", str(d), "--out", str(tmp_path / "sf2.bundle"))
    assert enrollment.load_registry(d)["sf"].printers == ("hq-laser",)


def test_office_list_shows_live_state(stack: Stack) -> None:
    d = stack.dep.dir

    def listed() -> dict[str, object] | None:
        data = json.loads(cli("office", "list", "--dir", str(d), "--json").stdout)
        nyc = data["offices"][0]
        return nyc if data["hub_running"] and nyc["rtt_ms"] is not None else None

    nyc = wait_for(listed, what="hub status with an RTT")
    assert nyc["connected"] is True
    assert isinstance(nyc["rtt_ms"], float) and nyc["rtt_ms"] >= 0
    assert nyc["last_seen"] is not None
    text = cli("office", "list", "--dir", str(d)).stdout
    assert text.splitlines()[0].split() == [
        "OFFICE",
        "EXPIRES",
        "REVOKED",
        "CONNECTED",
        "LAST",
        "SEEN",
        "RTT",
        "ms",
        "CLIENTS",
        "VERSION",
        "RENEWAL",
        "PRINTERS",
        "HUBS",
    ]
    assert text.splitlines()[1].split()[3] == "yes"
    assert nyc["version"] == f"spokeshare/{__version__}"  # the edge's, from its heartbeats


def test_bundle_checks(tmp_path: Path, stack: Stack) -> None:
    good = stack.dep.bundles["nyc"]
    text = good.read_text()
    other = stack.dep.add_office("other")
    # key of one office with the certificate of another
    mixed = text.split("[pem]")[0] + "[pem]" + other.read_text().split("[pem]")[1]
    mixed = mixed.replace(
        other.read_text().split('key = "')[1].split('"')[0], text.split('key = "')[1].split('"')[0]
    )
    p = tmp_path / "mixed.bundle"
    pki.write_private(p, mixed.encode())
    with pytest.raises(EnrollmentError, match="key does not match|another office"):
        bundle.read(p)


def test_root_writes_a_service_users_directory_as_that_user(tmp_path: Path) -> None:
    """As in the Debian package: /etc/spokeshare belongs to the service user, root runs
    ``init`` and ``office add`` there, and the hub (as that user) must read the keys."""
    if os.geteuid() != 0:
        pytest.skip("needs root to own files as another user")
    d = tmp_path / "dep"
    d.mkdir()
    service = (65534, 65534)  # nobody:nogroup stands for the spokeshare user
    os.chown(d, *service)
    enrollment.init(d, "hq", ["127.0.0.1:7443"], {"ipp": "192.0.2.1:631"})
    enrollment.add_office(d, "nyc", None, tmp_path / "nyc.bundle")
    for name in ("ca.key", "hub.key", "offices.json", "ca.crt", "hub.toml"):
        st = (d / name).stat()
        assert (st.st_uid, st.st_gid) == service, name
    assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    # The bundle went to a directory root owns: root's.
    assert (tmp_path / "nyc.bundle").stat().st_uid == 0


def test_bundle_of_another_user_refused_with_the_chown_that_fixes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edge as the packaged unit runs it (another user than the bundle's owner)
    refuses the bundle and says the command that fixes it."""
    path = tmp_path / "nyc.bundle"
    pki.write_private(path, b"x")
    owner = pki.user_name(path.stat().st_uid)
    monkeypatch.setattr(os, "geteuid", lambda: 65534)  # nobody stands for spokeshare
    with pytest.raises(EnrollmentError) as exc:
        pki.check_private(path, "bundle")
    assert str(exc.value) == (
        f"bundle {path} is not owned by the user running spokeshare (nobody; it belongs to "
        f"{owner}); run: chown nobody: {path}"
    )
