"""NetBIOS session service framing (TCP 139): smbclient's requests, answers, stream reader."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare.errors import DecodeError
from spokeshare.lan import netbios_session as nbss
from spokeshare.lan.netbios import NetbiosName
from spokeshare.lan.netbios_session import (
    NEED_DATA,
    NegativeSessionResponse,
    PositiveSessionResponse,
    RetargetSessionResponse,
    SessionError,
    SessionKeepAlive,
    SessionMessage,
    SessionReader,
    SessionRequest,
)

VECTORS = Path(__file__).parent / "vectors"


def test_vector_smbclient_session_request() -> None:
    # 198.18.200.2 → 198.18.200.1 NBSS Session request, to GLOBAL-NFS<20> from NBCAP-FS<00>
    data = (VECTORS / "03-client-tcp139.bin").read_bytes()
    p = nbss.decode(data)
    assert p == SessionRequest(NetbiosName("GLOBAL-NFS", 0x20), NetbiosName("NBCAP-FS", 0x00))
    assert nbss.encode(p) == data


def test_vector_smbclient_retries_with_smbserver() -> None:
    # NBSS Session request, to *SMBSERVER<20> from NBCAP-FS<00> (after our 0x82)
    data = (VECTORS / "04-client-tcp139.bin").read_bytes()
    p = nbss.decode(data)
    assert isinstance(p, SessionRequest) and p.called == NetbiosName("*SMBSERVER", 0x20)
    assert nbss.encode(p) == data


@pytest.mark.parametrize(
    ("packet", "raw"),
    [
        (PositiveSessionResponse(), b"\x82\x00\x00\x00"),
        (NegativeSessionResponse(SessionError.CALLED_NAME_NOT_PRESENT), b"\x83\x00\x00\x01\x82"),
        (
            NegativeSessionResponse(SessionError.NOT_LISTENING_ON_CALLED_NAME),
            b"\x83\x00\x00\x01\x80",
        ),
        (SessionKeepAlive(), b"\x85\x00\x00\x00"),
        (
            RetargetSessionResponse(IPv4Address("198.18.200.1"), 445),
            b"\x84\x00\x00\x06\xc6\x12\xc8\x01\x01\xbd",
        ),
        (SessionMessage(b"\xfeSMB"), b"\x00\x00\x00\x04\xfeSMB"),
    ],
)
def test_table_both_ways(packet: nbss.SessionPacket, raw: bytes) -> None:
    assert nbss.encode(packet) == raw
    assert nbss.decode(raw) == packet


def test_length_extension_and_24_bit_messages() -> None:
    big = SessionMessage(b"x" * 0x10005)
    raw = nbss.encode(big)
    assert raw[:4] == b"\x00\x01\x00\x05"
    assert nbss.decode(raw) == big
    assert nbss.parse_header(b"\x00\x12\x00\x00") == (0, 0x120000)
    with pytest.raises(DecodeError, match="reserved"):
        nbss.parse_header(b"\x85\x02\x00\x00")
    with pytest.raises(DecodeError, match="unknown packet type"):
        nbss.parse_header(b"\x86\x00\x00\x00")


def test_decode_errors() -> None:
    with pytest.raises(DecodeError):
        nbss.decode(b"\x82\x00")
    with pytest.raises(DecodeError, match="LENGTH"):
        nbss.decode(b"\x82\x00\x00\x01")
    with pytest.raises(DecodeError):
        nbss.decode(b"\x81\x00\x00\x02\xc0\x0c")  # pointers make no sense here


def test_reader_cuts_a_stream_byte_by_byte() -> None:
    req = (VECTORS / "03-client-tcp139.bin").read_bytes()
    stream = req + nbss.encode(SessionKeepAlive()) + nbss.encode(SessionMessage(b"abc"))
    r = SessionReader()
    got = []
    for b in stream:
        r.feed(bytes([b]))
        while (p := r.next_packet()) is not NEED_DATA:
            got.append(p)
    assert [type(p) for p in got] == [SessionRequest, SessionKeepAlive, SessionMessage]
    assert r.buffered == 0 and r.next_packet() is NEED_DATA


def test_reader_bounds_what_it_buffers_and_hands_over_the_rest() -> None:
    r = SessionReader(max_length=100)
    r.feed(b"\x00\x00\x10\x00")
    with pytest.raises(DecodeError, match="exceeds"):
        r.next_packet()
    r2 = SessionReader()
    r2.feed(nbss.encode(PositiveSessionResponse()) + b"\x00\x00\x00\x10partial")
    assert r2.next_packet() == PositiveSessionResponse()
    assert r2.next_packet() is NEED_DATA
    assert r2.take_rest() == b"\x00\x00\x00\x10partial"


packets = st.one_of(
    st.builds(
        SessionRequest,
        st.builds(
            NetbiosName,
            st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=15),
            st.integers(0, 255),
        ),
        st.builds(NetbiosName, st.just("PC"), st.integers(0, 255)),
    ),
    st.just(PositiveSessionResponse()),
    st.builds(NegativeSessionResponse, st.integers(0, 255)),
    st.builds(
        RetargetSessionResponse, st.integers(0, 2**32 - 1).map(IPv4Address), st.integers(0, 0xFFFF)
    ),
    st.just(SessionKeepAlive()),
    st.builds(SessionMessage, st.binary(max_size=200)),
)


@given(packets)
def test_round_trip(p: nbss.SessionPacket) -> None:
    assert nbss.decode(nbss.encode(p)) == p


@given(st.binary(max_size=120))
@settings(max_examples=400)
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        nbss.decode(data)
    except DecodeError:
        pass
    r = SessionReader()
    r.feed(data)
    try:
        while r.next_packet() is not NEED_DATA:
            pass
    except DecodeError:
        pass


def test_answer_session_request() -> None:
    req = nbss.decode((VECTORS / "03-client-tcp139.bin").read_bytes())
    smbserver = nbss.decode((VECTORS / "04-client-tcp139.bin").read_bytes())
    assert isinstance(req, SessionRequest) and isinstance(smbserver, SessionRequest)
    names = ("Global-NFS", "GLOBAL-ENG")
    assert nbss.answer_session_request(req, names) == nbss.SessionDecision(
        PositiveSessionResponse(), "Global-NFS"
    )
    wrong = SessionRequest(NetbiosName("ELSEWHERE", 0x20), req.calling)
    assert (
        nbss.encode(nbss.answer_session_request(wrong, names).response) == b"\x83\x00\x00\x01\x82"
    )
    suffix = SessionRequest(NetbiosName("GLOBAL-NFS", 0x00), req.calling)
    assert nbss.answer_session_request(suffix, names).response == NegativeSessionResponse(
        SessionError.NOT_LISTENING_ON_CALLED_NAME
    )
    assert nbss.answer_session_request(smbserver, names).virtual_name is None
    assert nbss.answer_session_request(
        smbserver, names, smbserver_name="GLOBAL-NFS"
    ) == nbss.SessionDecision(PositiveSessionResponse(), "GLOBAL-NFS")


def test_generic_called_names() -> None:
    """*SMBSERVER<20> (Samba's client, Linux cifs) and *SMBSERV<20> (XP-era clients)
    are answered as the server's own name when the caller gives one; the request is
    built from raw bytes as a PC sends it: 81 00 00 44 + called + calling."""
    calling = nbss.encode(SessionRequest(NetbiosName("NYC-PC", 0x00), NetbiosName("NYC-PC", 0x00)))[
        4 + 34 :
    ]
    for generic in ("*SMBSERVER", "*SMBSERV"):
        called = NetbiosName(generic, 0x20)
        raw = nbss.encode(SessionRequest(called, NetbiosName("NYC-PC", 0x00)))
        assert raw[:4] == b"\x81\x00\x00\x44" and raw[4 + 34 :] == calling
        req = nbss.decode(raw)
        assert isinstance(req, SessionRequest)
        ok = nbss.answer_session_request(req, ["GLOBAL-NFS"], smbserver_name="GLOBAL-NFS")
        assert nbss.encode(ok.response) == b"\x82\x00\x00\x00"
        assert ok.virtual_name == "GLOBAL-NFS"
        # no name given (names at that address stand for different services): 0x82
        no = nbss.answer_session_request(req, ["GLOBAL-NFS", "GLOBAL-ENG"])
        assert nbss.encode(no.response) == b"\x83\x00\x00\x01\x82"
        other_suffix = SessionRequest(NetbiosName(generic, 0x00), req.calling)
        assert (
            nbss.answer_session_request(
                other_suffix, ["GLOBAL-NFS"], smbserver_name="GLOBAL-NFS"
            ).virtual_name
            is None
        )
