"""One small buffer type that every codec reads and writes through.

Every ``pull_*`` checks that the bytes are there and raises :class:`DecodeError`
(naming the codec) when they are not; ``finish()`` rejects trailing bytes. Network
byte order (big-endian) is the default; ``*_le`` methods exist for the SMB-family
formats (browse announcements) that are little-endian.
"""

from __future__ import annotations

import struct

from spokeshare.errors import DecodeError

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U16LE = struct.Struct("<H")
_U32LE = struct.Struct("<I")


class Buffer:
    """A read cursor over bytes, or a growing output when built empty."""

    __slots__ = ("_data", "_pos", "_protocol", "_out")

    def __init__(self, data: bytes | bytearray | memoryview = b"", protocol: str = "codec") -> None:
        self._data = bytes(data)
        self._pos = 0
        self._protocol = protocol
        self._out = bytearray()

    def __repr__(self) -> str:
        return f"<Buffer {self._protocol} pos={self._pos}/{len(self._data)} out={len(self._out)}>"

    # -- reading ---------------------------------------------------------------------
    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def error(self, reason: str) -> DecodeError:
        """A DecodeError for this codec at the current offset (for callers' own checks)."""
        return DecodeError(self._protocol, reason, self._pos)

    def eof(self) -> bool:
        return self._pos >= len(self._data)

    def seek(self, pos: int) -> None:
        if not 0 <= pos <= len(self._data):
            raise DecodeError(self._protocol, f"offset {pos} outside the message", self._pos)
        self._pos = pos

    def peek_bytes(self, n: int) -> bytes:
        self._need(n)
        return self._data[self._pos : self._pos + n]

    def pull_bytes(self, n: int) -> bytes:
        self._need(n)
        v = self._data[self._pos : self._pos + n]
        self._pos += n
        return v

    def pull_rest(self) -> bytes:
        v = self._data[self._pos :]
        self._pos = len(self._data)
        return v

    def pull_uint8(self) -> int:
        self._need(1)
        v = self._data[self._pos]
        self._pos += 1
        return v

    def pull_uint16(self) -> int:
        self._need(2)
        (v,) = _U16.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(v)

    def pull_uint32(self) -> int:
        self._need(4)
        (v,) = _U32.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(v)

    def pull_uint16_le(self) -> int:
        self._need(2)
        (v,) = _U16LE.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(v)

    def pull_uint32_le(self) -> int:
        self._need(4)
        (v,) = _U32LE.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(v)

    def finish(self) -> None:
        """Reject trailing bytes after a complete message."""
        if self._pos != len(self._data):
            raise DecodeError(
                self._protocol, f"{len(self._data) - self._pos} trailing bytes", self._pos
            )

    def _need(self, n: int) -> None:
        if n < 0 or self._pos + n > len(self._data):
            raise DecodeError(
                self._protocol,
                f"needs {n} bytes, {len(self._data) - self._pos} left",
                self._pos,
            )

    # -- writing ---------------------------------------------------------------------
    def push_bytes(self, v: bytes | bytearray | memoryview) -> None:
        self._out += v

    def push_uint8(self, v: int) -> None:
        self._out += v.to_bytes(1, "big")

    def push_uint16(self, v: int) -> None:
        self._out += _U16.pack(v)

    def push_uint32(self, v: int) -> None:
        self._out += _U32.pack(v)

    def push_uint16_le(self, v: int) -> None:
        self._out += _U16LE.pack(v)

    def push_uint32_le(self, v: int) -> None:
        self._out += _U32LE.pack(v)

    @property
    def written(self) -> int:
        return len(self._out)

    def getvalue(self) -> bytes:
        return bytes(self._out)
