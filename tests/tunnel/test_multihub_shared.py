"""Several hubs, one deployment: what the hubs share through the deployment directory.

Hubs on 127.0.0.2 and .3 share one temporary deployment directory, as hubs on several
hosts share the cluster's filesystem: the registry (offices added, revoked), the CA
certificate, the renewal spool and every hub's status snapshot. The CA key lives
outside it, with hub 0 only.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from spokeshare import bundle, cli, enrollment
from spokeshare.errors import EnrollmentError
from tests.helpers import Backend, LoopThread, wait_for
from tests.tunnel.multihub import (
    Hubs,
    echo_through,
    make_edge,
    make_hubs,
    stop_in_loop,
    wait_spread,
)


@pytest.fixture
def hubs(tmp_path: Path, echo_backend: Backend) -> Hubs:
    return make_hubs(tmp_path, 2, {"smb": echo_backend.port})


@pytest.mark.expect_errors  # the edge logs its office's revocation at ERROR
def test_revoke_at_one_hub_cuts_the_office_on_every_hub(
    hubs: Hubs, loop_thread: LoopThread
) -> None:
    running = hubs.start_in_loop(loop_thread)
    edge, port = make_edge(hubs, min_idle=4)
    loop_thread.run(edge.start())
    try:
        wait_spread(loop_thread, edge, [0, 1], at_least=2)
        # a live stream on each hub
        clients = []
        for _ in range(4):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"ping")
            assert c.recv(4) == b"ping"
            clients.append(c)
        wait_for(lambda: all(loop_thread.call(h.tunnel_count) >= 2 for h in running),
                 what="tunnels on both hubs")  # fmt: skip
        # `office revoke` run at hub 0's host: the shared registry changes
        enrollment.revoke_office(hubs.dir, "nyc")
        for h in running:
            wait_for(lambda: loop_thread.call(h.tunnel_count) == 0,  # noqa: B023
                     timeout=10, what=f"{h.cfg.name} cutting the revoked office")  # fmt: skip
        for c in clients:
            c.settimeout(10)
            try:
                assert c.recv(10) == b""
            except ConnectionResetError:
                pass
            c.close()
        wait_for(lambda: loop_thread.call(lambda: edge.hub_state.value) == "revoked",
                 what="edge revoked")  # fmt: skip
    finally:
        stop_in_loop(loop_thread, edge, running)


def test_office_added_at_one_hub_is_admitted_by_every_hub(
    hubs: Hubs, loop_thread: LoopThread
) -> None:
    running = hubs.start_in_loop(loop_thread)
    edge = None
    try:
        # `office add` after both hubs loaded the registry
        wait_for(lambda: all("nyc" in loop_thread.call(partial(getattr, h, "registry"))
                             for h in running), what="registry loaded")  # fmt: skip
        hubs.dep.add_office("bos")
        edge, port = make_edge(hubs, office="bos", min_idle=4)
        loop_thread.run(edge.start())
        wait_spread(loop_thread, edge, [0, 1], at_least=2)
        for h in running:
            assert loop_thread.call(partial(_tunnels_of, h, "bos")) >= 2
        payload = random.randbytes(30_000)
        for _ in range(4):
            assert echo_through(port, payload) == payload
    finally:
        stop_in_loop(loop_thread, edge, running)


def _tunnels_of(hub: Any, office: str) -> int:
    return len(hub.offices[office].tunnels)


def _ca_only_on_hub0(hubs: Hubs) -> Path:
    """Move ca.key out of the shared directory to hub 0's own place; return it."""
    key = hubs.dir.parent / "ca-host" / "ca.key"
    key.parent.mkdir(mode=0o700)
    shutil.move(hubs.dir / "ca.key", key)
    dep = hubs.dir / "deployment.toml"
    text = "\n".join(
        line for line in dep.read_text().splitlines() if not line.startswith("ca_host")
    )
    dep.write_text(text + '\nca_host = "hq-ca.example"\n')
    return key


def test_issuing_without_the_ca_key_is_refused_naming_the_ca_host(
    hubs: Hubs, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _ca_only_on_hub0(hubs)
    out = hubs.dir.parent / "sfo.bundle"
    with pytest.raises(EnrollmentError, match="hq-ca.example"):
        enrollment.add_office(hubs.dir, "sfo", None, out)
    with pytest.raises(EnrollmentError, match="hq-ca.example"):
        enrollment.renew_office(hubs.dir, "nyc", hubs.dir.parent / "nyc2.bundle")
    assert not out.exists() and "sfo" not in enrollment.load_registry(hubs.dir)
    code = cli.main(["office", "add", "sfo", "--dir", str(hubs.dir), "--out", str(out)])
    assert code != 0
    assert "hq-ca.example" in capsys.readouterr().err
    # on the CA host, with its key
    assert cli.main(["office", "add", "sfo", "--dir", str(hubs.dir), "--out", str(out),
                     "--ca-key", str(key)]) == 0  # fmt: skip
    assert "sfo" in enrollment.load_registry(hubs.dir)


LIFETIME = 60 / 86400  # days: the certificate lives 60 seconds


def test_renewal_through_a_hub_without_the_ca_key(hubs: Hubs, loop_thread: LoopThread) -> None:
    """The office's control channel is on hub 1, which has no CA key: its request goes
    through the shared spool to hub 0 (the CA host), and the edge installs the result."""
    key = _ca_only_on_hub0(hubs)
    out = hubs.dep.add_office("bos", days=LIFETIME, ca_key=key)
    old = bundle.read(out)
    running = hubs.start_in_loop(loop_thread, hub0={"ca_key": key},
                     hub1={"ca_key": hubs.dir.parent / "nowhere" / "ca.key"})  # fmt: skip
    # only hub 1 in this edge's list: its control channel and renewal go there
    edge, _ = make_edge(hubs, office="bos", only_hubs=[1], renew_at=0.4, min_idle=1)
    loop_thread.run(edge.start())
    try:
        wait_for(lambda: loop_thread.call(lambda: running[1].offices.get("bos")) is not None
                 and loop_thread.call(lambda: running[1].offices["bos"].control) is not None,
                 what="control channel on hub 1")  # fmt: skip
        wait_for(lambda: loop_thread.call(lambda: edge.renewed) is not None, timeout=90,
                 what="renewal through hub 1")  # fmt: skip
        new = bundle.read(out)
        assert new.cert.serial_number != old.cert.serial_number
        rec = enrollment.load_registry(hubs.dir)["bos"]
        assert rec.serial == new.cert.serial_number
        assert not list((hubs.dir / "spool" / "renew").glob("*.json"))  # answered, removed
        assert loop_thread.call(lambda: running[0].offices.get("bos")) is None  # never there
    finally:
        stop_in_loop(loop_thread, edge, running)


def test_every_hub_reports_the_whole_deployment(
    hubs: Hubs, loop_thread: LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    running = hubs.start_in_loop(loop_thread)
    edge, _ = make_edge(hubs, min_idle=4)
    loop_thread.run(edge.start())
    try:
        wait_spread(loop_thread, edge, [0, 1], at_least=2)
        ctl = f"hub{loop_thread.call(lambda: edge.control_hub)}"

        def listed() -> dict[str, Any] | None:
            capsys.readouterr()
            assert cli.main(["office", "list", "--dir", str(hubs.dir), "--json"]) == 0
            data: dict[str, Any] = json.loads(capsys.readouterr().out)
            row = data["offices"][0]
            both = set(row["hub_tunnels"]) == {"hub0", "hub1"}
            return data if both and row["control_hub"] == ctl else None

        data = wait_for(listed, what="office list showing both hubs")
        assert data["hubs"] == ["hub0", "hub1"]
        assert data["offices"][0]["connected"] is True
        # each hub's own merged view (its /status and /metrics) holds the other's too
        for h in running:
            merged = loop_thread.call(h.merged_statistics)
            assert set(merged.hubs) == {"hub0", "hub1"}
            assert set(merged.offices["nyc"].hub_tunnels) == {"hub0", "hub1"}
            assert merged.offices["nyc"].control_hub == ctl
        from spokeshare.stats import render_metrics

        metrics = render_metrics(loop_thread.call(running[1].merged_statistics))
        assert 'spokeshare_office_hub_tunnels{office="nyc",hub="hub0"}' in metrics
        assert 'spokeshare_office_hub_tunnels{office="nyc",hub="hub1"}' in metrics
    finally:
        stop_in_loop(loop_thread, edge, running)
