"""The edge process: the tunnel side plus, when configured, LAN presence.

Owns the lifecycle: start the tunnel side (:class:`spokeshare.tunnel.edge.Edge`),
then the LAN-presence responders; on stop, withdraw names first (so nobody is shown a
server that is going away), then close tunnels.
"""

from __future__ import annotations

import asyncio
import logging

from spokeshare.bundle import Bundle
from spokeshare.config import EdgeConfig
from spokeshare.tunnel.edge import Edge

log = logging.getLogger("spokeshare.edge")


class EdgeDaemon:
    def __init__(self, cfg: EdgeConfig, bundle: Bundle) -> None:
        self.cfg = cfg
        self.bundle = bundle
        self.edge = Edge(cfg, bundle)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await self.edge.start()
        log.info(
            "edge for office %s up: names %s, hub %s",
            self.bundle.office,
            ", ".join(n.name for n in self.cfg.names),
            self.bundle.hub_name,
        )
        try:
            await self._stop.wait()
        finally:
            await self.edge.close()
