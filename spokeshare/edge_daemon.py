"""The edge process: the tunnel side plus the LAN presence of its virtual names.

Owns the lifecycle:

- start the tunnel side (:class:`spokeshare.tunnel.edge.Edge`), then the name
  services on the LAN interface: NetBIOS names and browse announcements, WS-Discovery,
  LLMNR and mDNS/DNS-SD;
- while the hub is unreachable for longer than ``discovery.withdraw_after``, withdraw
  the names on every protocol (so nobody is shown a server that cannot answer) and
  announce them again when the hub is back; both transitions are logged;
- on stop, withdraw names first (NetBIOS release, browse server type 0, WSD Bye, mDNS
  goodbye), then close the tunnels.

LAN presence needs the LAN interface: ``lan.interface``, or the one holding
``lan.address``; without either the edge relays only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from ipaddress import IPv4Address
from typing import Any, Protocol

from spokeshare.bundle import Bundle
from spokeshare.config import EdgeConfig, for_services
from spokeshare.lan import interfaces
from spokeshare.tunnel.edge import Edge, HubState

log = logging.getLogger("spokeshare.edge")


class Presence(Protocol):
    """What every LAN-presence service offers the daemon."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _NetbiosPresence:
    """NetBIOS withdraws by releasing its names and leaving the browse list (stop),
    and comes back by registering and announcing again (start)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()

    async def withdraw(self) -> None:
        await self.service.stop()

    async def announce(self) -> None:
        await self.service.start()


class EdgeDaemon:
    def __init__(self, cfg: EdgeConfig, bundle: Bundle) -> None:
        # Default names follow the bundle: a printing-only office has no file server.
        cfg = for_services(cfg, bundle.services)
        self.cfg = cfg
        self.bundle = bundle
        self.edge = Edge(cfg, bundle)
        self.presence: list[Any] = []
        self.withdrawn = False
        self._withdraw_timer: asyncio.TimerHandle | None = None
        self._transition: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def __repr__(self) -> str:
        return f"<EdgeDaemon {self.bundle.office} withdrawn={self.withdrawn} {self.edge!r}>"

    def stop(self) -> None:
        self._stop.set()

    def statistics(self) -> dict[str, Any]:
        return {
            **self.edge.statistics(),
            "withdrawn": self.withdrawn,
            "presence": [type(p).__name__ for p in self.presence],
        }

    async def run(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.close()

    async def start(self) -> None:
        await self.edge.start()
        self.edge.on_hub_state.append(self._hub_state_changed)
        address = IPv4Address(self.cfg.lan_address)
        if not self.cfg.lan_interface and not (address.is_unspecified or address.is_loopback):
            found = interfaces.interface_of(self.cfg.lan_address)
            if found:
                log.info("LAN interface %s holds %s", found, self.cfg.lan_address)
                self.cfg = dataclasses.replace(self.cfg, lan_interface=found)
        if self.cfg.lan_interface:
            self.presence = self._build_presence()
            for p in self.presence:
                await p.start()
        else:
            log.warning(
                "no LAN interface (set lan.interface, or lan.address to an address of one): "
                "name services are off, relaying only"
            )
        log.info(
            "edge for office %s up: names %s, hub %s",
            self.bundle.office,
            ", ".join(n.name for n in self.cfg.names) or "none",
            self.bundle.hub_name,
        )

    async def close(self) -> None:
        if self._withdraw_timer is not None:
            self._withdraw_timer.cancel()
        if self._transition is not None:
            self._transition.cancel()
        for p in reversed(self.presence):
            try:
                await p.stop()
            except OSError as exc:
                log.warning("stopping %s: %s", type(p).__name__, exc)
        await self.edge.close()

    # -- what is on the LAN ----------------------------------------------------------
    def _build_presence(self) -> list[Any]:
        from spokeshare.lan.discovery_service import DiscoverySettings, LlmnrService, WsdService
        from spokeshare.lan.mdns import MdnsPublisher
        from spokeshare.lan.netbios_service import NetbiosService, NetbiosSettings

        cfg = self.cfg
        out: list[Any] = []
        if not cfg.names:
            # A printing-only office: no file-server name to register, announce or answer.
            log.info("no virtual names: NetBIOS, WS-Discovery, LLMNR and mDNS names are off")
            return out
        iface = interfaces.ipv4_interface(cfg.lan_interface, cfg.lan_address)
        if cfg.netbios.enabled:
            nb = cfg.netbios
            settings = NetbiosSettings.for_interface(
                iface,
                cfg.workgroup,
                [(n.name, n.comment) for n in cfg.names],
                cfg.lan_interface,
                announce_initial_interval=nb.announce_initial_interval,
                announce_max_interval=nb.announce_max_interval,
                wins_server=IPv4Address(nb.wins_server) if nb.wins_server else None,
                name_addresses=tuple(
                    (n.name, IPv4Address(n.address)) for n in cfg.names if n.address
                ),
            )
            out.append(_NetbiosPresence(NetbiosService(settings)))
        d = cfg.discovery
        if d.wsd or d.llmnr or d.mdns:
            disc = DiscoverySettings(
                interface=cfg.lan_interface,
                ipv4=cfg.lan_address,
                names=tuple(n.name for n in cfg.names),
                uuid_namespace=uuid.uuid5(uuid.NAMESPACE_URL, f"spokeshare:{self.bundle.office}"),
                workgroup=cfg.workgroup,
                ipv6_link_local=interfaces.ipv6_link_local(cfg.lan_interface),
                smb_port=cfg.ports.get("smb", 445) or 445,
                name_addresses=tuple((n.name, n.address) for n in cfg.names if n.address),
            )
            if d.llmnr:
                out.append(LlmnrService(disc))
            if d.wsd:
                out.append(WsdService(disc))
            if d.mdns:
                out.append(MdnsPublisher(disc))
        return out

    # -- withdrawing while HQ is away ------------------------------------------------
    def _hub_state_changed(self, state: HubState) -> None:
        loop = asyncio.get_running_loop()
        if state in (HubState.DOWN, HubState.REVOKED):
            if self._withdraw_timer is None and not self.withdrawn and self.presence:
                self._withdraw_timer = loop.call_later(
                    self.cfg.discovery.withdraw_after, self._start_transition, True
                )
        elif state is HubState.UP:
            if self._withdraw_timer is not None:
                self._withdraw_timer.cancel()
                self._withdraw_timer = None
            if self.withdrawn:
                self._start_transition(False)

    def _start_transition(self, withdraw: bool) -> None:
        self._withdraw_timer = None
        previous = self._transition

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self._apply(withdraw)

        self._transition = asyncio.get_running_loop().create_task(run())

    async def _apply(self, withdraw: bool) -> None:
        if withdraw == self.withdrawn:
            return
        if withdraw:
            log.warning(
                "hub unreachable for %.0fs: withdrawing %s from the LAN",
                self.cfg.discovery.withdraw_after,
                ", ".join(n.name for n in self.cfg.names),
            )
        else:
            log.info(
                "hub reachable again: announcing %s on the LAN",
                ", ".join(n.name for n in self.cfg.names),
            )
        self.withdrawn = withdraw
        for p in self.presence:
            try:
                await (p.withdraw() if withdraw else p.announce())
            except OSError as exc:
                log.error(
                    "%s %s failed: %s",
                    type(p).__name__,
                    "withdraw" if withdraw else "announce",
                    exc,
                )
