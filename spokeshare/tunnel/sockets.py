"""Socket options, applied in one place (DESIGN.md, "The tunnel", Sockets).

- TCP_NODELAY everywhere: SMB and IPP are request/response; Nagle would hold the
  last segment of every request for an ACK that the peer delays.
- WAN sockets: keepalive plus TCP_USER_TIMEOUT (RFC 5482) so a dead link is noticed
  in seconds, BBR where the kernel has it, and buffers either left to autotuning (up to
  net.ipv4.tcp_rmem/tcp_wmem's maximum) or forced to a configured size.
"""

from __future__ import annotations

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


def tune_wan(sock: socket.socket | None, cfg: SocketConfig) -> None:
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, cfg.keepalive_idle))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, cfg.keepalive_interval))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, max(1, cfg.keepalive_count))
    sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, int(cfg.user_timeout * 1000))
    if cfg.congestion:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, cfg.congestion.encode())
        except OSError:
            pass  # not offered by this kernel; the system default stays, which is fine
    if cfg.buffer_bytes:
        for forced, plain in (
            (SO_SNDBUFFORCE, socket.SO_SNDBUF),
            (SO_RCVBUFFORCE, socket.SO_RCVBUF),
        ):
            try:
                sock.setsockopt(socket.SOL_SOCKET, forced, cfg.buffer_bytes)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, plain, cfg.buffer_bytes)
