"""What the hub checks at start about HQ's servers (README, "HQ: what its servers
must be told"): a relay cannot fix what HQ's servers tell the clients.

SMB3 multichannel: a file server that offers it (SMB2_GLOBAL_CAP_MULTI_CHANNEL in its
NEGOTIATE response, MS-SMB2 2.2.4) answers FSCTL_QUERY_NETWORK_INTERFACE_INFO with
its own interface addresses (MS-SMB2 3.3.5.15.11), and Windows clients then open
channels straight to them, around the tunnel. Samba offers it by default since 4.15.
The hub asks each SMB backend once, over the same connection the relay would use,
and logs one WARNING naming the fix.
"""

from __future__ import annotations

import asyncio
import logging
import os

from spokeshare import smb2_negotiate
from spokeshare.errors import DecodeError
from spokeshare.logfmt import Line

log = logging.getLogger("spokeshare.hub.hqcheck")

#: Seconds to ask one backend.
CHECK_TIMEOUT = 5.0

MULTICHANNEL_FIX = (
    "set `server multi channel support = no` in the [global] section of HQ's smb.conf "
    "and restart smbd (README, HQ section)"
)


async def negotiate(host: str, port: int) -> smb2_negotiate.NegotiateResponse:
    """One SMB2 NEGOTIATE with ``host:port``; raises OSError, TimeoutError or DecodeError."""
    async with asyncio.timeout(CHECK_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(smb2_negotiate.encode_request(os.urandom(16)))
            head = await reader.readexactly(4)
            msg = await reader.readexactly(smb2_negotiate.frame_length(head))
        finally:
            writer.close()
    return smb2_negotiate.parse_response(msg)


async def check_smb_backend(service: str, host: str, port: int) -> bool | None:
    """Warn (once) if the backend offers multichannel; True/False: offered or not,
    None: the backend could not be asked (it is logged at INFO; streams will say more)."""
    backend = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        answer = await negotiate(host, port)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, DecodeError) as exc:
        log.info(
            "%s",
            Line(
                "smb multichannel",
                service=service,
                backend=backend,
                offered="unknown",
                error=str(exc) or type(exc).__name__,
            ),
        )
        return None
    if answer.multichannel:
        log.warning(
            "%s",
            Line(
                "smb multichannel",
                service=service,
                backend=backend,
                offered="yes",
                reason="HQ's SMB server hands office PCs its own addresses and Windows "
                "opens channels around the tunnel",
                fix=MULTICHANNEL_FIX,
            ),
        )
    else:
        log.info("%s", Line("smb multichannel", service=service, backend=backend, offered="no"))
    return answer.multichannel
