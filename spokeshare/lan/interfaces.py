"""What the LAN interface looks like: its IPv4 network and IPv6 link-local address.

Read from the kernel at start (``SIOCGIFNETMASK``, ``/proc/net/if_inet6``) so the
configuration names only the interface and its address.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

from spokeshare.errors import ConfigError

_SIOCGIFNETMASK = 0x891B
_SIOCGIFADDR = 0x8915


def ipv4_interface(ifname: str, address: str) -> ipaddress.IPv4Interface:
    """``address`` with the prefix length the interface has (for the broadcast address).

    Raises ConfigError when there is no interface ``ifname`` (a name the operator must
    correct), OSError (``EADDRNOTAVAIL``) when it has no IPv4 address: not yet, at boot
    before DHCP, which a restart outlives (the units' RestartPreventExitStatus=2 keeps
    only configuration errors down).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(
                s.fileno(), _SIOCGIFNETMASK, struct.pack("256s", ifname.encode()[:15])
            )
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise OSError(
                    exc.errno,
                    f"interface {ifname} has no IPv4 address (yet; lan.address {address})",
                ) from None
            raise ConfigError("lan", "interface", f"{ifname}: {exc.strerror or exc}") from None
    mask = socket.inet_ntoa(res[20:24])
    return ipaddress.IPv4Interface(f"{address}/{mask}")


def ipv6_link_local(
    ifname: str,
    proc: Path = Path("/proc/net/if_inet6"),
    exclude: set[str] | frozenset[str] = frozenset(),
) -> str | None:
    """The interface's fe80::/10 address, if it has one (the lowest, for a stable
    choice; addresses in ``exclude``, e.g. the names' own, are skipped)."""
    skip = {ipaddress.IPv6Address(a) for a in exclude}
    found: list[ipaddress.IPv6Address] = []
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) == 6 and fields[5] == ifname:
            addr = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
            if addr.is_link_local and addr not in skip:
                found.append(addr)
    return str(min(found)) if found else None


def interface_of(address: str) -> str | None:
    """The interface holding IPv4 ``address`` (its primary address), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                res = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on this interface
            if socket.inet_ntoa(res[20:24]) == address:
                return name
    return None
