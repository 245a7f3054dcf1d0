#!/usr/bin/env python3
"""Capture real NetBIOS bytes from Samba's own tools, for the codec tests.

Usage (as root, from the repository root)::

    python3 tests/lan/vectors/capture.py [OUTDIR]     # default: tests/lan/vectors

What it builds, and removes again in a ``finally`` (also on Ctrl-C):

- two network namespaces, ``nbcap-lst`` (198.18.200.1/24, the listener) and
  ``nbcap-pc`` (198.18.200.2/24, where the real tools run), joined by a veth pair
  ``nbcap-l0``/``nbcap-p0``. Nothing else on the host is touched.

What it records (a plain Python socket listener in ``nbcap-lst``, no tcpdump):

- ``nmblookup -B 198.18.200.255 GLOBAL-NFS``: a broadcast name query (UDP 137);
- ``nmblookup -A 198.18.200.1``: a node status request (UDP 137);
- ``smbclient -p 139 //GLOBAL-NFS/share``: the NetBIOS session requests (TCP 139),
  answered with "called name not present" so smbclient also tries ``*SMBSERVER``;
- a real ``nmbd`` (generated smb.conf in a temp dir, never the system one, started
  with ``-F`` in its own session, stopped by PID): its broadcast registrations on
  UDP 137, its browse datagrams on UDP 138 (election, AnnouncementRequest,
  HostAnnouncement, LocalMasterAnnouncement, and the server-type-0 announcement it
  sends on SIGTERM);
- nmbd's answers to a node status request, a name query and a registration of one
  of its own names (the ACT_ERR defence), probed from ``nbcap-lst``.

Each packet is written as ``NN-<kind>-<port>.bin``; ``index.txt`` lists them with
source address and length. The tests choose the ones they use by file name
(``vectors/README.md`` labels them like a Wireshark summary line).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LST_NS, PC_NS = "nbcap-lst", "nbcap-pc"
LST_IF, PC_IF = "nbcap-l0", "nbcap-p0"
LST_IP, PC_IP, BCAST = "198.18.200.1", "198.18.200.2", "198.18.200.255"
HERE = Path(__file__).resolve()


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def netns_up() -> None:
    for ns in (LST_NS, PC_NS):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh(
        "ip",
        "link",
        "add",
        LST_IF,
        "netns",
        LST_NS,
        "type",
        "veth",
        "peer",
        "name",
        PC_IF,
        "netns",
        PC_NS,
    )
    sh("ip", "-n", LST_NS, "addr", "add", f"{LST_IP}/24", "brd", BCAST, "dev", LST_IF)
    sh("ip", "-n", PC_NS, "addr", "add", f"{PC_IP}/24", "brd", BCAST, "dev", PC_IF)
    sh("ip", "-n", LST_NS, "link", "set", LST_IF, "up")
    sh("ip", "-n", PC_NS, "link", "set", PC_IF, "up")


def netns_down() -> None:
    for ns in (LST_NS, PC_NS):
        sh("ip", "netns", "del", ns, check=False)


# -- the listener, run inside nbcap-lst ------------------------------------------------
def listen(outdir: Path, seconds: float) -> None:
    """Record every datagram to UDP 137/138 and every session request on TCP 139."""
    sel = selectors.DefaultSelector()
    for port in (137, 138):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.bind(("", port))
        sel.register(s, selectors.EVENT_READ, ("udp", port))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((LST_IP, 139))
    t.listen(4)
    sel.register(t, selectors.EVENT_READ, ("tcp", 139))
    records = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.2):
            kind, port = key.data
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if kind == "udp":
                data, (ip, sport) = sock.recvfrom(65535)
            else:
                conn, (ip, sport) = sock.accept()
                conn.settimeout(5)
                head = conn.recv(4, socket.MSG_WAITALL)
                (length,) = struct.unpack(">H", head[2:4])
                length |= (head[1] & 1) << 16
                data = head + conn.recv(length, socket.MSG_WAITALL)
                # NEGATIVE SESSION RESPONSE, error 0x82 "Called name not present"
                conn.sendall(bytes([0x83, 0, 0, 1, 0x82]))
                conn.close()
            records.append(
                {
                    "t": time.time(),
                    "proto": kind,
                    "port": port,
                    "src": ip,
                    "sport": sport,
                    "hex": data.hex(),
                }
            )
    (outdir / "listener.json").write_text(json.dumps(records, indent=1))


def probe(outdir: Path) -> None:
    """From an ephemeral port, ask nmbd for node status, a name, and to give a name up."""

    def name(n: str, suffix: int) -> bytes:
        raw = (n.encode().ljust(15, b" ") if n != "*" else b"*".ljust(15, b"\0")) + bytes([suffix])
        return b"\x20" + bytes(0x41 + (c >> i & 0xF) for c in raw for i in (4, 0)) + b"\x00"

    probes = {
        # node status request for *<00>: flags 0x0000, QDCOUNT 1, QTYPE NBSTAT
        "nodestatus": struct.pack(">6H", 0x4E01, 0x0000, 1, 0, 0, 0)
        + name("*", 0)
        + struct.pack(">HH", 0x21, 1),
        # unicast name query for NBCAP-FS<20>, RD set
        "query": struct.pack(">6H", 0x4E02, 0x0100, 1, 0, 0, 0)
        + name("NBCAP-FS", 0x20)
        + struct.pack(">HH", 0x20, 1),
        # broadcast-flagged registration of NBCAP-FS<20> for our address (defence test)
        "register": struct.pack(">6H", 0x4E03, 0x2910, 1, 0, 0, 1)
        + name("NBCAP-FS", 0x20)
        + struct.pack(">HH", 0x20, 1)
        + b"\xc0\x0c"
        + struct.pack(">HHIHH", 0x20, 1, 0, 6, 0)
        + socket.inet_aton(LST_IP),
    }
    records = []
    for label, pkt in probes.items():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(pkt, (PC_IP, 137))
        try:
            data, (ip, sport) = s.recvfrom(65535)
            records.append({"label": label, "src": ip, "sport": sport, "hex": data.hex()})
        except TimeoutError:
            records.append({"label": label, "src": None, "hex": ""})
        s.close()
    (outdir / "probe.json").write_text(json.dumps(records, indent=1))


# -- orchestration, in the root namespace ----------------------------------------------
SMB_CONF = """[global]
    workgroup = ACME
    netbios name = NBCAP-FS
    server string = Capture file server
    interfaces = {ip}/24
    bind interfaces only = yes
    local master = yes
    preferred master = yes
    os level = 65
    domain master = no
    wins support = no
    disable netbios = no
    client min protocol = NT1
    lock directory = {d}/lock
    state directory = {d}/state
    cache directory = {d}/cache
    private dir = {d}/private
    pid directory = {d}/pid
    ncalrpc dir = {d}/ncalrpc
    log file = {d}/log.%m
    max log size = 0
"""


def run_capture(outdir: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nbcap-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc"):
            (tmp / sub).mkdir()
        conf = tmp / "smb.conf"
        conf.write_text(SMB_CONF.format(ip=PC_IP, d=tmp))
        netns_up()
        me = [sys.executable, str(HERE)]
        listener = subprocess.Popen(
            ["ip", "netns", "exec", LST_NS, *me, "--listen", str(tmp), "110"]
        )
        procs.append(listener)
        time.sleep(1.0)
        pc = ["ip", "netns", "exec", PC_NS]
        sh(
            *pc,
            "timeout",
            "10",
            "nmblookup",
            "-s",
            str(conf),
            "-B",
            BCAST,
            "GLOBAL-NFS",
            check=False,
        )
        sh(*pc, "timeout", "10", "nmblookup", "-s", str(conf), "-A", LST_IP, check=False)
        sh(
            *pc,
            "timeout",
            "15",
            "smbclient",
            "-s",
            str(conf),
            "-p",
            "139",
            "-I",
            LST_IP,
            "-N",
            "//GLOBAL-NFS/share",
            "-c",
            "ls",
            check=False,
        )
        # nmbd in its own session (gotchas.md: it signals its whole process group).
        # Already a session leader, it must not call setsid() itself: hence
        # --no-process-group, which is safe only together with start_new_session.
        nmbd = subprocess.Popen(
            [*pc, "nmbd", "-F", "--no-process-group", "-s", str(conf), "-d", "2"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(nmbd)
        time.sleep(12)
        sh("ip", "netns", "exec", LST_NS, *me, "--probe", str(tmp))
        time.sleep(70)  # first HostAnnouncement goes out after one minute
        nmbd.send_signal(signal.SIGTERM)
        nmbd.wait(timeout=15)
        listener.wait(timeout=60)
        write_vectors(tmp, outdir)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        netns_down()
        shutil.rmtree(tmp, ignore_errors=True)


def write_vectors(tmp: Path, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    lines = []
    n = 0
    seen = set()
    for rec in json.loads((tmp / "listener.json").read_text()):
        if (rec["sport"], rec["hex"]) in seen:
            continue  # a client's retransmission of the same packet
        seen.add((rec["sport"], rec["hex"]))
        n += 1
        who = "nmbd" if rec["src"] == PC_IP and rec["sport"] in (137, 138) else "client"
        fname = f"{n:02d}-{who}-{rec['proto']}{rec['port']}.bin"
        (outdir / fname).write_bytes(bytes.fromhex(rec["hex"]))
        lines.append(f"{fname}\t{rec['src']}:{rec['sport']}\t{len(rec['hex']) // 2} bytes")
    for rec in json.loads((tmp / "probe.json").read_text()):
        if not rec["hex"]:
            continue
        n += 1
        fname = f"{n:02d}-nmbd-reply-{rec['label']}-udp137.bin"
        (outdir / fname).write_bytes(bytes.fromhex(rec["hex"]))
        lines.append(f"{fname}\t{rec['src']}:{rec['sport']}\t{len(rec['hex']) // 2} bytes")
    (outdir / "index.txt").write_text("\n".join(lines) + "\n")


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--listen":
        listen(Path(sys.argv[2]), float(sys.argv[3]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "--probe":
        probe(Path(sys.argv[2]))
    else:
        if os.geteuid() != 0:
            sys.exit("capture.py: must run as root (it builds network namespaces)")
        outdir = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent
        run_capture(outdir)


if __name__ == "__main__":
    main()
