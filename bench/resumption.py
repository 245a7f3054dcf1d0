#!/usr/bin/env python3
"""What TLS 1.3 session resumption would save the hub per refill, against a full handshake.

Usage::

    .venv/bin/python bench/resumption.py [--handshakes N]

The project's own contexts (``tunnel.tls``: TLS 1.3, mutual, the deployment's CA) for a
throwaway deployment, the two ends joined by memory BIOs in one process, so only the
TLS work is measured (no sockets, no event loop). The hub's CPU (process time around
its calls) per handshake is compared for:

- a full handshake, the hub as configured (``num_tickets = 0``, ``OP_NO_TICKET``);
- resumption: the hub issues one ticket per handshake (its context changed here only)
  and the edge offers the last session it received (RFC 8446 §2.2, PSK with (EC)DHE,
  the only mode OpenSSL's server accepts by default).

The answer decides between sequential reuse (no handshake at all for a stream that
follows a clean one, docs/protocol.md) and resumption for refills; it is quoted in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spokeshare import bundle, enrollment  # noqa: E402
from spokeshare.tunnel import tls  # noqa: E402


def _server(directory: Path, tickets: bool) -> ssl.SSLContext:
    ctx = tls.server_context(
        (directory / "ca.crt").read_bytes(),
        (directory / "hub.crt").read_bytes(),
        (directory / "hub.key").read_bytes(),
    )
    if tickets:
        ctx.options &= ~ssl.OP_NO_TICKET
        ctx.num_tickets = 1
    return ctx


def handshake(
    client: ssl.SSLContext, server: ssl.SSLContext, name: str, session: ssl.SSLSession | None
) -> tuple[float, ssl.SSLSession | None, bool]:
    """One handshake over memory BIOs, then one byte from the hub (which carries its
    ticket, if any). Returns the hub's process time in seconds, the edge's session and
    whether the hub resumed."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=name, session=session)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    hub_cpu = 0.0
    c_done = s_done = False
    while not (c_done and s_done):
        if not c_done:
            try:
                c.do_handshake()
                c_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not s_done:
            t0 = time.process_time()
            try:
                s.do_handshake()
                s_done = True
            except ssl.SSLWantReadError:
                pass
            hub_cpu += time.process_time() - t0
        c_in.write(s_out.read())
    t0 = time.process_time()
    s.write(b"x")
    s.getpeercert(binary_form=True)  # the hub reads the office from it either way
    hub_cpu += time.process_time() - t0
    c_in.write(s_out.read())
    c.read(1)
    return hub_cpu, c.session, s.session_reused


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--handshakes", type=int, default=500, help="handshakes per variant")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spokeshare-resumption-") as d:
        root = Path(d)
        enrollment.init(
            root / "hq", "hub.test", ["127.0.0.1:1"], {"smb": "127.0.0.1:2"}, root / "state"
        )
        enrollment.add_office(root / "hq", "nyc", None, root / "nyc.bundle")
        b = bundle.read(root / "nyc.bundle")
        client = tls.client_context(b.ca_pem, b.cert_pem, b.key_pem)
        client.options &= ~ssl.OP_NO_TICKET  # the edge must accept a ticket to offer one
        results: dict[str, float] = {}
        for label, tickets in (("full", False), ("resumed", True)):
            server = _server(root / "hq", tickets)
            total, resumed = 0.0, 0
            session: ssl.SSLSession | None = None
            for _ in range(a.handshakes):
                cpu, new, reused = handshake(client, server, b.hub_name, session)
                total += cpu
                resumed += reused
                if tickets and new is not None and new.has_ticket:
                    session = new
            results[label] = total / a.handshakes
            print(
                f"{label:8} hub CPU {results[label] * 1e6:6.0f} us per handshake "
                f"({resumed}/{a.handshakes} resumed)"
            )
        print(f"resumed/full: {results['resumed'] / results['full']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
