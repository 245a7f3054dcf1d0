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
without a restart (and cuts that office's live tunnels).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spokeshare import bundle, pki
from spokeshare.config import (
    DEFAULT_SERVICES,
    load_hub,
    parse_hostport,
    render_hub_toml,
)
from spokeshare.errors import EnrollmentError

DEFAULT_DIR = Path("/etc/spokeshare")
REGISTRY = "offices.json"


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


def save_registry(directory: Path, offices: dict[str, OfficeRecord]) -> None:
    data = {"offices": {n: r.to_json() for n, r in sorted(offices.items())}}
    pki.write_private(directory / REGISTRY, (json.dumps(data, indent=2) + "\n").encode())


def _ca(directory: Path) -> pki.Issued:
    try:
        pki.check_private(directory / "ca.key")
        key = pki.load_key((directory / "ca.key").read_bytes())
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
    backends = {n: parse_hostport(v, "--service", n) for n, v in svc.items()}
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
            "",
        ]
    )
    pki.write_public(directory / "deployment.toml", dep.encode())
    pki.write_public(
        directory / "hub.toml", render_hub_toml(listen_hp, backends, state_dir).encode()
    )
    save_registry(directory, {})
    return ["ca.key", "ca.crt", "hub.key", "hub.crt", "deployment.toml", "hub.toml", REGISTRY]


def add_office(
    directory: Path,
    name: str,
    services: list[str] | None,
    out: Path,
    days: int = 825,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    printers: list[str] | None = None,
) -> OfficeRecord:
    """Issue an office's certificate and write its bundle (mode 0600) to ``out``.

    ``printers``: the HQ queues it may use (None: all HQ shares); EnrollmentError if a
    name is not a valid CUPS queue name.
    """
    name = pki.check_office_name(name)
    checked = check_printers(printers)
    ca = _ca(directory)
    hub_cfg = load_hub(directory / "hub.toml")
    offices = load_registry(directory)
    if name in offices:
        state = "revoked" if offices[name].revoked else "enrolled"
        raise EnrollmentError(f"office {name!r} already exists ({state})")
    wanted = services if services is not None else sorted(hub_cfg.services)
    unknown = [s for s in wanted if s not in hub_cfg.services]
    if unknown:
        raise EnrollmentError(
            f"unknown service(s) {', '.join(unknown)}; the hub offers {', '.join(hub_cfg.services)}"
        )
    issued = _write_bundle(directory, ca, name, tuple(wanted), out, days, now, not_before)
    rec = OfficeRecord(
        name,
        issued.cert.serial_number,
        issued.cert.not_valid_after_utc,
        tuple(wanted),
        dt.datetime.now(dt.UTC),
        printers=checked,
    )
    offices[name] = rec
    save_registry(directory, offices)
    return rec


def renew_office(
    directory: Path, name: str, out: Path, days: int = 825, cut_previous: bool = False
) -> OfficeRecord:
    """Issue a fresh certificate (new key) for an enrolled office and write its bundle.

    The certificate it replaces stays accepted, so the office keeps working until it
    runs the new bundle; ``cut_previous`` refuses it at once instead (a leaked bundle).
    Only one previous certificate is kept: renewing again retires the older one.
    """
    name = pki.check_office_name(name)
    ca = _ca(directory)
    offices = load_registry(directory)
    rec = offices.get(name)
    if rec is None:
        raise EnrollmentError(f"no office named {name!r}")
    if rec.revoked is not None:
        raise EnrollmentError(f"office {name!r} is revoked; enrol it under a new name")
    issued = _write_bundle(directory, ca, name, rec.services, out, days, None, None)
    rec = OfficeRecord(
        name,
        issued.cert.serial_number,
        issued.cert.not_valid_after_utc,
        rec.services,
        rec.added,
        None,
        () if cut_previous else (rec.serial,),
        rec.printers,
    )
    offices[name] = rec
    save_registry(directory, offices)
    return rec


def _write_bundle(
    directory: Path,
    ca: pki.Issued,
    name: str,
    services: tuple[str, ...],
    out: Path,
    days: int,
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


def revoke_office(directory: Path, name: str) -> OfficeRecord:
    name = pki.check_office_name(name)
    offices = load_registry(directory)
    if name not in offices:
        raise EnrollmentError(f"no office named {name!r}")
    rec = offices[name]
    if rec.revoked:
        raise EnrollmentError(f"office {name!r} is already revoked")
    rec = OfficeRecord(
        rec.name,
        rec.serial,
        rec.not_after,
        rec.services,
        rec.added,
        dt.datetime.now(dt.UTC),
        rec.previous,
        rec.printers,
    )
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
    offices = load_registry(directory)
    rec = offices.get(name)
    if rec is None:
        raise EnrollmentError(f"no office named {name!r}")
    rec = dataclasses.replace(rec, printers=checked)
    offices[name] = rec
    save_registry(directory, offices)
    return rec
