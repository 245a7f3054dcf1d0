"""The discovery adapters against real, independently written clients, in namespaces.

The edge (LLMNR, WS-Discovery, mDNS/DNS-SD adapters) runs in ``wsd-lab-e``
(198.18.203.1); the office PC is ``wsd-lab-p`` (198.18.203.2), joined by a veth
pair. From the PC: Debian's ``wsdd`` in discovery mode, ``llmnr-query`` (llmnrd)
and ``dig`` against the mDNS group. Every namespace and process is removed in the
fixtures' finalizers, by PID, also when a test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare import logfmt
from spokeshare.errors import UsageError
from tests.lan.settings import discovery_settings

NS_EDGE, NS_PC = "wsd-lab-e", "wsd-lab-p"
IF_EDGE, IF_PC = "wsdlabE", "wsdlabP"
EDGE, PC = "198.18.203.1", "198.18.203.2"
EDGE6, PC6 = "fe80::cb:1", "fe80::cb:2"  # static link-local addresses, added without DAD
NAMES = ("GLOBAL-NFS", "PRINT-HQ")
NAMESPACE = uuid.UUID("0d5c1f2a-8a44-4a55-9f0e-6c6162000001")
REPO = Path(__file__).resolve().parents[2]

is_root = os.geteuid() == 0
lab = pytest.mark.lab
needs_root = pytest.mark.skipif(not is_root, reason="needs root for network namespaces")

# The edge's three discovery services (as EdgeDaemon runs them), driven from stdin.
RUNNER = r"""
import asyncio, logging, sys, uuid
from spokeshare.lan.discovery_service import LlmnrService, WsdService
from spokeshare.lan.mdns import MdnsPublisher
from tests.lan.settings import discovery_settings

async def main() -> None:
    settings = discovery_settings(
        sys.argv[1], sys.argv[2], sys.argv[3].split(","), uuid.UUID(sys.argv[4]),
        "ACME", ipv6_link_local=sys.argv[5],
    )
    mdns = MdnsPublisher(settings)
    services = (LlmnrService(settings), WsdService(settings), mdns)
    for service in services:
        await service.start()
    print("started", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        cmd = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if cmd in ("withdraw", "announce"):
            for service in services:
                await getattr(service, cmd)()
            print(cmd, flush=True)
        elif cmd == "conflicts":
            print(",".join(mdns.statistics().conflicts) or "-", flush=True)
        else:
            for service in reversed(services):
                await service.stop()
            print("stopped", flush=True)
            return

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                    format="%(levelname)s %(name)s: %(message)s")
asyncio.run(main())
"""


# -- settings (no root needed) -----------------------------------------------------------


def test_settings_take_the_presence_as_it_is() -> None:
    """DiscoverySettings reads names, workgroup and addresses from the LanPresence
    (validated at config load) and refuses only a presence it cannot serve."""
    ok = discovery_settings("eth0", "10.1.2.3", ("global-nfs",), NAMESPACE, "acme")
    assert ok.names == ("GLOBAL-NFS",) and ok.workgroup == "ACME"
    assert ok.wsd_http_port == 5357 and ok.smb_port == 445
    with pytest.raises(UsageError):
        discovery_settings("eth0", "10.1.2.3", (), NAMESPACE)
    with pytest.raises(UsageError):
        discovery_settings("", "10.1.2.3", ("GLOBAL-NFS",), NAMESPACE)


# -- the lab --------------------------------------------------------------------------------


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def delete_namespaces() -> None:
    for ns in (NS_EDGE, NS_PC):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def lan() -> Iterator[None]:
    if not is_root:
        pytest.skip("needs root for network namespaces")
    delete_namespaces()
    try:
        sh("ip", "netns", "add", NS_EDGE)
        sh("ip", "netns", "add", NS_PC)
        sh("ip", "link", "add", IF_EDGE, "netns", NS_EDGE, "type", "veth", "peer", "name", IF_PC,
           "netns", NS_PC)  # fmt: skip
        for ns, ifname, addr, addr6 in ((NS_EDGE, IF_EDGE, EDGE, EDGE6), (NS_PC, IF_PC, PC, PC6)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            sh("ip", "-n", ns, "addr", "add", f"{addr6}/64", "dev", ifname, "nodad")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            # dig and llmnr-query send to multicast groups without naming the interface
            sh("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", ifname)
        yield
    finally:
        delete_namespaces()


class Edge:
    """The edge's discovery adapters running in the edge namespace."""

    def __init__(self, log: Path) -> None:
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            in_ns(NS_EDGE, sys.executable, "-c", RUNNER, IF_EDGE, EDGE, ",".join(NAMES),
                  str(NAMESPACE), EDGE6),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "w"),  # noqa: SIM115
            text=True, env=env, start_new_session=True,
        )  # fmt: skip
        self.expect("started")

    def expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == word, f"edge said {line!r}; log:\n{self.log.read_text()[-3000:]}"

    def command(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        self.expect("stopped" if cmd == "stop" else cmd)

    def ask(self, cmd: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()


@pytest.fixture
def edge(lan: None, tmp_path: Path) -> Iterator[Edge]:
    e = Edge(tmp_path / "edge.log")
    try:
        yield e
    finally:
        if e.proc.poll() is None:
            try:
                e.command("stop")
                e.proc.wait(10)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                pass
        stop_process(e.proc)


class Wsdd:
    """wsdd 0.7.0 in discovery mode on the PC; its log is the oracle (gotchas.md)."""

    def __init__(self, log: Path, family: str = "-4") -> None:
        self.log = log
        self.proc = subprocess.Popen(
            in_ns(NS_PC, "wsdd", family, "-i", IF_PC, "-D", "-o", "-v", "-s",
                  "-U", str(uuid.uuid4())),
            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
        )  # fmt: skip

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 15.0) -> None:
        """Wait (with a deadline) until ``pattern`` occurs ``count`` times in the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.log.read_text())) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"wsdd never logged {pattern!r}:\n{self.log.read_text()[-3000:]}")

    def absent_for(self, pattern: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert not re.search(pattern, self.log.read_text()), self.log.read_text()
            time.sleep(0.2)


@pytest.fixture
def wsdd_factory(lan: None, tmp_path: Path) -> Iterator[list[Wsdd]]:
    started: list[Wsdd] = []
    try:
        yield started
    finally:
        for w in started:
            stop_process(w.proc)  # type: ignore[arg-type]


def new_wsdd(started: list[Wsdd], tmp_path: Path, family: str = "-4") -> Wsdd:
    w = Wsdd(tmp_path / f"wsdd-{len(started)}.log", family)
    started.append(w)
    return w


def discovered(name: str) -> str:
    return rf"discovered {name} in Workgroup:ACME on {re.escape(EDGE)}%"


def run_pc(*cmd: str, timeout: float = 10) -> str:
    res = subprocess.run(in_ns(NS_PC, *cmd), capture_output=True, text=True, timeout=timeout)
    return res.stdout + res.stderr


def llmnr_answers(name: str, qtype: str = "A", *extra: str) -> list[str]:
    """What llmnr-query prints for each answer record: "NAME IN A 198.18.203.1 (TTL 30)"."""
    out = run_pc("llmnr-query", "-I", IF_PC, "-T", qtype, "-t", "1000", *extra, name)
    return re.findall(r"^LLMNR response: (.*)$", out, re.MULTILINE)


def dig(*args: str) -> str:
    """An RFC 6762 §6.7 legacy unicast query from dig to the edge's port 5353.

    ``dig @224.0.0.251`` cannot work with Debian 12's dig 9.18: it connect()s its
    UDP socket to the group (seen with strace), so the kernel drops every answer,
    which comes from the responder's own address. The multicast path is checked
    with python-zeroconf's browser instead (test_mdns_browse_from_pc).
    """
    return run_pc("dig", "+time=2", "+tries=2", "-p", "5353", f"@{EDGE}", *args)


def dig_answers(*args: str) -> list[str]:
    """The answer lines of ``dig +short`` (its ";;" diagnostics dropped)."""
    out = dig("+short", *args)
    return [line for line in out.splitlines() if line and not line.startswith(";;")]


BROWSE = r"""
import asyncio, sys
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

async def main() -> None:
    azc = AsyncZeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)
    found: set[str] = set()
    def seen(zeroconf, service_type, name, state_change) -> None:
        if state_change is ServiceStateChange.Added:
            found.add(name)
    browser = AsyncServiceBrowser(azc.zeroconf, "_smb._tcp.local.", handlers=[seen])
    for _ in range(50):
        if len(found) >= int(sys.argv[2]):
            break
        await asyncio.sleep(0.1)
    for name in sorted(found):
        info = AsyncServiceInfo("_smb._tcp.local.", name)
        await info.async_request(azc.zeroconf, 3000)
        print(name, info.port, info.server, ",".join(info.parsed_addresses()), flush=True)
    await browser.async_cancel()
    await azc.async_close()

asyncio.run(main())
"""


@lab
@needs_root
def test_wsdd_lists_every_name_then_bye_on_stop(
    edge: Edge, wsdd_factory: list[Wsdd], tmp_path: Path
) -> None:
    w = new_wsdd(wsdd_factory, tmp_path)
    for name in NAMES:
        w.wait_for(discovered(name))
    edge.command("stop")
    # one Bye per endpoint (wsdd logs each message id once, after its duplicate check)
    w.wait_for(rf"{re.escape(EDGE)}:3702\({IF_PC}\) - - \"Bye urn:uuid:[0-9a-f-]+ UDP\"", 2)
    # a PC arriving now finds nobody
    late = new_wsdd(wsdd_factory, tmp_path)
    late.wait_for("scheduling Probe")
    late.absent_for("discovered", 6.0)


@lab
@needs_root
def test_llmnr_query_answered_for_owned_names_only(edge: Edge) -> None:
    for name in ("GLOBAL-NFS", "global-nfs", "PRINT-HQ"):
        assert llmnr_answers(name) == [f"{name} IN A {EDGE} (TTL 30)"]
    assert llmnr_answers("GLOBAL-NFS", "ANY") == [
        f"GLOBAL-NFS IN A {EDGE} (TTL 30)",
        f"GLOBAL-NFS IN AAAA {EDGE6} (TTL 30)",
    ]
    assert llmnr_answers("NOT-OURS") == []


@lab
@needs_root
def test_mdns_address_and_smb_service(edge: Edge) -> None:
    assert dig_answers("global-nfs.local", "A") == [EDGE]
    assert dig_answers("PRINT-HQ.local", "A") == [EDGE]
    assert sorted(dig_answers("_smb._tcp.local", "PTR")) == [
        f"{name}._smb._tcp.local." for name in sorted(NAMES)
    ]
    assert dig_answers("GLOBAL-NFS._smb._tcp.local", "SRV") == ["0 0 445 GLOBAL-NFS.local."]
    assert dig_answers("GLOBAL-NFS._device-info._tcp.local", "TXT") == ['"model=RackMac"']
    assert dig_answers("not-ours.local", "A") == []


@lab
@needs_root
def test_mdns_browse_from_pc(edge: Edge) -> None:
    out = run_pc(sys.executable, "-c", BROWSE, PC, str(len(NAMES)), timeout=30)
    for name in NAMES:
        assert f"{name}._smb._tcp.local. 445 {name}.local. {EDGE}" in out, out


@lab
@needs_root
def test_withdraw_hides_every_protocol_and_announce_brings_back(
    edge: Edge, wsdd_factory: list[Wsdd], tmp_path: Path
) -> None:
    w = new_wsdd(wsdd_factory, tmp_path)
    w.wait_for(discovered("GLOBAL-NFS"))
    edge.command("withdraw")
    w.wait_for(r"\"Bye urn:uuid:")
    assert llmnr_answers("GLOBAL-NFS") == []
    assert dig_answers("global-nfs.local", "A") == []
    late = new_wsdd(wsdd_factory, tmp_path)
    late.wait_for("scheduling Probe")
    edge.command("announce")
    # Hello reaches both clients; each fetches the metadata (again).
    w.wait_for(discovered("GLOBAL-NFS"), 2)
    late.wait_for(discovered("GLOBAL-NFS"))
    assert llmnr_answers("GLOBAL-NFS") == [f"GLOBAL-NFS IN A {EDGE} (TTL 30)"]
    assert dig_answers("global-nfs.local", "A") == [EDGE]


@lab
@needs_root
def test_over_ipv6_link_local(edge: Edge, wsdd_factory: list[Wsdd], tmp_path: Path) -> None:
    # LLMNR to ff02::1:3, answered with the interface's link-local address
    assert llmnr_answers("GLOBAL-NFS", "AAAA", "-6") == [f"GLOBAL-NFS IN AAAA {EDGE6} (TTL 30)"]
    assert llmnr_answers("NOT-OURS", "AAAA", "-6") == []
    # WS-Discovery on ff02::c with XAddrs on the link-local address
    w = new_wsdd(wsdd_factory, tmp_path, "-6")
    w.wait_for(rf"discovered GLOBAL-NFS in Workgroup:ACME on \[?{re.escape(EDGE6)}")


PUBLISH = r"""
import asyncio, socket, sys
from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

async def main() -> None:
    azc = AsyncZeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)
    info = ServiceInfo("_smb._tcp.local.", "GLOBAL-NFS._smb._tcp.local.", port=445,
                       server="someone-else.local.", addresses=[socket.inet_aton(sys.argv[1])])
    await azc.async_register_service(info)
    print("published", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await azc.async_unregister_all_services()
    await azc.async_close()

asyncio.run(main())
"""


@lab
@needs_root
def test_mdns_name_conflict_reported(lan: None, tmp_path: Path) -> None:
    other = subprocess.Popen(
        in_ns(NS_PC, sys.executable, "-c", PUBLISH, PC),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    edge = None
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "published"
        edge = Edge(tmp_path / "edge.log")
        assert edge.ask("conflicts") == "GLOBAL-NFS"
        conflicts = logfmt.find(edge.log.read_text(), "name conflict")
        assert [(c["protocol"], c["name"]) for c in conflicts][:1] == [
            ("mdns", "GLOBAL-NFS.local")]  # fmt: skip
        # the other name is published regardless
        assert dig_answers("PRINT-HQ.local", "A") == [EDGE]
    finally:
        if edge is not None:
            edge.command("stop")
            edge.proc.wait(10)
            stop_process(edge.proc)
        stop_process(other)
