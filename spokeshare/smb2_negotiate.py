"""SMB2 NEGOTIATE, just enough to ask a file server what it offers (MS-SMB2), sans-IO.

The hub asks HQ's smbd at start whether it offers SMB3 multichannel: a server that
sets SMB2_GLOBAL_CAP_MULTI_CHANNEL in its NEGOTIATE response answers
FSCTL_QUERY_NETWORK_INTERFACE_INFO (MS-SMB2 3.3.5.15.11) with its own interface
addresses, and a Windows client then opens further channels straight to them,
around the tunnel (README, "HQ: what its servers must be told").

Framing (MS-SMB2 2.1, Direct TCP transport)::

    0x00 | 24-bit big-endian length | SMB2 message

SMB2 header (2.2.1.2, sync), 64 bytes::

    ProtocolId "\\xfeSMB" | StructureSize 64 (u16) | CreditCharge (u16) | Status (u32)
    | Command (u16) | CreditRequest (u16) | Flags (u32) | NextCommand (u32)
    | MessageId (u64) | Reserved (u32) | TreeId (u32) | SessionId (u64) | Signature (16)

NEGOTIATE request (2.2.3)::

    StructureSize 36 (u16) | DialectCount (u16) | SecurityMode (u16) | Reserved (u16)
    | Capabilities (u32) | ClientGuid (16) | ClientStartTime (u64) | Dialects (u16 each)

NEGOTIATE response (2.2.4)::

    StructureSize 65 (u16) | SecurityMode (u16) | DialectRevision (u16)
    | NegotiateContextCount/Reserved (u16) | ServerGuid (16) | Capabilities (u32)
    | MaxTransactSize (u32) | MaxReadSize (u32) | MaxWriteSize (u32) | SystemTime (u64)
    | ServerStartTime (u64) | SecurityBufferOffset (u16) | SecurityBufferLength (u16)
    | NegotiateContextOffset/Reserved2 (u32) | Buffer ...
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from spokeshare.buffer import Buffer
from spokeshare.errors import UsageError

PROTOCOL = "SMB2 NEGOTIATE"
MAGIC = b"\xfeSMB"
HEADER_SIZE = 64
#: MS-SMB2 2.2.1: Command NEGOTIATE.
SMB2_NEGOTIATE = 0x0000
#: MS-SMB2 2.2.1.2: Flags, SMB2_FLAGS_SERVER_TO_REDIR.
FLAGS_SERVER_TO_REDIR = 0x00000001
#: MS-SMB2 2.2.3 / 2.2.4: Capabilities.
CAP_DFS = 0x00000001
CAP_LEASING = 0x00000002
CAP_LARGE_MTU = 0x00000004
CAP_MULTI_CHANNEL = 0x00000008
CAP_PERSISTENT_HANDLES = 0x00000010
CAP_DIRECTORY_LEASING = 0x00000020
CAP_ENCRYPTION = 0x00000040
#: SMB 2.0.2, 2.1, 3.0, 3.0.2: 3.1.1 needs negotiate contexts (2.2.3.1), and 3.0 is
#: enough to learn whether multichannel is offered.
DIALECTS = (0x0202, 0x0210, 0x0300, 0x0302)
#: The largest NEGOTIATE response read (its security buffer is a SPNEGO hint, well
#: under 1 KiB in practice).
MAX_RESPONSE = 64 * 1024


@dataclass(frozen=True)
class NegotiateResponse:
    dialect: int
    capabilities: int
    security_mode: int

    @property
    def multichannel(self) -> bool:
        return bool(self.capabilities & CAP_MULTI_CHANNEL)


def encode_request(client_guid: bytes, capabilities: int = CAP_MULTI_CHANNEL) -> bytes:
    """A NEGOTIATE request in its Direct TCP frame. ``client_guid``: 16 bytes."""
    if len(client_guid) != 16:
        raise UsageError("client_guid must be 16 bytes")
    b = Buffer(protocol=PROTOCOL)
    b.push_bytes(MAGIC)
    # StructureSize, CreditCharge, Status, Command, CreditRequest, Flags, NextCommand,
    # MessageId, Reserved, TreeId, SessionId.
    header = (HEADER_SIZE, 0, 0, SMB2_NEGOTIATE, 1, 0, 0, 0, 0, 0, 0)
    b.push_bytes(struct.pack("<HHIHHIIQIIQ", *header))
    b.push_bytes(bytes(16))  # Signature
    # SecurityMode 1: SMB2_NEGOTIATE_SIGNING_ENABLED.
    b.push_bytes(struct.pack("<HHHHI", 36, len(DIALECTS), 1, 0, capabilities))
    b.push_bytes(client_guid)
    b.push_bytes(struct.pack("<Q", 0))
    for d in DIALECTS:
        b.push_uint16_le(d)
    msg = b.getvalue()
    return struct.pack(">I", len(msg)) + msg


def frame_length(head: bytes) -> int:
    """Length of the SMB2 message behind a 4-byte Direct TCP frame header.

    Raises DecodeError for a frame that is not Direct TCP or larger than MAX_RESPONSE.
    """
    b = Buffer(head, PROTOCOL)
    if b.pull_uint8() != 0:
        raise b.error("not a Direct TCP frame")
    n = int.from_bytes(b.pull_bytes(3), "big")
    if not HEADER_SIZE <= n <= MAX_RESPONSE:
        raise b.error(f"frame of {n} bytes")
    return n


def parse_response(msg: bytes) -> NegotiateResponse:
    """Parse a NEGOTIATE response (without its 4-byte frame).

    Raises DecodeError if it is not one, or if the server answered with an error status
    (the reason names the NTSTATUS).
    """
    b = Buffer(msg, PROTOCOL)
    if b.pull_bytes(4) != MAGIC:
        raise b.error("not an SMB2 message")
    size, _charge, status, command, _credits, flags = struct.unpack("<HHIHHI", b.pull_bytes(16))
    if size != HEADER_SIZE or command != SMB2_NEGOTIATE:
        raise b.error(f"not a NEGOTIATE response (command {command:#06x})")
    if not flags & FLAGS_SERVER_TO_REDIR:
        raise b.error("a request, not a response")
    if status != 0:
        raise b.error(f"NEGOTIATE failed with status {status:#010x}")
    b.seek(HEADER_SIZE)
    structure, security_mode, dialect, _contexts = struct.unpack("<HHHH", b.pull_bytes(8))
    if structure != 65:
        raise b.error(f"response StructureSize {structure}, not 65")
    b.pull_bytes(16)  # ServerGuid
    capabilities = b.pull_uint32_le()
    b.pull_bytes(4 * 3 + 8 * 2)  # MaxTransact/Read/WriteSize, SystemTime, ServerStartTime
    offset, length = struct.unpack("<HH", b.pull_bytes(4))
    if length and offset + length > len(msg):
        raise b.error("security buffer beyond the message")
    return NegotiateResponse(dialect, capabilities, security_mode)
