"""Capture avahi-daemon probing its host name, into this directory.

Run as root from the repository root, under the lab lock (it builds namespaces)::

    flock /run/spokeshare/lab.lock .venv/bin/python \
        tests/lan/vectors_discovery/capture_avahi_probe.py

Two network namespaces joined by a veth pair: ``tb-cap-h`` (198.18.204.1) runs Debian's
avahi-daemon calling itself ``global-eng`` (the lab's :class:`AvahiHost`: its own D-Bus
bus, only the veth, IPv4, no HINFO or workstation service); ``tb-cap-p``
(198.18.204.2) listens on 224.0.0.251:5353 with a plain socket and keeps each query
with records in its authority section, i.e. each probe (RFC 6762 §8.1, §8.2): the
first is written to ``avahi-probe-global-eng.bin``, and the next two must be the same
bytes (avahi repeats one probe three times). Everything is stopped by PID and both namespaces
are deleted in a finally.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
NS_H, NS_P = "tb-cap-h", "tb-cap-p"
IF_H, IF_P = "tbcapH", "tbcapP"
ADDR_H, ADDR_P = "198.18.204.1", "198.18.204.2"
GROUP = "224.0.0.251"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def listen() -> None:
    """Role run inside ``tb-cap-p``: print 'ready', then write the probes heard."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    mreq = socket.inet_aton(GROUP) + socket.inet_aton(ADDR_P)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.bind((GROUP, 5353))
    s.settimeout(1.0)
    print("ready", flush=True)
    n = 0
    first = b""
    end = time.monotonic() + 20
    while time.monotonic() < end and n < 3:
        try:
            data, src = s.recvfrom(9000)
        except TimeoutError:
            continue
        flags, nscount = int.from_bytes(data[2:4], "big"), int.from_bytes(data[8:10], "big")
        if src[0] == ADDR_H and not flags & 0x8000 and nscount:
            n += 1
            if n == 1:
                first = data
                (HERE / "avahi-probe-global-eng.bin").write_bytes(data)
            same = "the same bytes" if data == first else "DIFFERENT bytes"
            print(f"probe {n} from {src}: {len(data)} bytes, {same}", flush=True)


def main() -> None:
    sys.path.insert(0, str(REPO))
    from spokeshare.lab.avahi import AvahiHost
    from spokeshare.lab.netns import StateRegistry

    work = Path(tempfile.mkdtemp(prefix="tb-cap-"))
    work.chmod(0o755)
    registry = StateRegistry(work / "state.json")
    listener: subprocess.Popen[str] | None = None
    try:
        sh("ip", "netns", "add", NS_H)
        sh("ip", "netns", "add", NS_P)
        sh("ip", "link", "add", IF_H, "netns", NS_H, "type", "veth", "peer", "name", IF_P,
           "netns", NS_P)  # fmt: skip
        for ns, ifname, addr in ((NS_H, IF_H, ADDR_H), (NS_P, IF_P, ADDR_P)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        listener = subprocess.Popen(
            ["ip", "netns", "exec", NS_P, sys.executable, __file__, "listen"],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != "ready":
            raise RuntimeError("listener failed to start")
        AvahiHost(NS_H, IF_H, "global-eng", work / "avahi").start(registry, work)
        out, _ = listener.communicate(timeout=30)
        print(out, end="")
        print((work / f"{NS_H}-avahi.log").read_text())
    finally:
        if listener is not None and listener.poll() is None:
            listener.kill()
            listener.wait()
        for proc in registry.processes():
            registry.kill_process(proc["pid"])
        for ns in (NS_H, NS_P):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, check=False)


if __name__ == "__main__":
    listen() if sys.argv[1:] == ["listen"] else main()
