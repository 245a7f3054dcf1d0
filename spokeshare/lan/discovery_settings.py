"""What LLMNR, WS-Discovery and mDNS need: the LAN presence plus what the edge learns at start.

:class:`DiscoverySettings` pairs the validated :class:`spokeshare.config.LanPresence`
(names, workgroup, addresses: checked once, at config load) with the facts found when
the edge starts (the interface's IPv6 link-local address, the office's WSD UUID
namespace, the SMB port, the state directory). Nothing here validates the presence
again. It lives apart from the shells that use it (:mod:`spokeshare.lan.
discovery_service`, :mod:`spokeshare.lan.mdns`), so neither imports the other.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from spokeshare.config import LanPresence
from spokeshare.errors import ConfigError, UsageError
from spokeshare.lan import llmnr, onlink, wsd


@dataclass(frozen=True)
class DiscoverySettings:
    """The LAN presence and its start-time facts, as the discovery shells take them.

    ``uuid_namespace`` must be stable for the deployment (the edge derives it from the
    office name): WSD endpoint UUIDs are uuid5(namespace, NAME). ``ipv6_link_local``
    is the interface's fe80:: address (None: IPv4 only). The ports exist for tests on
    other ports; on a LAN they are the protocols' own. Raises UsageError when the
    presence has no interface or no name (the edge builds none then).
    """

    presence: LanPresence
    uuid_namespace: UUID
    ipv6_link_local: str | None = None
    smb_port: int = 445
    llmnr_port: int = llmnr.PORT
    wsd_port: int = wsd.UDP_PORT
    wsd_http_port: int = wsd.HTTP_PORT
    mdns_model: str = "RackMac"
    llmnr_ttl: int = llmnr.DEFAULT_TTL
    #: Where WS-Discovery keeps InstanceId and MetadataVersion growing across
    #: restarts and clock steps (lan/counters.py); None: wall clock and version 1.
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.presence.interface:
            raise UsageError("discovery needs the LAN interface (LanPresence.interface)")
        if not self.names:
            raise UsageError("discovery needs at least one name")

    @property
    def interface(self) -> str:
        return self.presence.interface

    @property
    def ipv4(self) -> str:
        return self.presence.address

    @property
    def workgroup(self) -> str:
        return self.presence.workgroup

    @property
    def names(self) -> tuple[str, ...]:
        """Every name answered for: the virtual names, then mDNS-only host names."""
        return tuple(n.name for n in self.presence.names) + self.presence.host_names

    @property
    def name_addresses(self) -> tuple[tuple[str, str], ...]:
        """(name, IPv4) for names that have an address of their own on the interface."""
        return tuple((n.name, n.address) for n in self.presence.names if n.address)

    @property
    def name_addresses6(self) -> tuple[tuple[str, str], ...]:
        """(name, IPv6 or "") for those names: their own IPv6 address, or "" for none
        (then no AAAA for them: the interface's IPv6 serves other names' services)."""
        return tuple(
            (name, self.presence.name_address6(name, self.ipv6_link_local) or "")
            for name, _ in self.name_addresses
        )

    @property
    def ifindex(self) -> int:
        return socket.if_nametoindex(self.interface)

    def link(self) -> onlink.Link:
        """The office link (the interface's IPv4 subnet; link-local is always on it)."""
        try:
            from spokeshare.lan.interfaces import ipv4_interface

            return onlink.Link((ipv4_interface(self.interface, self.ipv4).network,))
        except (ConfigError, OSError):  # no netmask readable: the addresses alone
            extra = [f"{a}/32" for _, a in self.name_addresses]
            return onlink.Link.of([f"{self.ipv4}/32", *extra])

    def ipv6_of(self, name: str) -> str | None:
        """The IPv6 address advertised for ``name`` (AAAA), or None for none."""
        return self.presence.name_address6(name, self.ipv6_link_local)
