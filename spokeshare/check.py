"""``spokeshare check``: what is wrong at HQ or at an office, before a user finds out.

One :class:`Finding` per thing looked at: its level (ok, info, warning, error), a
stable code for scripts, one line saying what was found and one saying the fix. The
decisions are pure functions of what was observed (:func:`certificate`,
:func:`backend`, :func:`cups_answer`, :func:`hub_certificate`, ...: ``now`` is a
parameter, no I/O); the probes that observe (a TCP connect, one IPP request, one SMB2
NEGOTIATE, one TLS handshake, one name query) are the thin functions below them, and
:func:`check_hub` / :func:`check_edge` run them in order.

Exit status (:func:`exit_status`): 0 when every finding is ok or info, 1 with a
warning, 2 with an error.

Clock: the check asks nothing outside the deployment (no NTP server). A clock is
judged against the certificates: a local clock before a certificate's notBefore (the
CA's, the hub's, the office's) is an error, since TLS then refuses that certificate
(RFC 5280 4.1.2.5); at the office the hub's certificate as the hub presents it is the
reference. At the office the skew against the hub's clock is what the running edge
measured on its control channel (the hub's pongs carry its time,
spokeshare.tunnel.control.clock_skew) and wrote to ``lan-status.json``
(:func:`hub_clock`).
"""

from __future__ import annotations

import datetime as dt
import enum
import errno
import http.client
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from spokeshare.lan import coexist

if TYPE_CHECKING:
    from spokeshare.config import EdgeConfig

#: Seconds for one TCP connect, TLS handshake, IPP request or name query.
TIMEOUT = 3.0
#: A certificate expiring sooner than this is a warning.
EXPIRY_WARNING = dt.timedelta(days=30)
#: The largest IPP answer read from cupsd (CUPS-Get-Printers asks for two attributes).
MAX_IPP_ANSWER = 1024 * 1024
#: CUPS's IPP port: the port an edge relays to, and so the port in the Host it sends
#: (spokeshare.printing.hub_ipp, "Host is rewritten").
IPP_PORT = 631
#: RFC 8011 4.1.6.1 / CUPS: successful-ok, and client-error-not-found (no shared queue).
IPP_OK = 0x0000
IPP_NOT_FOUND = 0x0406
#: Clock skew against the hub (|hub - office|) above which a warning, then an error.
#: TLS 1.3 carries no time (RFC 8446 dropped the Random's gmt_unix_time), so skew fails
#: a handshake only when it puts one end's clock outside a certificate's validity
#: (RFC 5280 4.1.2.5): certificates start pki.BACKDATE (5 minutes) before they are
#: issued, so a clock further behind HQ's refuses a fresh one, and near expiry one
#: side sees it expired first. Five minutes is also Kerberos's default tolerance (MIT
#: krb5 clockskew, Active Directory's "maximum tolerance for computer clock
#: synchronization"), which the office's clients meet when they authenticate to HQ
#: through the tunnel: an error. A minute already means a clock nobody keeps: a
#: warning, in time to fix it.
SKEW_WARNING = dt.timedelta(seconds=60)
SKEW_ERROR = dt.timedelta(minutes=5)
#: A skew measured longer ago than this is not trusted (the edge measures at every
#: heartbeat, every hub_dead_after / 3 seconds, and rewrites its status file).
SKEW_STALE = dt.timedelta(minutes=5)
#: UDP ports queried for the names (RFC 4795 §2.1, RFC 6762 §3).
LLMNR_PORT = 5355
MDNS_PORT = 5353


class Level(enum.IntEnum):
    OK = 0
    INFO = 1
    WARNING = 2
    ERROR = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    """One result: ``code`` is stable (``hub.backend``, ``edge.bundle.mode``...),
    ``message`` says what was found, ``fix`` what to do ("" when nothing)."""

    level: Level
    code: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level!s:<7} {self.code}: {self.message}"
        return f"{text} -> {self.fix}" if self.fix else text

    def to_json(self) -> dict[str, str]:
        return {
            "level": str(self.level),
            "code": self.code,
            "message": self.message,
            "fix": self.fix,
        }


def exit_status(findings: Iterable[Finding]) -> int:
    """0: nothing worse than info; 1: a warning; 2: an error."""
    worst = max((f.level for f in findings), default=Level.OK)
    return 2 if worst == Level.ERROR else 1 if worst == Level.WARNING else 0


def _hp(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- pure findings: both ends ----------------------------------------------------------


def certificate(
    code: str, what: str, cert: x509.Certificate, now: dt.datetime, fix_renew: str
) -> list[Finding]:
    """Expiry and clock findings for one certificate at ``now`` (aware UTC).

    Error when expired or when ``now`` is before its notBefore (this host's clock is
    behind its issue time: TLS refuses it, RFC 5280 4.1.2.5); warning when it expires
    within :data:`EXPIRY_WARNING`; ok otherwise. ``fix_renew`` is the renewal advice.
    """
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return [
            Finding(
                Level.ERROR,
                f"{code}.clock",
                f"this host's clock ({now:%Y-%m-%d %H:%M} UTC) is before the {what} was "
                f"issued ({start:%Y-%m-%d %H:%M} UTC): TLS refuses it",
                "set the clock (timedatectl set-ntp true, or date -s) and check the "
                "time zone of the hardware clock",
            )
        ]
    if now >= end:
        return [
            Finding(Level.ERROR, f"{code}.expiry", f"the {what} expired {end:%Y-%m-%d}", fix_renew)
        ]
    left = end - now
    if left < EXPIRY_WARNING:
        return [
            Finding(
                Level.WARNING,
                f"{code}.expiry",
                f"the {what} expires {end:%Y-%m-%d} (in {left.days} days)",
                fix_renew,
            )
        ]
    return [Finding(Level.OK, f"{code}.expiry", f"the {what} is valid until {end:%Y-%m-%d}")]


# -- pure findings: HQ -----------------------------------------------------------------


def dial_address(where: str, error: str | None) -> Finding:
    """An address offices dial (deployment.toml ``addresses``, in every bundle), tried
    from HQ itself: a failure may be HQ's own view only (a NAT without hairpinning), so
    it is a warning."""
    if error is None:
        return Finding(Level.OK, "hub.address", f"offices dial {where}: it answers from here")
    return Finding(
        Level.WARNING,
        "hub.address",
        f"offices dial {where}, which does not answer from here: {error}",
        "check the name or address in deployment.toml and the firewall/NAT in front of "
        "the hub (from an office: nc -vz HOST PORT, or spokeshare check there)",
    )


def backend(
    service: str,
    host: str,
    port: int,
    error: str | None,
    total: int = 1,
    answering: int | None = None,
) -> Finding:
    """A backend's TCP connect: ``error`` None when it connected. ``total``: the
    service's backends, ``answering``: how many of them connected (default: this one
    alone). One down among others that answer is a warning (streams go to those); a
    service none of whose backends answers is an error."""
    if answering is None:
        answering = 1 if error is None else 0
    if error is None:
        return Finding(Level.OK, "hub.backend", f"service {service}: {_hp(host, port)} answers")
    key = "backends" if total > 1 else "backend"
    fix = (
        "start the server, or correct [services."
        + service
        + f"] {key} in hub.toml"
        + (
            "; for cupsd: cupsctl --share-printers --remote-any (it listens on "
            "localhost only by default)"
            if service == "ipp"
            else ""
        )
    )
    if answering > 0:
        return Finding(
            Level.WARNING,
            "hub.backend",
            f"service {service}: cannot connect to {_hp(host, port)}: {error} ({answering} "
            f"of its {total} backends answer; new streams go to those)",
            fix,
        )
    return Finding(
        Level.ERROR,
        "hub.backend",
        f"service {service}: cannot connect to {_hp(host, port)}: {error}"
        + (f" (none of its {total} backends answers)" if total > 1 else ""),
        fix,
    )


def ipp_loopback(reason: str | None) -> Finding | None:
    """The ipp backend on loopback (``ipp_relay.resolves_loopback``'s reason), or None."""
    if reason is None:
        return None
    head, _, fix = reason.partition("; ")
    return Finding(Level.ERROR, "hub.ipp.loopback", head, fix)


def cups_answer(
    host: str,
    port: int,
    relay_host: str,
    http_status: int | None,
    ipp_status: int | None,
    printers: int,
    error: str | None,
) -> Finding:
    """CUPS-Get-Printers sent to cupsd as an edge's request arrives (Host
    ``relay_host``): the HTTP status, the IPP status and the number of printers in the
    answer, or the ``error`` that kept it from answering."""
    where = _hp(host, port)
    share = "cupsctl --share-printers --remote-any (README, HQ: what its servers must be told)"
    if error is not None:
        return Finding(
            Level.ERROR,
            "hub.ipp.answer",
            f"cupsd at {where} did not answer a relayed CUPS-Get-Printers: {error}",
            share,
        )
    if http_status == 400:
        return Finding(
            Level.ERROR,
            "hub.ipp.answer",
            f"cupsd at {where} refuses the Host an edge relays ({relay_host}): HTTP 400",
            share,
        )
    if http_status in (401, 403):
        return Finding(
            Level.ERROR,
            "hub.ipp.answer",
            f"cupsd at {where} refuses remote clients: HTTP {http_status}",
            share,
        )
    if http_status == 426:
        # RFC 7231 6.5.15 / RFC 2817: cupsd asks for TLS ("Encryption Required" in a
        # Location of cupsd.conf); the hub speaks plain IPP to it (the tunnel encrypts
        # the WAN), so every office's printing is refused.
        return Finding(
            Level.ERROR,
            "hub.ipp.answer",
            f"cupsd at {where} demands TLS of remote clients (HTTP 426 Upgrade Required): "
            "the hub relays IPP to it in the clear, so offices cannot print",
            "remove 'Encryption Required' from <Location /> (and the printer locations) "
            "in cupsd.conf; the tunnel already encrypts the WAN",
        )
    if http_status != 200 or ipp_status is None:
        return Finding(
            Level.ERROR,
            "hub.ipp.answer",
            f"cupsd at {where} answered a relayed CUPS-Get-Printers with HTTP "
            f"{http_status} and no IPP answer",
            "check cupsd's error_log",
        )
    if ipp_status == IPP_NOT_FOUND or (ipp_status == IPP_OK and printers == 0):
        return Finding(
            Level.WARNING,
            "hub.ipp.shared",
            f"cupsd at {where} answers offices but shares no printer",
            "cupsctl --share-printers; lpadmin -p QUEUE -o printer-is-shared=true",
        )
    if ipp_status > 0xFF:
        return Finding(
            Level.ERROR,
            "hub.ipp.answer",
            f"cupsd at {where} answered a relayed CUPS-Get-Printers with IPP status "
            f"{ipp_status:#06x}",
            "check cupsd's error_log",
        )
    return Finding(
        Level.OK,
        "hub.ipp.answer",
        f"cupsd at {where} answers a relayed request (Host {relay_host}): {printers} shared "
        "printer(s)",
    )


def printer_uris(relay_host: str, uris: Sequence[str]) -> Finding:
    """The printer-uri-supported values cupsd answered a relayed request with: each must
    be on ``relay_host``, the Host the edge relays (cupsd builds them from Host, and the
    hub passes them on as they are: docs/protocol.md, "IPP at the hub")."""
    import urllib.parse

    wrong = sorted({u for u in uris if urllib.parse.urlsplit(u).netloc.lower()
                    != relay_host.lower()})  # fmt: skip
    if wrong:
        return Finding(
            Level.ERROR,
            "hub.ipp.uri",
            f"cupsd builds printer URIs on another host than the relayed Host {relay_host}: "
            f"{', '.join(wrong[:3])}; office PCs would get addresses they cannot reach",
            "the hub must reach cupsd itself, with no proxy between that sets its own Host; "
            "see cupsd.conf and cupsd's error_log",
        )
    return Finding(
        Level.OK, "hub.ipp.uri", f"cupsd builds its {len(uris)} printer URI(s) on {relay_host}"
    )


def multichannel(
    service: str, host: str, port: int, offered: bool | None, error: str | None
) -> Finding:
    """The SMB backend's NEGOTIATE answer (:mod:`spokeshare.hqcheck`)."""
    from spokeshare.hqcheck import MULTICHANNEL_FIX

    where = _hp(host, port)
    if error is not None or offered is None:
        return Finding(
            Level.ERROR,
            "hub.smb.negotiate",
            f"service {service}: {where} did not answer an SMB2 NEGOTIATE: {error}",
            "check that smbd runs there and that hub.toml names its SMB port",
        )
    if offered:
        return Finding(
            Level.ERROR,
            "hub.smb.multichannel",
            f"service {service}: smbd at {where} offers SMB3 multichannel, so it hands "
            "office PCs its own addresses",
            MULTICHANNEL_FIX,
        )
    return Finding(
        Level.OK,
        "hub.smb.multichannel",
        f"service {service}: smbd at {where} does not offer SMB3 multichannel",
    )


def netbios_aliases(
    aliases: Sequence[str] | None,
    source: str,
    advertised: Mapping[str, Sequence[str]] | None = None,
) -> Finding:
    """smbd's ``netbios aliases`` as testparm reads ``source``; None: not readable here.
    ``advertised``: the virtual names the running offices advertise (name -> offices,
    from the hub's status), each of which smbd must take as its own name; None: no hub
    status to read (the names are then not compared)."""
    spn = (
        "net ads setspn add cifs/NAME HQFS and cifs/NAME.your.domain for each "
        "virtual name (README, Kerberos for the virtual name)"
    )
    names = dict(advertised or {})
    example = ", ".join(names) or "GLOBAL-NFS"
    if aliases is None:
        return Finding(
            Level.INFO,
            "hub.smb.aliases",
            f"smbd's settings not read ({source} not readable with testparm on this host): "
            f"every virtual name an edge serves ({example}) must be a netbios alias with "
            "its SPNs",
            f"netbios aliases = {' '.join(names) or 'GLOBAL-NFS'} in [global]; {spn}",
        )
    own = {a.upper() for a in aliases}
    missing = {n: offices for n, offices in names.items() if n.upper() not in own}
    if not aliases or missing:
        lacking = missing or {"GLOBAL-NFS": []}
        which = "; ".join(
            f"{n} (advertised by {', '.join(o)})" if o else f"{n} (the default virtual name)"
            for n, o in sorted(lacking.items())
        )
        return Finding(
            Level.WARNING,
            "hub.smb.aliases",
            f"smbd ({source}) does not take {which} as its own name: domain PCs get no "
            "Kerberos ticket for it (NTLM, or KRB_AP_ERR_MODIFIED)",
            f"netbios aliases = {' '.join([*aliases, *sorted(lacking)])} in [global]; {spn}",
        )
    every = ", every name the running offices advertise" if names else ""
    return Finding(
        Level.OK,
        "hub.smb.aliases",
        f"smbd ({source}) accepts {', '.join(aliases)} as its own names{every}; each "
        "needs its SPNs cifs/NAME on HQ's file server account",
    )


def advertised_names(directory: Path, state_dir: Path) -> dict[str, list[str]] | None:
    """Virtual names the running offices advertise (name -> offices), from the hub's
    fresh status snapshots (spokeshare.hubstatus); None when no hub runs."""
    from spokeshare import hubstatus

    merged = hubstatus.merge(hubstatus.read_deployment(directory, state_dir))
    if merged is None:
        return None
    out: dict[str, list[str]] = {}
    for office, st in sorted(merged.offices.items()):
        for name in st.names:
            out.setdefault(name.upper(), []).append(office)
    return out


def listen(host: str, port: int, state: str, holder: str, error: str | None) -> Finding:
    """The hub's listen address: ``state`` "free" (nobody listens: the hub is not
    running), "hub" (a TLS handshake there showed the hub's certificate), "other"
    (``holder`` listens, presenting something else: ``error``), "bad" (the address
    cannot be bound here: ``error``), "elsewhere" (a wildcard address nobody listens
    on, whose port is held on some of this host's addresses: ``holder`` names who on
    which, e.g. hubs with a ``listen`` of their own)."""
    where = _hp(host, port)
    if state == "elsewhere":
        return Finding(
            Level.WARNING,
            "hub.listen",
            f"nobody listens on {where} itself; port {port} of this host is held by {holder}",
            "if those are this deployment's hubs, each with its own [hub] listen, check "
            "each with --config of its own hub.toml; else stop what holds the port or "
            "move the hub ([hub] listen in hub.toml and the offices' bundles)",
        )
    if state == "hub":
        return Finding(
            Level.OK, "hub.listen", f"the hub listens on {where} and shows its certificate"
        )
    if state == "free":
        return Finding(
            Level.WARNING,
            "hub.listen",
            f"nobody listens on {where}: the hub is not running",
            "systemctl start spokeshare-hub (journalctl -u spokeshare-hub says why it stopped)",
        )
    if state == "bad":
        return Finding(
            Level.ERROR,
            "hub.listen",
            f"the hub cannot listen on {where}: {error}",
            "set [hub] listen in hub.toml to an address of this host",
        )
    return Finding(
        Level.ERROR,
        "hub.listen",
        f"{holder} holds {where}, not the hub ({error})",
        f"stop {holder.split(' ', 1)[0]} or move the hub ([hub] listen in hub.toml and "
        "the offices' bundles)",
    )


# -- pure findings: the office ---------------------------------------------------------


@dataclass(frozen=True)
class EdgeUser:
    """The user the edge runs as: ``name`` (what ``chown`` takes), ``uid``, and how
    that was found (``source``: the unit's ``User=``, the package's user, ...);
    ``gids``: its groups; ``sandbox``: what the unit's [Service] says of the files the
    edge may see and write (``ProtectHome``, ``PrivateTmp``, ``ProtectSystem``,
    ``ReadWritePaths``, space-separated), empty without a unit."""

    name: str
    uid: int
    source: str
    gids: tuple[int, ...] = ()
    sandbox: Mapping[str, str] = field(default_factory=dict)


#: Where systemd looks for a unit file, first found wins (systemd.unit(5), "Unit File
#: Load Path"): the admin's, the runtime's, then the package's (the Debian package
#: installs into /lib/systemd/system, which is /usr/lib/systemd/system on a merged /usr).
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
)
EDGE_UNIT = "spokeshare-edge.service"
#: The system user the Debian package creates (debian/spokeshare.postinst).
SERVICE_USER = "spokeshare"


#: The unit's [Service] settings that decide which files the edge sees and may write
#: (systemd.exec(5), "Sandboxing"); a ReadWritePaths= adds to those before it.
SANDBOX_KEYS = ("ProtectHome", "PrivateTmp", "ProtectSystem", "ReadWritePaths")


def unit_service(unit: str, dirs: Sequence[Path] = UNIT_DIRS) -> dict[str, tuple[str, Path]]:
    """``User=`` and the :data:`SANDBOX_KEYS` of the systemd unit ``unit`` as systemd
    reads them from ``dirs``: its unit file (the first found), then its drop-ins
    (``unit.d/*.conf``, by file name; one in an earlier directory hides one of the same
    name later), the last assignment winning (ReadWritePaths= adding up, an empty one
    resetting it): key -> (value, the file that set it). Empty when no directory holds
    the unit; ``User`` is then missing, and ``""`` when the unit sets none (root)."""
    main = next((d / unit for d in dirs if (d / unit).is_file()), None)
    if main is None:
        return {}
    dropins: dict[str, Path] = {}
    for d in reversed(dirs):
        for f in sorted((d / f"{unit}.d").glob("*.conf")):
            dropins[f.name] = f
    out: dict[str, tuple[str, Path]] = {"User": ("", main)}
    for f in [main, *(dropins[n] for n in sorted(dropins))]:
        section = ""
        try:
            lines = f.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            key, _, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line
            elif section != "[Service]" or key not in ("User", *SANDBOX_KEYS):
                continue
            elif key == "ReadWritePaths" and value and key in out:
                out[key] = (f"{out[key][0]} {value}", f)
            else:
                out[key] = (value, f)
    return out


def edge_user(
    dirs: Sequence[Path] | None = None,
    uid_of: Callable[[str], int] | None = None,
    groups_of: Callable[[str], tuple[int, ...]] | None = None,
) -> EdgeUser:
    """The user the installed edge runs as, for a check run as root: ``User=`` of the
    spokeshare-edge unit (:func:`unit_service` in ``dirs``, default :data:`UNIT_DIRS`),
    else the package's ``spokeshare`` user if it exists, else root; with the unit's
    sandbox. ``uid_of`` looks a user name up, ``groups_of`` its groups (KeyError when
    unknown; default the passwd and group databases)."""
    if uid_of is None:
        import pwd

        def uid_of(name: str) -> int:
            return pwd.getpwnam(name).pw_uid

    if groups_of is None:
        import pwd

        def groups_of(name: str) -> tuple[int, ...]:
            return tuple(os.getgrouplist(name, pwd.getpwnam(name).pw_gid))

    def user(name: str, uid: int, source: str, sandbox: Mapping[str, str]) -> EdgeUser:
        try:
            gids = groups_of(name)
        except KeyError:
            gids = ()
        return EdgeUser(name, uid, source, gids, sandbox)

    service = unit_service(EDGE_UNIT, UNIT_DIRS if dirs is None else dirs)
    sandbox = {k: service[k][0] for k in SANDBOX_KEYS if k in service}
    if "User" in service:
        name, path = service["User"]
        where = f"User= in {path}" if name else f"{path} sets no User="
        if not name:
            return user("root", 0, where, sandbox)
        try:
            return user(name, int(name) if name.isdigit() else uid_of(name), where, sandbox)
        except KeyError:
            pass  # the unit cannot start either (systemd: no such user): as if none
    try:
        return user(SERVICE_USER, uid_of(SERVICE_USER), f"the {SERVICE_USER} user", sandbox)
    except KeyError:
        return user("root", 0, f"no {EDGE_UNIT} and no {SERVICE_USER} user", sandbox)


#: What ProtectHome= hides from a unit (systemd.exec(5)), and PrivateTmp= replaces.
HOME_DIRS = (Path("/home"), Path("/root"), Path("/run/user"))
TMP_DIRS = (Path("/tmp"), Path("/var/tmp"))


def bundle_reach(
    path: Path,
    edge: EdgeUser,
    traverse: bool,
    stat: Callable[[Path], os.stat_result] = os.stat,
) -> list[Finding]:
    """Whether the edge, run as ``edge`` under its unit's sandbox, can read the bundle
    at ``path`` (absolute) and rewrite it when its certificate renews itself: the
    sandbox must neither hide its directory (ProtectHome=, PrivateTmp=) nor make it
    read-only (ProtectSystem=strict without a ReadWritePaths= over it), and, with
    ``traverse`` (the check runs as another user), every directory above it must let
    the edge's user search it (``stat`` reads them). One finding: the first fault, or
    ok."""
    fix = (
        f"keep the bundle in /etc/spokeshare (install -o {edge.name} -m 600 BUNDLE "
        "/etc/spokeshare/) and name it in edge.toml's [edge] bundle"
    )
    box = edge.sandbox

    def on(value: str | None) -> bool:
        return (value or "").lower() not in ("", "no", "false", "0", "off")

    def under(tops: Iterable[Path]) -> Path | None:
        return next((t for t in tops if path.is_relative_to(t)), None)

    hidden = under(HOME_DIRS) if on(box.get("ProtectHome")) else None
    if hidden is None and on(box.get("PrivateTmp")):
        hidden = under(TMP_DIRS)
    if hidden is not None:
        return [
            Finding(
                Level.ERROR,
                "edge.bundle.path",
                f"bundle {path} is under {hidden}, which the edge's unit hides from it "
                f"(ProtectHome=/PrivateTmp= in {edge.source}): the edge cannot read it",
                fix,
            )
        ]
    if traverse and edge.uid != 0:
        for d in reversed(path.parents):
            try:
                st = stat(d)
            except OSError:
                continue  # its own finding (edge.bundle) says what is missing
            m = st.st_mode
            if not (
                m & 0o001
                or (st.st_uid == edge.uid and m & 0o100)
                or (st.st_gid in edge.gids and m & 0o010)
            ):
                return [
                    Finding(
                        Level.ERROR,
                        "edge.bundle.path",
                        f"{edge.name}, the user the edge runs as, cannot reach bundle {path}: "
                        f"{d} is mode {m & 0o777:o}, owner uid {st.st_uid}",
                        fix,
                    )
                ]
    writable = [Path(p.lstrip("-+")) for p in box.get("ReadWritePaths", "").split()]
    if box.get("ProtectSystem", "").lower() == "strict" and not any(
        path.parent.is_relative_to(w) for w in writable
    ):
        return [
            Finding(
                Level.WARNING,
                "edge.bundle.path",
                f"bundle {path}: its directory is read-only for the edge (ProtectSystem=strict, "
                f"ReadWritePaths={' '.join(map(str, writable)) or 'none'} in {edge.source}): "
                "the edge reads it but cannot renew its certificate in place",
                fix,
            )
        ]
    return [Finding(Level.OK, "edge.bundle.path", f"the edge can read and rewrite bundle {path}")]


def bundle_file(path: Path, mode: int, owner_uid: int, owner: str, edge: EdgeUser) -> list[Finding]:
    """The bundle's permissions (``st_mode & 0o7777``; its owner, ``owner_uid`` named
    ``owner``) as the edge demands them when it runs as ``edge``
    (:func:`spokeshare.pki.check_private`: 0600, and its own unless it is root)."""
    out: list[Finding] = []
    if mode & 0o077:
        out.append(
            Finding(
                Level.ERROR,
                "edge.bundle.mode",
                f"bundle {path} is readable by others (mode {mode & 0o777:o}): the edge refuses it",
                f"chmod 600 {path}",
            )
        )
    if owner_uid != edge.uid and edge.uid != 0:
        out.append(
            Finding(
                Level.ERROR,
                "edge.bundle.owner",
                f"bundle {path} belongs to {owner}, not to {edge.name}, the user the edge runs "
                f"as ({edge.source}): the edge refuses it",
                f"chown {edge.name}: {path}",
            )
        )
    if not out:
        out.append(
            Finding(
                Level.OK,
                "edge.bundle.mode",
                f"bundle {path} is mode {mode & 0o777:o}, owner {owner}; the edge runs as "
                f"{edge.name} ({edge.source})",
            )
        )
    return out


def chain(
    cert: x509.Certificate,
    ca: x509.Certificate,
    what: str,
    code: str,
    fix: str = "ask HQ for a new bundle (spokeshare office renew OFFICE)",
) -> Finding:
    """Whether ``cert`` is signed by ``ca`` (the deployment's CA); ``fix`` when not."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        return Finding(
            Level.ERROR,
            code,
            f"the {what} is not issued by the deployment's CA ({exc or 'bad signature'})",
            fix,
        )
    return Finding(Level.OK, code, f"the {what} is issued by the deployment's CA")


def hub_certificate(
    where: str, der: bytes | None, ca: x509.Certificate, hub_name: str, now: dt.datetime
) -> list[Finding]:
    """What the hub at ``where`` presented (DER) judged against the bundle: issued by
    its CA, naming ``hub_name``, valid at ``now`` (clock: an office clock before the
    hub certificate's notBefore is skew TLS refuses)."""
    if der is None:
        return [
            Finding(
                Level.ERROR,
                "edge.hub.cert",
                f"hub {where} presented no certificate",
                "check that the address in the bundle is the hub's",
            )
        ]
    cert = x509.load_der_x509_certificate(der)
    signed = chain(cert, ca, f"certificate hub {where} presents", "edge.hub.cert")
    if signed.level == Level.ERROR:
        issuer = cert.issuer.rfc4514_string() or "an unnamed CA"
        if cert.issuer == ca.subject:
            issuer = f"another CA of the same name ({issuer}) whose key is not this bundle's"
        return [
            Finding(
                Level.ERROR,
                "edge.hub.cert",
                f"hub {where} presents a certificate issued by {issuer}, not by this "
                "bundle's CA: it is a hub of another deployment, and it refuses this "
                "office's certificate",
                "at HQ, find which deployment serves that address (spokeshare check --hub "
                "there); either the bundle lists the wrong hub address, or HQ made a new "
                "deployment (spokeshare init) after this bundle: get this office's bundle "
                "from the deployment that hub runs (spokeshare office add OFFICE there) "
                "and install it here",
            )
        ]
    out = [signed]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [
            *san.get_values_for_type(x509.DNSName),
            *(str(a) for a in san.get_values_for_type(x509.IPAddress)),
        ]
    except x509.ExtensionNotFound:
        names = []
    if hub_name not in names:
        out.append(
            Finding(
                Level.ERROR,
                "edge.hub.name",
                f"hub {where}'s certificate names {', '.join(names) or 'nothing'}, not {hub_name}",
                "ask HQ for a bundle from this deployment",
            )
        )
    out += certificate(
        "edge.hub.cert",
        f"certificate hub {where} presents",
        cert,
        now,
        "at HQ: renew the hub's certificate (spokeshare init for a new deployment)",
    )
    return out


def hub_alpn(where: str, agreed: str | None) -> Finding:
    """The ALPN protocol the server at a hub address agreed on in the handshake (None:
    none). The hub agrees on one of :data:`spokeshare.tunnel.wire.ALPNS` (RFC 7301 3.2: a
    server that does not share the client's protocols answers no_application_protocol
    or, as OpenSSL and Python do by default, leaves ALPN out), and the edge refuses a
    tunnel without it: a server that leaves it out is another TLS server on the hub's
    address (stunnel, a web server given the hub's certificate) or a hub of another
    wire version."""
    from spokeshare.tunnel.wire import ALPN, ALPNS

    if agreed in ALPNS:
        return Finding(Level.OK, "edge.hub.alpn", f"hub {where} speaks {agreed}")
    port = where.rsplit(":", 1)[-1]
    said = f"chose ALPN {agreed!r}" if agreed else "agreed on no ALPN"
    return Finding(
        Level.ERROR,
        "edge.hub.alpn",
        f"hub {where}: TLS 1.3 handshake done, but the server {said}, not {ALPN}: it is "
        "not a spokeshare hub of this version, and the edge refuses every tunnel to it",
        f"at HQ, see who holds that port (ss -ltnp 'sport = :{port}', or spokeshare "
        "check --hub): another TLS server there (stunnel, a web server) must move; a hub "
        "of another spokeshare version: install the same version at HQ and here",
    )


def hub_reach(
    where: str, rtt: float | None, error: str | None, others_answer: bool = False
) -> Finding:
    """TCP connect and TLS 1.3 handshake to one hub address; ``rtt`` in seconds (the
    TCP connect). A hub that does not answer is an error, or a warning when
    ``others_answer``: another hub of the bundle does, and serves the office meanwhile
    (docs/scale-out.md)."""
    if error is not None:
        fix = (
            "check the WAN, HQ's firewall (TCP to the hub's port) and that the hub runs "
            "(nc -vz HOST PORT)"
        )
        if others_answer:
            return Finding(
                Level.WARNING,
                "edge.hub.reach",
                f"hub {where}: {error} (the office's other hubs answer and serve it)",
                fix,
            )
        return Finding(Level.ERROR, "edge.hub.reach", f"hub {where}: {error}", fix)
    return Finding(
        Level.OK,
        "edge.hub.reach",
        f"hub {where}: TLS 1.3 handshake done, RTT {(rtt or 0.0) * 1000:.1f} ms",
    )


def hub_clock(status: dict[str, object] | None, now: dt.datetime, running: bool = True) -> Finding:
    """The office clock against the hub's, as the running edge last measured it
    (``lan-status.json``'s ``hub_clock``: ``skew_ms`` the hub is ahead, ``rtt_ms``,
    ``measured_at`` ISO 8601; the estimate is within half the RTT). ``now`` is aware
    UTC. Warning above :data:`SKEW_WARNING`, error above :data:`SKEW_ERROR`; info (no
    verdict) when there is no status, no measurement (an older hub) or only one older
    than :data:`SKEW_STALE`, or when no edge is ``running`` (its status file outlives
    it: the last measurement says nothing of the clocks now)."""
    code = "edge.hub.clock"
    how = (
        "start the edge (systemctl start spokeshare-edge) and check again once it is "
        "connected; or compare by hand: date -u here and on the hub"
    )
    if not running:
        return Finding(
            Level.INFO,
            code,
            "clock skew against the hub: not measured (no edge running on this box)",
            how,
        )
    clock = status.get("hub_clock") if status else None
    if not isinstance(clock, dict):
        return Finding(
            Level.INFO,
            code,
            "clock skew against the hub: not measured (no running edge connected to a "
            "hub that sends its time)",
            how,
        )
    skew_ms, rtt_ms, at_text = clock.get("skew_ms"), clock.get("rtt_ms"), clock.get("measured_at")
    try:
        at = dt.datetime.fromisoformat(at_text) if isinstance(at_text, str) else None
    except ValueError:
        at = None
    if (
        at is None
        or at.tzinfo is None
        or isinstance(skew_ms, bool)
        or not isinstance(skew_ms, int)
        or isinstance(rtt_ms, bool)
        or not isinstance(rtt_ms, int | float)
    ):
        return Finding(Level.INFO, code, "clock skew against the hub: status unreadable", how)
    age = now - at
    if abs(age) > SKEW_STALE:
        return Finding(
            Level.INFO,
            code,
            f"clock skew against the hub: last measured {at:%Y-%m-%d %H:%M} UTC, too old "
            "to tell (is the edge connected?)",
            how,
        )
    skew = dt.timedelta(milliseconds=skew_ms)
    side = "ahead of" if skew_ms >= 0 else "behind"
    head = (
        f"the hub's clock is {abs(skew_ms) / 1000:.1f} s {side} this office's "
        f"(within {rtt_ms / 2000:.3f} s, measured {int(age.total_seconds())} s ago)"
    )
    fix = (
        "keep both clocks on NTP: timedatectl set-ntp true (systemd-timesyncd) or "
        "chrony, here and on the hub; timedatectl status then says synchronized: yes"
    )
    if abs(skew) > SKEW_ERROR:
        return Finding(
            Level.ERROR,
            code,
            f"{head}: beyond 5 minutes, fresh certificates and Kerberos fail",
            fix,
        )
    if abs(skew) > SKEW_WARNING:
        return Finding(Level.WARNING, code, f"{head}: more than a minute", fix)
    return Finding(Level.OK, code, head)


def lan(address: str, configured: str, found: str | None) -> Finding:
    """The LAN interface: ``configured`` (lan.interface, "" when not given) and the
    one ``found`` holding ``address``."""
    if address in ("0.0.0.0", ""):
        return Finding(
            Level.ERROR,
            "edge.lan",
            "no lan.address in edge.toml",
            "set [lan] address to the office box's LAN address",
        )
    if found is None:
        return Finding(
            Level.ERROR,
            "edge.lan",
            f"no interface of this host has {address} (lan.address)",
            f"give the LAN interface {address} (ip addr add {address}/24 dev IFACE, or the "
            "system's network settings) or correct [lan] address",
        )
    if configured and configured != found:
        return Finding(
            Level.ERROR,
            "edge.lan",
            f"{address} is on {found}, not on lan.interface {configured}",
            "correct [lan] interface (or leave it out: the edge finds it)",
        )
    return Finding(Level.OK, "edge.lan", f"{address} is on {found}")


def coexisting(protocol: str, line: str | None) -> Finding:
    """Another daemon serving ``protocol`` on this host (:func:`spokeshare.lan.
    coexist.describe`'s line, whose text after ': ' is the fix), or None."""
    if line is None:
        return Finding(Level.OK, f"edge.lan.{protocol}", f"no other daemon serves {protocol}")
    what, _, fix = line.partition(": ")
    return Finding(
        Level.WARNING, f"edge.lan.{protocol}", f"{what}: the edge leaves {protocol} to it", fix
    )


def port_holder(address: str, port: int, holder: str | None, edge_holds: bool = False) -> Finding:
    """A TCP port the edge listens on, held by another process (``holder``), or None:
    then held by the running edge itself (``edge_holds``) or free."""
    if holder is None:
        said = "held by the running edge" if edge_holds else "free for the edge"
        return Finding(Level.OK, "edge.lan.port", f"{address}:{port} is {said}")
    return Finding(
        Level.ERROR,
        "edge.lan.port",
        f"{holder} holds {address}:{port}: the edge cannot listen there",
        coexist.fix_for(holder),
    )


def name_answer(
    protocol: str, name: str, address: str, answered: Sequence[str] | None, error: str | None
) -> Finding:
    """A name query for ``name`` sent to the edge's ``address``: the addresses
    ``answered`` (None: no answer, with ``error``)."""
    code = f"edge.name.{protocol}"
    if answered is None:
        return Finding(
            Level.ERROR,
            code,
            f"{protocol}: {name} gets no answer from {address} ({error})",
            "see the edge's log and lan-status.json in its state dir (is the protocol "
            "degraded, or the name withdrawn while the hub is down?)",
        )
    if address not in answered:
        return Finding(
            Level.ERROR,
            code,
            f"{protocol}: {name} is answered with "
            f"{', '.join(answered) or 'nothing'}, not {address}",
            "another host or daemon answers for the name: rename one of them",
        )
    return Finding(Level.OK, code, f"{protocol}: {name} answers with {address}")


#: LAN protocols the box cannot ask itself: the edge ignores their queries from its own
#: addresses (it hears its own broadcasts and multicasts; RFC 1002 §4.2, RFC 4795 §2),
#: so the check looks for the edge's socket instead, and names the query for a PC.
SELF_DEAF = {
    "netbios": (137, "nmblookup {name}"),
    "llmnr": (
        LLMNR_PORT,
        "resolvectl query --legacy=yes -p llmnr {name}, or Windows: "
        "Resolve-DnsName -LlmnrOnly {name}",
    ),
}


def served(
    status: dict[str, object] | None, names: Sequence[str], held: dict[str, bool]
) -> list[Finding]:
    """What the running edge says it serves (``STATE_DIR/lan-status.json``, written
    once something changed: per LAN protocol "ok" or why it is degraded, and whether
    the names are withdrawn; None: nothing reported), with ``held``: for each protocol
    of :data:`SELF_DEAF` that is on, whether the edge holds its UDP port."""
    out: list[Finding] = []
    listed = ", ".join(names) or "no name"
    status = status or {}
    if status.get("withdrawn"):
        out.append(
            Finding(
                Level.ERROR,
                "edge.status",
                f"the edge has withdrawn its names ({listed}): it cannot reach the hub",
                "see edge.hub.reach above and the edge's log (hub state ... to=down)",
            )
        )
    lan = status.get("lan")
    protocols = lan if isinstance(lan, dict) else {}
    for protocol, state in sorted(protocols.items()):
        if state != "ok":
            out.append(
                Finding(
                    Level.WARNING,
                    f"edge.status.{protocol}",
                    f"the edge does not serve {protocol}: {state}",
                    "see edge.lan." + protocol + " above",
                )
            )
    for protocol, on in sorted(held.items()):
        port, query = SELF_DEAF[protocol]
        code = f"edge.name.{protocol}"
        ask = "from an office PC: " + query.format(name=names[0] if names else "NAME")
        if protocols.get(protocol, "ok") != "ok":
            continue  # said above
        if on:
            out.append(
                Finding(
                    Level.OK,
                    code,
                    f"{protocol}: the edge holds UDP {port} for "
                    f"{listed} (it does not answer this box itself)",
                    ask,
                )
            )
        else:
            out.append(
                Finding(
                    Level.ERROR,
                    code,
                    f"{protocol}: the edge holds no UDP {port}: {listed} unanswered",
                    "see the edge's log; " + ask,
                )
            )
    out += conflicts(status)
    return out


#: What each protocol's conflict means, as the edge found it (RFC 1001 §15.2.2.2, a
#: negative name registration response; RFC 4795 §4.1, a unique name answered by
#: another host; RFC 6762 §9, a probe or record of another host for the name).
CONFLICT_QUERY = {
    "netbios": "nmblookup {name}",
    "llmnr": "resolvectl query --legacy=yes -p llmnr {name}",
    "mdns": "avahi-resolve -4 -n {name}.local",
}


def in_conflict(status: dict[str, object] | None, protocol: str) -> list[str]:
    """Names the running edge reports in conflict on ``protocol`` (``lan-status.json``'s
    ``names``: protocol -> name -> state, spokeshare.edge_daemon.EdgeDaemon.names_status);
    [] when it reports none or nothing."""
    names = (status or {}).get("names")
    held = names.get(protocol) if isinstance(names, dict) else None
    if not isinstance(held, dict):
        return []
    return sorted(str(n) for n, state in held.items() if state == "conflict")


def conflicts(status: dict[str, object] | None) -> list[Finding]:
    """An error per name another host holds on the LAN, as the running edge reports
    it: the edge leaves the name to that host, so office PCs asking over that protocol
    reach the other host, not HQ."""
    out: list[Finding] = []
    for protocol in sorted(CONFLICT_QUERY):
        records: dict[str, list[str]] = {}  # NetBIOS: a name's records, NAME<00> NAME<20>
        for record in in_conflict(status, protocol):
            records.setdefault(record.partition("<")[0], []).append(record)
        for name, held in records.items():
            query = CONFLICT_QUERY[protocol].format(name=name)
            out.append(
                Finding(
                    Level.ERROR,
                    f"edge.name.{protocol}",
                    f"{protocol}: {name} is held by another host on the LAN"
                    f"{' (' + ', '.join(held) + ')' if held != [name] else ''}: the edge "
                    "leaves the name to it (name conflict in the edge's log)",
                    f"find it ({query} from an office PC, or the 'name conflict' line's "
                    "owner) and rename it or stop it answering; the edge takes the name "
                    "back by itself once the other host lets it go",
                )
            )
    return out


# -- probes (I/O) ----------------------------------------------------------------------


def tcp_connect(host: str, port: int, timeout: float = TIMEOUT) -> tuple[float | None, str | None]:
    """Connect and close: (seconds the connect took, None) or (None, reason)."""
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return time.monotonic() - start, None
    except TimeoutError:
        return None, f"no answer within {timeout:.0f} s"
    except OSError as exc:
        return None, exc.strerror or str(exc)


def ipp_probe(
    host: str, port: int, relay_host: str
) -> tuple[int | None, int | None, int, str | None, list[str]]:
    """POST a CUPS-Get-Printers to cupsd with Host ``relay_host``: (HTTP status, IPP
    status, printers in the answer, error, every printer-uri-supported value)."""
    from spokeshare.errors import DecodeError
    from spokeshare.printing import hq_printers, ipp

    body = hq_printers.get_printers_request()
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", relay_host)
        conn.putheader("Content-Type", "application/ipp")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read(MAX_IPP_ANSWER)
    except (OSError, http.client.HTTPException) as exc:
        return None, None, 0, getattr(exc, "strerror", None) or str(exc) or type(exc).__name__, []
    finally:
        conn.close()
    if resp.status != 200:
        return resp.status, None, 0, None, []
    try:
        msg = ipp.decode(data, MAX_IPP_ANSWER)
    except DecodeError:
        return resp.status, None, 0, None, []
    groups = list(msg.groups_of(ipp.GroupTag.PRINTER))
    uris: list[str] = []
    for g in groups:
        attr = g.get("printer-uri-supported")
        try:
            uris += attr.strings() if attr is not None else []
        except DecodeError:
            continue
    return resp.status, msg.code, len(groups), None, uris


def relay_host_for(host: str, port: int) -> str:
    """The Host an edge's request carries at cupsd, for this check: an IP literal and
    port 631 (the edge's address and port; cupsd's valid_host() accepts every IP
    literal alike, CUPS scheduler/client.c), here the backend's own address."""
    try:
        addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    except (OSError, IndexError):
        addr = host
    return _hp(str(addr), IPP_PORT)


def smb_negotiate(host: str, port: int) -> tuple[bool | None, str | None]:
    """(multichannel offered, None) or (None, reason): one SMB2 NEGOTIATE."""
    import asyncio

    from spokeshare import hqcheck
    from spokeshare.errors import DecodeError

    try:
        answer = asyncio.run(hqcheck.negotiate(host, port))
    except (OSError, TimeoutError, asyncio.IncompleteReadError, DecodeError) as exc:
        return None, str(exc) or type(exc).__name__
    return answer.multichannel, None


def cupsd_owner_checks(
    version: str | None, checks: int | None, source: str, elsewhere: str = ""
) -> Finding:
    """HQ's cupsd against the crash of CUPS 2.4.2-3+deb12u10 on owner checks of
    non-local clients (spokeshare.printing.hq_cupsd): ``version`` of this host's
    cups-daemon package (None: not installed here), ``checks`` the ``Require user
    @OWNER`` lines of the default policy in ``source`` (None: not readable);
    ``elsewhere``: the ipp backend's address when it is not on this host (then this
    host's cupsd, if any, is not the one judged)."""
    from spokeshare.printing import hq_cupsd

    step = "README, HQ: CUPS 2.4.2-3+deb12u10"
    fix = (
        f"sed -i{hq_cupsd.BACKUP_SUFFIX} '{hq_cupsd.OWNER_CHECKS_SED}' {source}; "
        f"systemctl restart cups ({step})"
    )
    if version is None or elsewhere:
        where = f"HQ's cupsd is at {elsewhere}, not this host" if elsewhere else (
            "cups-daemon is not installed on this host"
        )  # fmt: skip
        return Finding(
            Level.INFO,
            "hub.ipp.cupsd",
            f"{where}: if it runs Debian's 2.4.2-3+deb12u10, its default policy needs the "
            "owner checks dropped",
            f"on the cupsd host: {fix}",
        )
    if version not in hq_cupsd.OWNER_CHECK_CRASH:
        if checks == 0:
            return Finding(
                Level.WARNING,
                "hub.ipp.cupsd",
                f"cupsd {version} does not crash on owner checks, but the default policy in "
                f"{source} has none: any client may cancel, hold or move another user's job",
                f"put them back: cp {source}{hq_cupsd.BACKUP_SUFFIX} {source} (the copy the "
                f"README's sed kept), then systemctl restart cups ({step})",
            )
        return Finding(Level.OK, "hub.ipp.cupsd", f"cupsd {version}: no known crash to avoid")
    if checks is None:
        return Finding(
            Level.WARNING,
            "hub.ipp.cupsd",
            f"cupsd {version} crashes on an office's print job while its default policy "
            f"checks the job's owner, and {source} is not readable here to tell",
            fix,
        )
    if checks:
        return Finding(
            Level.ERROR,
            "hub.ipp.cupsd",
            f"cupsd {version} crashes (SIGSEGV) on every office's print job: its default "
            f"policy in {source} checks the job's owner ({checks} Require user @OWNER lines)",
            fix,
        )
    return Finding(
        Level.OK,
        "hub.ipp.cupsd",
        f"cupsd {version}: the default policy in {source} has no owner checks to crash on",
    )


def _is_own_address(host: str) -> bool:
    """Whether ``host`` (an address or a name) is one of this host's own addresses: a
    UDP socket binds to it (nothing is sent)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError:
        return False
    for family, _, _, _, addr in infos:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.bind((addr[0], 0))
            return True
        except OSError:
            continue
    return False


def _output(argv: Sequence[str]) -> str | None:
    """The standard output of ``argv`` run to its end (20 s at most); None when it
    cannot run, times out or exits with a status other than 0."""
    try:
        run = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout if run.returncode == 0 else None


def package_version(package: str) -> str | None:
    """The installed version of the Debian package ``package`` (dpkg-query), None when
    it is not installed or dpkg-query is not there."""
    words = (_output(["dpkg-query", "-W", "-f=${Status} ${Version}", package]) or "").split()
    if words[:3] != ["install", "ok", "installed"] or len(words) < 4:
        return None
    return words[3]


def read_owner_checks(cupsd_conf: Path) -> int | None:
    """:func:`spokeshare.printing.hq_cupsd.owner_checks` of ``cupsd_conf``; None when
    it cannot be read."""
    from spokeshare.printing import hq_cupsd

    try:
        with cupsd_conf.open(encoding="utf-8", errors="replace") as f:
            return hq_cupsd.owner_checks(f.read(hq_cupsd.MAX_CONF))
    except OSError:
        return None


def smb_aliases(smb_conf: Path) -> list[str] | None:
    """``netbios aliases`` from ``smb_conf`` (testparm), None when it cannot be read."""
    testparm = shutil.which("testparm")
    if testparm is None or not smb_conf.is_file():
        return None
    out = _output([testparm, "-s", "--parameter-name", "netbios aliases", str(smb_conf)])
    if out is None:
        return None
    return [a.upper() for a in out.replace(",", " ").split()]


def listen_probe(host: str, port: int, hub_cert: x509.Certificate) -> tuple[str, str, str | None]:
    """Who is at the hub's listen address: see :func:`listen`'s states. The hub is the
    one that shows ``hub_cert`` and agrees on the tunnel's ALPN (another TLS server
    given the hub's certificate and key, e.g. stunnel, is not)."""
    from spokeshare.tunnel.wire import ALPN, ALPNS

    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return "free", "", None
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return "bad", "", exc.strerror or str(exc)
    scanner = coexist.Scanner()
    holder = scanner.holder_of("tcp", "0.0.0.0" if host == "" else host, port)
    der, error, alpn = _server_cert(target, port, None, "")
    if der is None and host in ("0.0.0.0", "::", "") and not _wildcard_listener(scanner, port):
        # The wildcard cannot be bound, yet nobody listens on it: the port is held on
        # specific addresses of this host (several hubs, each with a listen of its own).
        elsewhere = _port_listeners(scanner, port)
        if elsewhere:
            return "elsewhere", elsewhere, error
    if der is not None and der == hub_cert.public_bytes(Encoding.DER):
        if alpn in ALPNS:
            return "hub", holder, None
        return "other", holder, f"it shows the hub's certificate but agrees on no ALPN {ALPN}"
    return "other", holder, error or "it presents another certificate"


def _wildcard_listener(scanner: coexist.Scanner, port: int) -> bool:
    """Whether something listens on TCP ``port`` of every address (0.0.0.0 or ::)."""
    return any(
        e.transport == "tcp" and e.port == port and e.state == coexist.TCP_LISTEN
        and e.address.is_unspecified
        for e in scanner.sockets()
    )  # fmt: skip


def _port_listeners(scanner: coexist.Scanner, port: int) -> str:
    """Who listens on TCP ``port`` on which address of this host: "NAME (pid N) on
    HOST:PORT, ..." ("" when nobody)."""
    out = []
    for e in scanner.sockets():
        if e.transport == "tcp" and e.port == port and e.state == coexist.TCP_LISTEN:
            owners = scanner.owners([e.inode])
            who = ", ".join(sorted({f"{o.name} (pid {o.pid})" for o in owners}))
            out.append(f"{who or 'another process'} on {_hp(str(e.address), port)}")
    return "; ".join(sorted(set(out)))


def _ssl_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT:.0f} s"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _server_cert(
    host: str, port: int, client: tuple[bytes, bytes, bytes] | None, server_name: str
) -> tuple[bytes | None, str | None, str | None]:
    """TLS 1.3 handshake to ``host:port``, offering the tunnel's ALPN; with ``client``
    (CA, cert and key PEM) as the edge makes it (:func:`spokeshare.tunnel.tls.
    client_context`: its ALPN, its certificate). Returns (the server's certificate,
    DER, or None; the error that stopped the handshake, or None; the ALPN protocol the
    server agreed on, or None). The certificate is returned unverified: the caller
    judges it (:func:`hub_certificate`), so a clock or chain fault is named, not just
    refused; so is the ALPN (:func:`hub_alpn`)."""
    from spokeshare.tunnel import tls
    from spokeshare.tunnel.wire import ALPN

    if client is not None:
        ctx = tls.client_context(*client)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols([ALPN])
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name or None) as conn:
                return conn.getpeercert(binary_form=True), None, conn.selected_alpn_protocol()
    except (OSError, ssl.SSLError) as exc:
        return None, _ssl_error(exc), None


def _udp_query(
    address: str, port: int, payload: bytes, matches: Callable[[bytes], bool]
) -> tuple[bytes | None, str | None]:
    """Send one datagram to ``address:port`` from an ephemeral port and wait for one
    answer from that address for which ``matches(data)`` holds."""
    deadline = time.monotonic() + TIMEOUT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(payload, (address, port))
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                data, peer = s.recvfrom(65535)
                if peer[0] == address and matches(data):
                    return data, None
        except TimeoutError:
            pass
        except OSError as exc:
            return None, exc.strerror or str(exc)
    return None, f"no answer within {TIMEOUT:.0f} s"


def dns_query(address: str, port: int, name: str) -> tuple[list[str] | None, str | None]:
    """An A query for ``name`` to ``address:port``: LLMNR (RFC 4795 §2.4, unicast to
    5355) or mDNS (RFC 6762 §6.7, a legacy unicast query to 5353 from an ephemeral
    port, answered to it)."""
    from spokeshare.errors import DecodeError
    from spokeshare.lan import llmnr

    msg_id = int.from_bytes(os.urandom(2), "big")

    def ours(data: bytes) -> bool:
        try:
            m = llmnr.decode(data)
        except DecodeError:
            return False
        return m.id == msg_id and m.is_response

    data, error = _udp_query(address, port, llmnr.build_query(msg_id, name), ours)
    if data is None:
        return None, error
    found = [a for rr in llmnr.decode(data).answers if (a := rr.address) is not None]
    return (found, None) if found else (None, "an answer without an address")


def check_hub(
    directory: Path,
    config: Path,
    smb_conf: Path,
    now: dt.datetime,
    cupsd_conf: Path = Path("/etc/cups/cupsd.conf"),
) -> list[Finding]:
    """Every HQ finding for the deployment in ``directory`` and its ``config`` (hub.toml);
    ``smb_conf`` and ``cupsd_conf`` are HQ's Samba and CUPS settings."""
    from spokeshare import pki
    from spokeshare.config import load_hub, parse_hostport
    from spokeshare.errors import ConfigError

    out: list[Finding] = []
    try:
        cfg = load_hub(config)
    except (ConfigError, OSError) as exc:
        return [Finding(Level.ERROR, "hub.config", str(exc), "correct hub.toml")]
    renew = "a new deployment (spokeshare init) and new bundles for the offices"
    certs: dict[str, x509.Certificate] = {}
    for name, what in (("ca.crt", "deployment's CA certificate"), ("hub.crt", "hub's certificate")):
        try:
            certs[name] = pki.load_cert((directory / name).read_bytes())
        except (OSError, ValueError) as exc:
            out.append(
                Finding(
                    Level.ERROR,
                    f"hub.{name[:-4]}",
                    f"cannot read {directory / name}: {exc}",
                    "run the check with --dir of the deployment",
                )
            )
            continue
        out += certificate(f"hub.{name[:-4]}", what, certs[name], now, renew)
    if "ca.crt" in certs and "hub.crt" in certs:
        mixed = (
            f"{directory}'s ca.crt and hub.crt come from different deployments: put back "
            "the pair spokeshare init made (with ca.key and hub.key, from the backup), or "
            "--dir of the deployment the hub runs"
        )
        out.append(
            chain(certs["hub.crt"], certs["ca.crt"], "hub's certificate", "hub.chain", mixed)
        )
    if "hub.crt" in certs:
        for host, port in cfg.listen:
            state, holder, error = listen_probe(host, port, certs["hub.crt"])
            out.append(listen(host, port, state, holder, error))
    for where in _dial_addresses(directory):
        try:
            dial_host, dial_port = parse_hostport(where, "deployment.toml", "addresses")
        except ConfigError as exc:
            out.append(Finding(Level.ERROR, "hub.address", str(exc), "correct deployment.toml"))
            continue
        out.append(dial_address(where, tcp_connect(dial_host, dial_port)[1]))
    for service, svc in sorted(cfg.services.items()):
        errors = [tcp_connect(b.host, b.port)[1] for b in svc.backends]
        answering = sum(1 for e in errors if e is None)
        for b, error in zip(svc.backends, errors, strict=True):
            out += _backend_findings(service, b.host, b.port, error, len(errors), answering)
    if "smb" in cfg.services:
        advertised = advertised_names(directory, cfg.state_dir)
        out.append(netbios_aliases(smb_aliases(smb_conf), str(smb_conf), advertised))
    if "ipp" in cfg.services:
        version = package_version("cups-daemon")
        first = cfg.services["ipp"].backends[0]
        elsewhere = "" if _is_own_address(first.host) else f"{first.host}:{first.port}"
        out.append(
            cupsd_owner_checks(version, read_owner_checks(cupsd_conf), str(cupsd_conf), elsewhere)
        )
    out += offices_renewal(directory, now)
    return out


def _backend_findings(
    service: str, host: str, port: int, error: str | None, total: int, answering: int
) -> list[Finding]:
    """One backend of ``service``: its TCP connect, then (when it answers) what its
    server tells an office (cupsd for ipp, smbd's multichannel for smb)."""
    from spokeshare.printing import ipp_relay

    out = [backend(service, host, port, error, total, answering)]
    if service == ipp_relay.SERVICE:
        loop = ipp_loopback(ipp_relay.resolves_loopback(host, port))
        if loop is not None:
            out.append(loop)
        elif error is None:
            relay = relay_host_for(host, port)
            http_status, ipp_status, printers, ipp_error, uris = ipp_probe(host, port, relay)
            answer = cups_answer(host, port, relay, http_status, ipp_status, printers, ipp_error)
            out.append(answer)
            if answer.level == Level.OK:
                out.append(printer_uris(relay, uris))
    elif service == "smb" and error is None:
        out.append(multichannel(service, host, port, *smb_negotiate(host, port)))
    return out


def cert_renewal(
    b: Any, renew_at: float, now: dt.datetime, status: dict[str, object] | None
) -> Finding:
    """The office certificate's renewal over the tunnel (spokeshare.renewal.check), with
    what the running edge reports in its status file (``certificate``)."""
    from spokeshare import renewal

    reported = status.get("certificate") if status else None
    cert = b.cert
    expires = cert.not_valid_after_utc.isoformat(timespec="seconds")
    if isinstance(reported, dict) and reported.get("not_after") != expires:
        reported = None  # the running edge reports on another certificate than this one
    level, message, fix = renewal.check(
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        renew_at,
        now,
        b.office,
        reported if isinstance(reported, dict) else None,
    )
    return Finding(Level[level.upper()], "edge.bundle.renewal", message, fix)


def offices_renewal(directory: Path, now: dt.datetime) -> list[Finding]:
    """At HQ: every enrolled office whose certificate is past its renewal time
    (spokeshare.renewal.check on the registry's dates; one line each, none when all
    renew in time)."""
    from spokeshare import enrollment, renewal
    from spokeshare.errors import EnrollmentError

    try:
        offices = enrollment.load_registry(directory)
    except EnrollmentError as exc:
        return [Finding(Level.ERROR, "hub.registry", str(exc), "restore offices.json")]
    out: list[Finding] = []
    for name, rec in sorted(offices.items()):
        if rec.revoked is not None:
            continue
        level, message, fix = renewal.check(
            rec.not_before, rec.not_after, renewal.DEFAULT_RENEW_AT, now, name
        )
        if level != "ok":
            finding = Finding(Level[level.upper()], "hub.office.renewal", f"{name}: {message}", fix)
            out.append(finding)
    return out


def _edge_running(scanner: coexist.Scanner, addresses: Iterable[str], ports: Iterable[int]) -> bool:
    """True when a process named spokeshare listens on one of the edge's TCP ports."""
    wanted = set(ports)
    ours = {ipaddress.ip_address(a) for a in addresses}
    inodes = [
        e.inode
        for e in scanner.sockets()
        if e.transport == "tcp"
        and e.state == coexist.TCP_LISTEN
        and e.port in wanted
        and (e.address in ours or e.address.is_unspecified)
    ]
    return any(o.name == "spokeshare" for o in scanner.owners(inodes))


def check_edge(
    config: Path | None, bundle_path: Path | None, now: dt.datetime, edge: EdgeUser | None = None
) -> list[Finding]:
    """Every office finding for edge.toml ``config`` (and the bundle it names, or
    ``bundle_path``). The bundle is judged for the user the edge runs as, ``edge``: by
    default this user, or, for root, the user the installed unit runs it as
    (:func:`edge_user`)."""
    from spokeshare import bundle as bundle_mod
    from spokeshare import pki
    from spokeshare.config import edge_listeners, for_services, load_edge
    from spokeshare.errors import ConfigError, EnrollmentError
    from spokeshare.lan.interfaces import interface_of

    overrides: dict[str, object] = {"bundle": str(bundle_path)} if bundle_path else {}
    try:
        cfg = load_edge(config, overrides)
    except (ConfigError, OSError) as exc:
        return [Finding(Level.ERROR, "edge.config", str(exc), "correct edge.toml")]
    out: list[Finding] = []
    path = cfg.bundle
    try:
        st = path.stat()
    except OSError as exc:
        fix = "copy the office's bundle there ([edge] bundle in edge.toml)"
        if exc.errno == errno.EACCES:
            fix = (
                f"this user (uid {os.geteuid()}) cannot reach it: every directory above it "
                "must let the edge's user search it (chmod o+x, or group spokeshare), the "
                "bundle belong to that user (chown), mode 0600"
            )
        return [Finding(Level.ERROR, "edge.bundle", f"bundle {path}: {exc.strerror or exc}", fix)]
    if edge is None:
        euid = os.geteuid()
        edge = edge_user() if euid == 0 else EdgeUser(pki.user_name(euid), euid, "this user")
    owner = pki.user_name(st.st_uid)
    out += bundle_file(path, st.st_mode & 0o7777, st.st_uid, owner, edge)
    out += bundle_reach(path.absolute(), edge, traverse=edge.uid != os.geteuid())
    try:
        b = bundle_mod.read(path)
    except EnrollmentError as exc:
        if "readable by others" in str(exc) or "not owned" in str(exc):
            return out  # said above, with the fix
        return [
            *out,
            Finding(
                Level.ERROR,
                "edge.bundle",
                str(exc),
                "ask HQ for a new bundle (spokeshare office renew OFFICE)",
            ),
        ]
    out.append(
        Finding(
            Level.OK,
            "edge.bundle",
            f"bundle {path}: office {b.office}, hub {b.hub_name}, certificate and key match",
        )
    )
    ca = pki.load_cert(b.ca_pem)
    renew = "at HQ: spokeshare office renew " + b.office + ", then install the new bundle"
    fresh = f"ask HQ for a new bundle (spokeshare office renew {b.office}) and install it"
    out.append(chain(b.cert, ca, "office certificate", "edge.bundle.chain", fresh))
    out += certificate("edge.bundle.cert", "office certificate", b.cert, now, renew)
    out.append(cert_renewal(b, cfg.renew_at, now, _read_json(cfg.state_dir / "lan-status.json")))
    out += certificate(
        "edge.bundle.ca",
        "deployment's CA certificate",
        ca,
        now,
        "at HQ: a new deployment; the CA cannot be renewed in place",
    )
    reached = []
    for host, port in b.hub_addresses:
        rtt, error = tcp_connect(host, port)
        der: bytes | None = None
        alpn: str | None = None
        if error is None:
            der, error, alpn = _server_cert(
                host, port, (b.ca_pem, b.cert_pem, b.key_pem), b.hub_name
            )
        reached.append((_hp(host, port), rtt, error, der, alpn))
    answering = sum(1 for r in reached if r[2] is None)
    for where, rtt, error, der, alpn in reached:
        out.append(hub_reach(where, rtt, error, others_answer=answering > 0))
        if error is None:
            out.append(hub_alpn(where, alpn))
            out += hub_certificate(where, der, ca, b.hub_name, now)
    clock_at = len(out)  # edge.hub.clock goes here, once whether the edge runs is known
    cfg = for_services(cfg, b.services)
    found = interface_of(cfg.lan_address) if cfg.lan_address != "0.0.0.0" else None
    out.append(lan(cfg.lan_address, cfg.lan_interface, found))
    status = _read_json(cfg.state_dir / "lan-status.json")
    if found is None:
        out.insert(clock_at, hub_clock(status, now))
        return out
    scanner = coexist.Scanner()
    own = [cfg.lan_address, *(n.address for n in cfg.names if n.address)]
    try:
        listeners = edge_listeners(cfg, b.services)
    except ConfigError as exc:
        out.insert(clock_at, hub_clock(status, now))
        return [*out, Finding(Level.ERROR, "edge.config", str(exc), "correct edge.toml")]
    listeners = {**listeners, **_session_listeners(cfg)}
    running = _edge_running(scanner, own, {p for _, p in listeners})
    out.insert(clock_at, hub_clock(status, now, running))
    protocols = {
        "netbios": cfg.netbios.enabled and bool(cfg.names),
        "llmnr": cfg.discovery.llmnr and bool(cfg.names),
        "mdns": cfg.discovery.mdns,
        "wsd": cfg.discovery.wsd and bool(cfg.names),
    }
    for protocol, on in protocols.items():
        if on:
            out.append(coexisting(protocol, _foreign(scanner, protocol, own)))
    for (addr, port), _svc in sorted(listeners.items()):
        holder, edge_holds = _tcp_holder(scanner, addr, port)
        out.append(port_holder(addr, port, holder, edge_holds))
    if not running:
        out.append(
            Finding(
                Level.INFO,
                "edge.name",
                "no edge process listens on this box's LAN ports (or this user cannot see "
                "it): names not asked",
                "systemctl start spokeshare-edge, then check again (as root)",
            )
        )
        return out
    held = {p: _edge_holds(scanner, SELF_DEAF[p][0], own) for p in SELF_DEAF if protocols[p]}
    out += served(status, [n.name for n in cfg.names], held)
    taken = {n.lower() for n in in_conflict(status, "mdns")}
    for n in cfg.names:
        addr = n.address or cfg.lan_address
        if protocols["mdns"] and n.name.lower() not in taken:  # taken: said by served
            mname = f"{n.name.lower()}.local"
            out.append(name_answer("mdns", mname, addr, *dns_query(addr, MDNS_PORT, mname)))
    return out


def _session_listeners(cfg: EdgeConfig) -> dict[tuple[str, int], str]:
    """The NetBIOS session service's listeners (RFC 1002 4.3, TCP 139 by default): one
    per address carrying a virtual name, as the edge opens them
    (spokeshare.tunnel.edge.Edge.listen)."""
    nb = cfg.netbios
    if not (nb.enabled and nb.session_port):
        return {}
    return {(n.address or cfg.lan_address, nb.session_port): "nbss" for n in cfg.names}


def _edge_holds(scanner: coexist.Scanner, port: int, addresses: Sequence[str]) -> bool:
    """True when a process named spokeshare holds UDP ``port`` (any of ``addresses``,
    the wildcard, or a broadcast or multicast address)."""
    ours = {ipaddress.ip_address(a) for a in addresses}
    inodes = [
        e.inode
        for e in scanner.sockets()
        if e.transport == "udp"
        and e.port == port
        and e.inode
        and not e.address.is_loopback
        and (e.address in ours or e.address.is_multicast or not e.address.is_global)
    ]
    return any(o.name == "spokeshare" for o in scanner.owners(inodes))


def _dial_addresses(directory: Path) -> list[str]:
    """``addresses`` of deployment.toml (what ``init --address`` wrote), or none."""
    import tomllib

    try:
        data = tomllib.loads((directory / "deployment.toml").read_text())
    except (OSError, ValueError):
        return []
    addresses = data.get("addresses", [])
    return [str(a) for a in addresses] if isinstance(addresses, list) else []


def _read_json(path: Path) -> dict[str, object] | None:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _foreign(scanner: coexist.Scanner, protocol: str, local: Sequence[str]) -> str | None:
    """:meth:`Scanner.check`, leaving out the edge's own sockets (a process named
    spokeshare), which this process sees as foreign."""
    others = coexist.foreign_sockets(
        scanner.sockets(), coexist.PROTOCOL_PORTS[protocol], scanner.own_inodes(), local
    )
    if not others:
        return None
    owners = scanner.owners(e.inode for e in others)
    if owners and all(o.name == "spokeshare" for o in owners):
        return None
    return coexist.describe(protocol, [o for o in owners if o.name != "spokeshare"], others[0].port)


def _tcp_holder(scanner: coexist.Scanner, address: str, port: int) -> tuple[str | None, bool]:
    """Who else listens on TCP ``address:port`` (None: nobody, or the edge), and
    whether the edge (a process named spokeshare) does."""
    host = ipaddress.ip_address(address)
    inodes = [
        e.inode
        for e in scanner.sockets()
        if e.transport == "tcp"
        and e.port == port
        and e.state == coexist.TCP_LISTEN
        and (e.address == host or e.address.is_unspecified)
    ]
    if not inodes:
        return None, False
    owners = scanner.owners(inodes)
    ours = any(o.name == "spokeshare" for o in owners)
    if owners and all(o.name == "spokeshare" for o in owners):
        return None, True
    named = sorted({(o.name, o.pid) for o in owners if o.name != "spokeshare"})
    return ", ".join(f"{n} (pid {p})" for n, p in named) or "another process", ours
