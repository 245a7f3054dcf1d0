"""The print host: a ``NAME.local`` name for the printers of a printing-only office.

An office enrolled for printing only (``office add NAME --services ipp``) runs its edge
without a virtual file-server name, yet HQ's printers' SRV records (RFC 6763 section 5)
need a target host the edge answers for. The edge then holds one host name of its own,
``printers.host_name`` in edge.toml, by default ``<office>-print`` (the office name is a
DNS label, checked at enrollment; cut to leave room for the suffix, RFC 1035 section
2.3.4: 63 octets a label).

Why not the box's own host name: the box is already some office server whose
``hostname.local`` is usually published by avahi-daemon or systemd-resolved on the same
box; answering for it too would make two responders on one host fight over one name
(RFC 6762 section 9), and the edge answers only for names it owns. A name derived from
the enrolled office identity is stable, the same on every reinstall, and plainly ours.

The name is published through the same machinery as the file-server names
(:class:`spokeshare.lan.mdns.MdnsPublisher`): its A record (and AAAA when the LAN's
IPv6 is served) for ``lan.address``, where the IPP listener is, probed before use (RFC
6762 section 8.1), rechecked while another host holds it, withdrawn and announced with
the hub's reachability. What carries the address records is one
``NAME._device-info._tcp`` TXT record (python-zeroconf answers A/AAAA for the server of
a registered service); no ``_smb._tcp``, since this office has no file server.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from zeroconf import ServiceInfo

from spokeshare.lan.mdns import MdnsPublisher

if TYPE_CHECKING:
    from spokeshare.config import EdgeConfig
    from spokeshare.printing.printer_sync import MdnsWithPrinters
    from spokeshare.tunnel.edge import Edge

#: Appended to the office name for the default print host name.
SUFFIX = "-print"
#: RFC 1035 section 2.3.4: a label is at most 63 octets.
MAX_LABEL = 63


def default_host_name(office: str) -> str:
    """``<office>-print`` for an office name (a DNS label): one label of at most 63
    octets, the office part cut (and any trailing ``-`` dropped) to make room."""
    stem = office[: MAX_LABEL - len(SUFFIX)].rstrip("-")
    return f"{stem}{SUFFIX}"


def host_name(cfg: EdgeConfig, office: str) -> str:
    """The print host label: ``printers.host_name``, else :func:`default_host_name`."""
    return cfg.printers.host_name or default_host_name(office)


class PrintHostPublisher(MdnsPublisher):
    """:class:`MdnsPublisher` for the print host name only: address records carried by
    one ``_device-info._tcp`` record instead of the file server's ``_smb._tcp`` pair;
    probing, conflict rechecks, withdraw and announce are the publisher's."""

    def infos(self, name: str) -> tuple[ServiceInfo, ...]:
        _, device = super().infos(name)
        return (device,)


def print_host_presence(
    cfg: EdgeConfig, office: str, edge: Edge, link_local: str | None
) -> MdnsWithPrinters | None:
    """The mDNS presence of a printing-only office: its print host name and HQ's
    printers pointing at it; None when this office does not advertise printers (no
    ``ipp`` service or listener, ``printers.advertise`` false, mDNS off)."""
    from spokeshare.lan.discovery_settings import DiscoverySettings
    from spokeshare.printing.printer_sync import MdnsWithPrinters, with_printers

    if not (cfg.printers.advertise and cfg.discovery.mdns):
        return None
    if "ipp" not in edge.bundle.services or cfg.ports.get("ipp", 0) <= 0:
        return None
    name = host_name(cfg, office)
    settings = DiscoverySettings(
        cfg.presence(host_names=(name,)),
        uuid_namespace=uuid.uuid5(uuid.NAMESPACE_URL, f"spokeshare:{office}"),
        ipv6_link_local=link_local,
        state_dir=cfg.state_dir,
    )
    presence = with_printers(PrintHostPublisher(settings), edge, host=name)
    return presence if isinstance(presence, MdnsWithPrinters) else None
