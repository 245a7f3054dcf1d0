"""Capture what real discovery clients and servers put on the wire, into this directory.

Run as root from the repository root (rerunnable; it overwrites the files)::

    .venv/bin/python tests/lan/vectors_discovery/capture.py

It builds two network namespaces joined by a veth pair, ``wsd-cap-h`` (198.18.202.1)
and ``wsd-cap-p`` (198.18.202.2), and records with plain Python sockets (no tcpdump):

- ``llmnr-query-{a,aaaa,any}.bin``: Debian llmnrd's ``llmnr-query`` queries for GLOBAL-NFS;
- ``llmnrd-response-a.bin``: the answer of a real ``llmnrd -H GLOBAL-NFS``;
- ``wsdd-client-{probe,resolve}.xml`` and ``wsdd-client-get.http``: wsdd 0.7.0 in discovery
  mode (``-D -o``) probing, resolving and fetching metadata; the recorder answers with
  spokeshare's own builders, and wsdd's log (``wsdd-client.log``) shows it accepted them;
- ``wsdd-server-{hello,probematches,resolvematches,bye}.xml`` and
  ``wsdd-server-getresponse.http``: a real wsdd host (``-n GLOBAL-NFS -w ACME``).

Everything it starts is stopped by PID and both namespaces are deleted in a finally.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
NS_H, NS_P = "wsd-cap-h", "wsd-cap-p"
IF_H, IF_P = "wsdcapH", "wsdcapP"
ADDR_H, ADDR_P = "198.18.202.1", "198.18.202.2"
HOST_UUID = "6f1b7c5e-0000-4000-8000-0000000c0001"  # the real wsdd host's -U
CLIENT_UUID = "6f1b7c5e-0000-4000-8000-0000000c0002"  # the wsdd client's -U
NAMESPACE = uuid.UUID("6f1b7c5e-0000-4000-8000-00000000cafe")  # our fake host's endpoints


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def setup() -> None:
    sh("ip", "netns", "add", NS_H)
    sh("ip", "netns", "add", NS_P)
    sh(
        "ip",
        "link",
        "add",
        IF_H,
        "netns",
        NS_H,
        "type",
        "veth",
        "peer",
        "name",
        IF_P,
        "netns",
        NS_P,
    )
    for ns, ifname, addr in ((NS_H, IF_H, ADDR_H), (NS_P, IF_P, ADDR_P)):
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", ifname, "up")


def teardown() -> None:
    for ns in (NS_H, NS_P):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, check=False)


def start(
    ns: str, *cmd: str, stdout: int | None = subprocess.PIPE, log: Path | None = None
) -> subprocess.Popen[str]:
    out = open(log, "w") if log else stdout  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, *cmd],
        stdout=out,
        stderr=subprocess.STDOUT if log else None,
        text=True,
        start_new_session=True,
    )


def role(ns: str, name: str, *args: str) -> subprocess.Popen[str]:
    """Run one recorder role of this script inside a namespace; waits for 'ready'."""
    proc = start(ns, sys.executable, __file__, name, *args)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"role {name} failed to start: {line!r}")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- roles run inside a namespace ------------------------------------------------------


def mcast_socket(group: str, port: int, local: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    mreq = socket.inet_aton(group) + socket.inet_aton(local)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.bind((group, port))
    return s


def role_llmnr_listen(out: str) -> None:
    s = mcast_socket("224.0.0.252", 5355, ADDR_H)
    print("ready", flush=True)
    s.settimeout(10)
    data, _ = s.recvfrom(65535)
    Path(out).write_bytes(data)


def role_llmnr_ask(name: str, out: str) -> None:
    sys.path.insert(0, str(REPO))
    from spokeshare.lan import llmnr

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ADDR_P))
    s.bind((ADDR_P, 0))
    print("ready", flush=True)
    s.settimeout(1)
    for _ in range(10):  # llmnrd may still be starting
        s.sendto(llmnr.build_query(0x5A5A, name, llmnr.TYPE_A), ("224.0.0.252", 5355))
        try:
            data, _ = s.recvfrom(65535)
        except TimeoutError:
            continue
        Path(out).write_bytes(data)
        return
    raise SystemExit("no LLMNR answer")


def role_wsd_fake_host() -> None:
    """Answer wsdd's discovery with spokeshare's builders, recording what wsdd sends."""
    sys.path.insert(0, str(REPO))
    from spokeshare.lan import NEED_DATA, wsd

    ep = wsd.Endpoint.for_name("GLOBAL-NFS", "ACME", NAMESPACE)
    recv = mcast_socket(wsd.MCAST_V4, wsd.UDP_PORT, ADDR_H)
    uni = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uni.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    uni.bind((ADDR_H, wsd.UDP_PORT))
    http = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    http.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    http.bind((ADDR_H, wsd.HTTP_PORT))
    http.listen(4)
    sel = selectors.DefaultSelector()
    for sock in (recv, uni, http):
        sel.register(sock, selectors.EVENT_READ)
    print("ready", flush=True)
    wanted = {"probe", "resolve", "get"}
    deadline = time.monotonic() + 20
    n = 0
    while wanted and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            fobj = key.fileobj
            if not isinstance(fobj, socket.socket):
                continue
            s = fobj
            if s is http:
                conn, _ = http.accept()
                conn.settimeout(5)
                raw = b""
                while (req := wsd.parse_http_request(raw)) is NEED_DATA:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    raw += chunk
                if isinstance(req, wsd.HttpRequest) and "get" in wanted:
                    (HERE / "wsdd-client-get.http").write_bytes(raw)
                    wanted.discard("get")
                    msg = wsd.decode(req.body)
                    body = wsd.build_get_response(ep, uuid.uuid4().urn, msg.message_id)
                    conn.sendall(wsd.build_http_response(200, body))
                conn.close()
                continue
            data, src = s.recvfrom(65535)
            msg = wsd.decode(data)
            n += 1
            seq = (1, uuid.uuid4().urn, n)
            if msg.action == wsd.ACTION_PROBE and "probe" in wanted:
                (HERE / "wsdd-client-probe.xml").write_bytes(data)
                wanted.discard("probe")
                uni.sendto(wsd.build_probe_matches(ep, uuid.uuid4().urn, msg.message_id, seq), src)
            elif msg.action == wsd.ACTION_RESOLVE and "resolve" in wanted:
                (HERE / "wsdd-client-resolve.xml").write_bytes(data)
                wanted.discard("resolve")
                uni.sendto(
                    wsd.build_resolve_matches(
                        ep, uuid.uuid4().urn, msg.message_id, seq, ep.xaddr(ADDR_H)
                    ),
                    src,
                )
    if wanted:
        raise SystemExit(f"missing from wsdd: {sorted(wanted)}")


def role_wsd_client() -> None:
    """Talk to a real wsdd host the way Windows does, recording its answers."""
    sys.path.insert(0, str(REPO))
    from spokeshare.lan import wsd

    recv = mcast_socket(wsd.MCAST_V4, wsd.UDP_PORT, ADDR_P)
    uni = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uni.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ADDR_P))
    uni.bind((ADDR_P, 0))
    print("ready", flush=True)

    def wait_for(sock: socket.socket, action: str) -> tuple[bytes, wsd.WsdMessage]:
        sock.settimeout(10)
        while True:
            data, _ = sock.recvfrom(65535)
            msg = wsd.decode(data)
            if msg.action == action:
                return data, msg

    data, hello = wait_for(recv, wsd.ACTION_HELLO)
    (HERE / "wsdd-server-hello.xml").write_bytes(data)
    uni.sendto(wsd.build_probe(uuid.uuid4().urn), (wsd.MCAST_V4, wsd.UDP_PORT))
    data, _ = wait_for(uni, wsd.ACTION_PROBE_MATCHES)
    (HERE / "wsdd-server-probematches.xml").write_bytes(data)
    assert hello.endpoint is not None
    uni.sendto(wsd.build_resolve(uuid.uuid4().urn, hello.endpoint), (wsd.MCAST_V4, wsd.UDP_PORT))
    data, resolved = wait_for(uni, wsd.ACTION_RESOLVE_MATCHES)
    (HERE / "wsdd-server-resolvematches.xml").write_bytes(data)
    xaddr = resolved.xaddrs[0]
    hostport, _, path = xaddr.removeprefix("http://").partition("/")
    host, _, port = hostport.rpartition(":")
    body = wsd.build_get(uuid.uuid4().urn, hello.endpoint)
    request = (
        f"POST /{path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: {wsd.CONTENT_TYPE}"
        f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(request)
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    (HERE / "wsdd-server-getresponse.http").write_bytes(raw)
    print("asked", flush=True)
    data, _ = wait_for(recv, wsd.ACTION_BYE)
    (HERE / "wsdd-server-bye.xml").write_bytes(data)


ROLES: dict[str, Callable[..., None]] = {
    "llmnr-listen": role_llmnr_listen,
    "llmnr-ask": role_llmnr_ask,
    "wsd-fake-host": role_wsd_fake_host,
    "wsd-client": role_wsd_client,
}


# -- the capture run -------------------------------------------------------------------


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("capture.py: must run as root (it creates network namespaces)")
    teardown()
    procs: list[subprocess.Popen[str]] = []
    try:
        setup()
        # 1. llmnr-query, one query per type.
        for qtype in ("A", "AAAA", "ANY"):
            rec = role(NS_H, "llmnr-listen", str(HERE / f"llmnr-query-{qtype.lower()}.bin"))
            procs.append(rec)
            q = start(NS_P, "llmnr-query", "-I", IF_P, "-T", qtype, "-t", "300", "GLOBAL-NFS")
            procs.append(q)
            rec.wait(10)
            q.wait(10)
            if rec.returncode != 0:
                raise SystemExit(f"no llmnr-query {qtype} captured")
        # 2. A real llmnrd's answer.
        llmnrd = start(NS_H, "llmnrd", "-H", "GLOBAL-NFS", "-i", IF_H, stdout=subprocess.DEVNULL)
        procs.append(llmnrd)
        ask = role(NS_P, "llmnr-ask", "GLOBAL-NFS", str(HERE / "llmnrd-response-a.bin"))
        procs.append(ask)
        if ask.wait(15) != 0:
            raise SystemExit("no llmnrd answer captured")
        stop(llmnrd)
        # 3. wsdd as a discovery client against our answers.
        fake = role(NS_H, "wsd-fake-host")
        procs.append(fake)
        client = start(
            NS_P,
            "wsdd",
            "-4",
            "-i",
            IF_P,
            "-D",
            "-o",
            "-v",
            "-s",
            "-U",
            CLIENT_UUID,
            log=HERE / "wsdd-client.log",
        )
        procs.append(client)
        if fake.wait(25) != 0:
            raise SystemExit("wsdd client exchange incomplete")
        deadline = time.monotonic() + 5
        log = HERE / "wsdd-client.log"
        while "discovered GLOBAL-NFS" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        stop(client)
        # 4. A real wsdd host.
        rec = role(NS_P, "wsd-client")
        procs.append(rec)
        host = start(
            NS_H,
            "wsdd",
            "-4",
            "-i",
            IF_H,
            "-n",
            "GLOBAL-NFS",
            "-w",
            "ACME",
            "-U",
            HOST_UUID,
            "-s",
            stdout=subprocess.DEVNULL,
        )
        procs.append(host)
        assert rec.stdout is not None
        if rec.stdout.readline().strip() != "asked":
            raise SystemExit("wsdd host exchange incomplete")
        stop(host)  # SIGTERM: wsdd sends Bye
        if rec.wait(15) != 0:
            raise SystemExit("no Bye captured")
        for f in sorted(HERE.iterdir()):
            if f.suffix in (".bin", ".xml", ".http", ".log"):  # what this run wrote
                print(f"{f.name}: {f.stat().st_size} bytes")
    finally:
        for p in procs:
            stop(p)
        teardown()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        ROLES[sys.argv[1]](*sys.argv[2:])
    else:
        main()
