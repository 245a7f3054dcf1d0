"""Finding another daemon that serves a LAN protocol on the edge's host.

The socket-table parser is checked against the kernel's own /proc/net tables (sockets
this test opens, in this process and in a child process), the decision with entries
built from those tables. The real daemons (nmbd, wsdd, avahi-daemon) are in the lab
test tests/lab/test_coexist.py.
"""

# ruff: noqa: E501  (socket tables keep the kernel's line layout)
from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from spokeshare.lan import coexist
from tests.helpers import wait_for

# Written in the kernel's layout (net/ipv4/udp.c udp4_format_sock: address words in
# host order as %08X, port %04X; the header line as Linux 6.1 prints it): an nmbd-like
# wildcard 137, a 137 on another interface, avahi-like 5353 on 0.0.0.0 and ::, a
# resolved-like 127.0.0.53:53 stub. The live kernel tables are read further below.
UDP_TABLE = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  104: 00000000:0089 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 51234 2 0000000000000000 0
  105: 0B0B12C6:0089 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 51235 2 0000000000000000 0
  110: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   107        0 61000 2 0000000000000000 0
  111: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 62000 2 0000000000000000 0
"""
UDP6_TABLE = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  110: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   107        0 61001 2 0000000000000000 0
  112: 000080FE000000000000000001000000:0DEA 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 63000 2 0000000000000000 0
"""


def test_parse_tables() -> None:
    v4 = coexist.parse_proc_net(UDP_TABLE, "udp")
    assert [(str(e.address), e.port, e.inode) for e in v4] == [
        ("0.0.0.0", 137, 51234),
        ("198.18.11.11", 137, 51235),
        ("0.0.0.0", 5353, 61000),
        ("127.0.0.53", 53, 62000),
    ]
    v6 = coexist.parse_proc_net(UDP6_TABLE, "udp")
    assert [(str(e.address), e.port) for e in v6] == [("::", 5353), ("fe80::1", 3562)]


def test_foreign_sockets_picks_what_would_hear_our_traffic() -> None:
    entries = coexist.parse_proc_net(UDP_TABLE, "udp") + coexist.parse_proc_net(UDP6_TABLE, "udp")
    lan = ["198.18.11.1", "198.18.11.255"]
    mdns = coexist.foreign_sockets(entries, coexist.PROTOCOL_PORTS["mdns"], frozenset(), lan)
    assert {e.inode for e in mdns} == {61000, 61001}
    # the edge's own sockets never count
    assert not coexist.foreign_sockets(
        entries, coexist.PROTOCOL_PORTS["mdns"], frozenset({61000, 61001}), lan
    )
    # 137 on the wildcard counts; 137 on another interface's address does not
    nb = coexist.foreign_sockets(entries, coexist.PROTOCOL_PORTS["netbios"], frozenset(), lan)
    assert [e.inode for e in nb] == [51234]
    assert not coexist.foreign_sockets(entries, [("udp", 53)], frozenset(), lan)


def test_describe_names_daemon_and_fix() -> None:
    line = coexist.describe("mdns", [coexist.Owner(812, "avahi-daemon")], 5353)
    assert line.startswith("avahi-daemon (pid 812) already serves mdns on port 5353")
    assert "systemctl disable --now avahi-daemon" in line and "mdns = false" in line
    assert "owner not visible" in coexist.describe("llmnr", [], 5355)


def test_systemd_resolved_gets_the_fix_for_the_protocol() -> None:
    """/proc/PID/comm of systemd-resolved is "systemd-resolve" (15 characters): the
    line names it and the resolved.conf setting for that protocol."""
    resolved = coexist.Owner(377, "systemd-resolve")
    llmnr = coexist.describe("llmnr", [resolved], 5355)
    assert llmnr.startswith("systemd-resolve (pid 377) already serves llmnr on port 5355")
    assert "LLMNR=no in /etc/systemd/resolved.conf" in llmnr and "MulticastDNS" not in llmnr
    mdns = coexist.describe("mdns", [resolved], 5353)
    assert "MulticastDNS=no in /etc/systemd/resolved.conf" in mdns and "LLMNR" not in mdns
    both = coexist.describe("mdns", [coexist.Owner(812, "avahi-daemon"), resolved], 5353)
    assert both.startswith("avahi-daemon (pid 812), systemd-resolve (pid 377) already serves")
    assert "avahi-daemon: stop it" in both and "systemd-resolve: set MulticastDNS=no" in both


def test_a_half_started_daemon_is_told_to_restart() -> None:
    """wsdd 0.7 started while the edge held TCP 5357 holds only UDP 3702 (its HTTP bind
    failed, as seen in tests/lab/test_coexist.py): the line says so, and the fix named
    first is a restart; ``spokeshare check`` still finds the daemon before ": "."""
    udp = coexist.SocketEntry("udp", ipaddress.ip_address("239.255.255.250"), 3702, 7, 9001)
    ports = coexist.PROTOCOL_PORTS["wsd"]
    assert coexist.missing_ports(ports, [udp]) == [("tcp", 5357)]
    tcp = coexist.SocketEntry(
        "tcp", ipaddress.ip_address("0.0.0.0"), 5357, coexist.TCP_LISTEN, 9002
    )
    assert coexist.missing_ports(ports, [udp, tcp]) == []
    wsdd = coexist.Owner(4242, "wsdd")
    line = coexist.describe("wsd", [wsdd], 3702, coexist.missing_ports(ports, [udp]))
    what, _, fix = line.partition(": ")
    assert "wsdd (pid 4242)" in what and "but not TCP 5357" in what
    assert fix.startswith("restart it (systemctl restart wsdd) so that it binds TCP 5357 too")
    assert "systemctl disable --now wsdd" in fix
    assert "restart" not in coexist.describe("wsd", [wsdd], 3702)  # whole: no restart


@given(st.lists(st.text(alphabet="0123456789ABCDEF: x", max_size=60), max_size=20))
def test_garbage_lines_are_skipped(lines: list[str]) -> None:
    text = UDP_TABLE + "\n".join(lines)
    entries = coexist.parse_proc_net(text, "udp")
    assert entries[:4] == coexist.parse_proc_net(UDP_TABLE, "udp")
    assert all(0 <= e.port <= 0xFFFF for e in entries)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_scanner_finds_another_process_and_skips_our_own(tmp_path: Path) -> None:
    """A real child process holding a UDP port on the wildcard address is found and
    named; the same port bound by this process (the edge) is not foreign."""
    port = _free_udp_port()
    ports = [("udp", port)]
    scanner = coexist.Scanner()
    mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mine.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    mine.bind(("0.0.0.0", port))
    try:
        assert scanner.check("mdns", ["127.0.0.1"], ports) is None
        ready = tmp_path / "ready"
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import socket,sys,time,pathlib;"
                "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                f"s.bind(('0.0.0.0',{port}));pathlib.Path(sys.argv[1]).touch();time.sleep(60)",
                str(ready),
            ]
        )
        try:
            wait_for(ready.exists, 10, "the child to bind")
            line = scanner.check("mdns", ["127.0.0.1"], ports)
            assert line is not None and f"(pid {child.pid})" in line, line
            assert f"port {port}" in line
        finally:
            child.kill()
            child.wait()
        assert scanner.check("mdns", ["127.0.0.1"], ports) is None
    finally:
        mine.close()


def test_holder_of_a_taken_tcp_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        # held by this very process: owners() leaves the caller out
        assert coexist.Scanner().holder_of("tcp", "127.0.0.1", port) == "another process"


def test_process_name_of_a_script() -> None:
    assert coexist.process_name("python3", ["/usr/bin/python3", "/usr/sbin/wsdd", "-i", "x"]) == (
        "wsdd"
    )
    assert coexist.process_name("python3", ["python3", "-u", "/opt/x/wsdd2"]) == "wsdd2"
    assert coexist.process_name("avahi-daemon", ["avahi-daemon: running [oldbox.local]"]) == (
        "avahi-daemon"
    )
