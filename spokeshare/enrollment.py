"""The deployment at HQ: ``init``, ``office add``, ``office revoke`` and the registry.

A deployment directory (default /etc/spokeshare) holds::

    ca.key      mode 0600   the CA's private key (never leaves this directory)
    ca.crt                  the CA certificate every edge pins
    hub.key     mode 0600   the hub's TLS identity
    hub.crt
    hub.toml                the hub's configuration: listen addresses, services
    deployment.toml         hub name and the addresses offices dial
    offices.json            the office registry: serials, services, revocations

The running hub re-reads offices.json whenever it changes, so a revocation takes effect
without a restart (and cuts that office's live tunnels). The hub writes it too: an
office renewing its certificate over its tunnel (:func:`renew_from_request`). Every
read-modify-write of the registry holds :func:`registry_lock` (an ``flock`` on the
deployment directory), so a revocation and a renewal at the same moment both count.

Several hubs share one deployment directory on the cluster's filesystem
(docs/scale-out.md): every hub re-reads the registry, so a revocation or an office
added at any of them holds at all. The CA key then lives outside the shared directory
on one host (deployment.toml ``ca_host``; ``--ca-key`` / ``[hub] ca_key`` name it
there): issuing elsewhere is refused with that host's name, and renewals arriving at
another hub go to the CA host through the spool (spokeshare.renewal_spool).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from spokeshare import bundle, pki, renewal
from spokeshare.config import (
    DEFAULT_SERVICES,
    load_hub,
    parse_hostport,
    render_hub_toml,
)
from spokeshare.errors import EnrollmentError

DEFAULT_DIR = Path("/etc/spokeshare")
REGISTRY = "offices.json"
#: Default certificate lifetime of ``office add`` and ``office renew``, in days.
DEFAULT_DAYS = 825
#: Serials a renewal over the tunnel keeps accepting (the ones it replaced, newest
#: first): tunnels opened with them go on until the certificates expire.
MAX_PREVIOUS = 4


@dataclass(frozen=True)
class OfficeRecord:
    name: str
    serial: int
    not_after: dt.datetime
    services: tuple[str, ...]
    added: dt.datetime
    revoked: dt.datetime | None = None
    #: The certificate this one renewed, still accepted until the office runs the new
    #: bundle (``office renew --cut-previous`` drops it at once).
    previous: tuple[int, ...] = ()
    #: HQ printers (CUPS queue names) the office may use; None: every printer HQ's
    #: CUPS shares. Enforced by the hub's IPP handling (spokeshare.printing.hub_ipp).
    printers: tuple[str, ...] | None = None
    #: Lifetime, in days, of the certificates issued to this office (``office add
    #: --days``); a renewal over the tunnel issues for as long.
    lifetime_days: float = DEFAULT_DAYS
    #: When the office last renewed its certificate over its tunnel (None: never).
    renewed: dt.datetime | None = None

    @property
    def not_before(self) -> dt.datetime:
        """About when the current certificate's validity started (not_after - lifetime)."""
        return self.not_after - dt.timedelta(days=self.lifetime_days)

    def accepts(self, serial: int) -> bool:
        return self.revoked is None and (serial == self.serial or serial in self.previous)

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": format(self.serial, "x"),
            "previous": [format(s, "x") for s in self.previous],
            "not_after": self.not_after.isoformat(),
            "services": list(self.services),
            "added": self.added.isoformat(),
            "revoked": self.revoked.isoformat() if self.revoked else None,
            "printers": list(self.printers) if self.printers is not None else None,
            "lifetime_days": self.lifetime_days,
            "renewed": self.renewed.isoformat() if self.renewed else None,
        }

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> OfficeRecord:
        return cls(
            name=name,
            serial=int(d["serial"], 16),
            not_after=dt.datetime.fromisoformat(d["not_after"]),
            services=tuple(d["services"]),
            added=dt.datetime.fromisoformat(d["added"]),
            revoked=dt.datetime.fromisoformat(d["revoked"]) if d.get("revoked") else None,
            previous=tuple(int(s, 16) for s in d.get("previous", [])),
            printers=tuple(d["printers"]) if d.get("printers") is not None else None,
            lifetime_days=float(d.get("lifetime_days", DEFAULT_DAYS)),
            renewed=dt.datetime.fromisoformat(d["renewed"]) if d.get("renewed") else None,
        )


def load_registry(directory: Path) -> dict[str, OfficeRecord]:
    path = directory / REGISTRY
    try:
        raw = json.loads(path.read_text())
        return {n: OfficeRecord.from_json(n, d) for n, d in raw["offices"].items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as exc:
        raise EnrollmentError(f"{path} is corrupt: {exc}") from None


@contextlib.contextmanager
def registry_lock(directory: Path) -> Iterator[None]:
    """Hold the registry for a read-modify-write: an exclusive ``flock`` on the
    deployment directory, shared by the CLI and every hub process."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def save_registry(directory: Path, offices: dict[str, OfficeRecord]) -> None:
    data = {"offices": {n: r.to_json() for n, r in sorted(offices.items())}}
    pki.write_private(directory / REGISTRY, (json.dumps(data, indent=2) + "\n").encode())


def ca_key_path(directory: Path, ca_key: Path | None = None) -> Path:
    """The CA key: ``ca_key`` when given (``--ca-key``, ``[hub] ca_key``), else
    ``DIR/ca.key``. Several hubs (docs/scale-out.md) keep it out of the shared directory,
    on the CA host only."""
    return ca_key if ca_key is not None else directory / "ca.key"


def ca_host(directory: Path) -> str:
    """The host holding the CA key, as deployment.toml's ``ca_host`` says ("" if not)."""
    try:
        dep = tomllib.loads((directory / "deployment.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    host = dep.get("ca_host", "")
    return host if isinstance(host, str) else ""


def hub_addresses(directory: Path) -> list[str]:
    """deployment.toml's ``addresses`` (what bundles list), or none when unreadable."""
    try:
        dep = tomllib.loads((directory / "deployment.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    addresses = dep.get("addresses", [])
    return [str(a) for a in addresses] if isinstance(addresses, list) else []


def has_ca_key(directory: Path, ca_key: Path | None = None) -> bool:
    """Whether this host can issue certificates: the CA key is a readable file here."""
    return os.access(ca_key_path(directory, ca_key), os.R_OK)


def _ca(directory: Path, ca_key: Path | None = None) -> pki.Issued:
    key_path = ca_key_path(directory, ca_key)
    if (directory / "ca.crt").exists() and not key_path.exists():
        host = ca_host(directory)
        raise EnrollmentError(
            f"this host holds no CA key ({key_path}): certificates are issued on the CA "
            f"host, {host or 'the host that ran spokeshare init'} (deployment.toml ca_host); "
            "run the command there, or give --ca-key PATH if the key is elsewhere here"
        )
    try:
        pki.check_private(key_path)
        key = pki.load_key(key_path.read_bytes())
        cert = pki.load_cert((directory / "ca.crt").read_bytes())
    except FileNotFoundError as exc:
        raise EnrollmentError(
            f"{directory} holds no deployment ({exc.filename} missing); run spokeshare init"
        ) from None
    return pki.Issued(key, cert)


def init(
    directory: Path,
    hub_name: str,
    addresses: list[str],
    services: dict[str, str] | None = None,
    state_dir: Path | None = None,
    listen: list[str] | None = None,
) -> list[str]:
    """Create a deployment; refuses to touch an existing one. Returns the files written."""
    if (directory / "ca.key").exists() or (directory / "hub.toml").exists():
        raise EnrollmentError(f"{directory} already holds a deployment; refusing to overwrite it")
    if not addresses:
        raise EnrollmentError("give at least one --address HOST:PORT that offices dial")
    dial = [parse_hostport(a, "--address", "") for a in addresses]
    svc = dict(DEFAULT_SERVICES)
    if "ipp" not in (services or {}):
        # cupsd by this host's LAN address, never loopback (spokeshare.printing.ipp_relay)
        from spokeshare.printing import ipp_relay

        svc["ipp"] = ipp_relay.default_backend() or svc["ipp"]
    svc.update(services or {})
    # NAME=HOST:PORT, or NAME=HOST:PORT,HOST:PORT,... for several backends in order
    backends: dict[str, tuple[str, int] | list[tuple[str, int]]] = {
        n: [parse_hostport(a.strip(), "--service", n) for a in v.split(",")] for n, v in svc.items()
    }
    if listen:
        listen_hp = [parse_hostport(a, "--listen", "") for a in listen]
    else:
        listen_hp = sorted({("0.0.0.0", p) for _, p in dial})
    if state_dir is None:
        state_dir = (
            Path("/var/lib/spokeshare/hub") if directory == DEFAULT_DIR else directory / "state"
        )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca = pki.make_ca(f"spokeshare CA for {hub_name}")
    hub = pki.issue_hub(ca, hub_name, [h for h, _ in dial])
    pki.write_private(directory / "ca.key", pki.key_pem(ca.key))
    pki.write_public(directory / "ca.crt", pki.cert_pem(ca.cert))
    pki.write_private(directory / "hub.key", pki.key_pem(hub.key))
    pki.write_public(directory / "hub.crt", pki.cert_pem(hub.cert))
    dep = "\n".join(
        [
            "# who the hub is and where offices reach it (written by spokeshare init)",
            f'hub_name = "{hub_name}"',
            "addresses = [" + ", ".join(f'"{a}"' for a in addresses) + "]",
            "# the host holding ca.key: certificates are issued only there (several hubs)",
            f'ca_host = "{_this_host()}"',
            "",
        ]
    )
    pki.write_public(directory / "deployment.toml", dep.encode())
    pki.write_public(
        directory / "hub.toml", render_hub_toml(listen_hp, backends, state_dir).encode()
    )
    save_registry(directory, {})
    return ["ca.key", "ca.crt", "hub.key", "hub.crt", "deployment.toml", "hub.toml", REGISTRY]


def _this_host() -> str:
    import socket

    return socket.gethostname().replace('"', "")


def add_office(
    directory: Path,
    name: str,
    services: list[str] | None,
    out: Path,
    days: float = DEFAULT_DAYS,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    printers: list[str] | None = None,
    ca_key: Path | None = None,
) -> OfficeRecord:
    """Issue an office's certificate and write its bundle (mode 0600) to ``out``.
    ``ca_key``: where the CA key is (default DIR/ca.key); EnrollmentError naming the
    CA host when this host has none.

    ``printers``: the HQ queues it may use (None: all HQ shares); EnrollmentError if a
    name is not a valid CUPS queue name.
    """
    name = pki.check_office_name(name)
    checked = check_printers(printers)
    ca = _ca(directory, ca_key)
    hub_cfg = load_hub(directory / "hub.toml")
    with registry_lock(directory):
        return _add_office(directory, ca, list(hub_cfg.services), name, services, out, days, now,
                           not_before, checked)  # fmt: skip


def _add_office(
    directory: Path,
    ca: pki.Issued,
    offered: list[str],
    name: str,
    services: list[str] | None,
    out: Path,
    days: float,
    now: dt.datetime | None,
    not_before: dt.datetime | None,
    checked: tuple[str, ...] | None,
) -> OfficeRecord:
    offices = load_registry(directory)
    if name in offices:
        state = "revoked" if offices[name].revoked else "enrolled"
        raise EnrollmentError(f"office {name!r} already exists ({state})")
    wanted = services if services is not None else sorted(offered)
    unknown = [s for s in wanted if s not in offered]
    if unknown:
        raise EnrollmentError(
            f"unknown service(s) {', '.join(unknown)}; the hub offers {', '.join(offered)}"
        )
    issued = _write_bundle(directory, ca, name, tuple(wanted), out, days, now, not_before)
    rec = OfficeRecord(
        name,
        issued.cert.serial_number,
        issued.cert.not_valid_after_utc,
        tuple(wanted),
        dt.datetime.now(dt.UTC),
        printers=checked,
        lifetime_days=days,
    )
    offices[name] = rec
    save_registry(directory, offices)
    return rec


def renew_office(
    directory: Path,
    name: str,
    out: Path,
    days: float = DEFAULT_DAYS,
    cut_previous: bool = False,
    ca_key: Path | None = None,
) -> OfficeRecord:
    """Issue a fresh certificate (new key) for an enrolled office and write its bundle.

    The certificate it replaces stays accepted, so the office keeps working until it
    runs the new bundle; ``cut_previous`` refuses it at once instead (a leaked bundle).
    Only one previous certificate is kept: renewing again retires the older one.
    """
    name = pki.check_office_name(name)
    ca = _ca(directory, ca_key)
    with registry_lock(directory):
        offices = load_registry(directory)
        rec = offices.get(name)
        if rec is None:
            raise EnrollmentError(f"no office named {name!r}")
        if rec.revoked is not None:
            raise EnrollmentError(f"office {name!r} is revoked; enrol it under a new name")
        issued = _write_bundle(directory, ca, name, rec.services, out, days, None, None)
        rec = dataclasses.replace(
            rec,
            serial=issued.cert.serial_number,
            not_after=issued.cert.not_valid_after_utc,
            revoked=None,
            previous=() if cut_previous else (rec.serial,),
            lifetime_days=days,
        )
        offices[name] = rec
        save_registry(directory, offices)
    return rec


def renew_from_request(
    directory: Path,
    office: str,
    csr_der: bytes,
    now: dt.datetime | None = None,
    in_use: int | None = None,
    ca_key: Path | None = None,
) -> tuple[x509.Certificate, x509.Certificate] | renewal.Refuse:
    """An office renews over its tunnel (spokeshare.renewal): issue a certificate for
    the key in ``csr_der`` to ``office`` (the name its tunnel proved), with the profile
    and lifetime of ``office add``, and record it. The serial it replaces stays
    accepted (up to MAX_PREVIOUS of them) until it expires; ``in_use``, the serial the
    asking tunnel authenticated with, is always kept (an edge that could not install an
    earlier renewal still runs on it). Returns (certificate, CA
    certificate), or the refusal (not enrolled, revoked, a bad or foreign request).
    Raises EnrollmentError when the deployment's CA or registry cannot be read.
    """
    ca = _ca(directory, ca_key)
    with registry_lock(directory):
        offices = load_registry(directory)
        rec = offices.get(office)
        verdict = renewal.decide(
            office, rec is not None, rec is not None and rec.revoked is not None, csr_der
        )
        if isinstance(verdict, renewal.Refuse):
            return verdict
        if rec is None:  # decide() refuses an office that is not enrolled
            raise EnrollmentError(f"no office named {office!r}")
        now = now or dt.datetime.now(dt.UTC)
        cert = pki.issue_office_for_key(ca, office, verdict.public_key, rec.lifetime_days, now)
        offices[office] = dataclasses.replace(
            rec,
            serial=cert.serial_number,
            not_after=cert.not_valid_after_utc,
            previous=_keep_previous(rec, in_use),
            renewed=now,
        )
        save_registry(directory, offices)
    return cert, ca.cert


def _write_bundle(
    directory: Path,
    ca: pki.Issued,
    name: str,
    services: tuple[str, ...],
    out: Path,
    days: float,
    now: dt.datetime | None,
    not_before: dt.datetime | None,
) -> pki.Issued:
    dep = tomllib.loads((directory / "deployment.toml").read_text())
    if out.exists():
        raise EnrollmentError(f"{out} exists; refusing to overwrite a bundle")
    issued = pki.issue_office(ca, name, days=days, now=now, not_before=not_before)
    b = bundle.Bundle(
        office=name,
        services=services,
        hub_name=str(dep["hub_name"]),
        hub_addresses=tuple(
            parse_hostport(a, "deployment.toml", "addresses") for a in dep["addresses"]
        ),
        ca_pem=pki.cert_pem(ca.cert),
        cert_pem=pki.cert_pem(issued.cert),
        key_pem=pki.key_pem(issued.key),
    )
    bundle.write(out, b)
    return issued


def _keep_previous(rec: OfficeRecord, in_use: int | None) -> tuple[int, ...]:
    """The serials still accepted after a renewal: the one replaced, then the older ones,
    MAX_PREVIOUS at most, ``in_use`` among them whatever its age."""
    order = [s for s in (in_use, rec.serial, *rec.previous) if s is not None]
    kept = tuple(dict.fromkeys(order))[:MAX_PREVIOUS]
    return kept


def revoke_office(directory: Path, name: str) -> OfficeRecord:
    """Revoke the office: every serial it holds (renewed ones too) is refused."""
    name = pki.check_office_name(name)
    with registry_lock(directory):
        offices = load_registry(directory)
        if name not in offices:
            raise EnrollmentError(f"no office named {name!r}")
        rec = offices[name]
        if rec.revoked:
            raise EnrollmentError(f"office {name!r} is already revoked")
        rec = dataclasses.replace(rec, revoked=dt.datetime.now(dt.UTC))
        offices[name] = rec
        save_registry(directory, offices)
    return rec


#: CUPS queue names: 1..127 printable characters without space, ``/``, ``\\``, ``?``,
#: quotes or ``#`` (CUPS ``lpadmin``'s validate_name); ``,`` separates list entries.
_BAD_PRINTER_CHARS = frozenset(" /\\?'\"#,")


def check_printers(printers: list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``printers`` as a sorted, de-duplicated tuple, or None (all); EnrollmentError for a
    name CUPS would not accept as a queue name."""
    if printers is None:
        return None
    seen: dict[str, str] = {}
    for p in printers:
        if not 0 < len(p) <= 127 or not p.isprintable() or any(c in _BAD_PRINTER_CHARS for c in p):
            raise EnrollmentError(f"{p!r} is not a CUPS printer name")
        seen.setdefault(p.casefold(), p)
    return tuple(sorted(seen.values(), key=str.casefold))


def set_printers(directory: Path, name: str, printers: list[str] | None) -> OfficeRecord:
    """Give office ``name`` these printers (None: every printer HQ shares). The running
    hub picks the change up with its next registry reload (about a second)."""
    name = pki.check_office_name(name)
    checked = check_printers(printers)
    with registry_lock(directory):
        offices = load_registry(directory)
        rec = offices.get(name)
        if rec is None:
            raise EnrollmentError(f"no office named {name!r}")
        rec = dataclasses.replace(rec, printers=checked)
        offices[name] = rec
        save_registry(directory, offices)
    return rec
