"""A hostile office PC: mutated and adversarial LAN traffic at the edge (issue 15).

Run inside the PC's namespace by tests/lab/test_lan_fuzz.py, one protocol per run::

    python -m tests.lab.lan_fuzz PROTOCOL EDGE_IP BROADCAST OFFICE COUNT SEED SOURCE...

PROTOCOL is nbns, browse, llmnr, mdns, wsd (COUNT datagrams, alternately unicast
to the edge and to the protocol's broadcast or multicast group, from every SOURCE
address in turn: one source is the PC's own, the others stand in for spoofed
ones), tcp (COUNT malformed connections to 139 and 5357), or nbns-worst,
llmnr-worst, mdns-worst, wsd-worst (COUNT copies of the query with the largest
answer, unicast from the first SOURCE: the size of one answer, and what a flood of
them gets back). Half the datagrams
are adversarial messages sent as they are (claims on the edge's names, conflict
demands, releases, minimal Probes, legacy-unicast mDNS queries, over-long
fields), half are mutations of them (tests.strategies' flip/cut/insert edits, from
a seeded ``random.Random`` so a failing run can be replayed). Prints one JSON line:
what was sent and the replies received on the sending sockets.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import time
import uuid
from collections.abc import Callable
from ipaddress import IPv4Address

from spokeshare.lan import browse, llmnr, netbios, wsd
from spokeshare.lan import netbios_session as nbss
from spokeshare.lan.netbios import NbEntry, NetbiosName, Rcode

NAME = "GLOBAL-NFS"
WORKGROUP = "ACME"
#: Datagrams per pause: about 2,000 a second, the rate of issue 15's fuzz.
BATCH = 20
PAUSE = 0.01


def mutate(rng: random.Random, base: bytes, max_edits: int = 6) -> bytes:
    """The edits of tests.strategies.mutated, drawn from ``rng``."""
    buf = bytearray(base)
    for _ in range(rng.randint(1, max_edits)):
        op = rng.choice(("flip", "cut", "insert"))
        pos = rng.randrange(max(1, len(buf)))
        if op == "flip" and buf:
            buf[pos] = rng.randrange(256)
        elif op == "cut":
            del buf[pos:]
        else:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
    return bytes(buf)


# -- adversarial messages, per protocol ---------------------------------------------------


def nbns_seeds(rng: random.Random, me: IPv4Address) -> list[bytes]:
    out = []
    for suffix in (0x00, 0x20):
        name = NetbiosName.create(NAME, suffix)
        trn = rng.randrange(1, 0x10000)
        reg = netbios.registration_request(trn, name, me)
        query = netbios.name_query_request(trn, name, broadcast=False)
        out += [
            netbios.encode(query),
            netbios.encode(reg),  # a claim: the edge must defend
            # RFC 1002 §4.2.8 NAME CONFLICT DEMAND, the packet of issue 15
            netbios.encode(netbios.negative_registration_response(reg, Rcode.CFT_ERR)),
            netbios.encode(netbios.release_request(trn, name, me)),
            netbios.encode(netbios.refresh_request(trn, name, me, ttl=300)),
            netbios.encode(netbios.positive_query_response(query, name, [NbEntry(me)])),
        ]
    out.append(netbios.encode(netbios.node_status_request(rng.randrange(1, 0x10000))))
    return out


def browse_seeds(rng: random.Random, me: IPv4Address) -> list[bytes]:
    def frame(message: bytes, dest: int = 0x1E) -> bytes:
        slot = browse.encode_mailslot(browse.Mailslot(browse.BROWSE_MAILSLOT, message))
        return browse.encode_datagram(
            browse.Datagram(
                browse.DatagramType.DIRECT_GROUP,
                rng.randrange(1, 0x10000),
                me,
                NetbiosName("NYC-PC", 0),
                NetbiosName(WORKGROUP, dest),
                slot,
            )
        )

    request = browse.encode_browser_message(browse.AnnouncementRequest("NYC-PC"))
    long_comment = (
        browse.encode_browser_message(browse.Announcement("NYC-PC", 0x9A03, comment="x"))[:-2]
        + b"c" * 300
        + b"\0"
    )
    long_name = bytes([browse.BrowserOpcode.ANNOUNCEMENT_REQUEST, 0]) + b"r" * 300 + b"\0"
    return [frame(request), frame(long_comment, 0x1D), frame(long_name), frame(b"\x08" + b"e" * 30)]


def llmnr_seeds(rng: random.Random, me: IPv4Address) -> list[bytes]:
    mid = rng.randrange(0x10000)
    claim = llmnr.Message(
        mid,
        llmnr.FLAG_QR,
        (llmnr.Question(NAME, llmnr.TYPE_A),),
        (llmnr.ResourceRecord(NAME, llmnr.TYPE_A, 1, 30, me.packed),),
    )
    return [
        llmnr.build_query(mid, NAME, llmnr.TYPE_A),
        llmnr.build_query(mid, NAME, llmnr.TYPE_ANY),
        llmnr.build_query(mid, NAME.lower(), llmnr.TYPE_AAAA),
        llmnr.encode(llmnr.Message(mid, llmnr.FLAG_C, (llmnr.Question(NAME, 1),))),
        llmnr.encode(claim),
        llmnr.build_query(mid, ".".join(["a" * 63] * 3), llmnr.TYPE_A),
    ]


def mdns_seeds(rng: random.Random, me: IPv4Address) -> list[bytes]:
    """DNS wire format is LLMNR's (RFC 1035 §4.1): its codec builds the queries."""
    mid = rng.randrange(0x10000)

    def query(name: str, qtype: int, qclass: int = 1) -> bytes:
        return llmnr.encode(llmnr.Message(mid, 0, (llmnr.Question(name, qtype, qclass),)))

    claim = llmnr.Message(
        0,
        0x8400,
        (),
        (llmnr.ResourceRecord(f"{NAME}.local", llmnr.TYPE_A, 0x8001, 120, me.packed),),
    )
    return [
        query("_smb._tcp.local", llmnr.TYPE_PTR),
        query("_services._dns-sd._udp.local", llmnr.TYPE_PTR),
        query(f"{NAME}.local", llmnr.TYPE_A, 0x8001),  # QU: unicast answer asked for
        query(f"{NAME}._smb._tcp.local", llmnr.TYPE_ANY),
        llmnr.encode(claim),  # another host claiming our name
    ]


def wsd_seeds(rng: random.Random, me: IPv4Address, office: str) -> list[bytes]:
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"spokeshare:{office}")
    ep = wsd.Endpoint.for_name(NAME, WORKGROUP, namespace)

    def mid() -> str:
        return uuid.UUID(int=rng.getrandbits(128), version=4).urn

    minimal = (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"><s:Header>'
        f"<a:Action>{wsd.ACTION_PROBE}</a:Action><a:MessageID>{mid()}</a:MessageID>"
        "</s:Header><s:Body><d:Probe/></s:Body></s:Envelope>"
    ).encode()
    return [
        wsd.build_probe(mid()),
        minimal,
        wsd.build_resolve(mid(), ep.urn),
        wsd.build_probe("urn:x:" + "i" * 30 * 1024),  # issue 15's 30 KiB MessageID
        wsd.build_bye(ep, mid(), (1, mid(), 1)),  # someone else saying our name left
    ]


PROTOCOLS: dict[str, tuple[int, Callable[..., list[bytes]]]] = {
    "nbns": (netbios.NAME_SERVICE_UDP_PORT, nbns_seeds),
    "browse": (netbios.DATAGRAM_SERVICE_UDP_PORT, browse_seeds),
    "llmnr": (llmnr.PORT, llmnr_seeds),
    "mdns": (5353, mdns_seeds),
    "wsd": (wsd.UDP_PORT, wsd_seeds),
}
GROUPS = {"llmnr": "224.0.0.252", "mdns": "224.0.0.251", "wsd": wsd.MCAST_V4}


def fuzz_datagrams(
    protocol: str,
    edge: str,
    bcast: str,
    office: str,
    count: int,
    seed: int,
    sources: list[str],
) -> dict[str, int]:
    rng = random.Random(seed)
    port, seeds_of = PROTOCOLS[protocol]
    group = GROUPS.get(protocol, bcast)
    socks: list[socket.socket] = []
    for src in sources:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        # mDNS from 5353 is a multicast querier; from any other port, legacy unicast
        # (RFC 6762 §6.7), which zeroconf answers by unicast: both are tried.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((src, 5353 if protocol == "mdns" and len(socks) % 2 else 0))
        except OSError:  # 5353 taken on this host (a local responder): any port then
            s.bind((src, 0))
        s.setblocking(False)
        socks.append(s)
    sent = sent_bytes = received = received_bytes = 0
    for i in range(count):
        sock = socks[i % len(socks)]
        me = IPv4Address(sock.getsockname()[0])
        seeds = wsd_seeds(rng, me, office) if protocol == "wsd" else seeds_of(rng, me)
        data = rng.choice(seeds)
        if i % 2:
            data = mutate(rng, data)
        dest = edge if (i // len(socks)) % 2 == 0 else group
        try:
            sock.sendto(data, (dest, port))
            sent += 1
            sent_bytes += len(data)
        except OSError:
            pass  # e.g. EMSGSIZE for a mutation grown past a datagram: not sent
        if i % BATCH == BATCH - 1:
            time.sleep(PAUSE)
            for s in socks:
                received, received_bytes = _drain(s, received, received_bytes)
    deadline = time.monotonic() + 1.5  # answers may be delayed (WSD: up to 0.5 s + repeats)
    while time.monotonic() < deadline:
        for s in socks:
            received, received_bytes = _drain(s, received, received_bytes)
        time.sleep(0.05)
    for s in socks:
        s.close()
    return {
        "sent": sent,
        "sent_bytes": sent_bytes,
        "received": received,
        "received_bytes": received_bytes,
    }


def worst_query(protocol: str, rng: random.Random, office: str) -> bytes:
    """The query with the largest answer per byte asked, per protocol (sent intact)."""
    if protocol == "nbns":
        return netbios.encode(netbios.node_status_request(rng.randrange(1, 0x10000)))
    if protocol == "llmnr":
        return llmnr.build_query(rng.randrange(0x10000), NAME, llmnr.TYPE_ANY)
    if protocol == "mdns":  # legacy unicast: from a port other than 5353
        return llmnr.encode(
            llmnr.Message(
                rng.randrange(0x10000), 0, (llmnr.Question("_smb._tcp.local", llmnr.TYPE_PTR),)
            )
        )
    return wsd_seeds(rng, IPv4Address("0.0.0.0"), office)[1]  # the minimal Probe


def fuzz_worst(
    protocol: str, edge: str, office: str, count: int, seed: int, source: str
) -> dict[str, int]:
    """``count`` copies of the worst query, unicast from one source at ~2,000/s:
    the first answer's size, and how many answers (bytes) came back in all."""
    rng = random.Random(seed)
    port = PROTOCOLS[protocol][0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    first_query = worst_query(protocol, rng, office)
    sock.sendto(first_query, (edge, port))
    first = 0
    deadline = time.monotonic() + 2.0  # WSD may wait up to APP_MAX_DELAY: unicast, none
    while not first and time.monotonic() < deadline:
        try:
            first = len(sock.recv(65535))
        except BlockingIOError:
            time.sleep(0.01)
    sent, sent_bytes, received, received_bytes = 1, len(first_query), 0, 0
    for i in range(count - 1):
        data = worst_query(protocol, rng, office)
        sock.sendto(data, (edge, port))
        sent += 1
        sent_bytes += len(data)
        if i % BATCH == BATCH - 1:
            time.sleep(PAUSE)
            received, received_bytes = _drain(sock, received, received_bytes)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        received, received_bytes = _drain(sock, received, received_bytes)
        time.sleep(0.05)
    sock.close()
    return {
        "query_bytes": len(first_query),
        "first_answer_bytes": first,
        "sent": sent,
        "sent_bytes": sent_bytes,
        "received": received,
        "received_bytes": received_bytes,
    }


def _drain(sock: socket.socket, n: int, nbytes: int) -> tuple[int, int]:
    while True:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return n, nbytes
        n += 1
        nbytes += len(data)


# -- malformed TCP on 139 and 5357 ------------------------------------------------------------


def tcp_payloads(rng: random.Random) -> list[tuple[int, bytes]]:
    me = NetbiosName("NYC-PC", 0)
    good = nbss.encode(nbss.SessionRequest(NetbiosName.create(NAME, 0x20), me))
    wrong = nbss.encode(nbss.SessionRequest(NetbiosName.create("NOT-OURS", 0x20), me))
    return [
        (139, good[:4]),  # a header and nothing more
        (139, b"\x81\x00\xff\xff" + bytes(rng.randrange(256) for _ in range(64))),
        (139, b"\x85\x00\x00\x00" * 500),  # keepalives, forever
        (139, b"\x81\x01\xff\xff"),  # announces 128 KiB
        (139, mutate(rng, good)),
        (139, wrong),
        (139, bytes(rng.randrange(256) for _ in range(300))),
        (5357, b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 9000),  # head over 8 KiB
        (5357, b"POST /x HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(64)) + b"\r\n"),
        (5357, b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        (5357, b"POST /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
        (5357, b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n"),  # body never comes
        (5357, b"\x16\x03\x01\x02\x00" + bytes(rng.randrange(256) for _ in range(200))),
        (5357, mutate(rng, b"POST /urn HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd")),
        (5357, b"GET / HTTP/1.1\r\n"),  # slow: held open (beyond the connection cap)
    ]


def fuzz_tcp(edge: str, count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    held: list[socket.socket] = []
    opened = refused = 0
    payloads = tcp_payloads(rng)
    for i in range(count):
        port, data = payloads[i % len(payloads)]
        try:
            s = socket.create_connection((edge, port), timeout=2)
        except OSError:
            refused += 1
            continue
        opened += 1
        try:
            s.sendall(data)
        except OSError:
            s.close()
            continue
        if i % len(payloads) in (0, 3, 11, 14):
            held.append(s)  # stalled mid-request: the edge's timeouts and caps must cope
        else:
            s.close()
    time.sleep(0.5)  # the stalled ones stay open for a moment, then go
    for s in held:
        s.close()
    return {"opened": opened, "refused": refused, "held": len(held)}


def main(argv: list[str]) -> None:
    protocol, edge, bcast, office, count, seed, *sources = argv
    if protocol == "tcp":
        result = fuzz_tcp(edge, int(count), int(seed))
    elif protocol.endswith("-worst"):
        result = fuzz_worst(
            protocol[: -len("-worst")], edge, office, int(count), int(seed), sources[0]
        )
    else:
        result = fuzz_datagrams(protocol, edge, bcast, office, int(count), int(seed), sources)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
