"""A bounded handshake flood against a TLS port on loopback (the hub's internet-facing port).

Each connection is one of three kinds, in turn: 64 random bytes then close; the first
half of a real TLS 1.3 ClientHello (made by Python's ssl module for this run) then a
stall of ``stall`` seconds; nothing at all (connect, close at once). Connections are
opened at ``rate`` per second for ``duration`` seconds; at most ``rate * (stall + 1)``
are open at once. Loopback only.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass


def truncated_client_hello() -> bytes:
    """The first half of a TLS 1.3 ClientHello record, as Python's ssl module sends it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="hub.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    if not hello or hello[0] != 0x16:  # RFC 8446 §5.1: ContentType handshake(22)
        raise RuntimeError("no ClientHello produced")
    return hello[: len(hello) // 2]


@dataclass
class FloodResult:
    opened: int = 0
    refused: int = 0


async def _one(kind: int, port: int, hello: bytes, stall: float, res: FloodResult) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        res.refused += 1
        return
    res.opened += 1
    try:
        if kind == 0:
            writer.write(os.urandom(64))
            await writer.drain()
        elif kind == 1:
            writer.write(hello)
            await writer.drain()
            try:
                await asyncio.wait_for(reader.read(1), stall)
            except TimeoutError:
                pass
    except OSError:
        pass
    finally:
        writer.transport.abort()


async def flood(port: int, rate: int, duration: float, stall: float = 5.0) -> FloodResult:
    """Run one round; return how many connections were opened (and refused)."""
    hello = truncated_client_hello()
    res = FloodResult()
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    start = loop.time()
    total = int(rate * duration)
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t = loop.create_task(_one(i % 3, port, hello, stall, res))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return res
