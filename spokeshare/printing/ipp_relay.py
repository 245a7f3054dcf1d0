"""The hub's relay for the ``ipp`` service: a :class:`Splice` that runs each request
through :class:`spokeshare.printing.hub_ipp.IppGate` instead of copying bytes.

The tunnel side (frames from the edge) feeds the gate's client half, the backend side
(cupsd's TCP connection) its backend half; what the gate returns is written, ended
and logged here. Flow control is the splice's: a full write buffer on one side stops
reading on the other, and the tunnel is also not read while the client waits for an
answer (``IppGate.reading_client``), so pipelined requests wait in the kernel.

:func:`loopback_backend` is the check that the hub never reaches cupsd over loopback:
CUPS treats a loopback peer as local (``scheduler/client.c``), which would hand every
office localhost's rights.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable

from spokeshare.errors import DecodeError
from spokeshare.printing.hub_ipp import Commands, IppGate, PrinterPolicy, StreamInfo
from spokeshare.tunnel import wire
from spokeshare.tunnel.relay import Splice, abort_with_rst

log = logging.getLogger("spokeshare.hub.ipp")

#: The hub service whose streams go through the gate.
SERVICE = "ipp"


def is_loopback(host: str) -> bool:
    """True for 127/8, ::1, ``localhost`` and IPv4-mapped loopback."""
    if host.rstrip(".").lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def loopback_reason(host: str, port: int) -> str | None:
    """One line saying why ``host:port`` cannot be the ipp backend, with the fix; or None
    when it is not a loopback address (names are resolved by :func:`resolves_loopback`)."""
    if not is_loopback(host):
        return None
    return (
        f"ipp backend {host}:{port} is loopback: cupsd would give every office localhost's "
        "rights and refuse its Host header; set [services.ipp] backend to this host's LAN "
        "address (e.g. 198.51.100.10:631) and run 'cupsctl --share-printers --remote-any'"
    )


def resolves_loopback(host: str, port: int) -> str | None:
    """:func:`loopback_reason` for ``host`` or any address it resolves to (blocking)."""
    why = loopback_reason(host, port)
    if why is not None:
        return why
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return None  # unresolvable now: the connect fails later with its own reason
    for info in infos:
        if is_loopback(str(info[4][0])):
            return loopback_reason(str(info[4][0]), port)
    return None


def choose_backend_address(addresses: list[str]) -> str | None:
    """The address ``init`` names for cupsd: the first IPv4 address (in interface order)
    that is not loopback, link-local or multicast; None when there is none."""
    for a in addresses:
        try:
            addr = ipaddress.IPv4Address(a)
        except ValueError:
            continue
        if not (addr.is_loopback or addr.is_link_local or addr.is_multicast
                or addr.is_unspecified):  # fmt: skip
            return a
    return None


def host_ipv4_addresses() -> list[str]:
    """The primary IPv4 address of each interface of this host (``SIOCGIFADDR``), in
    interface index order."""
    import fcntl
    import struct

    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in sorted(socket.if_nameindex()):
            try:
                res = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on it
            found.append(socket.inet_ntoa(res[20:24]))
    return found


def default_backend() -> str | None:
    """``HOST:631`` for the ipp service at ``init``: this host's LAN address, where a
    stock cupsd listens after ``cupsctl --share-printers --remote-any``; None if the
    host has no such address."""
    addr = choose_backend_address(host_ipv4_addresses())
    return f"{addr}:631" if addr else None


def loopback_backend(transport: asyncio.BaseTransport) -> bool:
    """True when a connected backend transport's peer is a loopback address."""
    peer = transport.get_extra_info("peername")
    return bool(peer) and is_loopback(str(peer[0]))


class IppSplice(Splice):
    """One ``ipp`` stream at the hub: tunnel (office client) <-> gate <-> cupsd."""

    __slots__ = ("gate", "policy_of", "_client_ended", "_backend_closed", "_backend_eof")

    def __init__(
        self,
        plain: asyncio.Transport,
        tunnel: asyncio.Transport,
        on_done: Callable[[Splice], None],
        info: StreamInfo,
        policy_of: Callable[[], PrinterPolicy],
    ) -> None:
        super().__init__(plain, tunnel, on_done)
        self.policy_of = policy_of
        self.gate = IppGate(info, policy_of())
        self._client_ended = False
        self._backend_closed = False
        self._backend_eof = False

    def __repr__(self) -> str:
        return f"<IppSplice {self.gate!r} up={self.up} down={self.down} result={self.result}>"

    # -- applying the gate's commands ------------------------------------------------
    def _apply(self, cmds: Commands) -> None:
        for level, message in cmds.logs:
            log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", message)
        for chunk in cmds.to_backend:
            if chunk and not self._backend_closed:
                self.plain.write(chunk)
        for chunk in cmds.to_client:
            if chunk and not self._client_ended:
                self._to_tunnel(chunk)
        if cmds.close_client and not self._client_ended:
            self._client_ended = True
            self.plain_eof = True  # our EOF frame: the client side is done
            self.tunnel.write(wire.EOF_FRAME)
        if cmds.close_backend and not self._backend_closed:
            self._backend_closed = True
            self.plain.close()
        self._update_reading()
        self._maybe_finish()

    def _to_tunnel(self, data: bytes) -> None:
        self.up += len(data)
        view = memoryview(data)
        for i in range(0, len(data), wire.MAX_FRAME):
            part = view[i : i + wire.MAX_FRAME]
            self.tunnel.write(wire.frame_header(wire.FrameType.DATA, len(part)) + bytes(part))

    def _update_reading(self) -> None:
        if self.result is not None:
            return
        if self._tunnel_paused or not self.gate.reading_client:
            self.tunnel.pause_reading()
        elif not self.tunnel.is_closing():
            self.tunnel.resume_reading()

    # -- backend (plain) side --------------------------------------------------------
    def plain_data(self, data: bytes) -> None:
        if self.result is not None or self._backend_closed:
            return
        self._apply(self.gate.backend_data(data))

    def plain_eof_received(self) -> None:
        if self.result is not None or self._backend_eof:
            return
        self._backend_eof = True
        self._apply(self.gate.backend_eof())

    def plain_lost(self, exc: Exception | None) -> None:
        if self.result is not None or self._backend_closed:
            return  # we closed it ourselves
        if exc is not None:
            super().plain_lost(exc)
            return
        self._backend_closed = True
        if not self._backend_eof:
            self._backend_eof = True
            self._apply(self.gate.backend_eof())

    def plain_resume_writing(self) -> None:
        self._tunnel_paused = False
        self._update_reading()

    # -- tunnel side -----------------------------------------------------------------
    def tunnel_data(self, data: bytes | memoryview) -> None:
        if self.result is not None:
            return
        try:
            events = self.reader.feed(data)
        except DecodeError as exc:
            self._fail(f"bad frame from peer: {exc.reason}")
            self.tunnel.abort()
            abort_with_rst(self.plain)
            return
        self.gate.policy = self.policy_of()  # a changed printer list applies at once
        for ev in events:
            if self.result is not None:
                return
            if isinstance(ev, wire.DataReceived):
                self.down += len(ev.data)
                self._apply(self.gate.client_data(bytes(ev.data)))
            elif isinstance(ev, wire.EofReceived):
                self.tunnel_eof = True
                self._apply(self.gate.client_eof())

    def _maybe_finish(self) -> None:
        if self.plain_eof and self.tunnel_eof and self.result is None:
            self.result = "ok"
            if not self._backend_closed:
                self._backend_closed = True
                self.plain.close()
            self.tunnel.close()
            self._on_done(self)
