"""Other daemons on the edge's host that already serve one of its LAN protocols.

An office box often still runs what the edge replaces: nmbd (``netbios aliases``),
wsdd, avahi-daemon, systemd-resolved (LLMNR and mDNS), smbd. Most of these bind with
SO_REUSEADDR (UDP 137/138, 5353, 5355, 3702), so a second responder binds without an
error and two stacks answer for one name; the rest make the edge's bind fail
(EADDRINUSE on TCP 445, 139, 5357). Either way the edge must notice, leave that one
protocol to the other daemon, keep everything else running and tell the operator
which daemon it is and how to choose.

Sans-IO core: :func:`parse_proc_net` reads the kernel's socket tables
(``/proc/net/{udp,udp6,tcp,tcp6}`` text), :func:`foreign_sockets` picks the sockets
of other processes that would receive a protocol's traffic, :func:`describe` names
the daemon and the fix. :class:`Scanner` is the thin adapter that reads ``/proc``.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: TCP state LISTEN in /proc/net/tcp (include/net/tcp_states.h).
TCP_LISTEN = 0x0A
#: At most this many lines are read from one socket table (a busy host has more
#: connections, but listeners and UDP sockets come first in no particular order:
#: the bound keeps a hostile table from costing unbounded time).
MAX_LINES = 65536

#: LAN protocols and the sockets they need: (transport, port). RFC 1002 §4 (NetBIOS
#: name 137, datagram 138), RFC 4795 §2 (LLMNR 5355), RFC 6762 §3 (mDNS 5353),
#: WS-Discovery §2.4 / DPWS (3702, metadata on 5357).
PROTOCOL_PORTS: Mapping[str, tuple[tuple[str, int], ...]] = {
    "netbios": (("udp", 137), ("udp", 138)),
    "llmnr": (("udp", 5355),),
    "mdns": (("udp", 5353),),
    "wsd": (("udp", 3702), ("tcp", 5357)),
}

#: What to tell the operator, per daemon (by its process name) and protocol.
_FIXES: Mapping[str, str] = {
    "nmbd": "stop it (systemctl disable --now nmbd) or set [netbios] enabled = false",
    "smbd": "stop it (systemctl disable --now smbd) or move the edge's listener "
    "(ports / names.address)",
    "wsdd": "stop it (systemctl disable --now wsdd) or set [discovery] wsd = false",
    "wsdd2": "stop it (systemctl disable --now wsdd2) or set [discovery] wsd = false",
    "avahi-daemon": "stop it (systemctl disable --now avahi-daemon.socket avahi-daemon) "
    "or set [discovery] mdns = false",
    # /proc/PID/comm is cut to 15 characters: systemd-resolved is "systemd-resolve".
    "systemd-resolve": "set LLMNR=no and MulticastDNS=no in /etc/systemd/resolved.conf "
    "and restart systemd-resolved, or turn the edge's protocol off in [discovery]",
    "llmnrd": "stop it (systemctl disable --now llmnrd) or set [discovery] llmnr = false",
}
#: Where a daemon serves several protocols, the fix for one of them. systemd-resolved
#: keeps its sockets for a protocol open while the protocol is on in resolved.conf,
#: whatever a link's own setting (``resolvectl llmnr IFACE no`` leaves the socket, and
#: so the edge's check, as it is), so the fix named is the global one.
_PROTOCOL_FIXES: Mapping[tuple[str, str], str] = {
    ("systemd-resolve", "llmnr"): "set LLMNR=no in /etc/systemd/resolved.conf (a "
    "[Resolve] section, or a drop-in in /etc/systemd/resolved.conf.d/) and "
    "systemctl restart systemd-resolved, or set [discovery] llmnr = false",
    ("systemd-resolve", "mdns"): "set MulticastDNS=no in /etc/systemd/resolved.conf (a "
    "[Resolve] section, or a drop-in in /etc/systemd/resolved.conf.d/) and "
    "systemctl restart systemd-resolved, or set [discovery] mdns = false",
}


@dataclass(frozen=True)
class SocketEntry:
    """One socket of the kernel's table: ``transport`` "udp"/"tcp", bound address
    (``ipaddress`` object; unspecified for a wildcard bind), port, TCP state, inode."""

    transport: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    state: int
    inode: int


@dataclass(frozen=True)
class Owner:
    """A process holding a socket: its pid and process name (``/proc/PID/comm``)."""

    pid: int
    name: str


def _address(hexaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(struct.pack("<I", struct.unpack(">I", raw)[0]))
    if len(raw) == 16:
        words = struct.unpack(">4I", raw)
        return ipaddress.IPv6Address(b"".join(struct.pack("<I", w) for w in words))
    raise ValueError(f"address of {len(raw)} bytes")


def parse_proc_net(text: str, transport: str) -> list[SocketEntry]:
    """The sockets of one ``/proc/net/{udp,udp6,tcp,tcp6}`` table.

    Lines that do not parse are skipped (the format is the kernel's, stable since
    2.6: ``sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...``, addresses
    as hex words in host (little-endian) order). At most :data:`MAX_LINES` lines.
    """
    out: list[SocketEntry] = []
    for line in text.splitlines()[1 : MAX_LINES + 1]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            host, port_hex = fields[1].split(":")
            port = int(port_hex, 16)
            if not 0 <= port <= 0xFFFF:
                continue
            out.append(
                SocketEntry(transport, _address(host), port, int(fields[3], 16), int(fields[9]))
            )
        except ValueError:
            continue
    return out


def foreign_sockets(
    entries: Iterable[SocketEntry],
    ports: Iterable[tuple[str, int]],
    own_inodes: frozenset[int],
    local_addresses: Iterable[str],
) -> list[SocketEntry]:
    """Sockets of other processes that receive what a protocol using ``ports``
    ((transport, port) pairs, see :data:`PROTOCOL_PORTS`) receives.

    A UDP socket counts when bound to the port on the wildcard address, on a
    multicast group or on one of ``local_addresses`` (the LAN interface's, the
    names' own and the subnet broadcast): each of these gets the multicast and
    broadcast queries the edge answers. A TCP socket counts when it listens on the port on the
    wildcard or one of ``local_addresses``. Sockets on loopback or on addresses of
    other interfaces do not (systemd-resolved's 127.0.0.53 stub, for instance).
    """
    wanted = set(ports)
    ours = {ipaddress.ip_address(a.split("%", 1)[0]) for a in local_addresses}
    found: list[SocketEntry] = []
    for e in entries:
        if (e.transport, e.port) not in wanted or e.inode in own_inodes or e.inode == 0:
            continue
        if e.transport == "tcp" and e.state != TCP_LISTEN:
            continue
        a = e.address
        wildcard = a.is_unspecified
        if wildcard or (e.transport == "udp" and a.is_multicast) or a in ours:
            found.append(e)
    return found


#: Interpreters whose process name says nothing: the script they run names the daemon.
_INTERPRETERS = ("python", "perl", "sh", "bash", "dash")


def process_name(comm: str, argv: list[str]) -> str:
    """``comm``, unless it is an interpreter: then the basename of the script it runs
    (``python3 /usr/sbin/wsdd -i lan0`` is wsdd)."""
    if not comm.startswith(_INTERPRETERS) or not argv:
        return comm
    for arg in argv[1:]:
        if not arg.startswith("-"):
            return arg.rsplit("/", 1)[-1] or comm
    return comm


def missing_ports(
    ports: Iterable[tuple[str, int]], others: Iterable[SocketEntry]
) -> list[tuple[str, int]]:
    """The (transport, port) pairs of ``ports`` none of ``others`` holds.

    A daemon started while the edge held one of a protocol's ports binds the rest and
    serves half of it: wsdd 0.7 started beside the edge's WS-Discovery fails to bind
    TCP 5357 (its metadata port, EADDRINUSE, logged by asyncio), keeps running on UDP
    3702, and never retries; its Probe answers then name an address nobody serves.
    """
    held = {(e.transport, e.port) for e in others}
    return [p for p in ports if p not in held]


def describe(
    protocol: str, owners: Iterable[Owner], port: int, missing: Iterable[tuple[str, int]] = ()
) -> str:
    """One log line's worth: which daemon holds the protocol's port, and the fix (one
    per daemon when several do: avahi-daemon and systemd-resolved both on 5353).

    ``missing`` (see :func:`missing_ports`): the protocol's ports the daemon does not
    hold; the line says so and the fix starts with restarting it, which binds them
    once the edge has let go. The text before the first ": " names the daemon, the
    rest is the fix (``spokeshare check`` splits it there).
    """
    named = sorted({(o.name, o.pid) for o in owners})
    gaps = ", ".join(f"{t.upper()} {p}" for t, p in missing)
    if not named:
        who = "another process (owner not visible to the edge)"
        fix = "find it with `ss -lunp` / `ss -ltnp` and stop it"
    else:
        who = ", ".join(f"{n} (pid {p})" for n, p in named)
        fixes: dict[str, str] = {}
        for n, _ in named:
            known = _PROTOCOL_FIXES.get((n, protocol)) or _FIXES.get(n)
            if known is not None:
                fixes.setdefault(n, known)
        if not fixes:
            fix = f"stop {named[0][0]} or turn {protocol} off in edge.toml"
        elif len(fixes) == 1:
            (fix,) = fixes.values()
        else:
            fix = "; ".join(f"{n}: {f}" for n, f in fixes.items())
        if gaps:
            restart = "; ".join(f"systemctl restart {n}" for n in sorted({n for n, _ in named}))
            who += f", but not {gaps} (taken when it started)"
            fix = f"restart it ({restart}) so that it binds {gaps} too, or {fix}"
    return f"{who} already serves {protocol} on port {port} of this host: {fix}"


class Scanner:
    """Reads the host's socket tables and finds their owners (``/proc``)."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc

    def sockets(self) -> list[SocketEntry]:
        out: list[SocketEntry] = []
        for table, transport in (("udp", "udp"), ("udp6", "udp"), ("tcp", "tcp"), ("tcp6", "tcp")):
            try:
                text = (self.proc / "net" / table).read_text()
            except OSError:
                continue
            out += parse_proc_net(text, transport)
        return out

    def own_inodes(self) -> frozenset[int]:
        return frozenset(self._inodes_of(self.proc / "self" / "fd"))

    @staticmethod
    def _inodes_of(fd_dir: Path) -> Iterable[int]:
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            return
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                yield int(target[8:-1])

    def owners(self, inodes: Iterable[int]) -> list[Owner]:
        """The processes holding any of ``inodes`` (only those this user may see)."""
        wanted = set(inodes)
        found: list[Owner] = []
        if not wanted:
            return found
        try:
            pids = [p for p in os.listdir(self.proc) if p.isdigit()]
        except OSError:
            return found
        me = os.getpid()
        for pid in pids:
            if int(pid) == me:
                continue
            if wanted.intersection(self._inodes_of(self.proc / pid / "fd")):
                found.append(Owner(int(pid), self._name_of(pid)))
        return found

    def _name_of(self, pid: str) -> str:
        """The daemon's name: ``comm``, or for a script (wsdd is Python) the script's."""
        try:
            comm = (self.proc / pid / "comm").read_text().strip()
            argv = (self.proc / pid / "cmdline").read_bytes()[:4096].split(b"\0")
        except OSError:
            return "?"
        return process_name(comm, [a.decode(errors="replace") for a in argv if a])

    def check(
        self,
        protocol: str,
        local_addresses: Iterable[str],
        ports: Iterable[tuple[str, int]] | None = None,
    ) -> str | None:
        """None when nobody else serves ``protocol`` here, else the log line.

        ``ports`` defaults to the protocol's standard ones (:data:`PROTOCOL_PORTS`).
        """
        wanted = PROTOCOL_PORTS[protocol] if ports is None else ports
        others = foreign_sockets(self.sockets(), wanted, self.own_inodes(), local_addresses)
        if not others:
            return None
        return describe(
            protocol,
            self.owners(e.inode for e in others),
            others[0].port,
            missing_ports(wanted, others),
        )

    def holder_of(self, transport: str, address: str, port: int) -> str:
        """Who holds ``transport`` ``address``:``port`` (after a bind failed), as text."""
        host = ipaddress.ip_address(address.split("%", 1)[0])
        inodes = [
            e.inode
            for e in self.sockets()
            if e.transport == transport
            and e.port == port
            and (e.address == host or e.address.is_unspecified)
            and (transport == "udp" or e.state == TCP_LISTEN)
        ]
        owners = sorted({(o.name, o.pid) for o in self.owners(inodes)})
        if not owners:
            return "another process"
        return ", ".join(f"{n} (pid {p})" for n, p in owners)


def fix_for(holder: str) -> str:
    """The advice for a daemon named at the start of ``holder`` (see :meth:`holder_of`)."""
    name = holder.split(" ", 1)[0]
    return _FIXES.get(name, "stop it, or give the edge another address or port")
