"""WS-Discovery codec and host core: wsdd's captured messages, the core back to back;
the adapter (WsdService) on loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spokeshare.config import LanPresence, VirtualName
from spokeshare.errors import DecodeError
from spokeshare.lan import NEED_DATA, onlink, wsd
from spokeshare.lan.discovery_service import WsdService
from spokeshare.lan.discovery_settings import DiscoverySettings
from spokeshare.lan.wsd import Endpoint, HttpRequest, WsdHost
from tests.helpers import free_port
from tests.strategies import mutated, mutated_any, unchecked

VECTORS = Path(__file__).parent / "vectors_discovery"
NS = UUID("6f1b7c5e-0000-4000-8000-00000000cafe")  # the namespace capture.py used
LOCAL = "198.18.203.1"
PEER = ("198.18.203.2", 3702)
WSDD_HOST = "urn:uuid:6f1b7c5e-0000-4000-8000-0000000c0001"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def http_body(name: str) -> bytes:
    return vector(name).partition(b"\r\n\r\n")[2]


def make_host(*names: str, seed: int = 1, addresses: tuple[str, ...] = (LOCAL,)) -> WsdHost:
    eps = [Endpoint.for_name(n, "acme", NS) for n in names]
    return WsdHost(eps, addresses, instance_id=1700000000, rng=random.Random(seed))


# -- wsdd's messages ---------------------------------------------------------------------


def test_wsdd_client_probe() -> None:
    msg = wsd.decode(vector("wsdd-client-probe.xml"))
    assert msg.action == wsd.ACTION_PROBE and msg.to == wsd.TO_DISCOVERY
    assert msg.types == (wsd.TYPE_DEVICE,) and msg.scopes == ()
    assert msg.message_id.startswith("urn:uuid:")


def test_wsdd_client_resolve_names_our_stable_endpoint() -> None:
    msg = wsd.decode(vector("wsdd-client-resolve.xml"))
    assert msg.action == wsd.ACTION_RESOLVE
    assert msg.endpoint == Endpoint.for_name("GLOBAL-NFS", "ACME", NS).urn


def test_wsdd_client_get_over_http() -> None:
    req = wsd.parse_http_request(vector("wsdd-client-get.http"))
    assert isinstance(req, wsd.HttpRequest)
    ep = Endpoint.for_name("GLOBAL-NFS", "ACME", NS)
    assert (req.method, req.target) == ("POST", ep.path)
    assert req.header("content-type") == wsd.CONTENT_TYPE
    msg = wsd.decode(req.body)
    assert msg.action == wsd.ACTION_GET and msg.to == ep.urn


def test_wsdd_server_hello_and_bye() -> None:
    hello = wsd.decode(vector("wsdd-server-hello.xml"))
    assert hello.action == wsd.ACTION_HELLO and hello.endpoint == WSDD_HOST
    assert hello.xaddrs == ("http://198.18.202.1:5357/6f1b7c5e-0000-4000-8000-0000000c0001",)
    assert hello.metadata_version == 1 and hello.app_sequence is not None
    bye = wsd.decode(vector("wsdd-server-bye.xml"))
    assert bye.action == wsd.ACTION_BYE and bye.endpoint == WSDD_HOST and bye.xaddrs == ()


def test_wsdd_server_matches() -> None:
    pm = wsd.decode(vector("wsdd-server-probematches.xml"))
    assert pm.action == wsd.ACTION_PROBE_MATCHES and pm.to == wsd.TO_ANONYMOUS
    assert pm.endpoint == WSDD_HOST and pm.xaddrs == () and pm.relates_to
    assert set(pm.types) == wsd.OUR_TYPES
    rm = wsd.decode(vector("wsdd-server-resolvematches.xml"))
    assert rm.action == wsd.ACTION_RESOLVE_MATCHES and rm.endpoint == WSDD_HOST
    assert rm.xaddrs[0].startswith("http://198.18.202.1:5357/")


def test_wsdd_server_get_response() -> None:
    msg = wsd.decode(http_body("wsdd-server-getresponse.http"))
    assert msg.action == wsd.ACTION_GET_RESPONSE
    assert msg.computer == "GLOBAL-NFS/Workgroup:ACME"


# -- our messages have the shape of wsdd's -----------------------------------------------


def _shape(data: bytes) -> tuple[str, ...]:
    """The sequence of element tags, without text: what a client navigates."""
    root, _ = wsd._parse_tree(data)
    return tuple(el.tag for el in root.iter())


def test_our_get_response_has_wsdd_shape_and_fields() -> None:
    ep = Endpoint.for_name("global-nfs", "acme", NS)
    ours = wsd.build_get_response(ep, "urn:uuid:1", "urn:uuid:2")
    assert _shape(ours) == _shape(http_body("wsdd-server-getresponse.http"))
    msg = wsd.decode(ours)
    assert msg.computer == "GLOBAL-NFS/Workgroup:ACME" and msg.relates_to == "urn:uuid:2"
    assert msg.friendly_name == "GLOBAL-NFS"


@pytest.mark.parametrize(
    ("theirs", "build"),
    [
        ("wsdd-server-hello.xml", lambda ep: wsd.build_hello(ep, "m", (1, "s", 0), "http://x")),
        ("wsdd-server-bye.xml", lambda ep: wsd.build_bye(ep, "m", (1, "s", 0))),
        (
            "wsdd-server-probematches.xml",
            lambda ep: wsd.build_probe_matches(ep, "m", "r", (1, "s", 0)),
        ),
        (
            "wsdd-server-resolvematches.xml",
            lambda ep: wsd.build_resolve_matches(ep, "m", "r", (1, "s", 0), "http://x"),
        ),
    ],
)
def test_our_udp_messages_have_wsdd_shape(theirs: str, build: object) -> None:
    ep = Endpoint.for_name("GLOBAL-NFS", "ACME", NS)
    assert callable(build)
    assert _shape(build(ep)) == _shape(vector(theirs))


def test_endpoint_uuid_is_stable_and_per_name() -> None:
    a = Endpoint.for_name("GLOBAL-NFS", "ACME", NS)
    assert a == Endpoint.for_name("global-nfs", "acme", NS)
    assert a.uuid != Endpoint.for_name("OTHER", "ACME", NS).uuid
    assert a.uuid == UUID("a2319811-e1cc-5276-af64-fed7e5202b5f")  # as captured from wsdd
    assert a.xaddr("fe80::1") == f"http://[fe80::1]:5357/{a.uuid}"


# -- the host core -----------------------------------------------------------------------


def test_announce_sends_hello_four_times_per_endpoint_with_growing_gaps() -> None:
    host = make_host("GLOBAL-NFS", "PRINT-HQ")
    host.announce(100.0)
    sent = host.handle_timer(200.0)
    assert len(sent) == 8 and host.get_timer() is None
    for ep in host.endpoints:
        mine = [d for d in sent if ep.urn.encode() in d.payload]
        assert len(mine) == 4 and all(d.destination is None for d in mine)
        gaps = [b.due - a.due for a, b in zip(mine, mine[1:], strict=False)]
        assert wsd.UDP_MIN_DELAY <= gaps[0] <= wsd.UDP_MAX_DELAY
        assert gaps[1] == pytest.approx(min(2 * gaps[0], wsd.UDP_UPPER_DELAY))
        msg = wsd.decode(mine[0].payload)
        assert msg.action == wsd.ACTION_HELLO and msg.xaddrs == (ep.xaddr(LOCAL),)
    numbers = [wsd.decode(d.payload).app_sequence for d in sent]
    assert all(n is not None and n[0] == 1700000000 for n in numbers)


def test_get_timer_and_handle_timer() -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(10.0)
    assert host.get_timer() == 10.0
    assert len(host.handle_timer(10.0)) == 1
    nxt = host.get_timer()
    assert nxt is not None and nxt > 10.0
    assert host.handle_timer(nxt - 0.001) == []


def probe_answers(host: WsdHost, data: bytes, multicast: bool = True) -> list[wsd.SendDatagram]:
    host.handle_timer(1e9)
    host.handle_datagram(data, PEER, LOCAL, multicast, 50.0)
    return host.handle_timer(1e9)


def test_probe_gets_one_probematches_per_endpoint_after_random_delay() -> None:
    host = make_host("GLOBAL-NFS", "PRINT-HQ")
    host.announce(0.0)
    sent = probe_answers(host, vector("wsdd-client-probe.xml"))
    assert len(sent) == 4  # 2 endpoints x UNICAST_UDP_REPEAT
    assert all(d.destination == PEER for d in sent)
    assert all(50.0 <= d.due <= 50.0 + wsd.APP_MAX_DELAY + 1.0 for d in sent)
    probe_id = wsd.decode(vector("wsdd-client-probe.xml")).message_id
    urns = set()
    for d in sent:
        msg = wsd.decode(d.payload)
        assert msg.action == wsd.ACTION_PROBE_MATCHES and msg.relates_to == probe_id
        assert msg.xaddrs == () and set(msg.types) == wsd.OUR_TYPES
        urns.add(msg.endpoint)
    assert urns == {ep.urn for ep in host.endpoints}


def test_unicast_probe_answered_without_delay() -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(0.0)
    sent = probe_answers(host, wsd.build_probe("urn:uuid:p1"), multicast=False)
    assert sent[0].due == 50.0


def test_probe_with_other_prefix_for_same_type_matches() -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(0.0)
    xml = wsd.build_probe("urn:uuid:p2").replace(b"wsdp:Device", b"d:Device")
    xml = xml.replace(
        b"<soap:Envelope ", b'<soap:Envelope xmlns:d="' + wsd.NS_WSDP.encode() + b'" '
    )
    assert probe_answers(host, xml)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda x: x.replace(b"wsdp:Device", b"wsdp:Printer"),
        lambda x: x.replace(b"</wsd:Types>", b"</wsd:Types><wsd:Scopes>ldap:///ou=x</wsd:Scopes>"),
    ],
)
def test_probe_not_for_us_ignored(mutate: object) -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(0.0)
    assert callable(mutate)
    assert probe_answers(host, mutate(wsd.build_probe("urn:uuid:p3"))) == []


def test_probe_without_types_matches_everything() -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(0.0)
    xml = wsd.build_probe("urn:uuid:p4").replace(b"<wsd:Types>wsdp:Device</wsd:Types>", b"")
    assert probe_answers(host, xml)


def test_resolve_answers_with_receiving_interface_address() -> None:
    host = make_host("GLOBAL-NFS", "PRINT-HQ", addresses=(LOCAL, "fe80::1"))
    host.announce(0.0)
    ep = host.endpoints[1]
    host.handle_timer(1e9)
    host.handle_datagram(wsd.build_resolve("urn:uuid:r1", ep.urn), PEER, "fe80::1", True, 5.0)
    sent = host.handle_timer(1e9)
    assert len(sent) == 2 and {d.local for d in sent} == {"fe80::1"}
    msg = wsd.decode(sent[0].payload)
    assert msg.action == wsd.ACTION_RESOLVE_MATCHES and msg.endpoint == ep.urn
    assert msg.xaddrs == (f"http://[fe80::1]:5357/{ep.uuid}",) and msg.relates_to == "urn:uuid:r1"


def test_resolve_for_someone_else_ignored() -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(0.0)
    assert probe_answers(host, wsd.build_resolve("urn:uuid:r2", WSDD_HOST)) == []


def test_duplicates_and_own_messages_dropped() -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(0.0)
    hello = host.handle_timer(1e9)[0].payload
    assert host.handle_datagram(hello, PEER, LOCAL, True, 1.0) is None  # our own, looped
    probe = vector("wsdd-client-probe.xml")
    assert probe_answers(host, probe)
    assert probe_answers(host, probe) == []  # SOAP-over-UDP repeat of the same message
    assert host.statistics().duplicates == 2


def test_duplicate_cache_is_bounded() -> None:
    host = make_host("GLOBAL-NFS")
    for i in range(wsd.KNOWN_MESSAGES * 3):
        host.handle_datagram(wsd.build_probe(f"urn:uuid:{i}"), PEER, LOCAL, True, 0.0)
    assert len(host._known.ids) == wsd.KNOWN_MESSAGES


def test_withdraw_sends_bye_and_stops_answering_then_announce_again() -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(0.0)
    host.handle_timer(1e9)
    host.handle_datagram(wsd.build_probe("urn:uuid:w1"), PEER, LOCAL, True, 1.0)
    host.withdraw(1.0)  # pending answers are dropped, Bye x4 queued
    sent = host.handle_timer(1e9)
    assert [wsd.decode(d.payload).action for d in sent] == [wsd.ACTION_BYE] * 4
    assert probe_answers(host, wsd.build_probe("urn:uuid:w2")) == []
    ep = host.endpoints[0]
    req = HttpRequest("POST", ep.path, "HTTP/1.1", (), wsd.build_get("urn:uuid:g", ep.urn))
    assert host.handle_http(req)[0] == 503
    host.withdraw(2.0)
    assert host.handle_timer(1e9) == []  # no second Bye
    host.announce(3.0)
    assert {wsd.decode(d.payload).action for d in host.handle_timer(1e9)} == {wsd.ACTION_HELLO}
    assert probe_answers(host, wsd.build_probe("urn:uuid:w3"))


def test_message_numbers_grow_per_endpoint() -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(0.0)
    first = wsd.decode(host.handle_timer(1e9)[0].payload).app_sequence
    host.withdraw(1.0)
    second = wsd.decode(host.handle_timer(1e9)[0].payload).app_sequence
    assert first is not None and second is not None and second[1] > first[1]


def test_http_get_per_endpoint_path() -> None:
    host = make_host("GLOBAL-NFS", "PRINT-HQ")
    host.announce(0.0)
    req = wsd.parse_http_request(vector("wsdd-client-get.http"))
    assert isinstance(req, wsd.HttpRequest)
    status, body = host.handle_http(req)
    assert status == 200
    assert wsd.decode(body).computer == "GLOBAL-NFS/Workgroup:ACME"
    other = host.endpoints[1]
    status, body = host.handle_http(
        HttpRequest("POST", other.path, "HTTP/1.1", (), wsd.build_get("urn:uuid:g2", other.urn))
    )
    assert status == 200 and wsd.decode(body).computer == "PRINT-HQ/Workgroup:ACME"
    assert host.handle_http(HttpRequest("POST", "/nope", "HTTP/1.1", (), b""))[0] == 404
    assert host.handle_http(HttpRequest("GET", other.path, "HTTP/1.1", (), b""))[0] == 405
    bad = HttpRequest("POST", other.path, "HTTP/1.1", (), b"<x/>")
    assert host.handle_http(bad)[0] == 400


# -- hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<a>",
        b"not xml",
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>',
        b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><l>&lol2;</l>',
        b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
        b"<a/>",
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>',
        b"<x>" + b"a" * wsd.MAX_MESSAGE + b"</x>",
        wsd.build_probe("urn:uuid:1").replace(b"wsdp:Device", b"nope:Device"),
        b'<?xml version="1.0" encoding="x-nonsense"?><a/>',
        "<a>\u00e9</a>".encode("latin-1"),
    ],
)
def test_hostile_xml_raises_decodeerror(data: bytes) -> None:
    with pytest.raises(DecodeError):
        wsd.decode(data)


def test_size_checked_before_parsing() -> None:
    with pytest.raises(DecodeError, match="over"):
        wsd.decode(b" " * (wsd.MAX_MESSAGE + 1))


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", None),
        (b"POST / HTTP/1.1\r\nHost: x", None),
        (b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nab", ("POST", "/a", b"ab")),
        (b"GET /a HTTP/1.0\r\n\r\n", ("GET", "/a", b"")),
    ],
)
def test_http_parser(data: bytes, expect: tuple[str, str, bytes] | None) -> None:
    req = wsd.parse_http_request(data)
    if expect is None:
        assert req is NEED_DATA
    else:
        assert isinstance(req, wsd.HttpRequest)
        assert (req.method, req.target, req.body) == expect


@pytest.mark.parametrize(
    "data",
    [
        b"x" * (wsd.MAX_HTTP_HEAD + 1),
        b"POST / HTTP/1.1\r\nX: " + b"a" * wsd.MAX_HTTP_HEAD + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/2\r\n\r\n",
        b"POST /\r\n\r\n",
        b"POST / HTTP/1.1\r\nbad header\r\n\r\n",
        b"POST / HTTP/1.1\r\nX: \xff\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nab",
    ],
)
def test_http_parser_rejects(data: bytes) -> None:
    with pytest.raises(DecodeError):
        wsd.parse_http_request(data)


def test_http_response() -> None:
    resp = wsd.build_http_response(200, b"<x/>")
    assert resp.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 4\r\n" in resp
    assert resp.endswith(b"\r\n\r\n<x/>")


SAMPLES = [
    "wsdd-client-probe.xml",
    "wsdd-client-resolve.xml",
    "wsdd-server-hello.xml",
    "wsdd-server-bye.xml",
    "wsdd-server-probematches.xml",
    "wsdd-server-resolvematches.xml",
]


@given(st.binary(max_size=2000))
def test_random_bytes_decode_or_decodeerror(data: bytes) -> None:
    try:
        wsd.decode(data)
    except DecodeError:
        pass
    try:
        wsd.parse_http_request(data)
    except DecodeError:
        pass


@given(mutated_any([vector(n) for n in SAMPLES], byte=st.sampled_from(b"<>/&\"':= x\x00\xff")))
def test_mutated_vectors_decode_or_decodeerror(xml: bytes) -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(0.0)
    try:
        host.handle_datagram(xml, PEER, LOCAL, True, 1.0)
    except DecodeError:
        pass


@given(mutated(vector("wsdd-client-get.http")))
def test_mutated_http_decode_or_decodeerror(raw: bytes) -> None:
    host = make_host("GLOBAL-NFS")
    host.announce(0.0)
    try:
        req = wsd.parse_http_request(raw)
    except DecodeError:
        return
    if isinstance(req, wsd.HttpRequest):
        status, _ = host.handle_http(req)
        assert status in (200, 400, 404, 405)


xml_text = st.text(
    alphabet=st.characters(
        min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="/", exclude_categories=["Cs"]
    ),
    min_size=1,
    max_size=20,
).filter(lambda t: t.strip() == t and t.strip() != "")


@given(xml_text, xml_text, st.uuids())
def test_built_messages_decode_to_their_fields(name: str, workgroup: str, ns: UUID) -> None:
    ep = Endpoint(name, workgroup, ns)
    seq = (7, "urn:uuid:s", 3)
    msg = wsd.decode(wsd.build_get_response(ep, "urn:uuid:m", "urn:uuid:r"))
    assert msg.computer == f"{name}/Workgroup:{workgroup}" and msg.friendly_name == name
    hello = wsd.decode(wsd.build_hello(ep, "urn:uuid:m", seq, ep.xaddr("198.18.203.1")))
    assert (hello.endpoint, hello.app_sequence) == (ep.urn, (7, 3))
    rm = wsd.decode(wsd.build_resolve_matches(ep, "urn:uuid:m", "urn:uuid:r", seq, "http://a"))
    assert (rm.endpoint, rm.xaddrs, rm.relates_to) == (ep.urn, ("http://a",), "urn:uuid:r")


# -- the adapter on loopback: on-link askers only ------------------------------------------


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def test_probe_and_resolve_from_off_link_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """WS-Discovery answers on-link askers only (the `Link` check of LLMNR and mDNS).
    WsdService on lo (127.0.0.2, free ports) answers a unicast Probe and Resolve from
    127.0.0.1 while the office link is lo's 127.0.0.0/8; with the link narrowed to the
    edge's own 127.0.0.2/32 (127.0.0.1 then stands for a routed asker) the same
    datagrams are dropped before the core sees them, counted in ``off_link_dropped``.
    (The edge's Hellos loop back on lo: from 127.0.0.2, on the link either way.)"""

    async def scenario(network: str | None) -> tuple[list[str], int, int, int]:
        # LanPresence refuses a loopback address on an interface: built unchecked.
        lan = unchecked(LanPresence, interface="lo", address="127.0.0.2", workgroup="ACME",
                        names=(VirtualName("GLOBAL-NFS", "smb"),))  # fmt: skip
        settings = DiscoverySettings(lan, NS, wsd_port=_free_udp_port("127.0.0.2"),
                                     wsd_http_port=free_port("127.0.0.2"))  # fmt: skip
        if network is not None:
            monkeypatch.setattr(DiscoverySettings, "link", lambda _: onlink.Link.of([network]))
        service = WsdService(settings, random.Random(5))
        pc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        pc.bind(("127.0.0.1", 0))
        pc.setblocking(False)
        loop = asyncio.get_running_loop()
        actions: list[str] = []
        try:
            await service.start()
            urn = service.endpoints[0].urn
            for data in (wsd.build_probe("urn:uuid:p9"), wsd.build_resolve("urn:uuid:r9", urn)):
                pc.sendto(data, ("127.0.0.2", settings.wsd_port))
            # Unicast asks are answered at once (no APP_MAX_DELAY): 2 x 2 datagrams.
            deadline = loop.time() + 5
            while len(actions) < 2 * wsd.UNICAST_UDP_REPEAT and loop.time() < deadline:
                try:
                    reply = await asyncio.wait_for(loop.sock_recv(pc, 65535), 0.25)
                except TimeoutError:
                    if service.off_link_dropped >= 2:
                        break  # both dropped, and nothing came for a quarter second
                    continue
                actions.append(wsd.decode(reply).action)
            st = service.statistics()
            return (
                sorted(actions),
                st.probes_answered,
                st.resolves_answered,
                st.off_link_dropped,
            )
        finally:
            await service.stop()
            pc.close()
            monkeypatch.undo()

    answers = sorted([wsd.ACTION_PROBE_MATCHES, wsd.ACTION_RESOLVE_MATCHES] * 2)
    # On the link: both asks answered, nothing dropped.
    assert asyncio.run(scenario(None)) == (answers, 1, 1, 0)
    # Off the link: both dropped unread, nothing answered.
    assert asyncio.run(scenario("127.0.0.2/32")) == ([], 0, 0, 2)
