"""The edge's presence on the office LAN: the protocols PCs use to find and resolve
its virtual names (NetBIOS name service, browse announcements and session service,
LLMNR, mDNS, WS-Discovery), as sans-IO codecs and decision cores plus thin asyncio
adapters.

The cores share two conventions:

- **Timers**: a core that has something to do later offers ``get_timer()`` (when, in
  the caller's monotonic seconds, or None) and ``handle_timer(now)`` (what is due then,
  as commands or datagrams; an empty list when nothing is). The adapter calls
  ``handle_timer`` at or after ``get_timer()`` and asks again after every call into the
  core (aioquic's and h11's shape). ``now`` is always a parameter.
- **Need more data**: a stream decoder (NetBIOS session framing on TCP 139, the
  WS-Discovery metadata HTTP request on TCP 5357) returns :data:`NEED_DATA` until a
  whole message is buffered, and raises :class:`spokeshare.errors.DecodeError` for bad
  bytes. Datagram decoders (NetBIOS name and datagram service, browse, LLMNR, WSD over
  UDP) take one whole datagram and never need more: they return a message or raise.
"""

from __future__ import annotations

import enum


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "need more data"


#: What a LAN stream decoder returns until a whole message has arrived.
NEED_DATA = NeedData.NEED_DATA
