"""Who is on the office link, and the legacy-unicast rules for mDNS answers.

Sans-IO decisions shared by the LAN responders:

- :class:`Link` holds the LAN interface's prefixes; :meth:`Link.on_link` says whether
  a source address is on the link: RFC 4795 §2.5 (an LLMNR responder answers only
  on-link senders), RFC 6762 §11 (mDNS answers to unicast and legacy queries only for
  on-link sources), and the same rule for NetBIOS and WS-Discovery (their multicast
  and broadcast never leave the link; a unicast asker off the link is not an office
  PC).
- :func:`legacy_unicast_response` rewrites an mDNS response that goes to a legacy
  unicast querier (source port not 5353, RFC 6762 §6.7): every TTL at most
  :data:`LEGACY_UNICAST_MAX_TTL` seconds and no cache-flush bit. Query ID and question
  are echoed by python-zeroconf already; this only edits bytes in place.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from spokeshare.errors import DecodeError

#: RFC 6762 §6.7: TTLs in a legacy unicast response SHOULD NOT exceed ten seconds.
LEGACY_UNICAST_MAX_TTL = 10
#: RFC 6762 §10.2: the top bit of rrclass in a response is the cache-flush bit, which
#: §6.7 says MUST NOT be set in legacy unicast responses.
CACHE_FLUSH = 0x8000
#: RFC 6762 §17: an mDNS message is at most 9000 bytes (and zeroconf's 8966 limit).
MAX_MESSAGE = 9000

_LINK_LOCAL_V4 = ipaddress.IPv4Network("169.254.0.0/16")  # RFC 3927
_LINK_LOCAL_V6 = ipaddress.IPv6Network("fe80::/10")  # RFC 4291 §2.5.6

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Link:
    """The prefixes of the LAN interface (IPv4 subnets, IPv6 on-link prefixes)."""

    networks: tuple[Network, ...]

    @classmethod
    def of(cls, interfaces: Iterable[str]) -> Link:
        """From interface addresses with prefix length ("198.18.11.1/24", "fe80::1/64")."""
        return cls(tuple(ipaddress.ip_interface(i).network for i in interfaces))

    def on_link(self, source: str) -> bool:
        """Whether ``source`` (an IP address, "%scope" allowed) is on this link.

        Link-local sources (169.254/16, fe80::/10) always are (they cannot be
        routed); others must fall within one of the interface's prefixes.
        """
        try:
            addr = ipaddress.ip_address(source.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr in (_LINK_LOCAL_V4 if addr.version == 4 else _LINK_LOCAL_V6):
            return True
        return any(addr.version == n.version and addr in n for n in self.networks)


def _skip_name(data: bytes | bytearray, pos: int) -> int:
    """Offset after the (possibly compressed) domain name at ``pos`` (RFC 1035 §4.1.4)."""
    for _ in range(128):  # at most 127 labels in a 255-byte name, then a terminator
        if pos >= len(data):
            raise DecodeError("mdns", "name runs past the message")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length & 0xC0:
            raise DecodeError("mdns", "bad label type")
        pos += 1 + length
    raise DecodeError("mdns", "too many labels")


def legacy_unicast_response(packet: bytes) -> bytes:
    """``packet`` (an mDNS response) with TTLs capped and cache-flush bits cleared.

    RFC 6762 §6.7. Question entries are kept as they are (zeroconf echoes the query's
    ID and question for a legacy querier). Raises :class:`~spokeshare.errors.DecodeError`
    for a malformed packet (the caller then does not send it); the length of the result
    equals the input's.
    """
    if len(packet) > MAX_MESSAGE or len(packet) < 12:
        raise DecodeError("mdns", "not an mDNS message")
    out = bytearray(packet)
    qd, an, ns, ar = struct.unpack_from("!4H", out, 4)
    pos = 12
    for _ in range(qd):
        pos = _skip_name(out, pos) + 4
    for _ in range(an + ns + ar):
        pos = _skip_name(out, pos)
        if pos + 10 > len(out):
            raise DecodeError("mdns", "record runs past the message")
        rrtype, rrclass, ttl, rdlength = struct.unpack_from("!HHIH", out, pos)
        if rrtype != 41:  # OPT (RFC 6891) has no TTL or class in this sense
            struct.pack_into(
                "!HI", out, pos + 2, rrclass & ~CACHE_FLUSH, min(ttl, LEGACY_UNICAST_MAX_TTL)
            )
        pos += 10 + rdlength
        if pos > len(out):
            raise DecodeError("mdns", "rdata runs past the message")
    return bytes(out)
