"""The hub's status page and metrics: pure rendering, and the real endpoint."""

from __future__ import annotations

import dataclasses
import json
import urllib.request

from spokeshare import status
from tests.helpers import LoopThread, Stack, free_port, wait_for


def test_render_metrics() -> None:
    text = status.render_metrics(
        {
            "tunnels": 5,
            "handshakes": 9,
            "handshake_failures": 1,
            "handshakes_in_progress": 3,
            "refusals": {"tls:WRONG_VERSION_NUMBER": 7, "evicted": 2},
            "offices": {
                "nyc": {
                    "connected": True,
                    "rtt_ms": 101.5,
                    "streams": 2,
                    "streams_total": 40,
                    "bytes_up": 10,
                    "bytes_down": 20,
                    "idle_tunnels": 4,
                    "last_seen": 1.7e9,
                }
            },
        }
    )
    assert "spokeshare_hub_tunnels 5\n" in text
    assert 'spokeshare_office_rtt_milliseconds{office="nyc"} 101.5\n' in text
    assert 'spokeshare_office_connected{office="nyc"} 1\n' in text
    assert "# TYPE spokeshare_office_bytes_down_total counter" in text
    assert "spokeshare_hub_handshakes_in_progress 3\n" in text
    assert 'spokeshare_hub_refused_total{cause="tls:WRONG_VERSION_NUMBER"} 7\n' in text
    assert 'spokeshare_hub_refused_total{cause="evicted"} 2\n' in text


def test_answer_rejects() -> None:
    assert status.answer(b"POST /status HTTP/1.1", dict).startswith(b"HTTP/1.1 405")
    assert status.answer(b"GET /nope HTTP/1.1", dict).startswith(b"HTTP/1.1 404")
    assert status.answer(b"\xff\xfe", dict).startswith(b"HTTP/1.1 400")


def test_status_endpoint(stack: Stack, loop_thread: LoopThread) -> None:
    port = free_port()
    cfg = dataclasses.replace(stack.dep.hub_config(), status_listen=("127.0.0.1", port))
    from spokeshare.tunnel.hub import Hub

    stack.stop_hub()
    hub = Hub(cfg, stack.dep.dir)
    loop_thread.run(hub.start())
    try:

        def fetch(path: str) -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return str(r.read().decode())

        def connected() -> bool:
            data = json.loads(fetch("/status"))
            return bool(data["offices"].get("nyc", {}).get("connected"))

        wait_for(connected, timeout=40, what="edge reconnected to the new hub")
        assert 'spokeshare_office_connected{office="nyc"} 1' in fetch("/metrics")
    finally:
        loop_thread.run(hub.close())
