"""Bad input at the hub and the edge: each gets a clear log line and disturbs nothing else."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spokeshare import bundle, enrollment, logfmt
from spokeshare.tunnel import tls, wire
from tests.helpers import (
    Deployment,
    LoopThread,
    Stack,
    logged,
    make_deployment,
    process,
    recv_all,
    wait_for,
)
from tests.tunnel.flood import truncated_client_hello


def refused(s: ssl.SSLSocket) -> bool:
    """The hub refused the handshake: an alert, a reset or a close, never a status."""
    try:
        s.sendall(wire.encode_open(wire.OpenStream("smb")))
        return s.recv(10) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def tunnel(dep: Deployment, bundle_path: Path) -> ssl.SSLSocket:
    """A raw tunnel to the hub with an office's identity (what an edge would open)."""
    b = bundle.read(bundle_path)
    ctx = tls.client_context(b.ca_pem, b.cert_pem, b.key_pem)
    raw = socket.create_connection(("127.0.0.1", dep.hub_port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=b.hub_name)


def read_status(s: ssl.SSLSocket) -> wire.StatusReply:
    buf = b""
    while (parsed := wire.parse_status(buf)) is None:
        chunk = s.recv(4096)
        if not chunk:
            raise AssertionError(f"closed before a status ({buf!r})")
        buf += chunk
    return parsed[0]


def still_serves(stack: Stack) -> None:
    with stack.connect() as c:
        c.sendall(b"still here")
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b"still here"


def _handshake_failed(caplog: pytest.LogCaptureFixture, reason: str) -> bool:
    """The hub logged a ``handshake failed`` line for a certificate, saying ``reason``."""
    return any(
        line["cause"] == "certificate" and reason in line["reason"]
        for line in logged(caplog, "handshake failed")
    )


def messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n", os.urandom(4096)])
def test_plaintext_or_random_bytes(
    stack: Stack, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", stack.dep.hub_port)) as s:
        s.sendall(garbage)
        try:
            rest = recv_all(s)
        except ConnectionResetError:
            rest = b""
        assert b"HTTP" not in rest
    wait_for(lambda: logged(caplog, "handshake failed"), what="handshake log")
    line = logged(caplog, "handshake failed")[0]
    assert line["peer"].startswith("127.0.0.1:") and line["cause"] and line["reason"]
    still_serves(stack)


def test_certificate_from_another_ca(
    stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = make_deployment(tmp_path / "other")
    b = bundle.read(other.bundles["nyc"])
    mine = bundle.read(stack.dep.bundles["nyc"])
    # Trust this hub's CA (so the client side gets through) but present a foreign cert.
    ctx = tls.client_context(mine.ca_pem, b.cert_pem, b.key_pem)
    with socket.create_connection(("127.0.0.1", stack.dep.hub_port)) as raw:
        try:
            s = ctx.wrap_socket(raw, server_hostname=mine.hub_name)
        except (ssl.SSLError, ConnectionResetError):
            pass
        else:
            with s:
                assert refused(s)
    wait_for(lambda: _handshake_failed(caplog, "certificate rejected"), what="rejection log")
    still_serves(stack)


def test_expired_certificate(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    path = stack.dep.add_office("old", now=past, days=1, not_before=past - dt.timedelta(days=1))
    try:
        s = tunnel(stack.dep, path)
    except (ssl.SSLError, ConnectionResetError):
        pass
    else:
        with s:
            assert refused(s)
    wait_for(lambda: _handshake_failed(caplog, "certificate has expired"), what="expiry log")
    still_serves(stack)


def test_revoked_office_refused(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    path = stack.dep.add_office("gone")
    enrollment.revoke_office(stack.dep.dir, "gone")
    wait_for(
        lambda: stack.lt.call(lambda: getattr(stack.hub.registry.get("gone"), "revoked", None)),
        what="hub to reload the registry",
    )
    with tunnel(stack.dep, path) as s:
        assert read_status(s).status is wire.Status.REVOKED
    assert "office=gone peer=127.0.0.1:" in messages(caplog)
    assert 'status=REVOKED reason="office gone is revoked"' in messages(caplog)
    still_serves(stack)


def test_unknown_service(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    with tunnel(stack.dep, stack.dep.bundles["nyc"]) as s:
        s.sendall(wire.encode_open(wire.OpenStream("printer", "198.18.11.10", 5000)))
        reply = read_status(s)
        assert reply.status is wire.Status.UNKNOWN_SERVICE
        assert recv_all(s) == b""
    assert "result=refused status=UNKNOWN_SERVICE" in messages(caplog)
    assert "client=198.18.11.10:5000" in messages(caplog)
    still_serves(stack)


def test_service_not_allowed(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    path = stack.dep.add_office("printonly", services=["ipp"])
    with tunnel(stack.dep, path) as s:
        s.sendall(wire.encode_open(wire.OpenStream("smb")))
        assert read_status(s).status is wire.Status.NOT_ALLOWED
    assert "office printonly may not use 'smb'" in messages(caplog)


def test_unsupported_version(stack: Stack) -> None:
    with tunnel(stack.dep, stack.dep.bundles["nyc"]) as s:
        s.sendall(b"\x07\x01\x00\x00")
        reply = read_status(s)
    assert reply.status is wire.Status.UNSUPPORTED_VERSION
    assert "this hub speaks 1" in reply.reason


def test_oversized_header(stack: Stack) -> None:
    with tunnel(stack.dep, stack.dep.bundles["nyc"]) as s:
        s.sendall(b"\x01\x01\xff\xff" + b"a" * 100)
        assert read_status(s).status is wire.Status.BAD_HEADER


def test_truncated_header_then_close(stack: Stack) -> None:
    before = stack.lt.call(lambda: stack.hub.tunnel_count())
    with tunnel(stack.dep, stack.dep.bundles["nyc"]) as s:
        s.sendall(wire.encode_open(wire.OpenStream("smb"))[:5])
    wait_for(
        lambda: stack.lt.call(lambda: stack.hub.tunnel_count()) <= before,
        what="hub to drop the half-open tunnel",
    )
    still_serves(stack)


def test_slow_header_one_byte_a_second(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """header_timeout is 2 s in this stack; a header trickled at 1 byte/s is refused.
    One thread sends and reads (an SSL socket is not safe to write in one thread while
    another reads: the status was once lost that way): a byte, then up to a second
    waiting for the hub's answer."""
    header = wire.encode_open(wire.OpenStream("smb", "198.18.11.10", 1))
    with tunnel(stack.dep, stack.dep.bundles["nyc"]) as s:
        for b in header:
            try:
                s.sendall(bytes([b]))
            except OSError:
                break
            if select.select([s], [], [], 1.0)[0]:
                break
        reply = read_status(s)
    assert reply.status is wire.Status.BAD_HEADER
    assert "open header too slow" in messages(caplog)
    still_serves(stack)


def test_backend_down_status(
    deployment: Deployment, loop_thread: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        deployment.set_backend("smb", holder.getsockname()[1])
        st = Stack(deployment, loop_thread).start()
        try:
            with tunnel(deployment, deployment.bundles["nyc"]) as s:
                s.sendall(wire.encode_open(wire.OpenStream("smb")) + b"client bytes")
                assert read_status(s).status is wire.Status.BACKEND_DOWN
            wait_for(
                lambda: "result=refused status=BACKEND_DOWN" in messages(caplog), what="stream log"
            )
        finally:
            st.close()


def test_hub_down_fails_fast_then_recovers(
    stack: Stack, deployment: Deployment, loop_thread: LoopThread
) -> None:
    stack.stop_hub()
    wait_for(
        lambda: stack.lt.call(lambda: stack.edge.hub_state.value) == "down",
        what="edge to notice the hub is gone",
    )
    # A new client connection is closed at once, not left hanging (socket timeout 1.5 s
    # turns a hang into a test failure).
    # The edge may reset the connection before the client's first write: either end
    # (EOF or reset, on the write or on the read) is the fast failure this checks.
    # (The reset may even come before connect() returns.)
    try:
        with stack.connect(timeout=1.5) as c:
            c.sendall(b"anyone there?")
            assert c.recv(10) == b""
    except (ConnectionResetError, BrokenPipeError):
        pass
    assert stack.lt.call(lambda: stack.edge.streams_failed) >= 1
    # The edge keeps trying: a hub back on the same port is found without help.
    from spokeshare.tunnel.hub import Hub

    hub2 = Hub(deployment.hub_config(), deployment.dir)
    loop_thread.run(hub2.start())
    try:
        wait_for(
            lambda: stack.lt.call(lambda: stack.edge.hub_state.value) == "up",
            timeout=40,
            what="edge to reconnect",
        )
        still_serves(stack)
        # Its failed dials are counted by cause, and the hub learns them from its pongs.
        dials = stack.lt.call(stack.edge.statistics).dial_failures
        assert dials.get("refused", 0) >= 1, dials
        wait_for(
            lambda: (
                stack.lt.call(lambda: hub2.statistics().offices["nyc"].edge_dial_failures)
                == stack.lt.call(stack.edge.statistics).dial_failures
            ),
            what="the edge's dial failures in the hub's statistics",
        )
    finally:
        loop_thread.run(hub2.close())


@pytest.mark.expect_errors  # the edge logs its office's revocation at ERROR
def test_revoke_cuts_live_tunnels(stack: Stack) -> None:
    c = stack.connect()
    c.sendall(b"ping")
    assert c.recv(4) == b"ping"
    enrollment.revoke_office(stack.dep.dir, "nyc")
    c.settimeout(5)  # the bound: live tunnels cut within 5 seconds
    try:
        assert c.recv(10) == b""
    except ConnectionResetError:
        pass
    c.close()
    wait_for(
        lambda: stack.lt.call(lambda: stack.edge.hub_state.value) == "revoked",
        what="edge to learn it is revoked",
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spokeshare", *args], capture_output=True, text=True, timeout=60
    )


def test_edge_refuses_bad_bundles(deployment: Deployment, tmp_path: Path) -> None:
    good = deployment.bundles["nyc"]
    corrupt = tmp_path / "corrupt.bundle"
    corrupt.write_bytes(good.read_bytes()[:300])
    corrupt.chmod(0o600)
    loose = tmp_path / "loose.bundle"
    loose.write_bytes(good.read_bytes())
    loose.chmod(0o644)
    missing = tmp_path / "missing.bundle"
    for path, reason in [
        (corrupt, "corrupt"),
        (loose, f"bundle {loose} is readable by others (mode 644); run: chmod 600"),
        (missing, "no such file"),
    ]:
        res = run_cli(
            "edge",
            "--bundle",
            str(path),
            "--lan-address",
            "127.0.0.1",
            "--port",
            "smb=0",
            "--port",
            "ipp=0",
        )
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], res.stderr


def test_edge_refuses_bad_config(deployment: Deployment, tmp_path: Path) -> None:
    conf = tmp_path / "edge.toml"
    conf.write_text('[lan]\naddress = "127.0.0.1"\nworkgrup = "ACME"\n')
    res = run_cli("edge", "--config", str(conf), "--bundle", str(deployment.bundles["nyc"]))
    assert res.returncode == 2
    assert res.stderr.strip() == f"spokeshare: {conf}: lan.workgrup: unknown key"


def test_many_bad_tunnels_do_not_disturb_a_transfer(stack: Stack) -> None:
    """While garbage pours in, a 16 MiB echo keeps every byte."""
    payload = os.urandom(16 << 20)
    stop = threading.Event()

    def attack() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", stack.dep.hub_port), 2) as s:
                    s.sendall(os.urandom(512))
            except OSError:
                pass
            time.sleep(0.005)

    threads = [threading.Thread(target=attack, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with stack.connect(timeout=60) as c:
            got = bytearray()
            r = threading.Thread(target=lambda: got.extend(recv_all(c)))
            r.start()
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            r.join(60)
        assert bytes(got) == payload
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_renewal_keeps_the_office_working_then_cut_previous(stack: Stack, tmp_path: Path) -> None:
    old_edge_stream = stack.connect()
    old_edge_stream.sendall(b"before")
    assert old_edge_stream.recv(6) == b"before"
    new = tmp_path / "nyc-new.bundle"
    enrollment.renew_office(stack.dep.dir, "nyc", new)
    assert (
        bundle.read(new).cert.serial_number
        != bundle.read(stack.dep.bundles["nyc"]).cert.serial_number
    )
    # The new certificate is admitted (the hub answers the header, not REVOKED) ...
    with tunnel(stack.dep, new) as s:
        s.sendall(wire.encode_open(wire.OpenStream("printer")))
        assert read_status(s).status is wire.Status.UNKNOWN_SERVICE
    # ... and the edge still running on the old bundle keeps working, live stream too.
    old_edge_stream.sendall(b"after")
    assert old_edge_stream.recv(5) == b"after"
    still_serves(stack)
    # Renewing again with cut_previous refuses the old certificate, live tunnels included.
    newer = tmp_path / "nyc-newer.bundle"
    enrollment.renew_office(stack.dep.dir, "nyc", newer, cut_previous=True)
    old_edge_stream.settimeout(5)
    try:
        assert old_edge_stream.recv(10) == b""
    except ConnectionResetError:
        pass
    old_edge_stream.close()
    with tunnel(stack.dep, new) as s:  # the first renewal's certificate is retired too
        assert read_status(s).status is wire.Status.REVOKED
    with tunnel(stack.dep, newer) as s:
        s.sendall(wire.encode_open(wire.OpenStream("printer")))
        assert read_status(s).status is wire.Status.UNKNOWN_SERVICE


def test_handshake_cap_drops_the_oldest_and_offices_still_connect(
    deployment: Deployment, loop_thread: LoopThread
) -> None:
    """``limits.max_handshakes`` = 4 and ten connections that each send half a TLS 1.3
    ClientHello and stall: handshakes in progress never exceed 4 (the hub's
    statistics, sampled every millisecond on its loop); as the README says, at the cap
    the oldest handshake is dropped (``cause=evicted``): the first six are closed, the
    last four wait. An enrolled office then connects (its handshakes evict stalled
    ones in turn) and relays."""
    stack = Stack(deployment, loop_thread, hub_limits={"max_handshakes": 4})
    stack.start_hub()
    hub = stack.hub
    seen: list[int] = []

    async def sample() -> None:
        while True:
            seen.append(hub.statistics().handshakes_in_progress)
            await asyncio.sleep(0.001)

    def count() -> tuple[int, int]:
        st = loop_thread.call(hub.statistics)
        return st.handshakes_in_progress, st.refusals.get("evicted", 0)

    sampler = loop_thread.call(lambda: asyncio.get_running_loop().create_task(sample()))
    hello = truncated_client_hello()
    stalled: list[socket.socket] = []
    try:
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", deployment.hub_port), timeout=10)
            stalled.append(s)
            s.sendall(hello)
            # One at a time, so that "oldest" is the order they were opened in.
            n = i + 1
            wait_for(lambda n=n: sum(count()) == n, what=f"connection {n} at the hub")  # type: ignore[misc]
        assert count() == (4, 6)
        for s in stalled[:6]:  # dropped: the hub closed them
            s.settimeout(5)
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
        for s in stalled[6:]:  # still in their handshake, waiting for the rest
            s.settimeout(0.2)
            with pytest.raises(TimeoutError):
                s.recv(1)
        stack.start_edge()  # control channel and a warm pool: handshakes through the cap
        still_serves(stack)
        assert count()[1] > 6  # the office's handshakes evicted stalled ones
        assert seen and max(seen) <= 4, max(seen)
    finally:
        loop_thread.call(sampler.cancel)
        for s in stalled:
            s.close()
        stack.close()


def test_edge_on_an_address_no_interface_has_says_so(deployment: Deployment) -> None:
    """``--lan-address`` (or ``[lan] address``) that is not this box's: nobody holds the
    ports, so the edge's lines name no holder, and their fix says to set the box's own
    address. The edge goes on (the address may come), stopped here by PID."""
    absent = "198.18.255.254"  # on no interface of this host (lab range, never routed)
    argv = [sys.executable, "-m", "spokeshare", "edge", "--bundle", str(deployment.bundles["nyc"]),
            "--lan-address", absent, "--port", "smb=0", "--port", "ipp=0"]  # fmt: skip
    with process(argv, stderr=subprocess.PIPE) as edge:
        stderr = edge.stderr
        assert stderr is not None
        seen: list[str] = []

        def failed_line() -> dict[str, str] | None:
            seen.append(stderr.readline().decode())
            assert seen[-1] or edge.poll() is None, "".join(seen)
            found = logfmt.find(seen[-1], "listener failed")
            return found[0] if found else None

        fields = wait_for(failed_line, timeout=30, what="the edge's listener line")
    assert fields["address"] == absent and "holder" not in fields, seen
    assert f"no interface of this box has {absent}" in fields["fix"], seen
