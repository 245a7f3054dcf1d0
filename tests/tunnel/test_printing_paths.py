"""Printing paths on loopback: the reserved LPD source port, the printing-only office.

The lab tests (tests/lab/test_printing_lab.py) print real jobs through these paths with
real clients and servers; here the hub's backend connection and the edge's start-up are
checked on their own.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from spokeshare import bundle, logfmt
from spokeshare.config import RFC1179_SOURCE_PORTS, edge_listeners, for_services, load_edge
from spokeshare.edge_daemon import EdgeDaemon
from spokeshare.tunnel import reserved_port
from spokeshare.tunnel.hub import Hub
from tests.helpers import (
    Backend,
    LoopThread,
    Stack,
    echo,
    free_port,
    make_deployment,
    process,
    recv_all,
    wait_for,
)


def tell_peer_port(conn: socket.socket) -> None:
    """A backend that answers each connection with the peer's source port, then echoes."""
    conn.sendall(b"%d\n" % conn.getpeername()[1])
    echo(conn)


# --- the reserved source port (RFC 1179 section 3.1) ------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="binding ports 721-731 needs root")
def test_hub_connects_to_an_lpd_backend_from_ports_721_to_731(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    backend = Backend(tell_peer_port)
    plain = Backend(tell_peer_port)
    dep = make_deployment(tmp_path, {"lpd": backend.port, "raw": plain.port})
    hub_toml = dep.dir / "hub.toml"
    hub_toml.write_text(
        hub_toml.read_text().replace(
            f'backend = "127.0.0.1:{backend.port}"',
            f'backend = "127.0.0.1:{backend.port}"\nreserved_source_port = true',
        )
    )
    assert dep.hub_config().services["lpd"].first.reserved_source_port
    assert not dep.hub_config().services["raw"].first.reserved_source_port
    stack = Stack(dep, loop_thread, edge_ports={"lpd": free_port(), "raw": free_port()})
    stack.start()
    try:
        conns = [stack.connect("lpd") for _ in range(3)]  # held open together
        ports = []
        for c in conns:
            line = b""
            while not line.endswith(b"\n"):
                line += c.recv(16)
            ports.append(int(line))
        assert all(p in RFC1179_SOURCE_PORTS for p in ports), ports
        assert len(set(ports)) == 3
        conns[0].sendall(b"\x02hq-laser\n")  # RFC 1179 5.2: receive a printer job
        conns[0].shutdown(socket.SHUT_WR)
        assert recv_all(conns[0]) == b"\x02hq-laser\n"
        for c in conns:
            c.close()
        with stack.connect("raw") as s:  # a service without the option: any port
            s.shutdown(socket.SHUT_WR)
            assert int(recv_all(s)) not in RFC1179_SOURCE_PORTS
    finally:
        stack.close()
        backend.close()
        plain.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="binding ports 721-731 needs root")
def test_every_reserved_port_busy_is_a_clear_error() -> None:
    backend = Backend(echo)
    two = range(RFC1179_SOURCE_PORTS.start, RFC1179_SOURCE_PORTS.start + 2)

    async def scenario() -> str:
        held = [await reserved_port.connect("127.0.0.1", backend.port, two) for _ in two]
        try:
            await reserved_port.connect("127.0.0.1", backend.port, two)
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
            return str(exc.strerror)
        finally:
            for s in held:
                s.close()
        raise AssertionError("a third connection got a port from a range of two")

    try:
        assert "every reserved source port (721-722) is in use" in asyncio.run(scenario())
    finally:
        backend.close()


def test_without_the_privilege_the_reason_names_the_fix(tmp_path: Path) -> None:
    """As an unprivileged user (as the hub runs without CAP_NET_BIND_SERVICE)."""
    code = (
        "import asyncio, sys\n"
        "from spokeshare.tunnel import reserved_port\n"
        "try:\n"
        f"    asyncio.run(reserved_port.connect('127.0.0.1', {free_port()}))\n"
        "except PermissionError as exc:\n"
        "    print(exc.strerror)\n"
    )
    argv = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=root)
    assert "needs root or CAP_NET_BIND_SERVICE" in proc.stdout, proc.stdout + proc.stderr


def test_reserved_source_port_must_be_a_boolean(tmp_path: Path) -> None:
    from spokeshare.config import load_hub
    from spokeshare.errors import ConfigError

    path = tmp_path / "hub.toml"
    path.write_text('[services.lpd]\nbackend = "192.0.2.1:515"\nreserved_source_port = "yes"\n')
    with pytest.raises(ConfigError) as info:
        load_hub(path)
    assert info.value.key == "services.lpd.reserved_source_port"


# --- an office enrolled for printing only ----------------------------------------------


def test_default_names_follow_the_bundle_and_given_names_do_not(tmp_path: Path) -> None:
    cfg = load_edge(None, {"lan_address": "198.18.11.1"})
    assert [n.name for n in for_services(cfg, ("smb", "ipp")).names] == ["GLOBAL-NFS"]
    printing = for_services(cfg, ("ipp",))
    assert printing.names == ()
    assert edge_listeners(printing, ("ipp",)) == {("198.18.11.1", 631): "ipp"}
    assert for_services(printing, ("smb", "ipp")).names == ()  # resolved once, kept
    given = tmp_path / "edge.toml"
    given.write_text('[[names]]\nname = "GLOBAL-NFS"\nservice = "smb"\n')
    explicit = load_edge(given, {"lan_address": "198.18.11.1"})
    assert for_services(explicit, ("ipp",)).names == explicit.names  # still refused later
    none = tmp_path / "none.toml"
    none.write_text("names = []\n")
    assert load_edge(none, {"lan_address": "198.18.11.1"}).names == ()


def test_printing_only_office_edge_starts_and_relays_ipp(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    """``office add NAME --services ipp,raw`` then ``spokeshare edge --bundle``: the edge
    runs with no file-server name and carries the printing services (here raw, to a
    loopback stand-in backend: the hub refuses a loopback ipp backend by design, so IPP
    through the hub is tested against a real cupsd in tests/lab/test_ipp_hub_lab.py)."""
    backend = Backend(echo)
    dep = make_deployment(tmp_path, {"smb": free_port(), "ipp": free_port(),
                                     "raw": backend.port})  # fmt: skip
    path = dep.add_office("shop", ["ipp", "raw"])
    ipp, raw = free_port(), free_port()
    cfg = load_edge(None, {"bundle": str(path), "lan_address": "127.0.0.1",
                           "ports": {"ipp": ipp, "raw": raw}})  # fmt: skip
    daemon = EdgeDaemon(cfg, bundle.read(path))  # before: names[0].service refused
    assert daemon.cfg.names == ()
    assert daemon.edge.listeners == {("127.0.0.1", ipp): "ipp", ("127.0.0.1", raw): "raw"}
    hub = Hub(dep.hub_config(), dep.dir)
    try:
        loop_thread.run(hub.start())
        loop_thread.run(daemon.start())
        wait_for(lambda: loop_thread.call(lambda: daemon.edge.hub_state.value == "up"))
        request = b"POST /printers/hq-laser HTTP/1.1\r\nHost: x\r\n\r\n"
        with socket.create_connection(("127.0.0.1", raw), timeout=10) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == request
    finally:
        loop_thread.run(daemon.close())
        loop_thread.run(hub.close())
        backend.close()


def test_spokeshare_edge_with_a_printing_only_bundle_starts(tmp_path: Path) -> None:
    """The command line of the issue, as an office would run it."""
    dep = make_deployment(tmp_path, {"smb": free_port(), "ipp": free_port()})
    path = dep.add_office("shop", ["ipp"])
    ipp = free_port()
    argv = [sys.executable, "-m", "spokeshare", "edge", "--bundle", str(path),
            "--lan-address", "127.0.0.1", "--port", f"ipp={ipp}"]  # fmt: skip
    log = tmp_path / "edge.log"
    with log.open("wb") as out, process(argv, stdout=out, stderr=subprocess.STDOUT) as proc:
        wait_for(lambda: logfmt.find(log.read_text(), "edge up") or proc.poll() is not None,
                 timeout=30, what="the edge up")  # fmt: skip
        [up] = logfmt.find(log.read_text(), "edge up")
        assert (up["office"], up["names"]) == ("shop", "")
        text = log.read_text()
        assert proc.poll() is None, text
    listening = logfmt.find(text, "listening")
    assert {"address": "127.0.0.1", "port": str(ipp), "service": "ipp"} in listening
    assert "may not use service" not in text
    assert [f["service"] for f in listening] == ["ipp"]  # no smb listener
