"""On-link checks and the legacy unicast rewrite of mDNS answers (RFC 6762 §6.7, §11).

The packets are built by python-zeroconf itself (what the edge's responder sends) and
read back with dnspython, an independent DNS implementation.
"""

from __future__ import annotations

import dns.message
import dns.rdataclass
from hypothesis import given
from hypothesis import strategies as st
from zeroconf import const
from zeroconf._dns import DNSAddress, DNSQuestion  # zeroconf re-exports them without __all__
from zeroconf._protocol.outgoing import DNSOutgoing

from spokeshare.lan import onlink
from tests.strategies import mutated

LINK = onlink.Link.of(["198.18.11.1/24"])


def test_on_link() -> None:
    assert LINK.on_link("198.18.11.10")
    assert LINK.on_link("fe80::1%lan0") and LINK.on_link("169.254.3.4")
    assert LINK.on_link("::ffff:198.18.11.10")
    assert not LINK.on_link("198.18.12.10") and not LINK.on_link("2001:db8::1")
    assert not LINK.on_link("not an address")


def _legacy_answer(query_id: int) -> bytes:
    """What zeroconf sends a legacy querier: its ID, the question, a unique A record
    (cache-flush bit set) with the host TTL of 120 s."""
    out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA, False, query_id)
    out.add_question(DNSQuestion("global-nfs.local.", const._TYPE_A, const._CLASS_IN))
    record = DNSAddress(
        "global-nfs.local.",
        const._TYPE_A,
        const._CLASS_IN | const._CLASS_UNIQUE,
        120,
        bytes([198, 18, 11, 1]),
    )
    out.add_answer_at_time(record, 0)
    (packet,) = out.packets()
    return packet


def test_legacy_unicast_ttl_and_cache_flush() -> None:
    packet = _legacy_answer(0x4D2)
    before = dns.message.from_wire(packet)
    assert before.answer[0].ttl == 120
    fixed = onlink.legacy_unicast_response(packet)
    msg = dns.message.from_wire(fixed)
    assert msg.id == 0x4D2 and str(msg.question[0].name) == "global-nfs.local."
    (rrset,) = msg.answer
    assert rrset.ttl == onlink.LEGACY_UNICAST_MAX_TTL
    assert rrset.rdclass == dns.rdataclass.IN  # the cache-flush bit is gone
    assert str(rrset[0]) == "198.18.11.1"


@given(mutated(_legacy_answer(7)))
def test_mutated_packets_raise_value_error_or_keep_length(data: bytes) -> None:
    try:
        fixed = onlink.legacy_unicast_response(data)
    except ValueError:
        return
    assert len(fixed) == len(data)


@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    try:
        assert len(onlink.legacy_unicast_response(data)) == len(data)
    except ValueError:
        pass
