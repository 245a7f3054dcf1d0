"""LAN settings for tests, built the way the edge builds them: through LanPresence."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from spokeshare.config import LanPresence, VirtualName
from spokeshare.lan.discovery_settings import DiscoverySettings


def presence(
    interface: str,
    ipv4: str,
    names: Sequence[str],
    workgroup: str = "WORKGROUP",
    **kw: object,
) -> LanPresence:
    """A LanPresence whose names are file-server names with no address of their own."""
    return LanPresence(
        interface,
        ipv4,
        workgroup,
        tuple(VirtualName(n, "smb") for n in names),
        **kw,  # type: ignore[arg-type]
    )


def discovery_settings(
    interface: str,
    ipv4: str,
    names: Sequence[str],
    namespace: UUID,
    workgroup: str = "WORKGROUP",
    **kw: object,
) -> DiscoverySettings:
    """DiscoverySettings for ``names`` on ``interface`` (``kw``: its other fields)."""
    return DiscoverySettings(presence(interface, ipv4, names, workgroup), namespace, **kw)  # type: ignore[arg-type]
