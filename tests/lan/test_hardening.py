"""The LAN is hostile (issue 15): decoders keep their contract for every value a
message class refuses, answers stay within budgets and bounds, and hostile input
costs a counter and at most a rate-limited debug line.

The property tests build messages with fields around each encoder's own limit
(``tests.strategies.around``), put on the wire by the real encoder from a value
its constructor would refuse (``tests.strategies.unchecked``): past the limit the
decoder must raise DecodeError, never ValueError.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare.buffer import Buffer
from spokeshare.errors import DecodeError, UsageError
from spokeshare.lan import browse, llmnr, netbios, wsd
from spokeshare.lan import netbios_session as nbss
from spokeshare.lan.hostile import MAX_LINES_PER_INTERVAL, RateLimitedLog
from spokeshare.lan.netbios import NetbiosName
from spokeshare.lan.ratelimit import AnswerBudget, Budget
from tests.strategies import around, unchecked

PC = IPv4Address("198.18.200.2")


def _wrap_browse(message: browse.BrowserMessage, slot_name: str = browse.BROWSE_MAILSLOT) -> bytes:
    slot = unchecked(browse.Mailslot, name=slot_name, data=browse.encode_browser_message(message))
    return browse.encode_datagram(
        browse.Datagram(
            browse.DatagramType.DIRECT_GROUP,
            7,
            PC,
            NetbiosName("NYC-PC", 0),
            NetbiosName("ACME", 0x1D),
            browse.encode_mailslot(slot),
        )
    )


# -- browse (UDP 138) -------------------------------------------------------------------


@given(around(browse.MAX_TEXT_LENGTH))
@settings(max_examples=60)
def test_browse_comment_around_its_limit(n: int) -> None:
    msg = unchecked(browse.Announcement, server_name="NYC-PC", server_type=0x9A03, comment="c" * n)
    data = _wrap_browse(msg)
    if n > browse.MAX_TEXT_LENGTH:
        with pytest.raises(DecodeError):
            browse.decode(data)
    else:
        decoded = browse.decode(data).message
        assert isinstance(decoded, browse.Announcement) and len(decoded.comment) == n


@given(around(browse.MAX_TEXT_LENGTH))
@settings(max_examples=60)
def test_browse_response_name_around_its_limit(n: int) -> None:
    data = _wrap_browse(unchecked(browse.AnnouncementRequest, response_name="r" * n))
    if n > browse.MAX_TEXT_LENGTH:
        with pytest.raises(DecodeError):
            browse.decode(data)
    else:
        assert browse.decode(data).message == browse.AnnouncementRequest("r" * n)


@given(around(255, above=300))
@settings(max_examples=40)
def test_mailslot_name_around_its_limit(n: int) -> None:
    name = "\\MAILSLOT\\" + "m" * (n - 10)
    data = _wrap_browse(browse.AnnouncementRequest("PC"), slot_name=name)
    try:
        dgram = browse.decode_datagram(data)
        slot = browse.decode_mailslot(dgram.user_data)
    except DecodeError:
        assert n > 255
        return
    assert n <= 255 and slot.name == name


# -- NetBIOS names (UDP 137, TCP 139) ----------------------------------------------------


def _long_scope(n: int) -> str:
    """A scope whose encoded name is ``n`` bytes (labels of up to 63)."""
    labels, left = [], n - 34 - 1
    while left > 1:
        size = min(63, left - 1)
        labels.append("s" * size)
        left -= size + 1
    return ".".join(labels)


@given(around(netbios.MAX_NAME_LENGTH, above=200))
@settings(max_examples=60)
def test_nbns_name_scope_around_its_limit(n: int) -> None:
    name = unchecked(NetbiosName, name="GLOBAL-NFS", suffix=0x20, scope=_long_scope(n))
    q = unchecked(netbios.Question, name=name)
    packet = netbios.NbnsPacket(0x1234, netbios.Opcode.QUERY, questions=())
    data = netbios.encode(packet)[:4] + b"\x00\x01" + bytes(6)
    body = Buffer(protocol="t")
    netbios.push_name(body, q.name)
    body.push_uint16(q.qtype)
    body.push_uint16(q.qclass)
    data += body.getvalue()
    try:
        decoded = netbios.decode(data)
    except DecodeError:
        return
    assert decoded.questions[0].name.scope == name.scope


@given(around(netbios.MAX_NAME_LENGTH, above=200))
@settings(max_examples=60)
def test_session_request_scope_around_its_limit(n: int) -> None:
    called = unchecked(NetbiosName, name="GLOBAL-NFS", suffix=0x20, scope=_long_scope(n))
    data = nbss.encode(
        unchecked(nbss.SessionRequest, called=called, calling=NetbiosName("NYC-PC", 0))
    )
    try:
        packet = nbss.decode(data)
    except DecodeError:
        return
    assert isinstance(packet, nbss.SessionRequest) and packet.called.scope == called.scope


@given(st.binary(min_size=4, max_size=80))
def test_session_reader_only_raises_decode_error(data: bytes) -> None:
    reader = nbss.SessionReader()
    reader.feed(data)
    try:
        while reader.next_packet() is not nbss.NEED_DATA:
            pass
    except DecodeError:
        pass


# -- LLMNR (UDP 5355) ------------------------------------------------------------------


@given(around(llmnr.MAX_NAME, above=120))
@settings(max_examples=60)
def test_llmnr_name_around_its_limit(n: int) -> None:
    labels, left = [], n - 1
    while left > 1:
        size = min(llmnr.MAX_LABEL, left - 1)
        labels.append("a" * size)
        left -= size + 1
    name = ".".join(labels)
    data = llmnr.encode(
        llmnr.Message(1, 0, (unchecked(llmnr.Question, name=name, qtype=1, qclass=1),))
    )
    try:
        msg = llmnr.decode(data)
    except DecodeError:
        assert n > llmnr.MAX_NAME
        return
    assert msg.questions[0].name == name


# -- WS-Discovery (UDP 3702, TCP 5357) ---------------------------------------------------

NS = uuid.UUID("0d5c1f2a-8a44-4a55-9f0e-6c6162000001")


def host(**kw: object) -> wsd.WsdHost:
    eps = [wsd.Endpoint.for_name(n, "ACME", NS) for n in ("GLOBAL-NFS", "GLOBAL-ENG")]
    h = wsd.WsdHost(eps, ["198.18.200.1"], instance_id=1, rng=random.Random(1), **kw)  # type: ignore[arg-type]
    h.announce(0.0)
    h.handle_timer(10.0)
    return h


@given(around(wsd.MAX_ECHOED_ID, above=4000))
@settings(max_examples=60)
def test_wsd_message_id_around_its_limit(n: int) -> None:
    mid = "urn:x:" + "i" * (n - 6)
    data = wsd.build_probe(mid)
    try:
        msg = wsd.decode(data)
    except DecodeError:
        assert n > wsd.MAX_ECHOED_ID
        return
    assert msg.message_id == mid


def test_thirty_kib_message_id_is_not_echoed() -> None:
    """Issue 15: a 30 KiB MessageID came back in two 30 KiB replies."""
    h = host()
    with pytest.raises(DecodeError):
        h.handle_datagram(
            wsd.build_probe("urn:x:" + "i" * 30 * 1024),
            ("198.18.200.2", 3702),
            "198.18.200.1",
            False,
            11.0,
        )
    assert h.handle_timer(20.0) == []
    assert h.statistics().oversized == 1


def test_reply_size_does_not_grow_with_the_message_id() -> None:
    sizes = []
    for length in (10, wsd.MAX_ECHOED_ID):
        h = host()
        mid = "urn:x:" + "i" * (length - 6)
        h.handle_datagram(wsd.build_probe(mid), ("198.18.200.2", 3702), "198.18.200.1", False, 11.0)
        out = h.handle_timer(20.0)
        assert len(out) == 2 * wsd.UNICAST_UDP_REPEAT  # two endpoints, each repeated
        sizes.append(max(len(d.payload) for d in out))
    assert sizes[1] - sizes[0] <= wsd.MAX_ECHOED_ID
    assert sizes[1] < 2 * wsd.MAX_UDP_ENVELOPE


def test_probe_answers_are_budgeted_per_source_and_globally() -> None:
    h = host(answer_budget=AnswerBudget(Budget(3, 1), Budget(10, 5)))
    for i in range(20):  # one source, unique MessageIDs: 3 answered
        h.handle_datagram(
            wsd.build_probe(f"urn:uuid:{uuid.UUID(int=i)}"),
            ("198.18.200.2", 3702),
            "198.18.200.1",
            True,
            11.0,
        )
    assert h.statistics().probes_answered == 3
    for i in range(100):  # spoofed sources: the global budget holds
        h.handle_datagram(
            wsd.build_probe(f"urn:uuid:{uuid.UUID(int=1000 + i)}"),
            (f"198.18.201.{i + 1}", 3702),
            "198.18.200.1",
            True,
            11.0,
        )
    assert h.statistics().probes_answered == 10
    assert h.statistics().rate_limited == 17 + 93


def test_udp_envelope_over_the_limit_is_refused() -> None:
    h = host()
    pad = b"<!--" + b"p" * wsd.MAX_UDP_ENVELOPE + b"-->"
    with pytest.raises(DecodeError):
        h.handle_datagram(
            wsd.build_probe("urn:uuid:1") + pad, ("198.18.200.2", 3702), "198.18.200.1", False, 11.0
        )


@given(around(wsd.MAX_HTTP_HEADERS, below=2, above=20))
@settings(max_examples=30)
def test_http_header_count_around_its_limit(n: int) -> None:
    head = b"POST /x HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(n)) + b"\r\n"
    try:
        req = wsd.parse_http_request(head)
    except DecodeError:
        assert n > wsd.MAX_HTTP_HEADERS
        return
    assert isinstance(req, wsd.HttpRequest) and len(req.headers) == n


# -- budgets and the log -----------------------------------------------------------------


def test_answer_budget_refills_and_forgets_sources() -> None:
    b = AnswerBudget(Budget(2, 1), Budget(100, 100), max_sources=2)
    assert [b.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert b.allow("a", 1.0)  # one token back after a second
    b.allow("b", 1.0)
    b.allow("c", 1.0)  # "a" forgotten: a full bucket again
    assert [b.allow("a", 1.0) for _ in range(3)] == [True, True, False]
    assert b.refused_source == 2 and b.refused_global == 0
    with pytest.raises(UsageError):
        Budget(0, 1)


def test_rate_limited_log_counts_everything_and_writes_little(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    hostile = RateLimitedLog(logging.getLogger("spokeshare.test"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, "spokeshare.test"):
        for i in range(1000):  # a thousand spoofed sources
            hostile("bad_packets", f"198.18.{i // 250}.{i % 250}", "bad from %s", i)
        assert len(caplog.records) == MAX_LINES_PER_INTERVAL
        now[0] = 11.0
        hostile("bad_packets", "198.18.0.0", "bad from %s", "again")
    assert len(caplog.records) == MAX_LINES_PER_INTERVAL + 1
    assert hostile.counts == {"bad_packets": 1001}
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}


def test_guarded_datagram_protocol_counts_what_a_handler_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception escaping datagram_received would reach the event loop's handler:
    an ERROR with a traceback per packet. The guard counts it and logs debug."""
    from spokeshare.lan.hostile import GuardedDatagramProtocol

    def handler(data: bytes, addr: object) -> None:
        raise KeyError(data)

    hostile = RateLimitedLog(logging.getLogger("spokeshare.test"))
    proto = GuardedDatagramProtocol(handler, hostile, "test")
    with caplog.at_level(logging.DEBUG, "spokeshare.test"):
        for i in range(100):
            proto.datagram_received(b"x%d" % i, ("198.18.200.2", 137))
        proto.error_received(ConnectionRefusedError())
    assert hostile.counts == {"internal_errors": 100, "socket_errors": 1}
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}
    assert len(caplog.records) == 2 and not any(r.exc_info for r in caplog.records)


def test_http_metadata_server_caps_connections_and_recovers() -> None:
    """HTTP on 5357: connections beyond HTTP_MAX_CONNECTIONS are closed at once, a bad
    request gets 400, and once the held connections go a request is answered again.
    (The handler of WsdService, served on loopback.)"""
    import asyncio

    from spokeshare.lan.discovery_service import HTTP_MAX_CONNECTIONS, WsdService
    from tests.lan.settings import discovery_settings

    svc = WsdService(discovery_settings("eth0", "198.18.200.1", ("GLOBAL-NFS",), NS))

    async def until(cond: Callable[[], bool]) -> None:
        """Poll the handler's connection count (no event to wait on there)."""
        async with asyncio.timeout(5):
            while not cond():  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    async def scenario() -> None:
        server = await asyncio.start_server(svc._http_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        held = []
        try:
            for _ in range(HTTP_MAX_CONNECTIONS):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"POST /x HTTP/1.1\r\n")  # never finished
                held.append((r, w))
            await until(lambda: svc._http_connections == HTTP_MAX_CONNECTIONS)
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET / HTTP/1.1\r\n\r\n")
            try:
                assert await asyncio.wait_for(r.read(), 2) == b""  # closed, unanswered
            except ConnectionResetError:
                pass
            w.close()
            assert svc.statistics().http_refused == 1
            for _, hw in held:
                hw.close()
            await until(lambda: svc._http_connections == 0)
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(
                b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(40)) + b"\r\n"
            )
            assert (await asyncio.wait_for(r.read(), 2)).startswith(b"HTTP/1.1 400 ")
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /nothing HTTP/1.1\r\n\r\n")
            assert (await asyncio.wait_for(r.read(), 2)).startswith(b"HTTP/1.1 404 ")
            w.close()
            assert svc.statistics().http_bad == 1
            assert svc.statistics().internal_errors == 0
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
