"""Socket options, applied in one place (DESIGN.md, "The tunnel", Sockets).

- TCP_NODELAY everywhere: SMB and IPP are request/response; Nagle would hold the
  last segment of every request for an ACK that the peer delays.
- WAN sockets: keepalive plus TCP_USER_TIMEOUT (RFC 5482) so a dead link is noticed
  in seconds, BBR where the kernel has it, and buffers either left to autotuning (up to
  net.ipv4.tcp_rmem/tcp_wmem's maximum) or forced to a configured size.
"""

from __future__ import annotations

import contextlib
import socket

from spokeshare.config import SocketConfig

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def tune_lan(sock: socket.socket | None) -> None:
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tune_wan(sock: socket.socket | None, cfg: SocketConfig) -> str:
    """Apply the WAN options; return the congestion control in effect (for the logs)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return ""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, cfg.keepalive_idle))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, cfg.keepalive_interval))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, max(1, cfg.keepalive_count))
    sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, int(cfg.user_timeout * 1000))
    if cfg.congestion:
        with contextlib.suppress(OSError):  # not offered here: the system default stays
            sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, cfg.congestion.encode())
    if cfg.buffer_bytes:
        for forced, plain in (
            (SO_SNDBUFFORCE, socket.SO_SNDBUF),
            (SO_RCVBUFFORCE, socket.SO_RCVBUF),
        ):
            try:
                sock.setsockopt(socket.SOL_SOCKET, forced, cfg.buffer_bytes)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, plain, cfg.buffer_bytes)
    in_effect = sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16)
    return in_effect.split(b"\0", 1)[0].decode("ascii", "replace")
