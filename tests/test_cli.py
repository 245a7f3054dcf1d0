"""The ``spokeshare`` command line: what the daemons import, and complete ``--help``."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spokeshare import cli
from spokeshare.errors import ConfigError, EnrollmentError, SpokeshareError

# Modules only the lab, the demo and the benchmarks need (the ``lab`` extra among them).
NOT_IN_DAEMON = ("spokeshare.lab", "spokeshare.demo", "bench", "pyroute2",
                 "matplotlib")  # fmt: skip

# Runs in a fresh interpreter: parses ``spokeshare COMMAND --help`` as the installed
# command does, then imports the module the command runs, and prints which of
# NOT_IN_DAEMON's modules got loaded.
_PROBE = """
import contextlib, io, json, sys
from spokeshare import cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        cli.main([sys.argv[1], "--help"])
    except SystemExit as exc:
        code = exc.code
import importlib
importlib.import_module(sys.argv[2])
names = sys.argv[3:]
loaded = sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
print(json.dumps({"code": code, "help": out.getvalue(), "loaded": loaded}))
"""


@pytest.mark.parametrize(
    ("command", "daemon_module"),
    [("edge", "spokeshare.edge_daemon"), ("hub", "spokeshare.tunnel.hub")],
)
def test_daemon_command_imports_no_lab_demo_or_bench(command: str, daemon_module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, command, daemon_module, *NOT_IN_DAEMON],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["code"] == 0
    assert result["help"].startswith(f"usage: spokeshare {command} ")
    assert result["loaded"] == []


def test_probe_sees_a_lab_import() -> None:
    """The probe above can fail: ``lab --help`` does load the lab and pyroute2."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "lab", "spokeshare.cli", *NOT_IN_DAEMON],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(proc.stdout)["loaded"]
    assert "spokeshare.lab.cli" in loaded
    assert "pyroute2" in loaded


@pytest.mark.parametrize("name", sorted(cli.OPTIONAL_COMMANDS))
def test_command_list_same_with_stand_in_or_real_parser(name: str) -> None:
    """The stand-in's help line is the real parser's: ``spokeshare --help`` is unchanged."""
    assert cli.build_parser().format_help() == cli.build_parser(name).format_help()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["lab", "--help"], ["--state-dir", "up", "down", "status", "exec", "wan"]),
        (["lab", "up", "--help"], ["--offices", "--rtt", "--jitter", "--loss", "--rate-mbit"]),
        (["demo", "--help"], ["--rtt", "--state-dir", "--keep", "--down", "--browse-timeout"]),
        (["bench", "--help"], ["wan"]),
        (["bench", "wan", "--help"], ["--quick", "--out", "--img-dir", "--outages"]),
    ],
)
def test_optional_command_help_lists_its_options(
    argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: spokeshare {' '.join(argv[:-1])} ")
    for word in expected:
        assert word in out


def test_optional_command_arguments_parsed_by_the_real_parser() -> None:
    a = cli.parse_args(["lab", "up", "--offices", "nyc", "--rtt", "50"])
    assert (a.command, a.lab_command, a.offices, a.rtt) == ("lab", "up", "nyc", 50.0)
    a = cli.parse_args(["bench", "wan", "--quick"])
    assert (a.bench_command, a.quick) == ("wan", True)


def test_unknown_option_of_optional_command_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["demo", "--no-such-option"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_lab_command_without_the_lab_extra_says_what_to_install() -> None:
    """Without pyroute2 (an install without ``[lab]``), ``lab`` is a usage error, no traceback."""
    code = (
        "import sys\n"
        "sys.modules['pyroute2'] = None  # import pyroute2 now raises ModuleNotFoundError\n"
        "from spokeshare import cli\n"
        "cli.main(['lab', 'status'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "lab needs the lab extra (pip install 'spokeshare[lab]'): no module pyroute2" in (
        proc.stderr
    )


_WITHOUT_LAB_EXTRA = (
    "import sys\n"
    "sys.modules['pyroute2'] = None  # as in the Debian package: no lab extra\n"
    "from spokeshare import cli\n"
    "cli.main(sys.argv[1:])\n"
)


def test_help_without_the_lab_extra_leaves_out_lab_demo_and_bench() -> None:
    """The installed package (its man page is this --help) lists only what it can run,
    and says where the rest runs; ``lab`` itself still says what it needs (above)."""
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_LAB_EXTRA, "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    commands = _command_list(proc.stdout)
    assert commands == ["init", "office", "hub", "edge", "check"]
    assert "lab, demo, bench: the test lab, the demo and the benchmarks run from a " in (
        proc.stdout
    )
    assert "development\n  checkout of spokeshare (./run setup)" in proc.stdout


def test_help_in_a_checkout_lists_lab_demo_and_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert _command_list(out) == ["init", "office", "hub", "edge", "check", "lab", "demo", "bench"]
    assert "not in this installation" not in out


def _command_list(help_text: str) -> list[str]:
    """The command names of ``spokeshare --help`` (its COMMAND list)."""
    block = help_text.split("  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.startswith("    ") and
            not line.startswith("     ")]  # fmt: skip


def test_office_add_prints_the_readme_quick_start_steps() -> None:
    """What ``office add`` tells the office's admin is what the README's quick start has
    them do with the package: install the bundle, write edge.toml, enable the unit."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    office_block = start.split("At the office", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    steps = cli.office_steps("nyc.bundle")
    readme_lines = (
        office_block.replace('"eth1"', '"LAN-INTERFACE"')
        .replace('"192.0.2.10"', '"LAN-IP"')
        .splitlines()
    )
    commands = steps.split("\n\n", 1)[1].split("\n\nor, without", 1)[0].splitlines()
    apt = ("apt install", "apt update")
    assert commands == [ln for ln in readme_lines if not ln.startswith(apt)]
    assert commands[-2] == "systemctl enable --now spokeshare-edge"
    assert commands[-1].startswith("spokeshare check ")
    assert steps.rstrip().endswith(
        "spokeshare edge --bundle /etc/spokeshare/nyc.bundle --lan-address LAN-IP"
    )


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConfigError("/etc/spokeshare/hub.toml", "hub.listen", "port 70000 out of range"), 2),
        (EnrollmentError("bundle /etc/spokeshare/nyc.bundle: no such file"), 2),
        # at boot before DHCP (spokeshare.lan.interfaces.ipv4_interface); a port taken
        (OSError(errno.EADDRNOTAVAIL, "interface eth1 has no IPv4 address (yet)"), 1),
        (OSError(errno.EADDRINUSE, "Address already in use"), 1),
        (SpokeshareError("something that may pass"), 1),
    ],
)
def test_exit_status_2_only_for_what_the_operator_must_fix(
    error: Exception, status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The units restart a daemon that failed unless it exited 2
    (RestartPreventExitStatus=2): 2 is a configuration or usage error, which no restart
    fixes; whatever may pass by itself exits 1."""

    def fail(a: object) -> int:
        raise error

    monkeypatch.setattr(cli, "cmd_hub", fail)
    monkeypatch.setattr(cli, "cmd_edge", fail)
    assert cli.main(["hub"]) == status
    assert cli.main(["edge"]) == status


@pytest.mark.parametrize("side", ["hub", "edge"])
def test_units_do_not_restart_a_configuration_error(side: str) -> None:
    unit = (REPO / f"etc/systemd/spokeshare-{side}.service").read_text().splitlines()
    assert "RestartPreventExitStatus=2" in unit
    assert "StateDirectoryMode=0750" in unit


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # as one line: wrapping aside


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["check"], ["exit status: 0 every finding ok (or info) 1 a warning at least 2 an "
                     "error at least", "--json the findings as a JSON list",
                     "(default /etc/samba/smb.conf)", "What is wrong at HQ or at an office"]),
        (["office", "add"], ["--dir DIR deployment directory (default /etc/spokeshare)",
                             "--days DAYS certificate lifetime in days (default 825)"]),
        (["office", "list"], ["--dir DIR deployment directory (default /etc/spokeshare)",
                              "--json the same as JSON, for scripts"]),
        (["office", "renew"], ["--dir DIR deployment directory (default /etc/spokeshare)",
                               "(default 825)", "Renewal is automatic", "the manual path"]),
        (["hub"], ["--dir DIR the deployment (default /etc/spokeshare)", "SIGHUP reloads "
                   "hub.toml (systemctl reload spokeshare-hub)"]),
    ],
)  # fmt: skip
def test_help_says_defaults_exit_status_and_what_each_option_is(
    argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(argv, capsys)
    for phrase in expected:
        assert phrase in text


def test_help_lists_every_port_the_firewalld_services_open(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``spokeshare --help`` (and so the man page) names each port the packaged
    firewalld services open, hub and edge."""
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    ports = out.split("\nports:\n", 1)[1].split("\n\n", 1)[0]
    for side in ("hub", "edge"):
        xml = (REPO / f"etc/firewalld/spokeshare-{side}.xml").read_text()
        opened = re.findall(r'<port protocol="(\w+)" port="(\d+)"/>', xml)
        assert opened
        block = ports.split(f"  {side} ", 1)[1].split("\n  hub ", 1)[0]
        for proto, port in opened:
            assert f"{port}/{proto}" in re.findall(r"\d+/\w+", block), (side, port, proto)


def test_help_epilog_is_made_of_what_help2man_renders_as_lists() -> None:
    """help2man (debian/rules) fills a paragraph unless its lines are list items: in
    the epilog every indented line is an item ("TAG  text"), the continuation of one
    (indented to its text), a "$ " command, or a short heading line."""
    for para in cli.EPILOG.strip("\n").split("\n\n"):
        heading, *lines = para.splitlines()
        assert heading.endswith(":") and not heading[:1].isspace(), heading
        column = 0
        for line in lines:
            indent = len(line) - len(line.lstrip())
            if column and indent == column:
                continue  # an item's wrapped text
            item = re.match(r"(  \S+)( {2,})\S", line)
            column = len(item.group(1) + item.group(2)) if item else 0
            assert item or line.lstrip().startswith("$ ") or indent == 2, line
