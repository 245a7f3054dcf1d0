"""Configuration: one typed tree per role, loaded once from TOML and validated.

Unknown keys are rejected with the file and the dotted key named; every value is
type- and range-checked here so the daemons never see a half-valid config. The
files are documented key by key in etc/hub.toml.example and etc/edge.toml.example.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from spokeshare.errors import ConfigError
from spokeshare.tunnel.wire import valid_service_name

DEFAULT_HUB_PORT = 7443
DEFAULT_SERVICES = {"smb": "127.0.0.1:445", "ipp": "127.0.0.1:631"}
#: Where each service listens on the office LAN by default.
DEFAULT_LAN_PORTS = {"smb": 445, "ipp": 631, "lpd": 515, "raw": 9100}
_NETBIOS_NAME = re.compile(r"^[A-Z0-9!#$%&'()\-.@^_{}~]{1,15}$")


def parse_hostport(value: str, source: str, key: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    m = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$", value) or re.match(r"^([^:\[\]]+):(\d+)$", value)
    if not m:
        raise ConfigError(source, key, f"{value!r} is not HOST:PORT")
    port = int(m.group(2))
    if not 0 < port < 65536:
        raise ConfigError(source, key, f"port {port} out of range")
    return m.group(1), port


#: RFC 1179 section 3.1: an LPD client connects from a source port in 721-731.
RFC1179_SOURCE_PORTS = range(721, 732)


@dataclass(frozen=True)
class Backend:
    host: str
    port: int
    #: Connect from a reserved source port, RFC 1179 section 3.1 (721-731), for LPD
    #: servers that refuse other ports. Binding one needs root or CAP_NET_BIND_SERVICE.
    reserved_source_port: bool = False


@dataclass(frozen=True)
class HubLimits:
    #: Seconds a tunnel may take to send its whole open header once it has begun.
    header_timeout: float = 10.0
    #: Seconds a tunnel may sit in the edge's pool without opening a stream.
    idle_timeout: float = 600.0
    #: Seconds for the TLS handshake.
    handshake_timeout: float = 10.0
    #: Seconds to connect to a backend.
    backend_connect_timeout: float = 5.0
    #: Concurrent tunnels (streams, pooled and control) one office may hold.
    max_tunnels_per_office: int = 4096
    #: TLS handshakes in progress at once. At the cap the oldest one is dropped to make
    #: room (a handshake that takes long is a stalled or hostile client; an edge's
    #: completes in one round trip), which bounds the memory a flood can take.
    max_handshakes: int = 256


@dataclass(frozen=True)
class HubConfig:
    source: str
    listen: tuple[tuple[str, int], ...]
    services: dict[str, Backend]
    state_dir: Path
    heartbeat_interval: float = 5.0
    limits: HubLimits = field(default_factory=HubLimits)
    #: HOST:PORT of the status page and metrics (None: off).
    status_listen: tuple[str, int] | None = None
    #: Worker processes sharing the listen ports (SO_REUSEPORT): one event loop per
    #: core for a hub that relays more than one core can encrypt.
    workers: int = 1
    #: WAN socket options of the tunnels the hub accepts ([sockets], as on the edge).
    sockets: SocketConfig = field(default_factory=lambda: SocketConfig())
    #: At start, ask each SMB backend (service ``smb`` or port 445) what it offers its
    #: clients and warn about what the relay cannot fix (README, HQ section).
    check_backends: bool = True


@dataclass(frozen=True)
class VirtualName:
    """A name the edge answers for on the LAN, standing for one hub service."""

    name: str
    service: str
    comment: str = "spokeshare"
    #: LAN address this name answers with and listens on (default: lan.address).
    #: Two names carrying different services over SMB need two addresses (port 445).
    address: str = ""
    #: LAN TCP port for the name's service (default: ports[service], else ports.smb).
    port: int = -1
    #: IPv6 address of a name that has its own IPv4 ``address`` (e.g. a second
    #: link-local address on the LAN interface). Without it such a name is advertised
    #: and served over IPv4 only; names without their own ``address`` share the
    #: interface's link-local address.
    address6: str = ""


@dataclass(frozen=True)
class PoolConfig:
    #: Tunnels kept open and idle, ready for the next client connection.
    min_idle: int = 4
    #: Idle tunnels beyond which the pool stops opening more.
    max_idle: int = 64
    #: Tunnels opened at once while growing.
    max_connecting: int = 8
    #: Seconds an idle tunnel is kept before it is replaced (below the hub's idle_timeout).
    max_age: float = 240.0
    #: Seconds a client connection waits for a tunnel before it is closed.
    open_timeout: float = 1.0
    connect_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


@dataclass(frozen=True)
class SocketConfig:
    #: TCP_USER_TIMEOUT and keepalive: how fast a dead WAN link is noticed (seconds) on
    #: an idle pool tunnel or the control channel.
    user_timeout: float = 10.0
    #: TCP_USER_TIMEOUT while a tunnel carries a client's stream (seconds): a WAN
    #: outage this long stalls the stream instead of cutting it. Above what SMB clients
    #: tolerate themselves (Windows about 60 s, smbclient 20 s unless -t says more).
    stream_user_timeout: float = 120.0
    keepalive_idle: int = 5
    keepalive_interval: int = 2
    keepalive_count: int = 3
    #: 0 leaves buffers to the kernel's autotuning (tcp_rmem/tcp_wmem maxima, the right
    #: choice when those allow the bandwidth-delay product); otherwise bytes to force.
    buffer_bytes: int = 0
    congestion: str = "bbr"
    #: Cap on the retransmission timeout (seconds, 1-120; TCP_RTO_MAX_MS, Linux 6.15+):
    #: after an outage the tunnel retries at most this long after the link returns,
    #: instead of RFC 6298's doubling. 0 leaves the kernel's backoff (up to 120 s).
    rto_max: float = 1.0


@dataclass(frozen=True)
class NetbiosConfig:
    """NetBIOS over TCP/IP on the LAN (RFC 1001/1002, MS-BRWS)."""

    enabled: bool = True
    #: NetBIOS session service port (139): the edge answers session requests itself.
    #: 0 turns it off.
    session_port: int = 139
    #: Host announcement schedule (MS-BRWS 3.2.6): starts at 1 minute, doubles to 12.
    announce_initial_interval: float = 60.0
    announce_max_interval: float = 720.0
    #: A WINS server to register the names with too (empty: broadcast only).
    wins_server: str = ""


@dataclass(frozen=True)
class DiscoveryConfig:
    """WS-Discovery, mDNS/DNS-SD and LLMNR on the LAN, and withdrawing names."""

    wsd: bool = True
    mdns: bool = True
    llmnr: bool = True
    #: Seconds the hub may be unreachable before every protocol withdraws the names
    #: (so nobody is shown a server that cannot answer); they return with the hub.
    withdraw_after: float = 30.0


@dataclass(frozen=True)
class PrintersConfig:
    """HQ's printers on the office LAN (DNS-SD, :mod:`spokeshare.printing.printer_sync`)."""

    #: Advertise the printers HQ's CUPS shares with this office (needs the ipp service).
    advertise: bool = True
    #: Seconds between two syncs with HQ's CUPS. A printer added, changed or removed at
    #: HQ shows on the LAN within this plus a few seconds of probing; at most
    #: :data:`MAX_PRINTER_SYNC_INTERVAL`, so within the minute.
    sync_interval: float = 20.0
    #: The ``NAME.local`` host name the printers' SRV records point at when the edge
    #: has no virtual file-server name on ``lan.address`` (an office enrolled for
    #: printing only). Empty: ``<office>-print`` (:mod:`spokeshare.printing.print_host`).
    host_name: str = ""


#: RFC 1035 section 2.3.1 / RFC 1123 section 2.1: one host-name label.
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

#: Upper bound of printers.sync_interval (changes reach the LAN within 60 s).
MAX_PRINTER_SYNC_INTERVAL = 50.0


@dataclass(frozen=True)
class EdgeConfig:
    source: str
    bundle: Path
    state_dir: Path
    lan_interface: str
    lan_address: str
    workgroup: str
    names: tuple[VirtualName, ...]
    ports: dict[str, int]
    pool: PoolConfig = field(default_factory=PoolConfig)
    sockets: SocketConfig = field(default_factory=SocketConfig)
    #: Seconds without a heartbeat from the hub before it counts as unreachable.
    hub_dead_after: float = 15.0
    netbios: NetbiosConfig = field(default_factory=NetbiosConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    #: Serve and advertise the LAN interface's IPv6 link-local address (and names'
    #: address6) too; false: IPv4 only, no AAAA and no IPv6 XAddrs anywhere.
    lan_ipv6: bool = True
    #: True when edge.toml has no ``names`` key: the names are then :data:`DEFAULT_NAMES`,
    #: kept only where the office's bundle allows their service (:func:`for_services`).
    default_names: bool = False
    printers: PrintersConfig = field(default_factory=PrintersConfig)


#: The file-server name an edge carries when edge.toml names none.
DEFAULT_NAMES = (VirtualName("GLOBAL-NFS", "smb"),)


def for_services(cfg: EdgeConfig, services: tuple[str, ...]) -> EdgeConfig:
    """``cfg`` for an office allowed ``services`` (the bundle's list).

    Default names (edge.toml has no ``names``) are kept only when the office may use
    their service: an office enrolled for printing only (``--services ipp``) then runs
    without a file-server name. Names edge.toml gives are left as they are, so a name
    the bundle does not allow is still refused by :func:`edge_listeners`.
    """
    if not cfg.default_names:
        return cfg
    kept = tuple(n for n in cfg.names if n.service in services)
    return replace(cfg, names=kept, default_names=False)


# -- strict TOML reading ---------------------------------------------------------------

T = TypeVar("T")


class _Table:
    """A TOML table being consumed; whatever is left at the end is an unknown key."""

    def __init__(self, source: str, prefix: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, prefix, "must be a table")
        self.source, self.prefix, self.data = source, prefix, dict(data)

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def take(self, name: str, kind: type[T] | tuple[type, ...], default: Any = ...) -> Any:
        if name not in self.data:
            if default is ...:
                raise ConfigError(self.source, self.key(name), "is required")
            return default
        value = self.data.pop(name)
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, float))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ConfigError(self.source, self.key(name), f"must be {want}, not {value!r}")
        return value

    def table(self, name: str) -> _Table:
        return _Table(self.source, self.key(name), self.data.pop(name, {}))

    def done(self) -> None:
        if self.data:
            bad = sorted(self.data)[0]
            raise ConfigError(self.source, self.key(bad), "unknown key")


def _dataclass_from(table: _Table, cls: Callable[..., T], positive: bool = True) -> T:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        default = f.default
        kind: type = type(default)
        if f.name in table.data:
            value = table.take(f.name, kind)
            if positive and isinstance(value, int | float) and value < 0:
                raise ConfigError(table.source, table.key(f.name), "must not be negative")
            kwargs[f.name] = value
    table.done()
    return cls(**kwargs)


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "no such file") from None
    except PermissionError:
        raise ConfigError(str(path), "", "permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None


def load_hub(path: Path) -> HubConfig:
    src = str(path)
    root = _Table(src, "", _load_toml(path))
    hub = root.table("hub")
    listen_raw = hub.take("listen", list, [f"0.0.0.0:{DEFAULT_HUB_PORT}"])
    listen = tuple(
        parse_hostport(v, src, hub.key("listen")) if isinstance(v, str) else _bad(src, "hub.listen")
        for v in listen_raw
    )
    if not listen:
        raise ConfigError(src, "hub.listen", "needs at least one address")
    state_dir = Path(hub.take("state_dir", str, "/var/lib/spokeshare/hub"))
    heartbeat = hub.take("heartbeat_interval", float, 5.0)
    status_raw = hub.take("status_listen", str, "")
    status_listen = parse_hostport(status_raw, src, "hub.status_listen") if status_raw else None
    workers = hub.take("workers", int, 1)
    check_backends = hub.take("check_backends", bool, True)
    if not 1 <= workers <= 64:
        raise ConfigError(src, "hub.workers", "must be between 1 and 64")
    if not 0.05 <= heartbeat <= 300:
        raise ConfigError(src, "hub.heartbeat_interval", "must be between 0.05 and 300 seconds")
    hub.done()
    services: dict[str, Backend] = {}
    svc_root = root.table("services")
    for name in list(svc_root.data):
        if not valid_service_name(name):
            raise ConfigError(src, svc_root.key(name), "service names are lower-case [a-z0-9-]")
        t = svc_root.table(name)
        host, port = parse_hostport(t.take("backend", str), src, t.key("backend"))
        reserved = t.take("reserved_source_port", bool, False)
        t.done()
        services[name] = Backend(host, port, reserved)
    svc_root.done()
    if not services:
        raise ConfigError(src, "services", "no service is defined")
    limits = _dataclass_from(root.table("limits"), HubLimits)
    if limits.max_handshakes < 1:
        raise ConfigError(src, "limits.max_handshakes", "must be at least 1")
    sockets = _check_sockets(src, _dataclass_from(root.table("sockets"), SocketConfig))
    root.done()
    return HubConfig(
        src, listen, services, state_dir, heartbeat, limits, status_listen, workers, sockets,
        check_backends,
    )


def _check_sockets(src: str, cfg: SocketConfig) -> SocketConfig:
    if cfg.rto_max and not 1.0 <= cfg.rto_max <= 120.0:
        raise ConfigError(src, "sockets.rto_max", "must be 0 (kernel default) or 1 to 120 seconds")
    if cfg.stream_user_timeout < cfg.user_timeout:
        raise ConfigError(
            src, "sockets.stream_user_timeout", "must not be shorter than sockets.user_timeout"
        )
    return cfg


def _bad(src: str, key: str) -> tuple[str, int]:
    raise ConfigError(src, key, "entries must be strings HOST:PORT")


def check_netbios_name(name: str, source: str, key: str) -> str:
    up = name.upper()
    if not _NETBIOS_NAME.match(up):
        raise ConfigError(source, key, f"{name!r} is not a NetBIOS name (1-15 characters)")
    return up


def load_edge(path: Path | None, overrides: dict[str, Any] | None = None) -> EdgeConfig:
    """Load edge.toml (or defaults when ``path`` is None), then apply CLI overrides.

    ``overrides`` may hold ``bundle``, ``lan_address``, ``ports`` (service -> port).
    """
    overrides = overrides or {}
    src = str(path) if path else "<defaults>"
    root = _Table(src, "", _load_toml(path) if path else {})
    edge = root.table("edge")
    bundle = Path(
        overrides.get("bundle") or edge.take("bundle", str, "/etc/spokeshare/office.bundle")
    )
    edge.data.pop("bundle", None)
    state_dir = Path(edge.take("state_dir", str, "/var/lib/spokeshare/edge"))
    dead_after = edge.take("hub_dead_after", float, 15.0)
    edge.done()
    lan = root.table("lan")
    interface = lan.take("interface", str, "")
    address = overrides.get("lan_address") or lan.take("address", str, "0.0.0.0")
    lan.data.pop("address", None)
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise ConfigError(src, "lan.address", f"{address!r} is not an IPv4 address") from None
    workgroup = check_netbios_name(lan.take("workgroup", str, "WORKGROUP"), src, "lan.workgroup")
    lan_ipv6 = lan.take("ipv6", bool, True)
    lan.done()
    names: list[VirtualName] = []
    default_names = "names" not in root.data
    raw_names = root.data.pop("names", [])
    if not isinstance(raw_names, list):
        raise ConfigError(src, "names", "must be an array of tables (empty: no virtual name)")
    for i, raw in enumerate(raw_names):
        t = _Table(src, f"names[{i}]", raw)
        nm = check_netbios_name(t.take("name", str), src, t.key("name"))
        svc = t.take("service", str, "smb")
        comment = t.take("comment", str, "spokeshare")
        naddr = t.take("address", str, "")
        if naddr:
            try:
                ipaddress.IPv4Address(naddr)
            except ValueError:
                raise ConfigError(
                    src, t.key("address"), f"{naddr!r} is not an IPv4 address"
                ) from None
        nport = t.take("port", int, -1)
        if nport != -1 and not 0 <= nport < 65536:
            raise ConfigError(src, t.key("port"), "port out of range")
        naddr6 = t.take("address6", str, "")
        if naddr6:
            try:
                ipaddress.IPv6Address(naddr6)
            except ValueError:
                raise ConfigError(
                    src, t.key("address6"), f"{naddr6!r} is not an IPv6 address"
                ) from None
            if not naddr:
                raise ConfigError(
                    src, t.key("address6"), "needs the name's own IPv4 address too"
                )
        t.done()
        if len(comment) > 43:
            raise ConfigError(src, t.key("comment"), "at most 43 characters (MS-BRWS 2.2.1)")
        if nm in {n.name for n in names}:
            raise ConfigError(src, t.key("name"), f"{nm} is configured twice")
        names.append(VirtualName(nm, svc, comment, naddr, nport, naddr6))
    if default_names:
        names = list(DEFAULT_NAMES)
    ports_t = root.table("ports")
    ports = dict(DEFAULT_LAN_PORTS)
    for svc in list(ports_t.data):
        p = ports_t.take(svc, int)
        if not 0 <= p < 65536:
            raise ConfigError(src, ports_t.key(svc), "port out of range")
        ports[svc] = p
    ports_t.done()
    ports.update(overrides.get("ports", {}))
    pool = _dataclass_from(root.table("pool"), PoolConfig)
    if pool.min_idle > pool.max_idle:
        raise ConfigError(src, "pool.min_idle", "exceeds pool.max_idle")
    sockets = _check_sockets(src, _dataclass_from(root.table("sockets"), SocketConfig))
    netbios = _dataclass_from(root.table("netbios"), NetbiosConfig)
    if netbios.wins_server:
        try:
            ipaddress.IPv4Address(netbios.wins_server)
        except ValueError:
            raise ConfigError(src, "netbios.wins_server", "not an IPv4 address") from None
    if not 0 < netbios.announce_initial_interval <= netbios.announce_max_interval:
        raise ConfigError(
            src,
            "netbios.announce_initial_interval",
            "must be positive and at most announce_max_interval",
        )
    discovery = _dataclass_from(root.table("discovery"), DiscoveryConfig)
    printers = _dataclass_from(root.table("printers"), PrintersConfig)
    if not 1.0 <= printers.sync_interval <= MAX_PRINTER_SYNC_INTERVAL:
        raise ConfigError(
            src,
            "printers.sync_interval",
            f"must be between 1 and {MAX_PRINTER_SYNC_INTERVAL:.0f} seconds",
        )
    if printers.host_name and not _DNS_LABEL.match(printers.host_name):
        raise ConfigError(
            src,
            "printers.host_name",
            "must be one DNS label (1-63 letters, digits or '-', not starting or "
            "ending with '-'; no '.local')",
        )
    root.done()
    return EdgeConfig(
        src,
        bundle,
        state_dir,
        interface,
        address,
        workgroup,
        tuple(names),
        ports,
        pool,
        sockets,
        dead_after,
        netbios,
        discovery,
        lan_ipv6=lan_ipv6,
        default_names=default_names,
        printers=printers,
    )


def edge_listeners(cfg: EdgeConfig, services: tuple[str, ...]) -> dict[tuple[str, int], str]:
    """Which (LAN address, port) carries which hub service.

    Every service the office may use and that has a LAN port gets a listener on
    lan.address; each virtual name adds its own (address, port). One (address, port)
    can carry only one service.
    """
    out: dict[tuple[str, int], str] = {}
    for svc in services:
        if cfg.ports.get(svc, 0) > 0:  # port 0 turns a service's LAN listener off
            out[(cfg.lan_address, cfg.ports[svc])] = svc
    for i, n in enumerate(cfg.names):
        if cfg.default_names and n.service not in services:
            continue  # a default name the office may not use (see for_services)
        if n.service not in services:
            raise ConfigError(
                cfg.source,
                f"names[{i}].service",
                f"this office may not use service {n.service!r} (bundle allows "
                f"{', '.join(services)})",
            )
        port = n.port if n.port != -1 else cfg.ports.get(n.service, cfg.ports["smb"])
        if port == 0:
            continue
        key = (n.address or cfg.lan_address, port)
        if out.get(key, n.service) != n.service:
            raise ConfigError(
                cfg.source,
                f"names[{i}]",
                f"{key[0]}:{key[1]} already carries service {out[key]!r}; "
                "give this name its own address",
            )
        out[key] = n.service
    return out


def render_hub_toml(
    listen: list[tuple[str, int]], services: dict[str, tuple[str, int]], state_dir: Path
) -> str:
    """The hub.toml that ``spokeshare init`` writes."""
    lines = [
        "# spokeshare hub configuration (see etc/hub.toml.example for every key)",
        "[hub]",
        "listen = [" + ", ".join(f'"{_hp(h, p)}"' for h, p in listen) + "]",
        f'state_dir = "{state_dir}"',
        "",
    ]
    for name, (h, p) in services.items():
        lines += [f"[services.{name}]", f'backend = "{_hp(h, p)}"', ""]
    return "\n".join(lines)


def _hp(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
