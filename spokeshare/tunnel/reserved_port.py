"""Connecting to a backend from a reserved source port, for LPD servers that require it.

RFC 1179 section 3.1: "The source port must be in the range 721 to 731, inclusive."
Classic BSD ``lpd`` (and LPD servers in printers that copied it) refuse connections
from any other port; CUPS's ``cups-lpd`` does not care. A hub service with
``reserved_source_port = true`` in hub.toml connects to its backend this way.

Binding a port below 1024 needs root or ``CAP_NET_BIND_SERVICE`` (the shipped
``spokeshare-hub.service`` grants it). With eleven ports, a port whose previous
connection is still in TIME_WAIT is reused (``SO_REUSEADDR``): the kernel still
refuses a connection that would repeat an identical address/port 4-tuple, and that
port is skipped for the next one. When all eleven are taken the connection fails with
a reason saying so, which the hub reports as ``BACKEND_DOWN``.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from spokeshare.config import RFC1179_SOURCE_PORTS

#: A source port that is busy for this destination right now: try the next one.
_BUSY = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


async def connect(host: str, port: int, ports: range = RFC1179_SOURCE_PORTS) -> socket.socket:
    """A non-blocking TCP socket connected to ``host:port`` from one of ``ports``.

    Tries the source ports in order. Raises :class:`PermissionError` (its ``strerror``
    names the fix) without the privilege to bind them, :class:`OSError` with
    ``EADDRINUSE`` when every port is busy, and whatever ``connect`` raises otherwise
    (refused, unreachable). The caller owns the returned socket.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, proto, _, address = infos[0]
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
    for source in ports:
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((wildcard, source))
            except PermissionError:
                raise PermissionError(
                    errno.EACCES,
                    f"source port {source} (RFC 1179: {ports.start}-{ports.stop - 1}) needs "
                    "root or CAP_NET_BIND_SERVICE",
                ) from None
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            if exc.errno in _BUSY:
                continue
            raise
        except BaseException:  # cancelled (the hub's connect timeout): no socket leaks
            sock.close()
            raise
        return sock
    raise OSError(
        errno.EADDRINUSE,
        f"every reserved source port ({ports.start}-{ports.stop - 1}) is in use toward "
        f"{host}:{port}",
    )
