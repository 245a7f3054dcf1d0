"""Every address the edge advertises answers, on every port it claims (IPv4 and IPv6).

Office nyc's edge carries three names: GLOBAL-NFS (service smb, the edge's own
address and the LAN interface's link-local IPv6), GLOBAL-ENG (service eng, its own
IPv4 198.18.11.3 and its own link-local fe80::3) and GLOBAL-OPS (service ops, its own
IPv4 198.18.11.4 and no IPv6: it must get no AAAA anywhere). From nyc-pc the real
llmnr-query (IPv4 and IPv6), dig (mDNS A/AAAA) and wsdd (WS-Discovery over
239.255.255.250 and ff02::c, fetching metadata from every XAddr) collect what is
handed out; then smbclient (445 and 139), curl (631) and plain TCP connects reach every
one of those addresses on every port the edge's log says it listens on for it.
The same lab checks the mDNS legacy unicast answers (RFC 6762 §6.7), the IP TTL 255
of every kind of mDNS answer (§11), and that askers off the office link get no answer
(RFC 4795 §2.5, RFC 6762 §11).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from spokeshare import logfmt
from spokeshare.lab import spokes
from spokeshare.lab.topology import LAN_IFNAME, Lab
from spokeshare.lab.wire import LinkSettings
from tests.helpers import wait_for
from tests.lab import wsdd_client
from tests.lab.building import running_lab
from tests.lab.shell import sh

pytestmark = pytest.mark.lab

EDGE = "198.18.11.1"
ENG, ENG6 = "198.18.11.3", "fe80::3"
OPS = "198.18.11.4"
PC = "nyc-pc"
NAMES = [("GLOBAL-NFS", "smb", ""), ("GLOBAL-ENG", "eng", ENG), ("GLOBAL-OPS", "ops", OPS)]


def start_edge(lab: Lab, office: str) -> int:
    """The lab's edge, with GLOBAL-ENG given its own link-local address (address6)."""
    plan = lab.office(office)
    lab.exec(plan.edge, ["ip", "-6", "addr", "add", f"{ENG6}/64", "dev", LAN_IFNAME], check=True)
    text = spokes.edge_toml(lab, office, NAMES)
    text = text.replace(f'address = "{ENG}"', f'address = "{ENG}"\naddress6 = "{ENG6}"')
    assert f'address6 = "{ENG6}"' in text
    conf = lab.host_dir(plan.edge) / "edge.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(text)
    for _, _, address in NAMES:
        if address:
            lab.exec(
                plan.edge, ["ip", "addr", "add", f"{address}/24", "dev", LAN_IFNAME], check=True
            )
    pid = lab.spawn(plan.edge, spokes._cli("edge", "--config", str(conf)), f"edge-{office}")
    wait_for(
        lambda: spokes.edge_status(lab, office).get("up") and spokes.office_connected(lab, office),
        30,
        "the edge up",
    )
    return pid


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    hq = "198.19.0.1"
    with running_lab(
        "ss-ipv6-",
        ["nyc"],
        LinkSettings(rtt_ms=10),
        start_hub=functools.partial(
            spokes.start_hub, extra_services={"eng": f"{hq}:445", "ops": f"{hq}:445"}
        ),
        start_edge=start_edge,
    ) as the_lab:
        yield the_lab


def link_local(lab: Lab, host: str) -> str:
    out = sh(lab, host, "ip", "-6", "-o", "addr", "show", "dev", LAN_IFNAME, "scope", "link").stdout
    found: list[str] = sorted(
        a for a in re.findall(r"inet6 (fe80::[0-9a-f:]+)/64", out) if a != ENG6
    )
    assert found, out
    return found[0]


def claimed(lab: Lab) -> dict[str, set[int]]:
    """Address -> ports, from the edge's ``listening`` log lines."""
    out: dict[str, set[int]] = {}
    text = (lab.logs_dir / "edge-nyc.log").read_text()
    for line in logfmt.find(text, "listening"):
        out.setdefault(line["address"].split("%", 1)[0], set()).add(int(line["port"]))
    return out


def llmnr(lab: Lab, name: str, qtype: str, ipv6: bool) -> list[str]:
    argv = ["llmnr-query", "-I", LAN_IFNAME, "-T", qtype, *(["-6"] if ipv6 else []), name]
    out = sh(lab, PC, *argv).stdout
    return re.findall(rf"{name} IN {qtype} (\S+)", out)


def mdns(lab: Lab, name: str, qtype: str, server: str) -> list[str]:
    out = sh(
        lab, PC, "dig", "+short", "+tries=2", "+time=2", "-p", "5353", f"@{server}",
        f"{name}.local", qtype,
    ).stdout  # fmt: skip
    return [ln for ln in out.splitlines() if re.fullmatch(r"[0-9a-f.:]+", ln)]


def wsd_xaddr_hosts(lab: Lab, seconds: float) -> dict[str, set[str]]:
    """Name -> hosts of the XAddrs the real wsdd fetched metadata from (v4 and v6)."""
    out = wsdd_client.wsdd_log(PC, LAN_IFNAME, "5b0d4e29-6f5e-4b4a-9a4f-3f0c3b3a1c13", seconds)
    found: dict[str, set[str]] = {}
    for name, host in re.findall(r"discovered (\S+) in Workgroup:ACME on (\S+)", out):
        # wsdd writes "198.18.11.1" or "[fe80::1%lan0]" / "fe80::1%lan0]" (0.7.0)
        found.setdefault(name, set()).add(re.sub(r"[\[\]]", "", host).split("%", 1)[0])
    return found


def scoped(addr: str) -> str:
    return f"{addr}%{LAN_IFNAME}" if addr.startswith("fe80:") else addr


def reach(lab: Lab, name: str, addr: str, port: int) -> None:
    """A real client of what the port carries gets an answer through the edge."""
    if port in (445, 139):
        res = sh(
            lab, PC, "smbclient", f"//{name}/share", "-N", "-I", scoped(addr), "-p", str(port),
            "-c", "ls",
        )  # fmt: skip
        assert res.returncode == 0, (name, addr, port, res.stdout + res.stderr)
    elif port == 631:
        host = f"[{addr}%25{LAN_IFNAME}]" if ":" in addr else addr
        res = sh(lab, PC, "curl", "-g", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                 "--max-time", "10", f"http://{host}:631/")  # fmt: skip
        assert re.fullmatch(r"[1-5]\d\d", res.stdout), (addr, res.stdout, res.stderr)
    else:
        probe = (
            "import socket,sys;a=sys.argv[1];p=int(sys.argv[2]);"
            "i=socket.getaddrinfo(a,p,type=socket.SOCK_STREAM)[0];"
            "s=socket.socket(i[0],socket.SOCK_STREAM);s.settimeout(5);s.connect(i[4]);print('ok')"
        )
        res = sh(lab, PC, "python3", "-c", probe, scoped(addr), str(port))
        assert res.stdout.strip() == "ok", (addr, port, res.stderr)


def test_every_advertised_address_answers_on_every_claimed_port(lab: Lab) -> None:
    edge6 = link_local(lab, "nyc-edge")
    ports = claimed(lab)
    # What the names are handed out as, by each protocol, over IPv4 and IPv6.
    handed: dict[str, set[str]] = {}
    for name, _, _ in NAMES:
        got = handed.setdefault(name, set())
        for qtype in ("A", "AAAA"):
            for ipv6 in (False, True):
                got.update(llmnr(lab, name, qtype, ipv6))
            for server in (EDGE, scoped(edge6)):
                got.update(mdns(lab, name, qtype, server))
    assert handed["GLOBAL-NFS"] == {EDGE, edge6}, handed
    assert handed["GLOBAL-ENG"] == {ENG, ENG6}, handed
    assert handed["GLOBAL-OPS"] == {OPS}, handed  # its own IPv4, no IPv6 of its own
    xaddrs = wsd_xaddr_hosts(lab, 10)
    for name, _, _ in NAMES:
        # wsdd fetched the metadata from every XAddr, over both families.
        assert xaddrs.get(name) == {EDGE, edge6}, xaddrs
    assert {EDGE, edge6} <= set(ports)
    assert ports[EDGE] == ports[edge6] and 5357 not in ports[EDGE]
    assert ports[ENG] == ports[ENG6] == {445, 139}
    assert ports[OPS] == {445, 139} and edge6 != ENG6
    for name, addresses in handed.items():
        for addr in addresses:
            for port in sorted(ports[addr]):
                if port in (445, 139) and addr in (EDGE, edge6) and name != "GLOBAL-NFS":
                    continue  # the interface's address carries GLOBAL-NFS's service
                reach(lab, name, addr, port)


def _dig_answers(lab: Lab, *argv: str) -> list[list[str]]:
    out = sh(lab, PC, "dig", "+noall", "+answer", "+tries=1", "+time=2", *argv).stdout
    return [line.split() for line in out.splitlines() if line and not line.startswith(";")]


def test_mdns_legacy_unicast_answers(lab: Lab) -> None:
    """dig asks from an ephemeral port (a legacy querier, RFC 6762 §6.7): the answer
    echoes ID and question (dig checks both), carries TTLs of at most 10 s and no
    cache-flush bit (dig would print CLASS32769 instead of IN)."""
    for qtype in ("A", "SRV", "PTR"):
        name = {"A": "GLOBAL-NFS.local", "SRV": "GLOBAL-NFS._smb._tcp.local"}.get(
            qtype, "_smb._tcp.local"
        )
        rows = _dig_answers(lab, "-p", "5353", f"@{EDGE}", name, qtype)
        assert rows, (qtype, rows)
        for owner, ttl, rrclass, rrtype, *_ in rows:
            assert int(ttl) <= 10 and rrclass == "IN", (owner, ttl, rrclass, rrtype)


TTL_PROBE = Path(__file__).with_name("mdns_ttl_probe.py")


@pytest.mark.parametrize("mode", ["legacy", "qu", "multicast"])
@pytest.mark.parametrize("family", ["4", "6"])
def test_mdns_answers_leave_with_ttl_255(lab: Lab, family: str, mode: str) -> None:
    """RFC 6762 §11: the edge's answers carry IP TTL / hop limit 255, so that a
    receiver can tell they were not forwarded by a router. A client on the PC (stdlib
    Python, ``IP_RECVTTL`` / ``IPV6_RECVHOPLIMIT`` and ``recvmsg``) asks for
    GLOBAL-NFS.local as a legacy querier (unicast answer to its ephemeral port), with
    the QU bit from port 5353 (unicast answer to 5353) and as a plain multicast
    querier (multicast answer), over IPv4 and IPv6, and reads what the kernel says
    each answer arrived with."""
    edge = EDGE if family == "4" else link_local(lab, "nyc-edge")
    res = sh(lab, PC, "python3", str(TTL_PROBE), family, LAN_IFNAME, edge, "GLOBAL-NFS.local", mode)
    assert res.returncode == 0, res.stderr
    # The edge's addresses on the LAN: it may answer from any of them (fe80::3 too).
    ours = {EDGE, ENG, OPS, ENG6, edge}
    answers = [a for a in json.loads(res.stdout) if a["source"] in ours]
    assert answers, (family, mode, res.stdout, res.stderr)
    assert {a["ttl"] for a in answers} == {255}, (family, mode, answers)


def test_off_link_askers_get_no_answer(lab: Lab) -> None:
    """A query from an address outside the office subnet (a routed asker, here an
    extra address on the PC with a route back on the edge) gets no LLMNR or mDNS
    answer (RFC 4795 §2.5, RFC 6762 §11); the same query from the PC's own address
    does."""
    off = "198.18.99.10"
    lab.exec(PC, ["ip", "addr", "add", f"{off}/32", "dev", LAN_IFNAME], check=True)
    lab.exec("nyc-edge", ["ip", "route", "add", f"{off}/32", "dev", LAN_IFNAME], check=True)
    try:
        for source, expect in (("198.18.11.10", True), (off, False)):
            mdns_rows = _dig_answers(
                lab, "-b", source, "-p", "5353", f"@{EDGE}", "GLOBAL-NFS.local", "A"
            )
            llmnr_rows = _dig_answers(
                lab, "-b", source, "-p", "5355", f"@{EDGE}", "GLOBAL-NFS", "A"
            )
            assert bool(mdns_rows) is expect, (source, mdns_rows)
            assert bool(llmnr_rows) is expect, (source, llmnr_rows)

        # Counted where the office's admin reads the edge's counters.
        def dropped() -> dict[str, object]:
            services = spokes.edge_status(lab, "nyc", "statistics.json").get("services", {})
            assert isinstance(services, dict)
            # mDNS with HQ's printers reports its publisher's statistics inside its own
            return {
                p: (s.get("publisher") or s).get("off_link_dropped")
                for p, s in services.items()
                if p != "netbios"
            }

        wait_for(
            lambda: all(isinstance(n, int) and n >= 1 for n in (
                dropped().get("mdns"), dropped().get("llmnr"))),
            what="off-link queries counted in statistics.json",
        )  # fmt: skip
    finally:
        lab.exec("nyc-edge", ["ip", "route", "del", f"{off}/32", "dev", LAN_IFNAME])
        lab.exec(PC, ["ip", "addr", "del", f"{off}/32", "dev", LAN_IFNAME])
