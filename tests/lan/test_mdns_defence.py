"""The host-name answers added to zeroconf's (RFC 6762 §8.1, §9), as a pure decision.

The probe is built with zeroconf's encoder in the shape avahi-daemon sends (question
``NAME.local`` type ANY with the unicast-response bit, proposed A record in the
authority section) and parsed back, so the handler sees what a listener hands it;
tests/lab/test_name_defence.py runs the real avahi-daemon against the edge.
"""

from __future__ import annotations

import ipaddress

from zeroconf._dns import DNSAddress, DNSQuestion, DNSRecord
from zeroconf._protocol.incoming import DNSIncoming
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.const import _CLASS_IN, _CLASS_UNIQUE, _FLAGS_QR_QUERY, _TYPE_A, _TYPE_ANY

from spokeshare.lan.mdns_defence import host_answers

HOST = "global-eng.local."
ENG = ipaddress.ip_address("198.18.11.3").packed
OURS = DNSAddress(HOST, _TYPE_A, _CLASS_IN | _CLASS_UNIQUE, 120, ENG)


def _addresses_of(name: str) -> list[DNSAddress]:
    return [OURS] if name == HOST else []


def _query(
    name: str, rrtype: int, authority: bool, known: tuple[DNSAddress, ...] = ()
) -> DNSIncoming:
    out = DNSOutgoing(_FLAGS_QR_QUERY)
    q = DNSQuestion(name, rrtype, _CLASS_IN)
    q.unicast = True
    out.add_question(q)
    if authority:
        proposed: DNSRecord = DNSAddress(
            name, _TYPE_A, _CLASS_IN, 120, ipaddress.ip_address("198.18.11.2").packed
        )
        out.authorities.append(proposed)  # type: ignore[arg-type]
    for k in known:
        out.add_answer_at_time(k, 0)
    return DNSIncoming(out.packets()[0])


def test_a_probe_for_a_held_host_name_is_answered() -> None:
    probe = _query("GLOBAL-ENG.local.", _TYPE_ANY, authority=True)
    assert probe.is_probe()
    assert host_answers(probe.questions, _addresses_of) == {HOST: [OURS]}


def test_only_any_questions_about_our_host_names() -> None:
    # A/AAAA questions zeroconf answers itself; other names are not ours (§6).
    assert host_answers(_query(HOST, _TYPE_A, False).questions, _addresses_of) == {}
    assert host_answers(_query("oldbox.local.", _TYPE_ANY, True).questions, _addresses_of) == {}


def test_known_answers_suppress() -> None:
    from zeroconf._dns import DNSRRSet

    q = _query(HOST, _TYPE_ANY, False, (OURS,))
    assert host_answers(q.questions, _addresses_of, DNSRRSet(q.answers())) == {}


async def _ask_any(defend: bool) -> list[tuple[str, int]]:
    """A legacy unicast ANY query for a registered host name, on loopback."""
    import asyncio
    import socket

    from zeroconf import IPVersion, ServiceInfo
    from zeroconf.asyncio import AsyncZeroconf

    from spokeshare.lan.mdns_defence import HostNameQueryHandler

    azc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    if defend:  # as MdnsPublisher.start does, before zeroconf's listeners exist
        azc.zeroconf.query_handler = HostNameQueryHandler(azc.zeroconf)
    host = "defence-test.local."
    info = ServiceInfo(
        "_smb._tcp.local.", "T._smb._tcp.local.", port=445, server=host,
        addresses=[ipaddress.ip_address("127.0.0.1").packed],
    )  # fmt: skip
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await (await azc.async_register_service(info))
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        out = DNSOutgoing(_FLAGS_QR_QUERY, multicast=False, id_=0x1234)
        out.add_question(DNSQuestion(host, _TYPE_ANY, _CLASS_IN))
        s.sendto(out.packets()[0], ("127.0.0.1", 5353))
        try:
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(s, 9000), 3)
        except TimeoutError:
            return []
        return [(r.name, r.type) for r in DNSIncoming(data).answers()]
    finally:
        s.close()
        await azc.async_close()


def test_zeroconf_alone_does_not_answer_any_for_a_host_name_and_the_handler_does() -> None:
    import asyncio

    assert asyncio.run(_ask_any(defend=False)) == []  # why the handler exists
    assert asyncio.run(_ask_any(defend=True)) == [("defence-test.local.", _TYPE_A)]
