"""The office bundle: one file holding everything an edge needs to reach its hub.

A TOML file, mode 0600, written by ``spokeshare office add`` and read by the edge::

    [office]
    name = "nyc"
    services = ["smb", "ipp"]
    [hub]
    name = "hq.example"               # the name the hub's certificate carries
    addresses = ["203.0.113.7:7443"]  # where to dial, in order of preference
    [pem]
    ca = "-----BEGIN CERTIFICATE-----..."
    cert = "-----BEGIN CERTIFICATE-----..."
    key = "-----BEGIN PRIVATE KEY-----..."
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from spokeshare import pki
from spokeshare.config import parse_hostport
from spokeshare.errors import ConfigError, EnrollmentError


@dataclass(frozen=True)
class Bundle:
    office: str
    services: tuple[str, ...]
    hub_name: str
    hub_addresses: tuple[tuple[str, int], ...]
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # never print the key
        return f"<Bundle office={self.office} hub={self.hub_name} {list(self.hub_addresses)}>"

    @property
    def cert(self) -> x509.Certificate:
        return pki.load_cert(self.cert_pem)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render(b: Bundle) -> bytes:
    def hp(h: str, p: int) -> str:
        return f"[{h}]:{p}" if ":" in h else f"{h}:{p}"

    lines = [
        "# spokeshare office bundle: keep it secret (mode 0600); it is this office's identity",
        "[office]",
        f"name = {_toml_str(b.office)}",
        "services = [" + ", ".join(_toml_str(s) for s in b.services) + "]",
        "[hub]",
        f"name = {_toml_str(b.hub_name)}",
        "addresses = [" + ", ".join(_toml_str(hp(h, p)) for h, p in b.hub_addresses) + "]",
        "[pem]",
        f"ca = {_toml_str(b.ca_pem.decode())}",
        f"cert = {_toml_str(b.cert_pem.decode())}",
        f"key = {_toml_str(b.key_pem.decode())}",
        "",
    ]
    return "\n".join(lines).encode()


def write(path: Path, b: Bundle) -> None:
    pki.write_private(path, render(b))


def read(path: Path) -> Bundle:
    """Load and check a bundle; any defect is a one-line EnrollmentError."""
    try:
        pki.check_private(path, "bundle")
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise EnrollmentError(f"bundle {path}: no such file") from None
    except PermissionError:
        raise EnrollmentError(f"bundle {path}: permission denied") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EnrollmentError(f"bundle {path} is corrupt: {exc}") from None
    try:
        office = data["office"]
        hub = data["hub"]
        pem = data["pem"]
        src = str(path)
        b = Bundle(
            office=pki.check_office_name(str(office["name"])),
            services=tuple(str(s) for s in office["services"]),
            hub_name=str(hub["name"]),
            hub_addresses=tuple(
                parse_hostport(str(a), src, "hub.addresses") for a in hub["addresses"]
            ),
            ca_pem=str(pem["ca"]).encode(),
            cert_pem=str(pem["cert"]).encode(),
            key_pem=str(pem["key"]).encode(),
        )
        cert = pki.load_cert(b.cert_pem)
        pki.load_cert(b.ca_pem)
        key = pki.load_key(b.key_pem)
    except (KeyError, TypeError) as exc:
        raise EnrollmentError(f"bundle {path} is incomplete: missing {exc}") from None
    except (ValueError, ConfigError) as exc:
        raise EnrollmentError(f"bundle {path} is corrupt: {exc}") from None
    if cert.public_key() != key.public_key():
        raise EnrollmentError(f"bundle {path}: key does not match certificate")
    if pki.office_of(cert) != b.office:
        raise EnrollmentError(f"bundle {path}: certificate is for another office")
    if not b.hub_addresses:
        raise EnrollmentError(f"bundle {path}: no hub address")
    return b
