"""The hub's dashboard: pure rendering, the RTT history, and the page served over HTTP on
loopback with and without ``status_token``."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html.parser
import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare import dashboard, stats, status
from spokeshare.config import load_hub
from spokeshare.errors import ConfigError
from spokeshare.stats import BackendStatistics, HubStatistics, OfficeCertificate, OfficeStatistics
from tests.helpers import LoopThread, Stack, free_port, wait_for

NOW = 1_800_000_000.0
TOKEN = "0123456789abcdef-token"


def office(connected: bool = True, **extra: Any) -> OfficeStatistics:
    """An office's statistics as the hub reports them; ``extra`` sets other fields."""
    fields: dict[str, Any] = {
        "connected": connected,
        "version": "1.0",
        "rtt_ms": 101.5 if connected else None,
        "last_seen": NOW - 2,
        "clients": 3,
        "streams": 2,
        "idle_tunnels": 4,
        "streams_total": 40,
        "bytes_up": 10 * 1024 * 1024,
        "bytes_down": 2048,
    }
    return OfficeStatistics(**(fields | extra))


def cert(expires: float, renew: str = "ok 2027-01-01") -> OfficeCertificate:
    """An office certificate ending at unix time ``expires``, as renewal.hub_certificate
    reports it."""
    not_after = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(timespec="seconds")
    return {"not_after": not_after, "renewed": None, "failures": 0, "renew": renew}


def snapshot(offices: dict[str, OfficeStatistics], **extra: Any) -> HubStatistics:
    fields: dict[str, Any] = {"version": "9.9", "time": NOW, "offices": offices}
    return HubStatistics(**(fields | extra))


class _Cards(html.parser.HTMLParser):
    """(data-office, data-state) of every office card, in page order; all text."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "article":
            self.cards.append((a["data-office"] or "", a["data-state"] or ""))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Cards:
    p = _Cards()
    p.feed(page)
    p.close()
    return p


# -- rendering ---------------------------------------------------------------------------


def test_hostile_office_name_is_escaped() -> None:
    evil = '<script>alert("x")</script>" onmouseover="x'
    page = dashboard.render(
        snapshot(
            {
                evil: office(
                    names={"<img src=x>": "<b>ok</b>"},
                    printers=("a&b",),
                    degraded=("mdns: <b>held</b> by avahi",),
                    version="<i>",
                    certificate={"not_after": "2030-01-01T00:00:00", "renew": "<b>x</b>"},
                    edge_dial_failures={"tls:<b>BAD</b>": 2},
                    control_hub="<b>hq</b>",
                    hub_tunnels={"<b>hq</b>": 1, "<img src=y>": 2},
                )
            },
            version="<script>v</script>",
            hubs=("<b>a</b>", "<b>b</b>"),
        ),
        {},
        NOW,
    )
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x&gt;" in page and "a&amp;b" in page
    assert "&lt;img src=y&gt;: 2 tunnels" in page and "tls:&lt;b&gt;BAD&lt;/b&gt;: 2" in page
    parsed = parse(page)
    # The name survives the round trip, attribute and text alike: nothing broke out.
    assert parsed.cards == [(evil, "degraded")]
    assert evil in "".join(parsed.text)
    assert set(parsed.tags) <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "p", "main",
        "article", "h2", "span", "dl", "dt", "dd", "ul", "li", "svg", "polyline", "br",
    }  # fmt: skip


def test_sort_order_trouble_first() -> None:
    offices = {
        "alpha": office(),
        "berlin": office(connected=False),
        "cairo": office(degraded=("llmnr: port 5355 held by llmnrd",)),
        "delhi": office(certificate=cert(NOW + 3 * 86400)),
        "erfurt": office(
            certificate=cert(
                NOW + 300 * 86400,
                "failing since 2027-01-14T10:00:00+00:00 (2 attempts; see the edge's log)",
            ),
        ),  # fmt: skip
        "Aachen": office(connected=False),
        "zurich": office(certificate=cert(NOW + 300 * 86400)),
        "florence": office(certificate=cert(NOW + 29 * 86400)),  # check warns within 30 days
        "oslo": office(certificate=cert(NOW + 31 * 86400)),
        # As spokeshare.renewal.hub_certificate gives it.
        "genf": office(
            certificate={
                "not_after": "2027-09-30T12:00:00+00:00",  # far: the failure is the trouble
                "renew": "failing since 2026-11-30T21:40:00+00:00 (refused, 3 attempts)",
                "failures": 3,
            }
        ),
        "hamburg": office(certificate={"not_after": "2027-09-30T12:00:00+00:00", "renew": "ok"}),
    }
    cards = parse(dashboard.render(snapshot(offices), {}, NOW)).cards
    assert cards == [
        ("Aachen", "disconnected"),
        ("berlin", "disconnected"),
        ("cairo", "degraded"),
        ("delhi", "certificate"),
        ("erfurt", "certificate"),
        ("florence", "certificate"),
        ("genf", "certificate"),
        ("alpha", "connected"),
        ("hamburg", "connected"),
        ("oslo", "connected"),
        ("zurich", "connected"),
    ]


def test_office_details_shown() -> None:
    page = dashboard.render(
        snapshot(
            {
                "nyc": office(
                    names={"GLOBAL-NFS": "ok"},
                    printers=("office-laser",),
                    certificate={"not_after": "2027-01-15T00:00:00Z", "renew": "due 2026-12-01"},
                    degraded=("mdns: port 5353 held by avahi-daemon",),
                )
            }
        ),
        {"nyc": [100.0, 120.0, 101.5]},
        NOW,
    )
    text = " ".join(parse(page).text)
    for shown in (
        "101.5 ms", "GLOBAL-NFS (ok)", "office-laser", "2027-01-15 00:00", "renewal due 2026-12-01",
        "mdns: port 5353 held by avahi-daemon", "10.0 MiB", "2.0 KiB", "2 now, 40 total",
        "2 s ago",
    ):  # fmt: skip
        assert shown in text, shown
    assert re.search(r'<svg class="spark"[^>]*>.*?<polyline [^>]*points="0\.0,', page)
    assert '<meta http-equiv="refresh" content="5">' in page
    assert 'name="viewport"' in page


def test_the_edges_dial_failures_are_shown_by_cause_when_there_are_any() -> None:
    failing = office(edge_dial_failures={"timeout": 3, "certificate": 1})
    page = dashboard.render(snapshot({"nyc": failing, "sfo": office()}), {}, NOW)
    assert page.count("<dt>dial failures</dt>") == 1
    nyc = page[page.index('data-office="nyc"') : page.index('data-office="sfo"')]
    assert "<dt>dial failures</dt><dd><ul><li>certificate: 1</li><li>timeout: 3</li>" in nyc
    # Counters since the edge started: shown, not trouble by themselves.
    assert parse(page).cards == [("nyc", "connected"), ("sfo", "connected")]


def test_empty_hub() -> None:
    page = dashboard.render(snapshot({}), {}, NOW)
    assert parse(page).cards == []
    assert "No office is enrolled yet" in page
    assert "0/0 offices connected" in page
    # A snapshot nobody stamped: still a page, without a time.
    empty = dashboard.render(HubStatistics(), {}, NOW)
    assert "No office is enrolled yet" in empty and "UTC" not in empty


def test_many_offices() -> None:
    offices = {f"office-{i:04d}": office(connected=i % 7 != 0) for i in range(2000)}
    page = dashboard.render(snapshot(offices), {}, NOW)
    cards = parse(page).cards
    assert len(cards) == 2000
    down = [n for n, s in cards if s == "disconnected"]
    assert len(down) == len([i for i in range(2000) if i % 7 == 0])
    assert cards[: len(down)] == [(n, "disconnected") for n in sorted(down)]
    assert "1714/2000 offices connected" in page


def test_odd_json_is_read_at_the_boundary_and_does_not_break_the_page() -> None:
    """A snapshot only at hand as JSON (another worker's file, a test) goes through
    stats.from_json (status.schema): odd values take their defaults there."""
    page = dashboard.render(
        status.schema(
            {"time": "yesterday", "offices": {"x": {"connected": True, "rtt_ms": "fast",
             "bytes_up": float("nan"), "names": "GLOBAL-NFS",
             "certificate": {"not_after": "soon", "renew": 3}},
             "y": "not an office"}},
        ),
        {"x": [float("inf"), 5.0]},
        NOW,
    )  # fmt: skip
    assert parse(page).cards == [("y", "disconnected"), ("x", "connected")]
    assert "<dt>certificate</dt>" not in page and "<dt>names</dt>" not in page
    # Odd numbers built in-process are not shown as numbers either.
    odd = office(rtt_ms=float("nan"), last_seen=float("inf"),
                 certificate={"not_after": "soon", "renew": ""})  # fmt: skip
    page = dashboard.render(snapshot({"x": odd}, time=float("nan")), {}, NOW)
    assert "nan" not in page and "inf" not in page and "<dt>certificate</dt>" not in page


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=50)
@given(
    st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(OfficeStatistics)]), JSON)
)
def test_any_office_json_read_at_the_boundary_renders(raw: dict[str, Any]) -> None:
    page = dashboard.render(status.schema({"offices": {"x": raw}}), {}, NOW)
    assert [name for name, _ in parse(page).cards] == ["x"]


def test_long_lists_are_cut() -> None:
    names = {f"N{i}": "ok" for i in range(50)}
    page = dashboard.render(snapshot({"a": office(names=names)}), {}, NOW)
    assert f"+{50 - dashboard.MAX_LIST_ITEMS} more" in page
    assert "N49" not in page


def test_sparkline() -> None:
    assert dashboard.sparkline([]) == ""
    assert dashboard.sparkline([5.0]) == ""
    svg = dashboard.sparkline([50.0, 60.0, 55.0], width=100, height=20)
    assert 'points="0.0,19.0 50.0,1.0 100.0,10.0"' in svg
    assert "50–60 ms" in svg
    assert 'points="0.0,10.0 100.0,10.0"' in dashboard.sparkline([7.0, 7.0], 100, 20)


def test_the_json_of_status_renders_the_same_page() -> None:
    """What GET /status answers, read back through the schema, is the same page."""
    snap = snapshot(
        {
            "nyc": office(
                names={"GLOBAL-NFS": "ok"},
                printers=("HQ laser",),
                degraded=("llmnr: held",),
                certificate=cert(NOW + 40 * 86400),
                edge_dial_failures={"timeout": 3},
                control_hub="hub0",
                hub_tunnels={"hub0": 2, "hub1": 1},
            ),
            "sfo": office(connected=False),
        },
        hubs=("hub0", "hub1"),
        backends={
            "smb 198.18.0.11:445": BackendStatistics("smb", "198.18.0.11:445", 0, False, NOW)
        },
    )
    again = status.schema(json.loads(json.dumps(stats.to_json(snap))))
    assert dashboard.render(again, {}, NOW) == dashboard.render(snap, {}, NOW)


def test_rtt_history_is_bounded() -> None:
    h = dashboard.RttHistory(samples=3, every=5.0)
    for i in range(10):
        h.note(snapshot({"a": office(rtt_ms=float(i)), "b": office(connected=False)}), i * 5.0)
        h.note(snapshot({"a": office(rtt_ms=999.0)}), i * 5.0 + 1)  # too soon: not sampled
    assert h.get() == {"a": [7.0, 8.0, 9.0], "b": []}
    h.note(snapshot({"b": office()}), 100.0)
    assert h.get() == {"b": [101.5]}  # a is gone from the hub: forgotten


# -- authorization ----------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_authorized() -> None:
    assert status.authorized(None, "")
    assert status.authorized(f"Bearer {TOKEN}", TOKEN)
    assert status.authorized(f"bearer  {TOKEN} ", TOKEN)
    assert status.authorized(basic("admin", TOKEN), TOKEN)
    assert status.authorized(basic("", TOKEN), TOKEN)
    assert not status.authorized(None, TOKEN)
    assert not status.authorized("", TOKEN)
    assert not status.authorized(f"Bearer {TOKEN}x", TOKEN)
    assert not status.authorized(basic(TOKEN, "x"), TOKEN)
    assert not status.authorized("Basic !!!", TOKEN)
    assert not status.authorized(f"Token {TOKEN}", TOKEN)
    assert not status.authorized("Bearer \u00e9", TOKEN)


def test_answer_requires_the_token_everywhere() -> None:
    for path in (b"/", b"/status", b"/metrics", b"/nope"):
        out = status.answer(b"GET " + path + b" HTTP/1.1", dict, None, TOKEN)
        assert out.startswith(b"HTTP/1.1 401"), path
        assert b'WWW-Authenticate: Basic realm="spokeshare hub"' in out
    ok = status.answer(b"GET / HTTP/1.1", lambda: snapshot({}), f"Bearer {TOKEN}", TOKEN)
    assert ok.startswith(b"HTTP/1.1 200")


def test_config_status_token(tmp_path: Path) -> None:
    def load(hub: str) -> Any:
        path = tmp_path / "hub.toml"
        path.write_text(f'[hub]\n{hub}\n[services.smb]\nbackend = "127.0.0.1:445"\n')
        return load_hub(path)

    assert load('status_listen = "127.0.0.1:9100"').status_token == ""
    assert load('status_listen = "[::1]:9100"').status_listen == ("::1", 9100)
    with pytest.raises(ConfigError, match="status_token") as exc:
        load('status_listen = "0.0.0.0:9100"')
    assert exc.value.key == "hub.status_listen"
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="16 or more"):
        load('status_listen = "0.0.0.0:9100"\nstatus_token = "short"')
    with pytest.raises(ConfigError, match="16 or more"):
        load('status_listen = "0.0.0.0:9100"\nstatus_token = "has a space in it, 16+"')
    cfg = load(f'status_listen = "0.0.0.0:9100"\nstatus_token = "{TOKEN}"')
    assert cfg.status_token == TOKEN


# -- over HTTP, on loopback --------------------------------------------------------------


@pytest.fixture
def served(loop_thread: LoopThread) -> Iterator[tuple[int, list[HubStatistics]]]:
    """The status server on a loopback port with TOKEN; the snapshot it serves is the
    returned list's one item, replaced by the test at will."""
    port = free_port()
    snap = [snapshot({"nyc": office(), "sfo": office(connected=False)})]
    server = loop_thread.run(status.serve("127.0.0.1", port, lambda: snap[0], TOKEN))
    yield port, snap
    server.close()
    loop_thread.run(server.wait_closed())


def get(port: int, path: str, auth: str | None = None) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_http_auth_required(served: tuple[int, list[HubStatistics]]) -> None:
    port, _ = served
    for path in ("/", "/status", "/metrics"):
        code, headers, body = get(port, path)
        assert code == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic")
        assert "nyc" not in body
        assert get(port, path, f"Bearer {TOKEN}x")[0] == 401
    code, _, body = get(port, "/status", f"Bearer {TOKEN}")
    assert code == 200 and json.loads(body)["offices"]["nyc"]["connected"] is True
    code, _, body = get(port, "/metrics", basic("admin", TOKEN))
    assert code == 200 and 'spokeshare_office_connected{office="nyc"} 1' in body


def test_http_page_with_csp(served: tuple[int, list[HubStatistics]]) -> None:
    port, snap = served
    code, headers, page = get(port, "/", basic("admin", TOKEN))
    assert code == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert parse(page).cards == [("sfo", "disconnected"), ("nyc", "connected")]
    # Nothing from elsewhere: no URL at all in the page.
    assert not re.search(r"(src|href)=|url\(|https?://", page)
    snap[0] = snapshot({"nyc": office(connected=False), "sfo": office()})
    assert parse(get(port, "/", f"Bearer {TOKEN}")[2]).cards == [
        ("nyc", "disconnected"),
        ("sfo", "connected"),
    ]


def test_http_too_many_headers(served: tuple[int, list[HubStatistics]]) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 100 + b"\r\n")
        assert s.recv(100) == b""  # dropped, not answered
    assert get(port, "/status", f"Bearer {TOKEN}")[0] == 200


def test_rtt_sampled_without_requests(
    loop_thread: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timer feeds the history while nobody reads a page: the first page read shows
    a sparkline of several samples."""
    monkeypatch.setattr(dashboard, "SAMPLE_SECONDS", 0.05)
    calls: list[float] = []

    def snap() -> HubStatistics:
        calls.append(0)
        return snapshot({"nyc": office(rtt_ms=100.0 + len(calls))})

    port = free_port()
    server = loop_thread.run(status.serve("127.0.0.1", port, snap))
    try:
        wait_for(lambda: len(calls) >= 5, what="samples taken by the timer")
        _, _, page = get(port, "/")
        assert re.search(r"10[0-9]–1[0-9][0-9] ms", page)
    finally:
        server.close()
        loop_thread.run(server.wait_closed())


def test_serve_refuses_non_loopback_without_token(loop_thread: LoopThread) -> None:
    with pytest.raises(ConfigError, match="status_token"):
        loop_thread.run(status.serve("0.0.0.0", free_port(), dict))


def test_hub_serves_the_page(stack: Stack, loop_thread: LoopThread) -> None:
    """The real hub, its real office nyc connected: the page shows it, with the token."""
    from spokeshare.tunnel.hub import Hub

    port = free_port()
    cfg = dataclasses.replace(
        stack.dep.hub_config(), status_listen=("127.0.0.1", port), status_token=TOKEN
    )
    stack.stop_hub()
    hub = Hub(cfg, stack.dep.dir)
    loop_thread.run(hub.start())
    try:
        assert get(port, "/")[0] == 401

        def nyc_connected() -> bool:
            return ("nyc", "connected") in parse(get(port, "/", f"Bearer {TOKEN}")[2]).cards

        wait_for(nyc_connected, timeout=40, what="nyc connected on the dashboard")
    finally:
        loop_thread.run(hub.close())


def test_hub_refuses_to_start_off_loopback_without_token(tmp_path: Path) -> None:
    """`spokeshare hub` exits 2 with one line naming the key and the fix."""
    (tmp_path / "hub.toml").write_text(
        f'[hub]\nstatus_listen = "0.0.0.0:{free_port()}"\nstate_dir = "{tmp_path}/state"\n'
        '[services.smb]\nbackend = "127.0.0.1:445"\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "spokeshare", "hub", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "hub.status_listen: 0.0.0.0 is not a loopback address" in lines[0]
    assert "status_token =" in lines[0]
    assert not (tmp_path / "state").exists()  # nothing started


def test_a_degraded_office_shows_its_presence_and_sorts_as_trouble() -> None:
    """The hub's office statistics as the edge's pongs fill them (names -> state,
    printers, degraded entries): the card shows each, and the office sorts as degraded."""
    snap = snapshot(
        {
            "aaa": office(),
            "zzz": office(
                names={"GLOBAL-NFS": "ok", "SCAN": "conflict"},
                printers=("Office laser",),
                degraded=("llmnr: systemd-resolved holds port 5355",),
            ),
        }
    )
    page = dashboard.render(snap, {}, NOW)
    assert "llmnr: systemd-resolved holds port 5355" in page
    assert "GLOBAL-NFS (ok)" in page and "SCAN (conflict)" in page
    assert "Office laser" in page
    rows = dashboard.sort_offices(snap.offices, NOW)
    assert [(name, t) for name, _, t in rows][0] == ("zzz", dashboard.Trouble.DEGRADED)


def test_backends_are_shown_with_their_state_and_counted_when_down() -> None:
    snap = HubStatistics(
        time=NOW,
        backends={
            "smb 198.18.0.12:445": BackendStatistics(
                "smb", "198.18.0.12:445", 1, False, NOW - 90, "Connection <refused>", 3, 0
            ),
            "smb 198.18.0.11:445": BackendStatistics(
                "smb", "198.18.0.11:445", 0, True, NOW - 3600, "", 0, 42
            ),
        },
    )
    page = dashboard.render(snap, {}, NOW)
    assert "1 of 2 backends down" in page
    rows = re.findall(r'<tr class="(up|down)" data-backend="([^"]+)">(.*?)</tr>', page)
    assert [(r[0], r[1]) for r in rows] == [("up", "198.18.0.11:445"), ("down", "198.18.0.12:445")]
    assert "for 60 min" in rows[0][2] and "for 90 s" in rows[1][2]
    assert "<td>42</td>" in rows[0][2]
    assert "Connection &lt;refused&gt;" in rows[1][2]  # escaped
    # From the JSON of /status too, and a snapshot without backends has no section.
    assert dashboard.render(status.schema(stats.to_json(snap)), {}, NOW).count('<tr class="') == 2
    assert '<section class="backends">' not in dashboard.render(snapshot({}), {}, NOW)


def test_several_hubs_show_each_offices_tunnels_per_hub_and_its_control_channel() -> None:
    snap = snapshot(
        {
            "nyc": office(control_hub="hub1", hub_tunnels={"hub0": 2, "hub1": 3}),
            "sfo": office(control_hub="hub0", hub_tunnels={"hub0": 1}),  # one hub only
        },
        hubs=("hub1", "hub0"),
    )
    page = dashboard.render(snap, {}, NOW)
    assert "hubs hub0, hub1" in page
    assert "hub0: 2 tunnels" in page and "hub1: 3 tunnels (control)" in page
    assert "hub0: 1 tunnel" not in page  # an office on one hub shows no hub list
    # The control channel's hub is listed even when it holds no other tunnel.
    only_control = OfficeStatistics(hub_tunnels={"b": 1}, control_hub="c")
    assert dashboard.hub_tunnels(only_control) == [("b", 1), ("c", 0)]


def test_a_backend_the_hub_has_not_checked_yet_is_shown_as_such_not_as_up() -> None:
    snap = HubStatistics(
        time=NOW,
        backends={
            "smb 198.18.0.11:445": BackendStatistics(
                "smb", "198.18.0.11:445", 0, True, NOW - 2, "", 0, 0, checked=False
            ),
        },
    )
    from_json = status.schema(stats.to_json(snap))
    for page in (dashboard.render(snap, {}, NOW), dashboard.render(from_json, {}, NOW)):
        rows = re.findall(r'<tr class="(\w+)" data-backend="([^"]+)">(.*?)</tr>', page)
        assert [(r[0], r[1]) for r in rows] == [("unchecked", "198.18.0.11:445")]
        assert "not checked yet" in rows[0][2]
        assert "backends down" not in page
