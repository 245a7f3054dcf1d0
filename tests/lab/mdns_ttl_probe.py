"""An office PC's mDNS client that reads the IP TTL / hop limit of the answers it gets.

Run inside a PC's namespace with the system python3 (stdlib only):
``python3 mdns_ttl_probe.py FAMILY IFACE EDGE NAME MODE`` where FAMILY is 4 or 6, EDGE
the edge's address to ask (IPv6 link-local without scope), NAME a host name
(``GLOBAL-NFS.local``) and MODE one of:

- ``legacy``: a query from an ephemeral port, unicast to EDGE:5353 (RFC 6762 §6.7);
- ``multicast``: a query from port 5353 to the group (224.0.0.251 / ff02::fb), the
  answer multicast to port 5353 (§6);
- ``qu``: the same with the unicast-response bit set in the question (§5.4), the
  answer unicast to our port 5353.

The socket asks the kernel for each datagram's TTL (``IP_RECVTTL``) or hop limit
(``IPV6_RECVHOPLIMIT``) and reads it from ``recvmsg``'s ancillary data. Prints one
JSON list of ``{"ttl": N, "port": source port, "data": the first 64 octets in hex}``,
one per mDNS response (QR set) from EDGE received
within 3 s, on stdout.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

MDNS_PORT = 5353
GROUP4, GROUP6 = "224.0.0.251", "ff02::fb"
# <linux/in.h> and <linux/in6.h>, for Pythons whose socket module lacks the names.
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_TTL = socket.IP_TTL
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
TYPE_A, TYPE_AAAA, CLASS_IN, QU_BIT = 1, 28, 1, 0x8000


def query(name: str, qtype: int, qu: bool) -> bytes:
    """One DNS query (RFC 1035 §4.1) for ``name``; a random ID."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    header = struct.pack("!HHHHHH", int.from_bytes(os.urandom(2), "big"), 0, 1, 0, 0, 0)
    return header + qname + struct.pack("!HH", qtype, CLASS_IN | (QU_BIT if qu else 0))


def main() -> None:
    family, iface, edge, name, mode = sys.argv[1:6]
    v6 = family == "6"
    index = socket.if_nametoindex(iface)
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    port = 0 if mode == "legacy" else MDNS_PORT
    sock.bind(("::" if v6 else "0.0.0.0", port))
    if mode != "legacy":
        if v6:
            mreq6 = socket.inet_pton(socket.AF_INET6, GROUP6) + struct.pack("@I", index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        else:
            mreq = struct.pack("@4s4si", socket.inet_aton(GROUP4), b"\0" * 4, index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    dest: tuple[str, int] | tuple[str, int, int, int]
    if mode == "legacy":
        dest = (edge, MDNS_PORT, 0, index) if v6 else (edge, MDNS_PORT)
    else:
        dest = (GROUP6, MDNS_PORT, 0, index) if v6 else (GROUP4, MDNS_PORT)
    sock.sendto(query(name, TYPE_AAAA if v6 else TYPE_A, mode == "qu"), dest)
    found: list[dict[str, int | str]] = []
    deadline = time.monotonic() + 3.0
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, ancillary, _flags, source = sock.recvmsg(9000, socket.CMSG_SPACE(4))
        except TimeoutError:
            break
        if len(data) < 12 or not data[2] & 0x80:
            continue  # not a response (our own query looped back)
        ttl = -1
        for level, kind, value in ancillary:
            if (level, kind) in ((socket.IPPROTO_IP, IP_TTL), (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)):
                ttl = int.from_bytes(value[:4], sys.byteorder)
        found.append(
            {"source": source[0].split("%", 1)[0], "port": source[1], "ttl": ttl,
             "data": data[:64].hex()}
        )  # fmt: skip
    print(json.dumps(found))


if __name__ == "__main__":
    main()
