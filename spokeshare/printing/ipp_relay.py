"""The hub's relay for the ``ipp`` service: the filter (:class:`IppFilter`) through
which the stream's :class:`spokeshare.tunnel.relay.Splice` runs each request, by
:class:`spokeshare.printing.hub_ipp.IppGate`, instead of copying bytes.

The tunnel side (payloads from the edge) feeds the gate's client half, the backend side
(cupsd's TCP connection) its backend half; what the gate returns is written and ended
by the splice and logged here. Framing, counters, aborts and flow control are the
splice's: a full write buffer on one side stops reading on the other, and the tunnel is
also not read while the client waits for an answer (``IppGate.reading_client``), so
pipelined requests wait in the kernel.

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

from spokeshare.printing.hub_ipp import Commands, IppGate, PrinterPolicy, StreamInfo
from spokeshare.tunnel.relay import Forward

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


class IppFilter:
    """One ``ipp`` stream at the hub, as the :class:`Splice`'s filter: the tunnel side
    (the office client) and the plain side (cupsd) both go through an :class:`IppGate`.

    ``policy_of`` is read before each client chunk, so a changed printer list applies
    at once, also to a connection already open (it returns the office's policy as the
    hub last loaded it: no work per call). ``on_refused`` is called with the reason
    (hub_ipp.REFUSED_PRINTER, REFUSED_MALFORMED) of each request the gate refuses.
    """

    __slots__ = ("gate", "policy_of", "on_refused", "_backend_eof")

    def __init__(
        self,
        info: StreamInfo,
        policy_of: Callable[[], PrinterPolicy],
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.policy_of = policy_of
        self.on_refused = on_refused
        self.gate = IppGate(info, policy_of())
        self._backend_eof = False

    def __repr__(self) -> str:
        return f"<IppFilter {self.gate!r}>"

    @property
    def reading_tunnel(self) -> bool:
        return self.gate.reading_client

    def plain_data(self, data: bytes) -> Forward:
        return self._forward(self.gate.backend_data(data))

    def plain_eof(self) -> Forward:
        if self._backend_eof:
            return Forward()
        self._backend_eof = True
        return self._forward(self.gate.backend_eof())

    def tunnel_data(self, data: bytes) -> Forward:
        self.gate.policy = self.policy_of()
        return self._forward(self.gate.client_data(data))

    def tunnel_eof(self) -> Forward:
        return self._forward(self.gate.client_eof())

    def _forward(self, cmds: Commands) -> Forward:
        for level, message in cmds.logs:
            log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", message)
        if self.on_refused is not None:
            for reason in cmds.refused:
                self.on_refused(reason)
        # The gate ends both sides together (IppGate._end).
        return Forward(
            tuple(cmds.to_backend), tuple(cmds.to_client), cmds.close_client or cmds.close_backend
        )
