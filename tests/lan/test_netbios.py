"""NetBIOS name service codec: worked examples, captured vectors both ways, fuzzing."""

from __future__ import annotations

from functools import reduce
from ipaddress import IPv4Address
from operator import or_
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spokeshare.buffer import Buffer
from spokeshare.errors import DecodeError, UsageError
from spokeshare.lan import netbios
from spokeshare.lan.netbios import (
    NameFlags,
    NbEntry,
    NbnsPacket,
    NbRData,
    NetbiosName,
    NmFlags,
    NodeName,
    NodeStatusRData,
    NodeType,
    Opcode,
    Question,
    RawRData,
    Rcode,
    ResourceRecord,
    RRType,
)
from tests.strategies import mutated_any

VECTORS = Path(__file__).parent / "vectors"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def encoded(name: NetbiosName) -> bytes:
    buf = Buffer(protocol="test")
    netbios.push_name(buf, name)
    return buf.getvalue()


# -- first-level encoding (lan-presence.md §1.2 worked examples) -----------------------


@pytest.mark.parametrize(
    ("name", "suffix", "text"),
    [
        ("GLOBAL-NFS", 0x20, b"EHEMEPECEBEMCNEOEGFDCACACACACACA"),
        ("GLOBAL-NFS", 0x00, b"EHEMEPECEBEMCNEOEGFDCACACACACAAA"),
        ("*", 0x00, b"CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ("BRANCH", 0x1D, b"ECFCEBEOEDEICACACACACACACACACABN"),
    ],
)
def test_first_level_encoding(name: str, suffix: int, text: bytes) -> None:
    n = NetbiosName.create(name, suffix)
    assert encoded(n) == b"\x20" + text + b"\x00"
    assert netbios.pull_name(Buffer(b"\x20" + text + b"\x00")) == n


def test_create_upper_cases_and_key_ignores_case() -> None:
    assert NetbiosName.create("global-nfs", 0x20).name == "GLOBAL-NFS"
    assert NetbiosName("global-nfs", 0x20).key == NetbiosName("GLOBAL-NFS", 0x20).key
    assert str(NetbiosName("A", 0x1D, "corp")) == "A<1d>.corp"


def test_scope_is_encoded_as_labels() -> None:
    n = NetbiosName.create("FS", 0x20, "corp.example")
    raw = encoded(n)
    assert raw.endswith(b"\x04CORP\x07EXAMPLE\x00")
    assert netbios.pull_name(Buffer(raw)) == n


@pytest.mark.parametrize(
    "bad",
    [
        lambda: NetbiosName("SIXTEEN-LETTERS!", 0),
        lambda: NetbiosName("A", 256),
        lambda: NetbiosName("A", 0, "a..b"),
        lambda: NetbiosName("\u20ac", 0),
        lambda: NetbiosName("A", 0, "x" * 64),
    ],
)
def test_invalid_names_are_refused(bad: object) -> None:
    with pytest.raises(UsageError):
        bad()  # type: ignore[operator]


# -- compression pointers ------------------------------------------------------------

_HDR = bytes.fromhex("1234 0000 0001 0000 0000 0000".replace(" ", ""))


def test_pointer_must_go_backwards() -> None:
    # question name is a pointer to itself (offset 12): a loop
    with pytest.raises(DecodeError, match="does not go back"):
        netbios.decode(_HDR + b"\xc0\x0c\x00\x20\x00\x01")


def test_pointer_chain_between_two_records_cannot_loop() -> None:
    name = encoded(NetbiosName("A", 0x20))
    # answer name at 52 points forwards to 54, which points back to 52
    pkt = (
        bytes.fromhex("1234 8000 0001 0001 0000 0000".replace(" ", ""))
        + name
        + b"\x00\x20\x00\x01"
        + b"\xc0\x36\xc0\x34"
        + b"\x00\x20\x00\x01"
        + bytes(4)
        + b"\x00\x00"
    )
    with pytest.raises(DecodeError):
        netbios.decode(pkt)


def test_reserved_label_type_and_bad_first_label() -> None:
    with pytest.raises(DecodeError, match="reserved label"):
        netbios.decode(_HDR + b"\x40\x00" + b"\x00\x20\x00\x01")
    with pytest.raises(DecodeError, match="not 32"):
        netbios.decode(_HDR + b"\x03abc\x00\x00\x20\x00\x01")
    with pytest.raises(DecodeError, match="first-level"):
        netbios.decode(_HDR + b"\x20" + b"Z" * 32 + b"\x00\x00\x20\x00\x01")


def test_counts_larger_than_the_packet_are_refused_early() -> None:
    with pytest.raises(DecodeError, match="counts"):
        netbios.decode(bytes.fromhex("1234 0000 ffff ffff ffff ffff".replace(" ", "")))


def test_trailing_bytes_and_unknown_opcode() -> None:
    good = netbios.encode(netbios.node_status_request(7))
    with pytest.raises(DecodeError, match="trailing"):
        netbios.decode(good + b"\x00")
    with pytest.raises(DecodeError, match="opcode"):
        netbios.decode(b"\x00\x01\x18\x00" + bytes(8))  # opcode 3


# -- captured vectors ----------------------------------------------------------------

EDGE = IPv4Address("198.18.200.1")
NMBD = IPv4Address("198.18.200.2")


def test_vector_nmblookup_broadcast_query() -> None:
    # 198.18.200.2 → 198.18.200.255 NBNS Name query NB GLOBAL-NFS<00>
    data = vector("01-client-udp137.bin")
    p = netbios.decode(data)
    assert p.opcode is Opcode.QUERY and not p.response
    assert p.flags == NmFlags.RD | NmFlags.B and p.broadcast
    assert p.questions == (Question(NetbiosName("GLOBAL-NFS", 0x00), RRType.NB),)
    assert netbios.encode(p) == data
    assert (
        netbios.encode(netbios.name_query_request(p.trn_id, p.questions[0].name, broadcast=True))
        == data
    )


def test_vector_nmblookup_node_status_request() -> None:
    # 198.18.200.2 → 198.18.200.1 NBNS Name query NBSTAT *<00>
    data = vector("02-client-udp137.bin")
    p = netbios.decode(data)
    assert p.flags == NmFlags(0)
    assert p.questions == (Question(NetbiosName("*", 0), RRType.NBSTAT),)
    assert netbios.encode(netbios.node_status_request(p.trn_id)) == data


@pytest.mark.parametrize(
    ("fname", "name", "suffix", "group"),
    [
        ("05-nmbd-udp137.bin", "NBCAP-FS", 0x20, False),
        ("06-nmbd-udp137.bin", "NBCAP-FS", 0x03, False),
        ("07-nmbd-udp137.bin", "NBCAP-FS", 0x00, False),
        ("08-nmbd-udp137.bin", "ACME", 0x00, True),
        ("09-nmbd-udp137.bin", "ACME", 0x1E, True),
        ("17-nmbd-udp137.bin", "\x01\x02__MSBROWSE__\x02", 0x01, True),
        ("18-nmbd-udp137.bin", "ACME", 0x1D, False),
    ],
)
def test_vector_nmbd_registrations(fname: str, name: str, suffix: int, group: bool) -> None:
    # 198.18.200.2 → 198.18.200.255 NBNS Registration NB <name>: what we send too
    data = vector(fname)
    p = netbios.decode(data)
    n = NetbiosName(name, suffix)
    assert p.opcode is Opcode.REGISTRATION and p.broadcast
    rr = p.additionals[0]
    assert rr.name == n and rr.ttl == 0
    assert rr.rdata == NbRData((NbEntry(NMBD, group=group),))
    assert data[50:52] == b"\xc0\x0c"  # the RR name points back at the question
    ours = netbios.registration_request(p.trn_id, n, NMBD, group=group)
    assert netbios.encode(ours) == data


def test_vector_nmbd_node_status_answer() -> None:
    # 198.18.200.2 → 198.18.200.1 NBNS Name query response NBSTAT
    data = vector("24-nmbd-reply-nodestatus-udp137.bin")
    p = netbios.decode(data)
    assert p.response and p.flags == NmFlags.AA and not p.questions
    (rr,) = p.answers
    assert rr.rtype == RRType.NBSTAT and rr.ttl == 0
    assert isinstance(rr.rdata, NodeStatusRData)
    assert [(n.name, n.suffix, n.group) for n in rr.rdata.names] == [
        ("NBCAP-FS", 0x00, False),
        ("NBCAP-FS", 0x03, False),
        ("NBCAP-FS", 0x20, False),
        ("ACME", 0x00, True),
        ("ACME", 0x1E, True),
    ]
    assert all(NameFlags.ACT in n.flags for n in rr.rdata.names)
    assert rr.rdata.statistics == netbios.ZERO_STATISTICS
    request = netbios.node_status_request(p.trn_id)
    assert (
        netbios.encode(netbios.node_status_response(request, NetbiosName("*", 0), rr.rdata.names))
        == data
    )


def test_vector_nmbd_positive_query_answer() -> None:
    # 198.18.200.2 → 198.18.200.1 NBNS Name query response NB 198.18.200.2
    data = vector("25-nmbd-reply-query-udp137.bin")
    p = netbios.decode(data)
    assert (p.response, int(p.flags), p.rcode) == (True, 0x0580, 0)
    name = NetbiosName("NBCAP-FS", 0x20)
    request = netbios.name_query_request(p.trn_id, name, broadcast=False)
    ours = netbios.positive_query_response(request, name, [NbEntry(NMBD)])
    assert netbios.encode(ours) == data


def test_vector_nmbd_defends_with_act_err() -> None:
    # 198.18.200.2 → 198.18.200.1 NBNS Registration response, name active elsewhere
    data = vector("26-nmbd-reply-register-udp137.bin")
    p = netbios.decode(data)
    assert p.opcode is Opcode.REGISTRATION and p.response and p.rcode == Rcode.ACT_ERR
    request = netbios.registration_request(p.trn_id, NetbiosName("NBCAP-FS", 0x20), EDGE)
    assert netbios.encode(netbios.negative_registration_response(request)) == data


def test_other_vectors_round_trip() -> None:
    for f in sorted(VECTORS.glob("*udp137.bin")):
        data = f.read_bytes()
        assert netbios.encode(netbios.decode(data)) == data, f.name


def test_reserved_flag_bits_from_real_senders_are_carried() -> None:
    # python3-samba's Node.register_name() sends NB_FLAGS 0xDA00 (seen in the lab)
    data = bytes.fromhex(
        "1ca229100001000000000001204548454d455045434542454d434e454f4547464443414341434143"
        "41434143410000200001c00c00200001000000000006da00c612c902"
    )
    p = netbios.decode(data)
    (entry,) = p.additionals[0].rdata.entries  # type: ignore[union-attr]
    assert entry.group and entry.node_type is NodeType.M and entry.reserved == 0x1A00
    assert entry.address == IPv4Address("198.18.201.2")
    assert netbios.encode(p) == data


def test_builders_for_release_refresh_wack_negative() -> None:
    n = NetbiosName.create("GLOBAL-NFS", 0x20)
    rel = netbios.release_request(1, n, EDGE)
    assert rel.opcode is Opcode.RELEASE and rel.flags == NmFlags.B
    ref = netbios.refresh_request(2, n, EDGE, ttl=300)
    assert ref.opcode is Opcode.REFRESH and not ref.broadcast
    q = netbios.name_query_request(3, n, broadcast=False)
    neg = netbios.negative_query_response(q, n)
    assert neg.rcode == Rcode.NAM_ERR and neg.answers[0].rtype == RRType.NULL
    wack = netbios.wack_response(ref, 30)
    assert netbios.decode(netbios.encode(wack)).answers[0].rdata == RawRData(b"\x41\x00")
    for p in (rel, ref, neg, wack):
        assert netbios.decode(netbios.encode(p)) == p
    with pytest.raises(UsageError):
        netbios.negative_registration_response(q)


def test_dataclasses_validate() -> None:
    with pytest.raises(UsageError):
        NbnsPacket(70000, Opcode.QUERY)
    with pytest.raises(UsageError):
        NbnsPacket(1, Opcode.QUERY, rcode=16)
    with pytest.raises(UsageError):
        ResourceRecord(NetbiosName("A", 0), RRType.NB, -1, NbRData())
    with pytest.raises(UsageError):
        NodeName("A", 0, NameFlags(0x6000))  # ONT belongs in node_type
    with pytest.raises(UsageError):
        NodeStatusRData(tuple(NodeName("A", i % 256) for i in range(256)))


# -- property tests ------------------------------------------------------------------

_latin = st.characters(min_codepoint=1, max_codepoint=255)
_label = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="."),
    min_size=1,
    max_size=12,
)
names = st.builds(
    NetbiosName,
    st.text(_latin, max_size=15).filter(lambda s: not s.endswith(" ") and s != "*") | st.just("*"),
    st.integers(0, 255),
    st.lists(_label, max_size=3).map(".".join),
)
addresses = st.integers(0, 2**32 - 1).map(IPv4Address)
nb_entries = st.builds(
    NbEntry,
    addresses,
    st.booleans(),
    st.sampled_from(NodeType),
    st.integers(0, 0x1FFF) | st.just(0),
)
node_names = st.builds(
    NodeName,
    st.text(_latin, max_size=15).filter(lambda s: not s.endswith(" ") and s != "*"),
    st.integers(0, 255),
    st.sets(st.sampled_from(NameFlags)).map(lambda fs: reduce(or_, fs, NameFlags(0)))
    | st.integers(0, 0xFFFF).map(lambda v: NameFlags(v & ~0x6000)),
    st.sampled_from(NodeType),
)


@st.composite
def records(draw: st.DrawFn) -> ResourceRecord:
    kind = draw(st.sampled_from(["nb", "nbstat", "raw"]))
    name = draw(names)
    ttl = draw(st.integers(0, 2**32 - 1))
    if kind == "nb":
        return ResourceRecord(
            name, RRType.NB, ttl, NbRData(tuple(draw(st.lists(nb_entries, max_size=3))))
        )
    if kind == "nbstat":
        rdata = NodeStatusRData(
            tuple(draw(st.lists(node_names, max_size=4))), draw(st.binary(max_size=46))
        )
        return ResourceRecord(name, RRType.NBSTAT, ttl, rdata)
    rtype = draw(st.integers(0, 0xFFFF).filter(lambda t: t not in (RRType.NB, RRType.NBSTAT)))
    return ResourceRecord(
        name, rtype, ttl, RawRData(draw(st.binary(max_size=20))), draw(st.integers(0, 0xFFFF))
    )


packets = st.builds(
    NbnsPacket,
    st.integers(0, 0xFFFF),
    st.sampled_from(Opcode),
    st.booleans(),
    st.sets(st.sampled_from(NmFlags)).map(lambda fs: reduce(or_, fs, NmFlags(0))),
    st.integers(0, 15),
    st.lists(
        st.builds(Question, names, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)), max_size=2
    ).map(tuple),
    st.lists(records(), max_size=2).map(tuple),
    st.lists(records(), max_size=1).map(tuple),
    st.lists(records(), max_size=2).map(tuple),
)


@given(packets)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_encode_decode_round_trip(p: NbnsPacket) -> None:
    data = netbios.encode(p)
    assert netbios.decode(data) == p
    assert netbios.encode(netbios.decode(data)) == data


def _decode_or_error(data: bytes) -> None:
    try:
        p = netbios.decode(data)
    except DecodeError:
        return
    assert isinstance(p, NbnsPacket)
    netbios.encode(p)  # whatever decodes can be encoded again


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    _decode_or_error(data)


_CAPTURED = [f.read_bytes() for f in sorted(VECTORS.glob("*udp137.bin"))]


@given(mutated_any(_CAPTURED))
@settings(max_examples=400)
def test_mutated_vectors_only_raise_decode_error(data: bytes) -> None:
    _decode_or_error(data)
