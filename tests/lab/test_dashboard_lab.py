"""The hub's dashboard in a real browser: Debian's chromium, headless, in HQ's namespace.

The lab's hub serves its status page on HQ's service address (not loopback), so it runs
as an operator would run it there: with ``status_token``, sent by the browser as basic
auth. Chromium loads the page (``--dump-dom`` for the DOM after load, ``--screenshot``
for a picture); the test reads the office cards from the DOM. Stopping an office's edge
by PID must show that office as disconnected, first, on a page left open in a tab
(read through the DevTools protocol, never navigated by the test), within a few refresh
intervals: the page reloads itself every dashboard.REFRESH_SECONDS.

Set ``SPOKESHARE_DOCS_SCREENSHOTS=1`` to copy the screenshots to docs/img.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


def group_members(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (from /proc/PID/stat, field 5)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


@contextlib.contextmanager
def browser(lab: Lab, args: list[str], **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Headless chromium in HQ's namespace with a fresh profile and ``args``. On exit the
    browser and every helper process it started (its renderers and crash handler, all in
    the session it leads) are gone before the profile is removed: a renderer still
    writing into it made the removal fail."""
    with tempfile.TemporaryDirectory(prefix="ss-chromium-") as profile:
        argv = [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
        ]  # fmt: skip
        with process(netns.exec_argv("hq", argv), **kw) as p:
            try:
                yield p
            finally:
                if p.poll() is None:
                    p.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(10)
                # The browser led its own session (tests.helpers.process): its group is
                # exactly what it started.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                wait_for(
                    lambda: not group_members(p.pid), timeout=10, interval=0.05,
                    what="chromium's helper processes gone",
                )  # fmt: skip


def chromium(lab: Lab, *args: str, timeout: float = 60) -> str:
    """Headless chromium in HQ's namespace with ``args``; its stdout. A fresh profile
    each time; nothing but the lab's address is loaded (the namespace has no route
    elsewhere, and background fetches are off)."""
    log = lab.logs_dir / "chromium.log"
    with log.open("ab") as err, browser(lab, list(args), stdout=subprocess.PIPE, stderr=err) as p:
        out, _ = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"chromium exited {p.returncode} (see {log})")
    return out.decode("utf-8", "replace")


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
        card = dom[dom.index(f'data-office="{office}"') :]
        card = card[: card.index("</article>")]
        names = card[card.index("<dt>names</dt>") :]
        printers = card[card.index("<dt>printers</dt>") :]
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


class DevTools:
    """Chromium's DevTools protocol over ``--remote-debugging-pipe``: JSON messages ended
    by a NUL byte, commands written to the browser's fd 3, answers and events read from
    its fd 4. Just enough to open one tab and read its DOM without navigating it."""

    def __init__(self, commands: int, answers: int) -> None:
        self._out = os.fdopen(commands, "wb", buffering=0)
        self._in = os.fdopen(answers, "rb", buffering=0)
        self._buffer = b""
        self._next_id = 0

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """The result of ``method``; events read meanwhile are dropped. Raises
        AssertionError on an error answer or when the browser closes the pipe."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self._out.write(json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = self._in.read(65536)
                assert chunk, f"chromium closed the DevTools pipe during {method}"
                self._buffer += chunk
            raw, _, self._buffer = self._buffer.partition(b"\0")
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                assert "error" not in answer, answer
                result: dict[str, Any] = answer["result"]
                return result

    def close(self) -> None:
        self._out.close()
        self._in.close()


@contextlib.contextmanager
def open_tab(lab: Lab, url: str) -> Iterator[Callable[[str], Any]]:
    """A headless chromium in HQ's namespace with one tab open on ``url``, left alone;
    yields ``evaluate(expression)``, the expression's value in that tab as it is now."""
    commands_r, commands_w = os.pipe()
    answers_r, answers_w = os.pipe()

    def as_fds_3_and_4() -> None:
        os.dup2(commands_r, 3)
        os.dup2(answers_w, 4)

    log = lab.logs_dir / "chromium.log"
    with (
        log.open("ab") as err,
        browser(
            lab, ["--remote-debugging-pipe"], stdout=err, stderr=err,
            preexec_fn=as_fds_3_and_4, pass_fds=(3, 4),
        ),
    ):  # fmt: skip
        os.close(commands_r)
        os.close(answers_w)
        tools = DevTools(commands_w, answers_r)
        try:
            target = tools.call("Target.createTarget", url=url)["targetId"]
            session = tools.call("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]

            def evaluate(expression: str) -> Any:
                done = tools.call(
                    "Runtime.evaluate", session, expression=expression, returnByValue=True
                )
                return done["result"].get("value")

            yield evaluate
        finally:
            tools.close()


def test_open_page_shows_a_disconnected_office_at_its_own_refresh(lab: Lab) -> None:
    """One tab stays open on the page; the test only reads it. Its meta refresh brings
    the stopped office, first and disconnected, within a few REFRESH_SECONDS."""
    with open_tab(lab, AUTH_URL) as evaluate:

        def page() -> tuple[float, list[tuple[str, str]]] | None:
            html = evaluate(
                "location.protocol === 'http:' && document.readyState === 'complete'"
                " && document.body.outerHTML"
            )
            if not html:
                return None
            return float(evaluate("performance.timeOrigin")), parse(html).cards

        loaded = wait_for(page, timeout=30, interval=0.5, what="the page loaded in the tab")
        assert sorted(loaded[1]) == [(o, "connected") for o in OFFICES], loaded
        lab.registry.kill_process(lab.edge_pids["sfo"])

        def sfo_down_and_first() -> tuple[float, list[tuple[str, str]]] | None:
            now = page()
            return (
                now if now and now[1] == [("sfo", "disconnected"), ("nyc", "connected")] else None
            )

        now = wait_for(
            sfo_down_and_first,
            timeout=4 * dashboard.REFRESH_SECONDS + 10,
            interval=0.5,
            what="the open page showing sfo disconnected, first",
        )
        # A document of its own: the page reloaded itself, nothing navigated it.
        assert now[0] > loaded[0]
    screenshot(lab, "dashboard.png", (960, 420))
