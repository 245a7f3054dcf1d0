"""The hub's dashboard in a real browser: Debian's chromium, headless, in HQ's namespace.

The lab's hub serves its status page on HQ's service address (not loopback), so it runs
as an operator would run it there: with ``status_token``, sent by the browser as basic
auth. Chromium loads the page (``--dump-dom`` for the DOM after load, ``--screenshot``
for a picture); the test reads the office cards from the DOM. Stopping an office's edge
by PID must show that office as disconnected, first on the page, within a few refresh
intervals (the page reloads itself every dashboard.REFRESH_SECONDS).

Set ``SPOKESHARE_DOCS_SCREENSHOTS=1`` to copy the screenshots to docs/img.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare import dashboard, logfmt
from spokeshare.lab import netns, spokes
from spokeshare.lab.topology import HQ_SERVICE_IP, Lab
from spokeshare.lab.wire import LinkSettings
from tests.helpers import process, wait_for
from tests.lab.building import running_lab
from tests.test_dashboard import parse

pytestmark = pytest.mark.lab

OFFICES = ("nyc", "sfo")
STATUS_PORT = 7480
TOKEN = "lab-dashboard-token-0123456789"
URL = f"http://{HQ_SERVICE_IP}:{STATUS_PORT}/"
AUTH_URL = f"http://admin:{TOKEN}@{HQ_SERVICE_IP}:{STATUS_PORT}/"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
#: What every lab office's card lists once its LAN side is up: the name (its state, as
#: the edge reports it) and HQ's two lab printers (spokeshare.lab.services).
ADVERTISED = ("<li>GLOBAL-NFS (ok)</li>", "<li>HQ colour (lab)</li>", "<li>HQ laser (lab)</li>")


def _start_hub(lab: Lab) -> int:
    return spokes.start_hub(
        lab,
        hub_settings={
            "status_listen": f"{HQ_SERVICE_IP}:{STATUS_PORT}",
            "status_token": TOKEN,
        },
    )


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if shutil.which("chromium") is None:
        pytest.skip("no chromium (./run setup installs it)")
    with running_lab(
        "ss-dashboard-", OFFICES, LinkSettings(rtt_ms=60, jitter_ms=8),
        start_hub=_start_hub, start_edge=spokes.start_edge,
    ) as the_lab:  # fmt: skip
        yield the_lab


def chromium(lab: Lab, *args: str, timeout: float = 60) -> str:
    """Headless chromium in HQ's namespace with ``args``; its stdout. A fresh profile
    each time; nothing but the lab's address is loaded (the namespace has no route
    elsewhere, and background fetches are off)."""
    with tempfile.TemporaryDirectory(prefix="ss-chromium-") as profile:
        argv = [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
        ]  # fmt: skip
        log = lab.logs_dir / "chromium.log"
        with (
            log.open("ab") as err,
            process(netns.exec_argv("hq", argv), stdout=subprocess.PIPE, stderr=err) as p,
        ):
            out, _ = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise AssertionError(f"chromium exited {p.returncode} (see {log})")
        return out.decode("utf-8", "replace")


def cards(lab: Lab) -> list[tuple[str, str]]:
    return parse(chromium(lab, "--dump-dom", AUTH_URL)).cards


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR (PNG spec §11.2.2)
    return width, height


def test_page_renders_the_labs_offices(lab: Lab) -> None:
    hub_log = (lab.logs_dir / "hub.log").read_text()
    [page] = logfmt.find(hub_log, "status page")
    assert page["auth"] == "status_token required (bearer or basic auth)", page
    # Without the token: 401 and a basic-auth challenge (headless chromium cannot ask
    # for credentials, so a plain HTTP client in HQ's namespace looks).
    probe = (
        "import urllib.error, urllib.request\n"
        "try:\n"
        f"    urllib.request.urlopen({URL!r}, timeout=10)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code, e.headers['WWW-Authenticate'], e.read().decode())\n"
    )
    denied = lab.exec("hq", [sys.executable, "-c", probe], capture_output=True, text=True)
    assert denied.stdout.startswith('401 Basic realm="spokeshare hub"'), denied
    assert "nyc" not in denied.stdout

    def all_with_history() -> str | None:
        dom = chromium(lab, "--dump-dom", AUTH_URL)
        connected = sorted(parse(dom).cards) == [(o, "connected") for o in OFFICES]
        presence = all(dom.count(item) == len(OFFICES) for item in ADVERTISED)
        sparks = dom.count('class="spark"') == len(OFFICES)
        return dom if connected and presence and sparks else None

    # The sparklines need two RTT samples, dashboard.SAMPLE_SECONDS apart; names and
    # printers come with the edges' heartbeat answers, printers one by one.
    dom = wait_for(all_with_history, timeout=60, interval=1, what="offices connected, with RTT")
    # Each office's certificate (the hub's registry, renewal state) is on its card.
    assert dom.count("<dt>certificate</dt><dd>expires ") == len(OFFICES)
    # What each edge advertises on its LAN, as the edge reported it, on its own card:
    # its file-server name with its state, and the HQ printers it publishes.
    for office in OFFICES:
        card = dom[dom.index(f'data-office="{office}"'):]
        card = card[: card.index("</article>")]
        names = card[card.index("<dt>names</dt>"):]
        printers = card[card.index("<dt>printers</dt>"):]
        shown = names[: names.index("</dd>")] + printers[: printers.index("</dd>")]
        assert all(item in shown for item in ADVERTISED), card
    screenshot(lab, "dashboard-phone.png", (390, 640))


def screenshot(lab: Lab, name: str, size: tuple[int, int]) -> None:
    """The page as chromium draws it at ``size``, a PNG of that size; copied to docs/img
    when SPOKESHARE_DOCS_SCREENSHOTS=1."""
    out = lab.state_dir / "screenshots"
    out.mkdir(exist_ok=True)
    chromium(lab, f"--screenshot={out / name}", f"--window-size={size[0]},{size[1]}", AUTH_URL)
    assert png_size(out / name) == size
    if os.environ.get("SPOKESHARE_DOCS_SCREENSHOTS") == "1":
        shutil.copyfile(out / name, DOCS_IMG / name)


def test_disconnected_office_shown(lab: Lab) -> None:
    assert sorted(cards(lab)) == [(o, "connected") for o in OFFICES]
    lab.registry.kill_process(lab.edge_pids["sfo"])
    # An open page reloads every REFRESH_SECONDS; a fresh load stands for the next one.
    wait_for(
        lambda: cards(lab) == [("sfo", "disconnected"), ("nyc", "connected")],
        timeout=4 * dashboard.REFRESH_SECONDS + 10,
        interval=0.5,
        what="sfo shown disconnected, first",
    )
    screenshot(lab, "dashboard.png", (960, 420))
