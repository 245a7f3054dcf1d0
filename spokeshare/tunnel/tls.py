"""TLS contexts for both ends: TLS 1.3 only, mutual, pinned to the deployment's CA.

The system trust store is never loaded: each context trusts exactly the CA the
deployment made. ALPN names the wire version; a peer that does not agree on it is
refused after the handshake (see :func:`check_alpn`).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from spokeshare.tunnel.wire import ALPN, ALPN_REUSE, ALPNS


def _base(purpose: int, reuse: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    # Sequential reuse is agreed per tunnel by ALPN (docs/protocol.md, "Sequential
    # reuse"); without it only the plain version is offered, as before it existed.
    ctx.set_alpn_protocols(list(ALPNS) if reuse else [ALPN])
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Tickets would let a revoked office resume a session without a fresh chain check.
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """load_cert_chain wants files: write them to a private directory, load, remove."""
    with tempfile.TemporaryDirectory(prefix="spokeshare-") as d:
        os.chmod(d, 0o700)
        cert, key = Path(d) / "c.pem", Path(d) / "k.pem"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, key_pem)
        os.close(fd)
        cert.write_bytes(cert_pem)
        ctx.load_cert_chain(cert, key)


def server_context(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    ctx = _base(1)
    # No session tickets at all (RFC 8446 §4.6.1). With OP_NO_TICKET, OpenSSL's TLS 1.3
    # server issues *stateful* tickets instead: each handshake left two sessions, each
    # holding the office's certificate, in the context's session cache (up to 20480,
    # measured 9652 after 4826 tunnels: ~10 KiB apiece that stayed). Nothing resumes them.
    ctx.num_tickets = 0
    ctx.load_verify_locations(cadata=ca_pem.decode())
    _load_chain(ctx, cert_pem, key_pem)
    return ctx


def client_context(
    ca_pem: bytes, cert_pem: bytes, key_pem: bytes, reuse: bool = True
) -> ssl.SSLContext:
    """The edge's context; ``reuse`` False offers only :data:`ALPN` (no sequential
    reuse: one stream per tunnel, ``[pool] reuse = false``)."""
    ctx = _base(0, reuse)
    ctx.check_hostname = True
    ctx.load_verify_locations(cadata=ca_pem.decode())
    _load_chain(ctx, cert_pem, key_pem)
    return ctx


def check_alpn(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bool:
    """True when the peers agreed on one of :data:`ALPNS`."""
    return ssl_object is not None and ssl_object.selected_alpn_protocol() in ALPNS


def reuse_agreed(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bool:
    """True when the peers agreed on :data:`ALPN_REUSE`: a stream that ends cleanly
    leaves the tunnel open for the next one."""
    return ssl_object is not None and ssl_object.selected_alpn_protocol() == ALPN_REUSE


def describe_handshake_error(exc: BaseException) -> str:
    """A one-line reason for a failed handshake, for the log."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    if isinstance(exc, ConnectionError | OSError):
        return f"connection failed: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def handshake_cause(exc: BaseException) -> str:
    """A short, bounded key for a failed handshake's kind (log limiting, counters).

    ``timeout``, ``refused`` (nothing listens: a dial's), ``reset``, ``closed``,
    ``tls:REASON`` (OpenSSL's reason code, e.g. ``tls:WRONG_VERSION_NUMBER``),
    ``certificate`` or ``os:ERRNO``.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate"
    if isinstance(exc, ssl.SSLError):
        return f"tls:{exc.reason}" if exc.reason else "tls"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, ConnectionError):
        return "closed"
    if isinstance(exc, OSError):
        return f"os:{exc.errno}"
    return type(exc).__name__
