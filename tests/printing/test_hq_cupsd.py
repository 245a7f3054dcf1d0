"""HQ's cupsd versions that need a step of their own (spokeshare.printing.hq_cupsd)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spokeshare import check
from spokeshare.check import Level
from spokeshare.printing import hq_cupsd

REPO = Path(__file__).resolve().parent.parent.parent
#: Debian 12's stock cupsd.conf, as cups-daemon installs it (the tests run where the
#: set-up installed it).
STOCK = Path("/usr/share/cups/cupsd.conf.default")


def test_stock_default_policy_checks_the_owner_and_the_readme_sed_drops_it(
    tmp_path: Path,
) -> None:
    """Debian's default policy has three owner checks; the README's sed, run for real,
    leaves none there and keeps the authenticated and kerberos policies as they were."""
    if not STOCK.is_file() or shutil.which("sed") is None:
        pytest.skip("cups-daemon's stock cupsd.conf not installed")
    stock = STOCK.read_text()
    assert hq_cupsd.owner_checks(stock) == 3
    conf = tmp_path / "cupsd.conf"
    conf.write_text(stock)
    subprocess.run(
        ["sed", f"-i{hq_cupsd.BACKUP_SUFFIX}", hq_cupsd.OWNER_CHECKS_SED, str(conf)], check=True
    )
    assert Path(f"{conf}{hq_cupsd.BACKUP_SUFFIX}").read_text() == stock  # the copy kept
    edited = conf.read_text()
    assert hq_cupsd.owner_checks(edited) == 0
    assert edited.count("@OWNER") == stock.count("@OWNER") - 3  # the other policies keep theirs
    assert "Require user @SYSTEM" in edited  # administration still needs @SYSTEM


def test_the_readme_gives_the_same_sed() -> None:
    readme = (REPO / "README.md").read_text()
    sed = f"sed -i{hq_cupsd.BACKUP_SUFFIX} '{hq_cupsd.OWNER_CHECKS_SED}' /etc/cups/cupsd.conf"
    assert sed in readme
    assert f"cp /etc/cups/cupsd.conf{hq_cupsd.BACKUP_SUFFIX} /etc/cups/cupsd.conf" in readme
    assert all(f"CUPS {v}" in readme for v in hq_cupsd.OWNER_CHECK_CRASH)


def test_owner_checks_reads_only_the_default_policy() -> None:
    conf = (
        "<Policy authenticated>\n  <Limit Cancel-Job>\n    Require user @OWNER @SYSTEM\n"
        "  </Limit>\n</Policy>\n<Policy default>\n  <Limit Cancel-Job>\n"
        "    require USER @owner\n  </Limit>\n</Policy>\n"
    )
    assert hq_cupsd.owner_checks(conf) == 1
    assert hq_cupsd.owner_checks("<Policy default>\n Require user @OWNER\n") == 1  # unclosed
    assert hq_cupsd.owner_checks("") == 0


@given(st.text(max_size=400))
def test_owner_checks_of_any_text_is_a_count(text: str) -> None:
    assert 0 <= hq_cupsd.owner_checks(text) <= text.count("\n") + 1


def test_finding_per_version_and_policy() -> None:
    bad = next(iter(hq_cupsd.OWNER_CHECK_CRASH))
    crash = check.cupsd_owner_checks(bad, 5, "/etc/cups/cupsd.conf")
    assert crash.level == Level.ERROR and crash.code == "hub.ipp.cupsd"
    sed = f"sed -i{hq_cupsd.BACKUP_SUFFIX} '{hq_cupsd.OWNER_CHECKS_SED}' /etc/cups/cupsd.conf"
    assert crash.fix.startswith(sed)
    assert "systemctl restart cups" in crash.fix
    assert check.cupsd_owner_checks(bad, 0, "c").level == Level.OK  # the step done
    assert check.cupsd_owner_checks(bad, None, "c").level == Level.WARNING  # unreadable
    assert check.cupsd_owner_checks("2.4.2-3+deb12u9", 5, "c").level == Level.OK
    # a fixed cupsd with the step still in place: put the owner checks back
    left = check.cupsd_owner_checks("2.4.2-3+deb12u11", 0, "/etc/cups/cupsd.conf")
    assert left.level == Level.WARNING
    assert left.fix.startswith("put them back: cp /etc/cups/cupsd.conf.pre-spokeshare ")
    missing = check.cupsd_owner_checks(None, None, "c")
    assert missing.level == Level.INFO and bad in missing.message
    # HQ's cupsd on another host: this host's cups-daemon is not the one to judge
    other = check.cupsd_owner_checks(bad, 3, "c", elsewhere="10.0.0.20:631")
    assert other.level == Level.INFO and "10.0.0.20:631" in other.message


def test_package_version_of_what_is_and_is_not_installed() -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian system")
    assert check.package_version("dpkg") is not None
    assert check.package_version("no-such-package-spokeshare") is None
