"""The NetBIOS session service (nbss, RFC 1002 §4.3, §5.3) answered on TCP 139.

A PC that calls a server by NetBIOS name connects to 139 and sends a SESSION REQUEST
naming the called name. :class:`SessionAnswerer` answers it on the edge's behalf:
positive for one of the edge's virtual names (``NAME<20>``, or ``*SMBSERVER`` when
every name at the address stands for one hub service), the proper negative answer
otherwise (``netbios_session.answer_session_request``). After a positive answer the
connection carries SMB in the same 4-byte framing as direct-hosted SMB on 445, so the
answerer hands the connection, with any bytes that came behind the request, to its
host (the edge), which relays it to the called name's hub service.

The answerer is the connection's protocol only until then: the host swaps in its own
(``transport.set_protocol``). What LAN clients get wrong (no request in time, bad
framing, a name the edge does not hold) is counted and logged rate-limited through the
host's ``session_log`` (lan/hostile.py), never more than a debug or info line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol, cast

from spokeshare.errors import DecodeError
from spokeshare.lan import netbios_session
from spokeshare.lan.hostile import RateLimitedLog
from spokeshare.logfmt import Line

#: Seconds a client may take to send its session request (RFC 1002 leaves it open).
REQUEST_TIMEOUT = 10.0


class SessionHost(Protocol):
    """What the answerer needs from the daemon that listens on 139 (the edge)."""

    #: Counters ``netbios_sessions_dropped`` / ``netbios_sessions_refused`` and their
    #: rate-limited lines.
    session_log: RateLimitedLog

    def session_accepted(self, transport: asyncio.Transport) -> None:
        """A connection arrived on 139 (tune its socket, note the churn)."""

    def session_up(self, transport: asyncio.Transport, service: str, early: bytes) -> None:
        """The session is up for hub ``service``: take the connection over (set its
        protocol); ``early`` holds bytes the client sent after its request."""


class SessionAnswerer(asyncio.Protocol):
    """One client connection on 139 until its session request is answered.

    ``names`` maps the NetBIOS names this address answers for (upper case) to their
    hub service; ``smbserver`` is the name ``*SMBSERVER`` stands for, or None.
    """

    __slots__ = ("host", "names", "smbserver", "reader", "transport", "peer", "_wait")

    def __init__(self, host: SessionHost, names: Mapping[str, str], smbserver: str | None) -> None:
        self.host = host
        self.names = names
        self.smbserver = smbserver
        self.reader = netbios_session.SessionReader()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self._wait: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<SessionAnswerer {self.peer[0]}:{self.peer[1]} names={sorted(self.names)}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP server's transport (uvloop's does not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.host.session_accepted(self.transport)
        self._wait = asyncio.get_running_loop().call_later(
            REQUEST_TIMEOUT, self._drop, "no session request in time"
        )

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                packet = self.reader.next_packet()
            except DecodeError as exc:
                self._drop(f"bad session packet: {exc.reason}")
                return
            if packet is netbios_session.NEED_DATA:
                return
            if isinstance(packet, netbios_session.SessionKeepAlive):
                continue  # RFC 1002 §4.3.7: either side, any time
            if not isinstance(packet, netbios_session.SessionRequest):
                self._drop("first packet is not a session request")
                return
            self._answer(packet)
            return

    def eof_received(self) -> bool:
        self._drop("closed before a session request")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()

    def _answer(self, request: netbios_session.SessionRequest) -> None:
        transport = self.transport
        if transport is None:
            return
        self._stop_waiting()
        decision = netbios_session.answer_session_request(
            request, list(self.names), smbserver_name=self.smbserver
        )
        transport.write(netbios_session.encode(decision.response))
        if decision.virtual_name is None:
            # smbclient asks for a name it has, then for *SMBSERVER: worth an info
            # line, rate-limited like all LAN-triggered lines.
            response = decision.response
            self.host.session_log(
                "netbios_sessions_refused",
                self.peer[0],
                Line(
                    "netbios session refused",
                    client=f"{self.peer[0]}:{self.peer[1]}",
                    name=str(request.called),
                    reason=_refusal_reason(response),
                ),
                level=logging.INFO,
            )
            transport.close()
            return
        service = self.names[decision.virtual_name.upper()]
        self.host.session_up(transport, service, self.reader.take_rest())

    def _drop(self, reason: str) -> None:
        """Close a connection that did not make a session (LAN input: a rate-limited
        debug line and a counter, lan/hostile.py)."""
        self._stop_waiting()
        self.host.session_log(
            "netbios_sessions_dropped",
            self.peer[0],
            "NetBIOS session from %s:%d closed: %s",
            self.peer[0],
            self.peer[1],
            reason,
        )
        if self.transport is not None:
            self.transport.close()

    def _stop_waiting(self) -> None:
        if self._wait is not None:
            self._wait.cancel()
            self._wait = None


def _refusal_reason(response: object) -> str:
    """The words of a refusal: the NEGATIVE SESSION RESPONSE's error code (RFC 1002
    section 4.3.4) by name, or the response itself."""
    if isinstance(response, netbios_session.NegativeSessionResponse):
        try:
            code = netbios_session.SessionError(response.error).name
        except ValueError:
            code = f"{response.error:#04x}"
        return f"negative session response {code}"
    return str(response)
