"""SMB2 NEGOTIATE codec: requests we send, responses captured from the real smbd."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given

from spokeshare import smb2_negotiate as smb2
from spokeshare.errors import DecodeError, UsageError
from tests.strategies import mutated_any

GUID = bytes(range(16))

#: smbd 4.17.12-Debian on 127.0.0.1, stock settings (``server multi channel support``
#: defaults to yes on Linux), answering ``encode_request(GUID)``; captured with a socket,
#: the 4-byte Direct TCP frame removed. Dialect 0x0302, capabilities 0x0f
#: (DFS, LEASING, LARGE_MTU, MULTI_CHANNEL).
STOCK = bytes.fromhex(
    "fe534d42400000000000000000000100010000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000410001000203000070726f6265000000"
    "00000000000000000f0000000000800000008000000080005241c835eb80dd010000000000000000"
    "80004a0000000000604806062b0601050502a03e303ca00e300c060a2b06010401823702020aa32a"
    "3028a0261b246e6f745f646566696e65645f696e5f5246433431373840706c656173655f69676e6f"
    "7265"
)

#: The same smbd with ``server multi channel support = no`` (README, HQ section):
#: capabilities 0x07, MULTI_CHANNEL gone.
NO_MULTICHANNEL = bytes.fromhex(
    "fe534d42400000000000000000000100010000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000410001000203000070726f6265000000"
    "00000000000000000700000000008000000080000000800038586b36eb80dd010000000000000000"
    "80004a0000000000604806062b0601050502a03e303ca00e300c060a2b06010401823702020aa32a"
    "3028a0261b246e6f745f646566696e65645f696e5f5246433431373840706c656173655f69676e6f"
    "7265"
)


def test_request_layout() -> None:
    frame = smb2.encode_request(GUID)
    assert frame[0] == 0 and int.from_bytes(frame[1:4], "big") == len(frame) - 4
    msg = frame[4:]
    assert msg[:4] == b"\xfeSMB" and struct.unpack_from("<H", msg, 12)[0] == 0  # NEGOTIATE
    size, count, _mode, _res, caps = struct.unpack_from("<HHHHI", msg, 64)
    assert (size, count, caps) == (36, 4, smb2.CAP_MULTI_CHANNEL)
    assert msg[76:92] == GUID
    assert struct.unpack_from("<4H", msg, 100) == smb2.DIALECTS
    with pytest.raises(UsageError):
        smb2.encode_request(b"short")


@pytest.mark.parametrize(
    ("captured", "multichannel", "caps"), [(STOCK, True, 0x0F), (NO_MULTICHANNEL, False, 0x07)]
)
def test_captured_responses(captured: bytes, multichannel: bool, caps: int) -> None:
    r = smb2.parse_response(captured)
    assert (r.dialect, r.capabilities, r.multichannel) == (0x0302, caps, multichannel)


def test_frame_length() -> None:
    assert smb2.frame_length(b"\x00\x00\x01\x00") == 256
    for bad in (b"\x85\x00\x00\x00", b"\x00\x00\x00\x10", b"\x00\x01\x00\x01", b"\x00"):
        with pytest.raises(DecodeError):
            smb2.frame_length(bad)


def test_error_status_and_requests_refused() -> None:
    failed = STOCK[:8] + struct.pack("<I", 0xC0000022) + STOCK[12:]
    with pytest.raises(DecodeError, match="0xc0000022"):
        smb2.parse_response(failed)
    with pytest.raises(DecodeError, match="a request"):
        smb2.parse_response(smb2.encode_request(GUID)[4:] + bytes(64))


@given(mutated_any([STOCK, NO_MULTICHANNEL]))
def test_mutated_responses_parse_or_raise_decode_error(data: bytes) -> None:
    try:
        smb2.parse_response(data)
    except DecodeError:
        pass
