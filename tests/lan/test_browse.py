"""Browse datagrams (UDP 138): captured nmbd frames both ways, builders, fuzzing."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare.errors import DecodeError, UsageError
from spokeshare.lan import browse
from spokeshare.lan.browse import (
    Announcement,
    AnnouncementRequest,
    BrowseDatagram,
    BrowserOpcode,
    Datagram,
    DatagramFlags,
    DatagramType,
    OtherBrowserMessage,
    ServerType,
    SourceNodeType,
)
from spokeshare.lan.netbios import NetbiosName
from tests.strategies import mutated_any

VECTORS = Path(__file__).parent / "vectors"
NMBD = IPv4Address("198.18.200.2")


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_default_server_type_is_sambas() -> None:
    assert browse.DEFAULT_SERVER_TYPE == 0x00009A03


def test_vector_host_announcement() -> None:
    # 198.18.200.2 → 198.18.200.255 BROWSER Host Announcement NBCAP-FS, Workstation,
    # Server, Print Queue Server, Xenix Server, NT Workstation, NT Server, ...
    data = vector("10-nmbd-udp138.bin")
    p = browse.decode(data)
    d = p.datagram
    assert (d.msg_type, d.flags, d.node_type) == (
        DatagramType.DIRECT_GROUP,
        DatagramFlags.FIRST,
        SourceNodeType.M,
    )
    assert (d.source_ip, d.source_port) == (NMBD, 138)
    assert d.source_name == NetbiosName("NBCAP-FS", 0x00)
    assert d.destination_name == NetbiosName("ACME", 0x1D)
    m = p.message
    assert isinstance(m, Announcement)
    assert m.opcode is BrowserOpcode.HOST_ANNOUNCEMENT
    assert (m.server_name, m.comment, m.periodicity_ms) == (
        "NBCAP-FS",
        "Capture file server",
        60000,
    )
    assert m.server_type == 0x00819A03
    assert browse.DEFAULT_SERVER_TYPE & m.server_type == browse.DEFAULT_SERVER_TYPE
    assert (m.os_major, m.os_minor, m.browser_major, m.browser_minor, m.signature) == (
        6,
        1,
        15,
        1,
        0xAA55,
    )
    # Encoded both ways, and our builder produces exactly nmbd's bytes.
    assert browse.encode(p) == data
    ours = browse.host_announcement(
        d.dgm_id,
        NMBD,
        "NBCAP-FS",
        "ACME",
        comment="Capture file server",
        server_type=0x00819A03,
        periodicity_ms=60000,
        node_type=SourceNodeType.M,
    )
    assert browse.encode(ours) == data
    # SMB layer: DataOffset = 70 + len("\MAILSLOT\BROWSE") (lan-presence.md §2.1)
    slot = d.user_data
    assert int.from_bytes(slot[57:59], "little") == 70 + len(browse.BROWSE_MAILSLOT)


def test_vector_type_zero_announcement_at_shutdown() -> None:
    # 198.18.200.2 → 198.18.200.255 BROWSER Host Announcement NBCAP-FS (server type 0)
    data = vector("23-nmbd-udp138.bin")
    p = browse.decode(data)
    m = p.message
    assert isinstance(m, Announcement)
    assert (m.server_type, m.periodicity_ms, m.update_count) == (0, 0, 3)
    ours = browse.host_announcement(
        p.datagram.dgm_id,
        NMBD,
        "NBCAP-FS",
        "ACME",
        comment="Capture file server",
        server_type=0,
        periodicity_ms=0,
        update_count=3,
        node_type=SourceNodeType.M,
    )
    assert browse.encode(ours) == data


def test_vector_local_master_and_domain_announcements() -> None:
    # BROWSER Local Master Announcement NBCAP-FS ... Master Browser
    lma = browse.decode(vector("20-nmbd-udp138.bin")).message
    assert isinstance(lma, Announcement)
    assert lma.opcode is BrowserOpcode.LOCAL_MASTER_ANNOUNCEMENT
    assert ServerType.MASTER_BROWSER in ServerType(lma.server_type)
    # BROWSER Domain/Workgroup Announcement ACME, NT Workstation, Domain Enum
    dom = browse.decode(vector("21-nmbd-udp138.bin"))
    assert dom.datagram.destination_name == NetbiosName("\x01\x02__MSBROWSE__\x02", 0x01)
    m = dom.message
    assert isinstance(m, Announcement) and m.opcode is BrowserOpcode.DOMAIN_ANNOUNCEMENT
    assert (m.server_name, m.comment) == ("ACME", "NBCAP-FS")
    assert m.server_type == ServerType.NT | ServerType.DOMAIN_ENUM


def test_vector_announcement_request_in_nmbds_layout() -> None:
    # BROWSER Announcement Request: nmbd puts a token in Unused and no terminator
    p = browse.decode(vector("19-nmbd-udp138.bin"))
    assert p.message == AnnouncementRequest("NBCAP-FS", unused=1)
    assert p.datagram.destination_name == NetbiosName("ACME", 0x1E)


def test_vector_election_is_kept_opaque() -> None:
    # BROWSER Request Election
    p = browse.decode(vector("12-nmbd-udp138.bin"))
    assert isinstance(p.message, OtherBrowserMessage)
    assert p.message.opcode == BrowserOpcode.REQUEST_ELECTION


def test_every_udp138_vector_decodes() -> None:
    for f in sorted(VECTORS.glob("*udp138.bin")):
        data = f.read_bytes()
        p = browse.decode(data)
        if not isinstance(p.message, AnnouncementRequest):  # nmbd's odd layout, see above
            assert browse.encode(p) == data, f.name


def test_layer_errors() -> None:
    good = vector("10-nmbd-udp138.bin")
    with pytest.raises(DecodeError, match="DGM_LENGTH"):
        browse.decode(good + b"\x00")
    with pytest.raises(DecodeError, match="MSG_TYPE"):
        browse.decode(b"\x13" + good[1:])  # DATAGRAM ERROR: not a data datagram
    with pytest.raises(DecodeError, match="fragmented"):
        browse.decode(good[:1] + b"\x08" + good[2:])  # FIRST clear
    d = browse.decode_datagram(good)
    other = Datagram(
        d.msg_type,
        1,
        d.source_ip,
        d.source_name,
        d.destination_name,
        browse.encode_mailslot(browse.Mailslot("\\MAILSLOT\\NET\\NETLOGON", b"x")),
    )
    with pytest.raises(DecodeError, match="not the browser"):
        browse.decode(browse.encode_datagram(other))
    with pytest.raises(DecodeError, match="not an SMB1"):
        browse.decode_mailslot(b"\xfeSMB" + bytes(60))


def test_validation() -> None:
    with pytest.raises(UsageError):
        Announcement("SIXTEEN-LETTERS!", 0)
    with pytest.raises(UsageError):
        Announcement("A", 0, opcode=BrowserOpcode.ANNOUNCEMENT_REQUEST)
    with pytest.raises(UsageError):
        Announcement("A", 2**32)
    with pytest.raises(UsageError):
        AnnouncementRequest("A\0B")
    with pytest.raises(UsageError):
        OtherBrowserMessage(1, b"")


# -- property tests ------------------------------------------------------------------

_text = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=15)
announcements = st.builds(
    Announcement,
    _text,
    st.integers(0, 2**32 - 1),
    st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=43),
    st.integers(0, 2**32 - 1),
    st.sampled_from(sorted(browse.ANNOUNCEMENT_OPCODES)),
    st.integers(0, 255),
)
messages = (
    announcements
    | st.builds(AnnouncementRequest, _text, st.integers(0, 255))
    | st.builds(
        OtherBrowserMessage,
        st.integers(0, 255).filter(lambda o: o not in (1, 2, 12, 15)),
        st.binary(max_size=30),
    )
)
names = st.builds(
    NetbiosName,
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=15),
    st.integers(0, 255),
)
packets = st.builds(
    BrowseDatagram,
    st.builds(
        Datagram,
        st.sampled_from(DatagramType),
        st.integers(0, 0xFFFF),
        st.integers(0, 2**32 - 1).map(IPv4Address),
        names,
        names,
        st.just(b""),
        st.integers(0, 0xFFFF),
        st.just(DatagramFlags.FIRST),
        st.sampled_from(SourceNodeType),
    ),
    messages,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
)


@given(packets)
@settings(max_examples=200)
def test_round_trip(p: BrowseDatagram) -> None:
    data = browse.encode(p)
    back = browse.decode(data)
    assert back.message == p.message
    assert back.datagram.source_name == p.datagram.source_name
    assert browse.encode(back) == data


def _decode_or_error(data: bytes) -> None:
    try:
        browse.decode(data)
    except DecodeError:
        pass
    try:
        browse.decode_browser_message(data)
    except DecodeError:
        pass


@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    _decode_or_error(data)


_CAPTURED = [f.read_bytes() for f in sorted(VECTORS.glob("*udp138.bin"))]


@given(mutated_any(_CAPTURED))
@settings(max_examples=400)
def test_mutated_vectors_only_raise_decode_error(data: bytes) -> None:
    _decode_or_error(data)
