"""LLMNR codec and responder: captured vectors, tables both ways, property tests; the
adapter (LlmnrService) on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spokeshare.config import LanPresence, VirtualName
from spokeshare.errors import DecodeError, UsageError
from spokeshare.lan import discovery_service, llmnr
from spokeshare.lan.discovery_service import unicast_socket
from spokeshare.lan.discovery_settings import DiscoverySettings
from spokeshare.lan.llmnr import (
    CLASS_IN,
    FLAG_C,
    FLAG_QR,
    FLAG_TC,
    TYPE_A,
    TYPE_AAAA,
    TYPE_ANY,
    InterfaceAddresses,
    LlmnrResponder,
    Message,
    Question,
    ResourceRecord,
)
from tests.strategies import mutated_any, unchecked

VECTORS = Path(__file__).parent / "vectors_discovery"
LOCAL = InterfaceAddresses("198.18.203.1", "fe80::1")
PEER = "198.18.203.2"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


# -- captured vectors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        # llmnr-query -T A GLOBAL-NFS: "Standard query 0x0000 A GLOBAL-NFS"
        ("llmnr-query-a.bin", TYPE_A),
        # llmnr-query -T AAAA GLOBAL-NFS: "Standard query 0x0000 AAAA GLOBAL-NFS"
        ("llmnr-query-aaaa.bin", TYPE_AAAA),
        # llmnr-query -T ANY GLOBAL-NFS: "Standard query 0x0000 ANY GLOBAL-NFS"
        ("llmnr-query-any.bin", TYPE_ANY),
    ],
)
def test_llmnr_query_vectors(name: str, qtype: int) -> None:
    msg = llmnr.decode(vector(name))
    assert msg == Message(0, 0, (Question("GLOBAL-NFS", qtype, CLASS_IN),))
    assert not msg.is_response and msg.opcode == 0
    assert llmnr.encode(msg) == vector(name)


def test_llmnrd_response_vector() -> None:
    # llmnrd -H GLOBAL-NFS: "Standard query response 0x5a5a A GLOBAL-NFS A 198.18.202.1"
    msg = llmnr.decode(vector("llmnrd-response-a.bin"))
    assert msg.id == 0x5A5A and msg.is_response and not msg.conflict
    assert msg.questions == (Question("GLOBAL-NFS", TYPE_A),)
    (rr,) = msg.answers
    assert (rr.name, rr.rtype, rr.rclass, rr.ttl) == ("GLOBAL-NFS", TYPE_A, CLASS_IN, 30)
    assert rr.address == "198.18.202.1"


def test_our_answer_matches_llmnrd_in_meaning() -> None:
    query = llmnr.build_query(0x5A5A, "GLOBAL-NFS", TYPE_A)
    ours = LlmnrResponder(["GLOBAL-NFS"]).handle(
        query, "198.18.202.2", InterfaceAddresses("198.18.202.1"), 0.0
    )
    assert ours is not None
    assert llmnr.decode(ours) == llmnr.decode(vector("llmnrd-response-a.bin"))


# -- table, both ways -------------------------------------------------------------------

TABLE = [
    (
        Message(7, 0, (Question("GLOBAL-NFS", TYPE_A),)),
        bytes.fromhex("0007 0000 0001 0000 0000 0000 0a") + b"GLOBAL-NFS" + b"\0\x00\x01\x00\x01",
    ),
    (
        Message(
            7,
            FLAG_QR,
            (Question("GLOBAL-NFS", TYPE_A),),
            (ResourceRecord("GLOBAL-NFS", TYPE_A, CLASS_IN, 30, bytes([198, 18, 203, 1])),),
        ),
        bytes.fromhex("0007 8000 0001 0001 0000 0000 0a")
        + b"GLOBAL-NFS"
        + bytes.fromhex("00 0001 0001 c00c 0001 0001 0000001e 0004 c612cb01"),
    ),
]


@pytest.mark.parametrize(("msg", "wire"), TABLE)
def test_table(msg: Message, wire: bytes) -> None:
    assert llmnr.encode(msg) == wire
    assert llmnr.decode(wire) == msg


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "needs"),
        (bytes(11), "needs"),
        (bytes.fromhex("0000 0000 0001 0000 0000 0000 05") + b"ABCDE", "needs"),
        (bytes.fromhex("0000 0000 0001 0000 0000 0000 c00c 0001 0001"), "pointer"),
        (bytes.fromhex("0000 0000 0001 0000 0000 0000 8001 00 0001 0001"), "label type"),
        (bytes.fromhex("0000 0000 0001 0000 0000 0000 01ff 00 0001 0001"), "UTF-8"),
        (bytes.fromhex("0000 0000 ffff 0000 0000 0000"), "counts"),
        (llmnr.build_query(1, "X") + b"\0", "trailing"),
    ],
)
def test_malformed(wire: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        llmnr.decode(wire)


def test_pointer_loop_rejected() -> None:
    # answer name pointing at itself (offset 12 -> 12)
    wire = bytes.fromhex("0000 8000 0000 0001 0000 0000 c00c 0001 0001 0000001e 0004 01020304")
    with pytest.raises(DecodeError):
        llmnr.decode(wire)


def test_values_validate() -> None:
    with pytest.raises(UsageError):
        Question("x" * 64, TYPE_A)
    with pytest.raises(UsageError):
        Message(70000, 0)
    with pytest.raises(UsageError):
        ResourceRecord("a", TYPE_A, CLASS_IN, -1, b"")


# -- responder --------------------------------------------------------------------------


def ask(
    r: LlmnrResponder,
    name: str,
    qtype: int = TYPE_A,
    flags: int = 0,
    source: str = PEER,
    now: float = 0.0,
    local: InterfaceAddresses = LOCAL,
) -> Message | None:
    wire = llmnr.encode(Message(1, flags, (Question(name, qtype),)))
    out = r.handle(wire, source, local, now)
    return None if out is None else llmnr.decode(out)


def test_answers_owned_name_case_insensitively() -> None:
    r = LlmnrResponder(["GLOBAL-NFS", "PRINT-HQ"])
    for name in ("GLOBAL-NFS", "global-nfs", "Print-HQ"):
        resp = ask(r, name)
        assert resp is not None and resp.is_response and resp.id == 1
        assert [a.address for a in resp.answers] == ["198.18.203.1"]
        assert resp.answers[0].name == name and resp.answers[0].ttl == llmnr.DEFAULT_TTL


def test_aaaa_and_any_use_interface_addresses() -> None:
    r = LlmnrResponder(["GLOBAL-NFS"])
    aaaa = ask(r, "GLOBAL-NFS", TYPE_AAAA)
    assert aaaa is not None and [a.address for a in aaaa.answers] == ["fe80::1"]
    anyq = ask(r, "GLOBAL-NFS", TYPE_ANY)
    assert anyq is not None and [a.address for a in anyq.answers] == ["198.18.203.1", "fe80::1"]
    # No IPv6 on the interface: authoritative empty answer.
    empty = ask(r, "GLOBAL-NFS", TYPE_AAAA, local=InterfaceAddresses("198.18.203.1"))
    assert empty is not None and empty.answers == () and empty.rcode == 0


def test_names_with_their_own_address_get_their_own_ipv6_or_none() -> None:
    """Only what answers is advertised: a name on its own IPv4 address gets its own
    IPv6 address (the edge listens there for its service), or no AAAA at all, never
    the interface's (whose port 445 carries another name's service)."""
    r = LlmnrResponder(
        ["GLOBAL-NFS", "GLOBAL-ENG", "GLOBAL-OPS"],
        name_addresses={"GLOBAL-ENG": "198.18.203.3", "GLOBAL-OPS": "198.18.203.4"},
        name_addresses6={"GLOBAL-ENG": "fe80::3%lan0", "GLOBAL-OPS": None},
    )
    eng = ask(r, "GLOBAL-ENG", TYPE_ANY)
    assert eng is not None and [a.address for a in eng.answers] == ["198.18.203.3", "fe80::3"]
    ops = ask(r, "GLOBAL-OPS", TYPE_AAAA)
    assert ops is not None and ops.answers == () and ops.rcode == 0
    nfs = ask(r, "GLOBAL-NFS", TYPE_AAAA)
    assert nfs is not None and [a.address for a in nfs.answers] == ["fe80::1"]


def test_answer_address_is_the_receiving_interface() -> None:
    r = LlmnrResponder(["GLOBAL-NFS"])
    resp = ask(r, "GLOBAL-NFS", local=InterfaceAddresses("10.9.8.7"))
    assert resp is not None and resp.answers[0].address == "10.9.8.7"


@pytest.mark.parametrize(
    ("name", "qtype", "flags"),
    [
        ("OTHER", TYPE_A, 0),  # not ours
        ("GLOBAL-NFS.example", TYPE_A, 0),  # not ours
        ("GLOBAL-NFS", TYPE_A, FLAG_C),  # conflict bit: RFC 4795 §2.1.1
        ("GLOBAL-NFS", TYPE_A, FLAG_TC),  # truncated
        ("GLOBAL-NFS", TYPE_A, FLAG_QR),  # a response
        ("GLOBAL-NFS", TYPE_A, 1 << 11),  # opcode 1
        ("GLOBAL-NFS", 15, 0),  # MX: MS-LLMNRP says drop other types
    ],
)
def test_ignored(name: str, qtype: int, flags: int) -> None:
    r = LlmnrResponder(["GLOBAL-NFS"])
    assert ask(r, name, qtype, flags) is None


def test_ignores_two_questions_and_answers_in_query() -> None:
    r = LlmnrResponder(["GLOBAL-NFS"])
    q = Question("GLOBAL-NFS", TYPE_A)
    two = llmnr.encode(Message(1, 0, (q, q)))
    assert r.handle(two, PEER, LOCAL, 0.0) is None
    rr = ResourceRecord("GLOBAL-NFS", TYPE_A, CLASS_IN, 1, bytes(4))
    with_answer = llmnr.encode(Message(1, 0, (q,), (rr,)))
    assert r.handle(with_answer, PEER, LOCAL, 0.0) is None


def test_ignores_own_packets() -> None:
    r = LlmnrResponder(["GLOBAL-NFS"])
    assert ask(r, "GLOBAL-NFS", source="198.18.203.1") is None
    assert ask(r, "GLOBAL-NFS", source="fe80::1%eth0") is None


def test_rate_limit_per_source_with_time_passed_in() -> None:
    r = LlmnrResponder(["GLOBAL-NFS"], rate_limit=3, rate_window=1.0)
    got = [ask(r, "GLOBAL-NFS", now=0.1 * i) is not None for i in range(5)]
    assert got == [True, True, True, False, False]
    assert ask(r, "GLOBAL-NFS", source="198.18.203.9", now=0.5) is not None  # other source
    assert ask(r, "GLOBAL-NFS", now=1.2) is not None  # a new window
    assert r.statistics().rate_limited == 2


def test_disabled_responder_is_silent() -> None:
    r = LlmnrResponder(["GLOBAL-NFS"])
    r.enabled = False
    assert ask(r, "GLOBAL-NFS") is None
    r.enabled = True
    assert ask(r, "GLOBAL-NFS") is not None


def test_malformed_counted_and_raised() -> None:
    r = LlmnrResponder(["GLOBAL-NFS"])
    with pytest.raises(DecodeError):
        r.handle(b"\x00", PEER, LOCAL, 0.0)
    assert r.statistics().malformed == 1


# -- properties --------------------------------------------------------------------------

labels = st.text(
    alphabet=st.characters(exclude_characters=".", exclude_categories=["Cs"]),
    min_size=1,
    max_size=20,
).filter(lambda s: len(s.encode()) <= 63)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
questions = st.builds(Question, names, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
records = st.builds(
    ResourceRecord,
    names,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=40),
)
messages = st.builds(
    Message,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.lists(questions, max_size=2).map(tuple),
    st.lists(records, max_size=3).map(tuple),
    st.lists(records, max_size=1).map(tuple),
    st.lists(records, max_size=1).map(tuple),
)


@given(messages)
def test_round_trip(msg: Message) -> None:
    assert llmnr.decode(llmnr.encode(msg)) == msg


@given(st.binary(max_size=600))
def test_random_bytes_decode_or_decodeerror(data: bytes) -> None:
    try:
        llmnr.decode(data)
    except DecodeError:
        pass


@given(
    mutated_any(
        [vector(n) for n in ("llmnr-query-a.bin", "llmnr-query-any.bin", "llmnrd-response-a.bin")]
    )
)
def test_mutated_vectors_decode_or_decodeerror(wire: bytes) -> None:
    r = LlmnrResponder(["GLOBAL-NFS"])
    try:
        r.handle(wire, PEER, LOCAL, 0.0)
    except DecodeError:
        pass


def test_pure_modules_import_no_io() -> None:
    code = (
        "import sys, spokeshare.lan.llmnr, spokeshare.lan.wsd\n"
        "bad = [m for m in ('asyncio', 'socket', 'ssl', 'logging', 'selectors') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    # "time" is imported by the interpreter itself, so check the sources instead.
    for mod in ("llmnr", "wsd"):
        src = (Path(llmnr.__file__).parent / f"{mod}.py").read_text()
        for banned in ("asyncio", "socket", "ssl", "logging", "time"):
            assert f"import {banned}\n" not in src and f"from {banned} " not in src


# -- the adapter on loopback: what its datagrams leave with ----------------------------

IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # <linux/in.h>


def _ttl(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The IP TTL the kernel reported for a datagram (IP_RECVTTL), -1 for none."""
    for level, kind, value in ancillary:
        if (level, kind) == (socket.IPPROTO_IP, socket.IP_TTL):
            return int.from_bytes(value[:4], sys.byteorder)
    return -1


def test_queries_leave_with_ttl_1_answers_with_255(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 4795 §2.5: LlmnrService's multicast queries (the uniqueness query sent at
    start, §4.1) leave with IPv4 TTL 1 and its unicast responses with TTL 255, read as
    received (``IP_RECVTTL``) on lo: the edge on 127.0.0.2, a free port, a listener on
    224.0.0.252 joined on lo, a PC on 127.0.0.1; the answer's record carries the
    configured TTL (30 s, §2.8). lo has no IPv6 address but ::1 (the edge's own, so a
    query from it is ignored) and no multicast route, so for IPv6 the hop limits are
    read from the service's sockets (IPV6_MULTICAST_HOPS 1, IPV6_UNICAST_HOPS 255)."""
    made: list[socket.socket] = []

    def spy(*args: Any, **kw: Any) -> socket.socket:
        made.append(unicast_socket(*args, **kw))
        return made[-1]

    monkeypatch.setattr(discovery_service, "unicast_socket", spy)
    port = _free_udp_port("127.0.0.2")
    # LanPresence refuses a loopback address on an interface: built unchecked.
    lan = unchecked(LanPresence, interface="lo", address="127.0.0.2", workgroup="ACME",
                    names=(VirtualName("GLOBAL-NFS", "smb"),))  # fmt: skip
    settings = DiscoverySettings(lan, UUID(int=3), ipv6_link_local="::1", llmnr_port=port)
    group = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    group.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    mreq = struct.pack("@4s4si", socket.inet_aton(llmnr.MCAST_V4), b"\0" * 4, settings.ifindex)
    group.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    group.bind((llmnr.MCAST_V4, port))
    pc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pc.bind(("127.0.0.1", 0))
    for s in (group, pc):
        s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        s.settimeout(5)

    async def scenario() -> tuple[Message, int, Message, int, list[tuple[int, int]]]:
        service = discovery_service.LlmnrService(settings)
        try:
            await service.start()  # sends the uniqueness queries, waits 1 s for answers
            data, anc, _, _ = await asyncio.to_thread(group.recvmsg, 1500, 64)
            query, query_ttl = llmnr.decode(data), _ttl(anc)
            ask = Message(7, 0, (Question("GLOBAL-NFS", TYPE_A),))
            pc.sendto(llmnr.encode(ask), ("127.0.0.2", port))
            data, anc, _, _ = await asyncio.to_thread(pc.recvmsg, 1500, 64)
            v6 = [s for s in made if s.family == socket.AF_INET6]
            hops = [
                (s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS),
                 s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS))
                for s in v6
            ]  # fmt: skip
            return query, query_ttl, llmnr.decode(data), _ttl(anc), hops
        finally:
            await service.stop()

    try:
        query, query_ttl, answer, answer_ttl, hops = asyncio.run(scenario())
    finally:
        group.close()
        pc.close()
    assert not query.is_response and query.questions[0].name == "GLOBAL-NFS"
    assert query_ttl == 1
    assert answer.is_response and answer.id == 7
    assert [(a.address, a.ttl) for a in answer.answers] == [("127.0.0.2", 30)]  # §2.8
    assert answer_ttl == 255
    assert hops == [(1, 255)]


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
