"""Socket options, applied in one place (DESIGN.md, "The tunnel", Sockets).

- TCP_NODELAY everywhere: SMB and IPP are request/response; Nagle would hold the
  last segment of every request for an ACK that the peer delays.
- WAN sockets: keepalive plus TCP_USER_TIMEOUT (RFC 5482) so a dead link is noticed
  in seconds, BBR where the kernel has it, and buffers either left to autotuning (up to
  net.ipv4.tcp_rmem/tcp_wmem's maximum) or forced to a configured size.
- Two timeouts per tunnel. Idle pool tunnels and the control channel keep the short
  ``user_timeout``: new connections must fail fast. A tunnel carrying a client's stream
  gets ``stream_user_timeout`` (:func:`carry_stream`) for as long as it carries it, so
  a WAN outage shorter than what SMB clients themselves tolerate (Windows about 60 s,
  MS-SMB2 3.2.6.1 leaves it to the client) stalls the stream instead of cutting it.
  With TCP_USER_TIMEOUT set, the kernel also lets keepalive probes run that long
  before giving up (tcp(7), TCP_USER_TIMEOUT).
- Resuming soon after the link returns: RFC 6298 §5.5 doubles the retransmission
  timeout on every expiry, so after a 12 s outage TCP waits up to about 7 s more before
  its next try. The LAN client's own connection never backs off (its peer, the edge,
  is on the LAN); only the tunnel does. Linux 6.15+ caps a socket's RTO with
  TCP_RTO_MAX_MS (``rto_max``, 1-120 s); older kernels get TCP_THIN_LINEAR_TIMEOUTS
  (linear, not exponential, backoff while fewer than four segments are in flight).
"""

from __future__ import annotations

import contextlib
import socket

from spokeshare.config import SocketConfig

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
#: include/uapi/linux/tcp.h: linear timeouts for thin streams (Linux 2.6.34+).
TCP_THIN_LINEAR_TIMEOUTS = getattr(socket, "TCP_THIN_LINEAR_TIMEOUTS", 16)
#: include/uapi/linux/tcp.h: per-socket maximum RTO in ms, 1000..120000 (Linux 6.15+).
TCP_RTO_MAX_MS = getattr(socket, "TCP_RTO_MAX_MS", 44)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: TCP_RTO_MAX_MS's accepted range (net/ipv4/tcp.c, do_tcp_setsockopt).
RTO_MAX_RANGE_MS = (1000, 120_000)


def tune_lan(sock: socket.socket | None) -> None:
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _is_tcp(sock: object) -> bool:
    family = getattr(sock, "family", None)
    return family in (socket.AF_INET, socket.AF_INET6)


def tune_wan(sock: socket.socket | None, cfg: SocketConfig) -> str:
    """Apply the WAN options; return the congestion control in effect (for the logs).

    The user timeout set here is the short one (pool and control channel); see
    :func:`carry_stream` for a tunnel that carries a client.
    """
    if sock is None or not _is_tcp(sock):
        return ""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, cfg.keepalive_idle))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, cfg.keepalive_interval))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, max(1, cfg.keepalive_count))
    sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, int(cfg.user_timeout * 1000))
    cap_rto(sock, cfg)
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


def cap_rto(sock: socket.socket, cfg: SocketConfig) -> str:
    """Bound the retransmission backoff; return what is in effect (for the logs).

    ``"rto_max"`` (TCP_RTO_MAX_MS took ``cfg.rto_max``), ``"thin_linear"`` (the
    kernel has no TCP_RTO_MAX_MS: linear timeouts for thin streams instead) or ``""``
    (``rto_max`` is 0: the kernel's exponential backoff up to 120 s).
    """
    if not cfg.rto_max:
        return ""
    lo, hi = RTO_MAX_RANGE_MS
    ms = min(hi, max(lo, int(cfg.rto_max * 1000)))
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS, ms)
        return "rto_max"
    except OSError:  # ENOPROTOOPT before Linux 6.15
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, 1)
            return "thin_linear"
    return ""


def carry_stream(sock: socket.socket | None, cfg: SocketConfig, carrying: bool) -> None:
    """Switch a tunnel's user timeout: ``stream_user_timeout`` while it carries a
    client's stream, back to ``user_timeout`` when it idles again (pool, control).

    Raises nothing for a socket already gone (the stream's end is handled elsewhere).
    """
    if sock is None or not _is_tcp(sock):
        return
    seconds = cfg.stream_user_timeout if carrying else cfg.user_timeout
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, int(seconds * 1000))
