"""The Debian package: ``./run package`` builds it, lintian passes it, and it installs
and runs on a stock Debian 12 root.

The root is made by mmdebstrap from the Debian mirror apt uses on this host (minbase
plus systemd as init: less than a stock install), and the package goes in with
``apt-get install ./spokeshare_*.deb`` as the README says, so apt must resolve every
dependency itself and the maintainer scripts run against that root's own passwd and
dpkg database: the host's packages cannot stand in for anything. Commands then run in
the root through chroot inside a fresh mount namespace (``unshare --mount``) whose
/proc mount ends with its last process, so nothing is ever mounted on the host. The
hub runs as its unit file says (``User``, ``ExecStart``) until it reports that it
listens, and is stopped by PID; then the root boots with systemd (systemd-nspawn, on
the host's network, no network namespace: hub and edge use free loopback ports, the
edge has no LAN interface and so no name services or multicast), ``systemctl enable
--now`` starts the hub and then the edge with the office's bundle inside their units'
sandboxes, the office shows as connected, an upgrade restarts both, an edge.toml
with an error leaves the edge failed (not restarted), and ``apt-get remove`` stops
both; the container powers itself off.

Building the package (a private environment from the pip registry) takes about 40 s,
the root and the install about 50 s: done once for the module, about 2 minutes in all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spokeshare import logfmt
from tests.helpers import free_port, process, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# The Debian mirror this host's apt uses; the root gets the same.
HOST_SOURCES = next(
    (p for p in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
     if p.is_file()),
    Path("/etc/apt/sources.list"),
)  # fmt: skip
PINS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
UNITS = ("spokeshare-hub.service", "spokeshare-edge.service")


#: The version of the package an upgrade installs over VERSION: the next patch release.
NEXT_VERSION = ".".join([*VERSION.split(".")[:-1], str(int(VERSION.split(".")[-1]) + 1)])


@dataclass(frozen=True)
class Root:
    """A Debian 12 root at ``path`` with the package ``deb`` installed."""

    path: Path
    deb: Path
    build_output: str

    def argv(self, argv: list[str], user: str | None = None, group: str | None = None) -> list[str]:
        """``argv`` run in the root (as ``user``:``group`` if given), in its own mount
        namespace with the root's /proc mounted."""
        inner = ["chroot", str(self.path)]
        if user is not None:
            inner += ["setpriv", f"--reuid={user}", f"--regid={group or user}", "--init-groups"]
        script = 'mount -t proc proc "$0/proc" && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
                str(self.path), *inner, *argv]  # fmt: skip

    def run(
        self, argv: list[str], user: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(argv, user), capture_output=True, text=True, timeout=120, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}: {done.stdout}{done.stderr}")
        return done

    def file(self, path: str) -> Path:
        return self.path / path.lstrip("/")


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Root]:
    work = tmp_path_factory.mktemp("package")
    out = work / "out" / "debs"  # not there yet: ./run package makes it
    tree = work / "root"
    try:
        built = subprocess.run(
            ["bash", str(REPO / "run"), "package", str(out)],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert built.returncode == 0, built.stdout + built.stderr
        (deb,) = out.glob("spokeshare_*.deb")
        boot = subprocess.run(
            [
                "mmdebstrap", "--variant=minbase", "--include=systemd-sysv", "--mode=root",
                "--quiet",
                f"--customize-hook=copy-in {deb} /tmp",
                f'--customize-hook=chroot "$1" apt-get install -y -q /tmp/{deb.name}',
                f'--customize-hook=rm "$1/tmp/{deb.name}"',
                "bookworm", str(tree), str(HOST_SOURCES),
            ],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert boot.returncode == 0, boot.stdout[-4000:] + boot.stderr[-4000:]
        yield Root(tree, deb, built.stdout + built.stderr)
    finally:
        # mmdebstrap unmounts what it mounted and our namespaces take theirs with them;
        # never delete through a mount that is somehow still there.
        left = _mounts_under(tree)
        assert not left, f"still mounted, {tree} kept: {left}"
        shutil.rmtree(work, ignore_errors=False)


@pytest.fixture(scope="module")
def next_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package of this tree as version NEXT_VERSION: a copy of the tree with the
    version raised where ``./run package`` reads it (debian/changelog, which must agree
    with pyproject.toml, and the program's own)."""
    work = tmp_path_factory.mktemp("next")
    tree = work / "spokeshare"
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    for name, old, new in [
        ("pyproject.toml", f'version = "{VERSION}"', f'version = "{NEXT_VERSION}"'),
        ("spokeshare/__init__.py", f'__version__ = "{VERSION}"', f'__version__ = "{NEXT_VERSION}"'),
    ]:
        text = (tree / name).read_text()
        assert old in text, name
        (tree / name).write_text(text.replace(old, new, 1))
    changelog = tree / "debian/changelog"
    maintainer = next(
        line for line in changelog.read_text().splitlines() if line.startswith(" -- ")
    ).split("  ")[0]
    # a later date than the entry before it (lintian: latest-changelog-entry-without-new-date)
    trailer = f"{maintainer}  {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}"
    changelog.write_text(
        f"spokeshare ({NEXT_VERSION}) bookworm; urgency=medium\n\n"
        "  * The next release, for the upgrade test.\n\n"
        f"{trailer}\n\n" + changelog.read_text()
    )
    # ./run package takes the files git knows of: the copy gets an index of its own.
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "add", "-A"], check=True)
    out = work / "out"
    out.mkdir()
    built = subprocess.run(
        ["bash", str(tree / "run"), "package", str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (deb,) = out.glob(f"spokeshare_{NEXT_VERSION}_*.deb")
    return deb


def test_package_is_named_for_version_and_arch(root: Root) -> None:
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert root.deb.name == f"spokeshare_{VERSION}_{arch}.deb"
    assert f"built {root.deb.parent}/{root.deb.name}" in root.build_output


def test_lintian_reports_no_errors(root: Root) -> None:
    done = subprocess.run(
        ["lintian", "--fail-on", "error", str(root.deb)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not re.search(r"^E: ", done.stdout, re.M), done.stdout


def test_installs_program_user_dirs_units_and_man_page(root: Root) -> None:
    assert root.run(["spokeshare", "--version"]).stdout.strip() == f"spokeshare {VERSION}"
    status = root.run(["dpkg-query", "-W", "-f=${Status} ${Version}", "spokeshare"]).stdout
    assert status == f"install ok installed {VERSION}"
    user = root.run(["getent", "passwd", "spokeshare"]).stdout.split(":")
    assert user[5:] == ["/var/lib/spokeshare", "/usr/sbin/nologin\n"]
    uid, gid = int(user[2]), int(user[3])
    assert uid < 1000  # a system user
    assert root.run(["getent", "group", "spokeshare"]).stdout.split(":")[2] == str(gid)
    for path, mode in [
        ("/etc/spokeshare", 0o700),
        ("/var/lib/spokeshare", 0o750),
        ("/var/lib/spokeshare/hub", 0o750),
        ("/var/lib/spokeshare/edge", 0o750),
    ]:
        st = root.file(path).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, mode), path
    # The private environment runs Debian's own interpreter, not one of its own, and
    # holds exactly pyproject.toml's pins.
    assert os.readlink(root.file("/opt/spokeshare/bin/python3.11")) == "/usr/bin/python3.11"
    names = [pin.split("==")[0] for pin in PINS]
    script = (
        "import importlib.metadata as m, sys; "
        "print(*(f'{n}=={m.version(n)}' for n in sys.argv[1:]))"
    )
    shipped = root.run(["/opt/spokeshare/bin/python3.11", "-I", "-c", script, *names]).stdout
    assert shipped.split() == PINS
    for unit in UNITS:
        unit_text = root.file(f"/lib/systemd/system/{unit}").read_text()
        assert "ExecStart=/usr/bin/spokeshare " in unit_text
    for side in ("hub", "edge"):
        assert root.file(f"/usr/lib/firewalld/services/spokeshare-{side}.xml").is_file()
    man = root.file("/usr/share/man/man1/spokeshare.1.gz")
    text = subprocess.run(["zcat", str(man)], capture_output=True, text=True, check=True).stdout
    for command in ("init", "office add", "hub", "check"):
        assert f'.SS "spokeshare {command}"' in text
    # The epilog's lists are lists (a .TP item each), its commands one to a line, and
    # nothing hyphenated or justified (spokeshare.cli.EPILOG, debian/manpage-commands).
    assert ".TP\n/var/lib/spokeshare/hub/\nthe hub's state" in text
    ports = text.split('.SS "ports:"\n', 1)[1].split(".SS", 1)[0]
    edge_ports = ports.split(".TP\nedge\n", 1)[1]
    for port in ("445/tcp", "515/tcp", "9100/tcp", "137/udp", "5355/udp"):
        assert port in edge_ports
    assert ".br\n\\f(CW$ systemctl enable --now spokeshare-hub\\fR\n" in text
    assert ".nh\n.ad l\n" in text
    # No lab extra in /opt/spokeshare: lab, demo and bench are not offered, only named
    # as a development checkout's (spokeshare.cli.MISSING_NOTE).
    assert "benchmarks (writes docs/benchmarks.md)" not in text
    assert "not in this installation" in text


def _unit(root: Root, name: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for line in root.file(f"/lib/systemd/system/{name}").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            keys[key.strip()] = value.strip()
    return keys


def test_edge_unit_exec_start_runs(root: Root) -> None:
    unit = _unit(root, "spokeshare-edge.service")
    done = root.run(unit["ExecStart"].split() + ["--help"], user=unit["User"])
    assert "--config" in done.stdout and "usage: spokeshare edge" in done.stdout


# Runs in the booted root as a oneshot unit: the README's `systemctl enable --now` of the
# hub, then of the edge with the office's bundle (it connects to the hub), then
# `apt-get remove`; each result a key=value line in /root/result; then powers off.
BOOT_STEPS = """#!/bin/sh
exec >/root/steps.log 2>&1
set -x
say() { echo "$1" >>/root/result; }
systemctl enable --now spokeshare-hub.service
listening=": listening address=127.0.0.1 port=@PORT@ "
i=0
until journalctl -u spokeshare-hub | grep -q "$listening"; do
    i=$((i + 1)); [ $i -lt 600 ] || break; sleep 0.1
done
say "listening=$(journalctl -u spokeshare-hub | grep -c "$listening")"
say "active=$(systemctl is-active spokeshare-hub)"
say "user=$(stat -c %U /proc/$(systemctl show -p MainPID --value spokeshare-hub))"
# "change services, backends, limits": systemctl reload (the unit's ExecReload, SIGHUP)
systemctl reload spokeshare-hub
i=0
until journalctl -u spokeshare-hub | grep -q "config reloaded .*generation=2"; do
    i=$((i + 1)); [ $i -lt 300 ] || break; sleep 0.1
done
say "reloaded=$(journalctl -u spokeshare-hub | grep -c 'config reloaded .*generation=2')"
# The README quick start's dashboard step (its sed line, on a free port here), then
# the restart it says: the page answers on loopback.
@DASHBOARD_STEP@
systemctl restart spokeshare-hub
page() {
    /usr/bin/python3.11 -c 'import sys, urllib.request as u; r = u.urlopen(sys.argv[1], timeout=2)
print(r.status, r.headers.get_content_type())' "http://127.0.0.1:@STATUS@/"
}
i=0
until page >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 300 ] || break; sleep 0.1
done
say "dashboard=$(page | tr ' ' ,)"
# The office side as the README has it, on loopback: no LAN interface, so no name
# services (and no multicast); the edge relays only, on free ports.
install -o spokeshare -g spokeshare -m 0600 /root/nyc.bundle /etc/spokeshare/nyc.bundle
cat >/etc/spokeshare/edge.toml <<'EOF'
[edge]
bundle = "/etc/spokeshare/nyc.bundle"

[lan]
address = "127.0.0.1"
ipv6 = false

[netbios]
enabled = false

[discovery]
wsd = false
mdns = false
llmnr = false

[printers]
advertise = false

[ports]
smb = @SMB@
ipp = @IPP@
EOF
systemctl enable --now spokeshare-edge.service
i=0
until spokeshare office list --json | grep -q '"connected": true'; do
    i=$((i + 1)); [ $i -lt 600 ] || break; sleep 0.1
done
say "office_connected=$(spokeshare office list --json | grep -c '"connected": true')"
say "edge_active=$(systemctl is-active spokeshare-edge)"
say "edge_user=$(stat -c %U /proc/$(systemctl show -p MainPID --value spokeshare-edge))"
# The state directories as the postinst made them, now that systemd started the units
# (StateDirectory= sets their mode at each start).
state_modes() {
    stat -c %a:%U:%G /var/lib/spokeshare /var/lib/spokeshare/hub /var/lib/spokeshare/edge |
        tr '\\n' ,
}
say "modes_started=$(state_modes)"
# An upgrade as the README has it (apt-get install of the newer .deb): the running units
# are restarted on the new version, the office comes back with it, and every file the
# deployment wrote under /etc/spokeshare is kept byte for byte.
etc_sum() { (cd /etc/spokeshare && sha256sum ./* | sha256sum); }
main_pid() { systemctl show -p MainPID --value "spokeshare-$1"; }
etc_before=$(etc_sum)
hub_pid=$(main_pid hub)
edge_pid=$(main_pid edge)
apt-get install -y -q /root/@NEXT_DEB@
say "version_after=$(dpkg-query -W -f='${Version}' spokeshare)"
say "etc_kept=$([ "$(etc_sum)" = "$etc_before" ] && echo 1)"
say "hub_restarted=$([ "$(main_pid hub)" != "$hub_pid" ] && echo 1)"
say "edge_restarted=$([ "$(main_pid edge)" != "$edge_pid" ] && echo 1)"
i=0
until spokeshare office list --json | grep -q '"version": "spokeshare/@NEXT@"'; do
    i=$((i + 1)); [ $i -lt 600 ] || break; sleep 0.1
done
say "office_$(spokeshare office list --json | grep -o '"version": "[^"]*"' | tr -d '" ' | tr : =)"
say "office_connected_after=$(spokeshare office list --json | grep -c '"connected": true')"
say "active_after=$(systemctl is-active spokeshare-hub spokeshare-edge | tr '\\n' ,)"
say "modes_after_upgrade=$(state_modes)"
# A configuration error (exit status 2) leaves the unit failed with its one line in the
# journal (RestartPreventExitStatus=2), where Restart=always would start it every 2 s.
printf '\n[no_such_table]\n' >>/etc/spokeshare/edge.toml
systemctl restart spokeshare-edge
sleep 7
say "bad_config_state=$(systemctl show -p ActiveState --value spokeshare-edge)"
say "bad_config_status=$(systemctl show -p ExecMainStatus --value spokeshare-edge)"
say "bad_config_restarts=$(systemctl show -p NRestarts --value spokeshare-edge)"
bad_line="spokeshare: /etc/spokeshare/edge.toml: no_such_table: unknown key"
say "bad_config_lines=$(journalctl -u spokeshare-edge | grep -c "$bad_line")"
apt-get remove -y -q spokeshare
n=0
for p in /proc/[0-9]*; do
    tr '\\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q '^/opt/spokeshare/' && n=$((n + 1))
done
say "running_after_remove=$n"
say "done"
systemctl poweroff
"""
BOOT_UNIT = """[Unit]
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/root/steps.sh
"""


def _readme_dashboard_step(port: int) -> str:
    """The README quick start's line that turns the dashboard on, listening on ``port``."""
    start = (REPO / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (line,) = [
        ln for ln in start.splitlines() if ln.startswith("sed -i ") and "status_listen" in ln
    ]
    assert '"127.0.0.1:7480"' in line
    return line.replace("127.0.0.1:7480", f"127.0.0.1:{port}")


def _boot(root: Root, port: int, next_deb: Path) -> dict[str, str]:
    """Boot the root with systemd (systemd-nspawn, the host's network, no machined),
    run BOOT_STEPS in it (upgrading to ``next_deb``, copied in), return its results."""
    steps = root.file("/root/steps.sh")
    shutil.copy(next_deb, root.file(f"/root/{next_deb.name}"))
    text = BOOT_STEPS.replace("@PORT@", str(port)).replace("@NEXT_DEB@", next_deb.name)
    text = text.replace("@NEXT@", NEXT_VERSION)
    text = text.replace("@SMB@", str(free_port())).replace("@IPP@", str(free_port()))
    status = free_port()
    text = text.replace("@DASHBOARD_STEP@", _readme_dashboard_step(status))
    text = text.replace("@STATUS@", str(status))
    steps.write_text(text)
    steps.chmod(0o755)
    unit = root.file("/etc/systemd/system/steps.service")
    unit.write_text(BOOT_UNIT)
    wants = root.file("/etc/systemd/system/multi-user.target.wants")
    wants.mkdir(exist_ok=True)
    (wants / "steps.service").symlink_to("/etc/systemd/system/steps.service")
    nspawn_dir = Path("/run/systemd/nspawn")
    made_nspawn_dir = not nspawn_dir.exists()
    try:
        console = root.path.parent / "boot.log"
        # SIGTERM (on the way out, if it hangs) makes nspawn power the container off.
        with console.open("wb") as out, process(
            ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "-D",
             str(root.path), "--boot"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        ) as nspawn:  # fmt: skip
            nspawn.wait(timeout=180)
        log = root.file("/root/steps.log")
        detail = console.read_text()[-3000:] + (log.read_text() if log.exists() else "")
        result = root.file("/root/result")
        assert result.exists(), detail
        values = dict(line.split("=", 1) for line in result.read_text().splitlines() if "=" in line)
        assert "done" in result.read_text(), detail
        return values
    finally:
        (wants / "steps.service").unlink()
        unit.unlink()
        if made_nspawn_dir:  # its empty bookkeeping directories on the host
            for d in sorted(nspawn_dir.rglob("*"), reverse=True):
                d.rmdir()
            nspawn_dir.rmdir()


def test_root_enrols_then_systemd_runs_hub_and_edge_units_upgrade_restarts_them_remove_stops(
    root: Root, next_deb: Path
) -> None:
    port, smb = free_port(), free_port()
    # As the README's quick start: root makes the deployment in the package's directory.
    # The ipp backend is a lab address the hub is told not to check (no traffic).
    made = root.run([
        "spokeshare", "init", "--hub-name", "hub.test", "--address", f"127.0.0.1:{port}",
        "--listen", f"127.0.0.1:{port}", "--service", f"smb=127.0.0.1:{smb}",
        "--service", "ipp=198.18.0.10:631",
    ])  # fmt: skip
    assert "start the hub with: systemctl enable --now spokeshare-hub" in made.stdout
    hub_toml = root.file("/etc/spokeshare/hub.toml")
    hub_toml.write_text(hub_toml.read_text().replace("[hub]\n", "[hub]\ncheck_backends = false\n"))
    root.run(["spokeshare", "office", "add", "nyc", "--out", "/root/nyc.bundle"])
    uid = int(root.run(["id", "-u", "spokeshare"]).stdout)
    for key in ("ca.key", "hub.key", "offices.json"):
        st = root.file(f"/etc/spokeshare/{key}").stat()
        assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o600), key
    assert root.file("/root/nyc.bundle").stat().st_uid == 0

    # The hub unit's ExecStart as its User, by hand (no systemd): it reads the keys.
    unit = _unit(root, "spokeshare-hub.service")
    argv = unit["ExecStart"].split()
    with process(
        root.argv(argv, user=unit["User"], group=unit["Group"]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    ) as hub:  # fmt: skip
        lines: list[str] = []

        def listening() -> bool:
            line = hub.stdout.readline().decode() if hub.stdout else ""
            lines.append(line)
            if not line and hub.poll() is not None:
                raise AssertionError(f"hub exited {hub.returncode}: {''.join(lines)}")
            return {"address": "127.0.0.1", "port": str(port)}.items() <= next(
                iter(logfmt.find(line, "listening")), {}
            ).items()

        wait_for(listening, timeout=60, what="the packaged hub to listen")
        assert os.stat(f"/proc/{hub.pid}").st_uid == uid

    # The same under systemd, in the unit's sandbox; then the edge unit, which connects
    # to it; then apt-get remove stops both.
    result = _boot(root, port, next_deb)
    assert result["listening"] == "1", result
    assert result["active"] == "active", result
    assert result["user"] == "spokeshare", result
    assert result["reloaded"] == "1", result
    assert result["dashboard"] == "200,text/html", result
    assert result["office_connected"] == "1", result
    assert result["edge_active"] == "active", result
    assert result["edge_user"] == "spokeshare", result
    assert result["version_after"] == NEXT_VERSION, result
    assert result["etc_kept"] == "1", result
    assert (result["hub_restarted"], result["edge_restarted"]) == ("1", "1"), result
    assert result["office_version"] == f"spokeshare/{NEXT_VERSION}", result
    assert result["office_connected_after"] == "1", result
    assert result["active_after"] == "active,active,", result
    # After systemd started (and the upgrade restarted) the units, still the postinst's
    # modes the README promises, not StateDirectory='s default 0755.
    modes = "750:spokeshare:spokeshare," * 3
    assert result["modes_started"] == modes, result
    assert result["modes_after_upgrade"] == modes, result
    assert result["bad_config_state"] == "failed", result
    assert result["bad_config_status"] == "2", result
    assert result["bad_config_restarts"] == "0", result
    assert result["bad_config_lines"] == "1", result
    assert result["running_after_remove"] == "0", result
    assert not root.file("/opt/spokeshare").exists()
    assert root.file("/etc/spokeshare/ca.key").is_file()


def test_remove_keeps_configuration_purge_deletes_it_and_the_user(root: Root) -> None:
    root.run(["sh", "-c", "test -e /etc/spokeshare/ca.key || "
              "spokeshare init --hub-name h.test --address 127.0.0.1:7443 "
              "--service ipp=198.18.0.10:631"])  # fmt: skip
    root.run(["apt-get", "remove", "-y", "-q", "spokeshare"])
    assert not root.file("/opt/spokeshare").exists()
    assert not root.file("/usr/bin/spokeshare").exists()
    assert root.file("/etc/spokeshare/ca.key").is_file()
    assert root.file("/var/lib/spokeshare").is_dir()
    assert root.run(["getent", "passwd", "spokeshare"], check=False).returncode == 0
    root.run(["apt-get", "purge", "-y", "-q", "spokeshare"])
    assert not root.file("/etc/spokeshare").exists()
    assert not root.file("/var/lib/spokeshare").exists()
    assert root.run(["getent", "passwd", "spokeshare"], check=False).returncode == 2
    assert root.run(["getent", "group", "spokeshare"], check=False).returncode == 2
