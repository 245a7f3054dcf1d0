"""Configuration: one typed tree per role, loaded once from TOML and validated.

Unknown keys are rejected with the file and the dotted key named; every value is
type- and range-checked here so the daemons never see a half-valid config. The
files are documented key by key in etc/hub.toml.example and etc/edge.toml.example.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, TypeVar

from spokeshare.errors import ConfigError
from spokeshare.tunnel.backends import MAX_BACKENDS, Balance, ProbePolicy
from spokeshare.tunnel.wire import valid_service_name

DEFAULT_HUB_PORT = 7443
DEFAULT_SERVICES = {"smb": "127.0.0.1:445", "ipp": "127.0.0.1:631"}
#: Where each service listens on the office LAN by default.
DEFAULT_LAN_PORTS = {"smb": 445, "ipp": 631, "lpd": 515, "raw": 9100}
#: A workgroup: a NetBIOS name (RFC 1001 section 14.1, 15 characters; the set nmbd
#: accepts). It travels only in NetBIOS packets and, XML-escaped, in WS-Discovery
#: metadata (MS-PBSD ``NAME/Workgroup:WG``), both of which carry every one of these.
_NETBIOS_NAME = re.compile(r"^[A-Z0-9!#$%&'()\-.@^_{}~]{1,15}$")
#: A virtual name: what NetBIOS (15 characters, RFC 1001 section 14.1) and the
#: DNS-based protocols (LLMNR, mDNS, WS-Discovery's host names: one RFC 1123 section
#: 2.1 host label) can all carry. Checked after upper-casing.
_VIRTUAL_NAME = re.compile(r"^[A-Z0-9](?:[A-Z0-9-]{0,13}[A-Z0-9])?$")
#: NetBIOS names are at most 15 characters (RFC 1001 section 14.1; the 16th is the suffix).
MAX_VIRTUAL_NAME = 15


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

    @property
    def address(self) -> str:
        """``HOST:PORT`` (``[V6]:PORT``): how logs, statistics and checks name it."""
        return _hp(self.host, self.port)


@dataclass(frozen=True)
class Service:
    """One ``[services.NAME]`` of hub.toml: its backends in configured order (one, as
    ``backend = "HOST:PORT"``, or several, as ``backends = [...]``) and how a new
    stream picks among those that answer (spokeshare.tunnel.backends)."""

    backends: tuple[Backend, ...]
    balance: Balance = Balance.ORDER

    @classmethod
    def one(cls, host: str, port: int, reserved_source_port: bool = False) -> Service:
        return cls((Backend(host, port, reserved_source_port),))

    @property
    def first(self) -> Backend:
        return self.backends[0]


@dataclass(frozen=True)
class HubLimits:
    #: Seconds a tunnel may take to send its whole open header once it has begun.
    header_timeout: float = 10.0
    #: Seconds a tunnel may sit in the edge's pool without opening a stream.
    idle_timeout: float = 600.0
    #: Seconds for the TLS handshake.
    handshake_timeout: float = 10.0
    #: Seconds one connect to a backend may take before that backend counts as down
    #: and the stream goes on to the next (HQ's LAN answers in milliseconds).
    backend_connect_timeout: float = 2.0
    #: Seconds from a backend going down to its first probe (a TCP connect); each
    #: failed probe doubles the wait, up to backend_probe_max.
    backend_probe_initial: float = 1.0
    backend_probe_max: float = 30.0
    #: Seconds between probes of a backend that is up (a CTDB public address that
    #: moved away is seen before a client finds it); 0: only clients' connects.
    backend_check_interval: float = 10.0
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
    services: dict[str, Service]
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
    #: Credential of the status page, /status and /metrics (bearer token or basic-auth
    #: password; "" for none, allowed only when status_listen is a loopback address).
    status_token: str = ""
    #: This hub's name among the deployment's hubs ([hub] name, default the host name):
    #: its status snapshot in the shared directory and the office list's HUB column.
    name: str = "hub"
    #: The CA key ([hub] ca_key; None: DIR/ca.key). Several hubs: set on the CA host
    #: only; the others send renewals there (spokeshare.renewal_spool).
    ca_key: Path | None = None


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
class LanPresence:
    """The edge's identity on the office LAN, which every LAN core (NetBIOS names and
    browsing, LLMNR, WS-Discovery, mDNS) takes as it is.

    Validated here, on construction, by one rule per field (docs/protocol.md,
    "Virtual names"); the cores check none of it again. :func:`load_edge` builds one,
    so a bad value is a ConfigError at load, naming ``source`` and the edge.toml key,
    never a failure once the tunnel runs. Names and workgroup are upper-cased.

    - ``interface``: the LAN interface ("" when not known yet: the edge relays only,
      or finds the interface holding ``address`` at start);
    - ``address``: ``lan.address``, dotted-quad IPv4; with an ``interface`` it must be
      a unicast address (the one the names answer with);
    - ``workgroup``: a NetBIOS name (:func:`check_netbios_name`);
    - ``names``: the virtual names (:func:`check_virtual_name`), unique, each with an
      IPv4 ``address`` of its own or "", an ``address6`` only beside one, and a browse
      comment of at most 43 characters (MS-BRWS 2.2.1);
    - ``ipv6``: ``lan.ipv6``: serve the interface's IPv6 link-local address and the
      names' ``address6`` too;
    - ``host_names``: mDNS-only host names (the print host, :mod:`spokeshare.printing.
      print_host`): one RFC 1123 label of 1-63 characters each, kept as written.
    """

    interface: str
    address: str
    workgroup: str = "WORKGROUP"
    names: tuple[VirtualName, ...] = ()
    ipv6: bool = True
    host_names: tuple[str, ...] = ()
    #: The file the values came from, for error messages.
    source: str = "<lan>"

    def __post_init__(self) -> None:
        src = self.source
        if (
            "/" in self.interface
            or len(self.interface) > 15
            or self.interface.strip() != self.interface
        ):
            raise ConfigError(src, "lan.interface", f"{self.interface!r} is not an interface name")
        v4 = _check_ipv4(self.address, src, "lan.address")
        if self.interface and (v4.is_unspecified or v4.is_loopback or v4.is_multicast):
            raise ConfigError(
                src,
                "lan.address",
                f"{v4} is not a LAN unicast address: with lan.interface set, give the "
                "interface's own address",
            )
        object.__setattr__(
            self, "workgroup", check_netbios_name(self.workgroup, src, "lan.workgroup")
        )
        names: list[VirtualName] = []
        for i, n in enumerate(self.names):
            key = f"names[{i}]"
            up = check_virtual_name(n.name, src, f"{key}.name")
            if up in {m.name for m in names}:
                raise ConfigError(src, f"{key}.name", f"{up} is configured twice")
            if n.address:
                _check_ipv4(n.address, src, f"{key}.address")
            if n.address6:
                _check_ipv6(n.address6, src, f"{key}.address6")
                if not n.address:
                    raise ConfigError(
                        src, f"{key}.address6", "needs the name's own IPv4 address too"
                    )
            if len(n.comment) > 43:
                raise ConfigError(src, f"{key}.comment", "at most 43 characters (MS-BRWS 2.2.1)")
            names.append(replace(n, name=up) if up != n.name else n)
        object.__setattr__(self, "names", tuple(names))
        for host in self.host_names:
            if not _DNS_LABEL.match(host):
                raise ConfigError(
                    src,
                    "printers.host_name",
                    f"{host!r} must be one DNS label (1-63 letters, digits or '-', not "
                    "starting or ending with '-'; no '.local')",
                )

    @property
    def ipv4(self) -> IPv4Address:
        return IPv4Address(self.address)

    def name_address(self, name: str) -> str:
        """The IPv4 address ``name`` answers with: its own, else ``address``."""
        for n in self.names:
            if n.name == name.upper():
                return n.address or self.address
        return self.address

    def name_address6(self, name: str, link_local: str | None) -> str | None:
        """The IPv6 address advertised for ``name`` (AAAA, XAddrs), or None: its own
        ``address6``; none for a name with its own IPv4 but no IPv6; else the
        interface's ``link_local``. Always None when ``ipv6`` is off."""
        if not self.ipv6:
            return None
        for n in self.names:
            if n.name == name.upper() and n.address:
                return n.address6 or None
        return link_local


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
    #: Offer sequential reuse to the hub (ALPN spokeshare/1+reuse, docs/protocol.md): a
    #: tunnel whose stream ended cleanly carries the next one instead of being closed.
    reuse: bool = True


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
    #: Fraction of the office certificate's lifetime after which it is renewed over the
    #: tunnel (spokeshare.renewal), in [0.1, 0.95].
    renew_at: float = 2 / 3

    def presence(self, host_names: tuple[str, ...] = ()) -> LanPresence:
        """The LAN presence these (validated) values describe; ``host_names`` adds
        mDNS-only host names (the print host)."""
        return LanPresence(
            self.lan_interface,
            self.lan_address,
            self.workgroup,
            self.names,
            self.lan_ipv6,
            host_names,
            self.source,
        )


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
    status_token = hub.take("status_token", str, "")
    _check_status_token(src, status_listen, status_token)
    workers = hub.take("workers", int, 1)
    check_backends = hub.take("check_backends", bool, True)
    hub_name = hub.take("name", str, "") or _default_hub_name()
    ca_key_raw = hub.take("ca_key", str, "")
    if not HUB_NAME.fullmatch(hub_name):
        raise ConfigError(src, "hub.name", "1-63 characters of [A-Za-z0-9._-], not starting with .")
    if not 1 <= workers <= 64:
        raise ConfigError(src, "hub.workers", "must be between 1 and 64")
    if not 0.05 <= heartbeat <= 300:
        raise ConfigError(src, "hub.heartbeat_interval", "must be between 0.05 and 300 seconds")
    hub.done()
    services: dict[str, Service] = {}
    svc_root = root.table("services")
    for name in list(svc_root.data):
        if not valid_service_name(name):
            raise ConfigError(src, svc_root.key(name), "service names are lower-case [a-z0-9-]")
        services[name] = _service(src, svc_root.table(name))
    svc_root.done()
    if not services:
        raise ConfigError(src, "services", "no service is defined")
    limits = _dataclass_from(root.table("limits"), HubLimits)
    if limits.max_handshakes < 1:
        raise ConfigError(src, "limits.max_handshakes", "must be at least 1")
    if limits.backend_connect_timeout <= 0:
        raise ConfigError(src, "limits.backend_connect_timeout", "must be positive")
    _check_probe_schedule(src, limits)
    sockets = _check_sockets(src, _dataclass_from(root.table("sockets"), SocketConfig))
    root.done()
    return HubConfig(
        src,
        listen,
        services,
        state_dir,
        heartbeat,
        limits,
        status_listen,
        workers,
        sockets,
        check_backends,
        status_token,
        hub_name,
        Path(ca_key_raw) if ca_key_raw else None,
    )


#: A hub's name ([hub] name): it names a file in the shared deployment directory.
HUB_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}")


def _default_hub_name() -> str:
    """The host's name (first label), as [hub] name when hub.toml gives none."""
    import socket

    host = socket.gethostname().split(".")[0]
    return host if HUB_NAME.fullmatch(host) else "hub"


def _service(src: str, t: _Table) -> Service:
    """One ``[services.NAME]`` table: ``backend = "HOST:PORT"`` or ``backends = [...]``
    (1 to MAX_BACKENDS, distinct, in order), ``balance``, ``reserved_source_port``."""
    if "backend" in t.data and "backends" in t.data:
        raise ConfigError(src, t.key("backends"), "give backend or backends, not both")
    if "backends" in t.data:
        raw = t.take("backends", list)
        key = t.key("backends")
        if not 1 <= len(raw) <= MAX_BACKENDS:
            raise ConfigError(src, key, f"needs 1 to {MAX_BACKENDS} entries HOST:PORT")
        addrs = [parse_hostport(v, src, key) if isinstance(v, str) else _bad(src, key) for v in raw]
        if len(set(addrs)) != len(addrs):
            dup = next(a for a in addrs if addrs.count(a) > 1)
            raise ConfigError(src, key, f"{_hp(*dup)} is listed twice")
    elif "backend" in t.data:
        addrs = [parse_hostport(t.take("backend", str), src, t.key("backend"))]
    else:
        raise ConfigError(src, t.key("backend"), "is required (or backends = [...])")
    balance_raw = t.take("balance", str, Balance.ORDER.value)
    try:
        balance = Balance(balance_raw)
    except ValueError:
        raise ConfigError(
            src, t.key("balance"),
            f"{balance_raw!r} is not one of " + ", ".join(b.value for b in Balance),
        ) from None  # fmt: skip
    reserved = t.take("reserved_source_port", bool, False)
    t.done()
    return Service(tuple(Backend(h, p, reserved) for h, p in addrs), balance)


def _check_probe_schedule(src: str, limits: HubLimits) -> None:
    """The backends' probe schedule (``[limits] backend_probe_*``, in seconds): finite,
    0 < backend_probe_initial <= backend_probe_max, backend_check_interval >= 0."""
    for key in ("backend_probe_initial", "backend_probe_max", "backend_check_interval"):
        if not math.isfinite(getattr(limits, key)):
            raise ConfigError(src, f"limits.{key}", "must be a finite number of seconds")
    if not 0 < limits.backend_probe_initial <= limits.backend_probe_max:
        raise ConfigError(
            src, "limits.backend_probe_initial",
            "need 0 < backend_probe_initial <= backend_probe_max",
        )  # fmt: skip
    if limits.backend_check_interval < 0:
        raise ConfigError(src, "limits.backend_check_interval", "must not be negative")


def probe_policy(limits: HubLimits) -> ProbePolicy:
    """The backends' probe schedule from ``[limits]`` (validated by :func:`load_hub`)."""
    return ProbePolicy(
        limits.backend_probe_initial, limits.backend_probe_max, limits.backend_check_interval
    )


def _check_status_token(src: str, status_listen: tuple[str, int] | None, token: str) -> None:
    """A status page off loopback needs a token; a token is 16+ visible ASCII characters
    (it travels as a bearer token or a basic-auth password, RFC 6750 §2.1, RFC 7617)."""
    from spokeshare import status

    if token and (len(token) < 16 or not all("!" <= c <= "~" for c in token)):
        raise ConfigError(
            src, "hub.status_token", "must be 16 or more visible ASCII characters, no spaces"
        )
    if status_listen is not None and not token and not status.is_loopback(status_listen[0]):
        raise ConfigError(
            src,
            "hub.status_listen",
            f"{status_listen[0]} is not a loopback address and no status_token is set: "
            + status.TOKEN_FIX,
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
    """A workgroup (NetBIOS name, :data:`_NETBIOS_NAME`), upper-cased; ConfigError if not."""
    up = name.upper()
    if not _NETBIOS_NAME.match(up):
        raise ConfigError(source, key, f"{name!r} is not a NetBIOS name (1-15 characters)")
    return up


def _virtual_name_fault(up: str) -> str | None:
    """Why ``up`` (upper-cased) is not a virtual name, or None when it is one."""
    if _VIRTUAL_NAME.match(up):
        return None
    if not up:
        return "it is empty"
    if not up.isascii():
        return "it has non-ASCII characters"
    if len(up) > MAX_VIRTUAL_NAME:
        return f"it has {len(up)} characters, NetBIOS carries at most {MAX_VIRTUAL_NAME}"
    if "_" in up:
        return "'_' cannot be part of a host name for LLMNR, mDNS or WS-Discovery"
    if "." in up:
        return "'.' would make it a domain name, not one host name"
    if any(c.isspace() for c in up):
        return "it has a space"
    if up.startswith("-") or up.endswith("-"):
        return "it starts or ends with '-'"
    return "it has characters other than letters, digits and '-'"


def _suggest(name: str) -> str:
    """A virtual name close to ``name``, for the error message ('' if none is)."""
    up = name.upper().encode("ascii", "ignore").decode()
    fixed = re.sub(r"[^A-Z0-9]+", "-", up)[:MAX_VIRTUAL_NAME].strip("-")
    return fixed if _VIRTUAL_NAME.match(fixed) else ""


def check_virtual_name(name: str, source: str, key: str) -> str:
    """A virtual name, upper-cased: 1-15 ASCII letters, digits or '-', starting and
    ending with a letter or digit (docs/protocol.md, "Virtual names").

    The one rule for every protocol the edge speaks: NetBIOS takes 15 characters, and
    LLMNR (RFC 4795 section 2), mDNS (RFC 6762 section 16, the edge publishing
    ``NAME.local``) and WS-Discovery's host names need one RFC 1123 section 2.1 host
    label. A name outside it is refused here, at load, never mapped to another one.

    Raises ConfigError naming ``source`` and ``key``, why, and a name that would do.
    """
    up = name.upper()
    fault = _virtual_name_fault(up)
    if fault is None:
        return up
    hint = _suggest(name)
    raise ConfigError(
        source,
        key,
        f"{name!r} is not a virtual name: {fault}. Use 1-{MAX_VIRTUAL_NAME} letters, "
        "digits or '-', starting and ending with a letter or digit"
        + (f" (e.g. {hint!r})" if hint and hint != up else ""),
    )


def _check_ipv4(value: str, source: str, key: str) -> IPv4Address:
    try:
        return IPv4Address(value)
    except ValueError:
        raise ConfigError(source, key, f"{value!r} is not an IPv4 address") from None


def _check_ipv6(value: str, source: str, key: str) -> IPv6Address:
    try:
        return IPv6Address(value)
    except ValueError:
        raise ConfigError(source, key, f"{value!r} is not an IPv6 address") from None


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
    renew_at = edge.take("renew_at", float, 2 / 3)
    if not 0.1 <= renew_at <= 0.95:
        raise ConfigError(src, "edge.renew_at", "must be a fraction of the lifetime, 0.1 to 0.95")
    edge.done()
    lan = root.table("lan")
    interface = lan.take("interface", str, "")
    address = overrides.get("lan_address") or lan.take("address", str, "0.0.0.0")
    lan.data.pop("address", None)
    workgroup = lan.take("workgroup", str, "WORKGROUP")
    lan_ipv6 = lan.take("ipv6", bool, True)
    lan.done()
    names: list[VirtualName] = []
    default_names = "names" not in root.data
    raw_names = root.data.pop("names", [])
    if not isinstance(raw_names, list):
        raise ConfigError(src, "names", "must be an array of tables (empty: no virtual name)")
    for i, raw in enumerate(raw_names):
        t = _Table(src, f"names[{i}]", raw)
        nm = t.take("name", str)
        svc = t.take("service", str, "smb")
        comment = t.take("comment", str, "spokeshare")
        naddr = t.take("address", str, "")
        nport = t.take("port", int, -1)
        if nport != -1 and not 0 <= nport < 65536:
            raise ConfigError(src, t.key("port"), "port out of range")
        naddr6 = t.take("address6", str, "")
        t.done()
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
        _check_ipv4(netbios.wins_server, src, "netbios.wins_server")
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
    # Names, workgroup and addresses: validated here, once, by the one rule.
    presence = LanPresence(interface, address, workgroup, tuple(names), lan_ipv6, source=src)
    return EdgeConfig(
        src,
        bundle,
        state_dir,
        presence.interface,
        presence.address,
        presence.workgroup,
        presence.names,
        ports,
        pool,
        sockets,
        dead_after,
        netbios,
        discovery,
        lan_ipv6=lan_ipv6,
        default_names=default_names,
        printers=printers,
        renew_at=renew_at,
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
    listen: list[tuple[str, int]],
    services: dict[str, tuple[str, int] | list[tuple[str, int]]],
    state_dir: Path,
) -> str:
    """The hub.toml that ``spokeshare init`` writes: a service with one backend as
    ``backend = "HOST:PORT"``, one with several as ``backends = [...]`` in order."""
    lines = [
        "# spokeshare hub configuration; every key is in hub.toml.example",
        "# (/usr/share/doc/spokeshare/examples/ from the package, etc/ in the source tree)",
        "[hub]",
        "listen = [" + ", ".join(f'"{_hp(h, p)}"' for h, p in listen) + "]",
        f'state_dir = "{state_dir}"',
        "",
    ]
    for name, where in services.items():
        addrs = where if isinstance(where, list) else [where]
        if len(addrs) == 1:
            lines += [f"[services.{name}]", f'backend = "{_hp(*addrs[0])}"', ""]
        else:
            listed = ", ".join(f'"{_hp(h, p)}"' for h, p in addrs)
            lines += [f"[services.{name}]", f"backends = [{listed}]", ""]
    return "\n".join(lines)


def _hp(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
