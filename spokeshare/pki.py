"""The deployment's own CA: the hub's identity and every office's certificate.

All keys are ECDSA P-256 (fast handshakes: about 70k signatures/s per core). The CA
signs the hub's server certificate (its names and addresses in the SAN, EKU
serverAuth) and one client certificate per office (CN = office name, a SAN URI
``urn:spokeshare:office:NAME``, EKU clientAuth). Private keys are written mode 0600 and
the directory holding the CA mode 0700. The system trust store is never involved.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spokeshare.errors import EnrollmentError

OFFICE_URI_PREFIX = "urn:spokeshare:office:"
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_office_name(name: str) -> str:
    """Office names are DNS labels (RFC 1035 §2.3.1, RFC 1123 §2.1): return it lower-cased."""
    low = name.lower()
    if not _LABEL.match(low):
        raise EnrollmentError(
            f"office name {name!r} is not a DNS label "
            "(1-63 letters, digits or '-', not starting or ending with '-')"
        )
    return low


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise EnrollmentError("key is not an EC key")
    return key


def load_cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spokeshare"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_ca(common_name: str, days: int = 3650, now: dt.datetime | None = None) -> Issued:
    now = now or dt.datetime.now(dt.UTC)
    key = new_key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


#: Certificates start this long before they are issued (a peer's clock a little behind),
#: at most a tenth of their lifetime (short-lived test certificates).
BACKDATE = dt.timedelta(minutes=5)


def _leaf(
    ca: Issued,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: float,
    now: dt.datetime | None,
    not_before: dt.datetime | None = None,
) -> Issued:
    key = new_key()
    cert = _leaf_cert(ca, common_name, sans, usage, days, now, not_before, key.public_key())
    return Issued(key, cert)


def _leaf_cert(
    ca: Issued,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: float,
    now: dt.datetime | None,
    not_before: dt.datetime | None,
    public_key: ec.EllipticCurvePublicKey,
) -> x509.Certificate:
    now = now or dt.datetime.now(dt.UTC)
    life = dt.timedelta(days=days)
    start = not_before or (now - min(BACKDATE, life / 10))
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + life)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )


def issue_hub(
    ca: Issued, hub_name: str, hosts: list[str], days: int = 825, now: dt.datetime | None = None
) -> Issued:
    """The hub's server certificate: ``hub_name`` and every host it is reached at."""
    sans: list[x509.GeneralName] = []
    seen: set[str] = set()
    for h in [hub_name, *hosts]:
        if h in seen:
            continue
        seen.add(h)
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    return _leaf(ca, hub_name, sans, ExtendedKeyUsageOID.SERVER_AUTH, days, now)


def issue_office(
    ca: Issued,
    office: str,
    days: float = 825,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
) -> Issued:
    """An office's client certificate; the office name is its identity."""
    office = check_office_name(office)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(OFFICE_URI_PREFIX + office)]
    return _leaf(
        ca, office, sans, ExtendedKeyUsageOID.CLIENT_AUTH, days, now, not_before=not_before
    )


def issue_office_for_key(
    ca: Issued,
    office: str,
    public_key: ec.EllipticCurvePublicKey,
    days: float = 825,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """An office's client certificate for a key the office made (a renewal over its
    tunnel, spokeshare.renewal): the same profile as :func:`issue_office`."""
    office = check_office_name(office)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(OFFICE_URI_PREFIX + office)]
    return _leaf_cert(
        ca, office, sans, ExtendedKeyUsageOID.CLIENT_AUTH, days, now, None, public_key
    )


def office_of(cert: x509.Certificate) -> str:
    """The office a verified client certificate names (from its SAN URI)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise EnrollmentError("client certificate has no subjectAltName") from None
    for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(OFFICE_URI_PREFIX):
            return check_office_name(uri[len(OFFICE_URI_PREFIX) :])
    raise EnrollmentError("client certificate names no office")


def directory_owner(path: Path) -> tuple[int, int] | None:
    """``(uid, gid)`` a file written at ``path`` is given: its directory's owner when root
    writes into a directory another user owns, else None (the writer keeps it).

    The Debian package's /etc/spokeshare belongs to the ``spokeshare`` user the hub and
    the edge run as, so what root's ``spokeshare init`` or ``office add`` writes there
    stays readable by them.
    """
    if os.geteuid() != 0:
        return None
    st = path.parent.stat()
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)


def write_private(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """Write a file readable by its owner only, atomically (never briefly world-readable);
    owned by ``owner`` (uid, gid), by default as :func:`directory_owner` says."""
    tmp = path.with_name(f".{path.name}.tmp")
    owner = owner or directory_owner(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def replace_private(path: Path, data: bytes) -> None:
    """Replace the private file ``path`` atomically and durably: a 0600 file in the same
    directory, written and fsync'ed, renamed over it, the directory fsync'ed; it keeps
    the old file's owner when root writes it (a renewed bundle stays the edge user's)."""
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:
        st = path.stat()
        owner = (st.st_uid, st.st_gid)
    write_private(path, data, owner)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    owner = directory_owner(path)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def check_private(path: Path, what: str = "key") -> None:
    """Refuse a file holding a private key (``what`` names it in the message: ``key``,
    ``bundle``) that others can read (as ssh does), or that another user owns (root may
    use the service user's keys: see :func:`directory_owner`). Raises EnrollmentError."""
    st = path.stat()
    if st.st_mode & 0o077:
        raise EnrollmentError(
            f"{what} {path} is readable by others (mode {st.st_mode & 0o777:o}); "
            f"run: chmod 600 {path}"
        )
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        me = user_name(os.geteuid())
        raise EnrollmentError(
            f"{what} {path} is not owned by the user running spokeshare ({me}; it belongs "
            f"to {user_name(st.st_uid)}); run: chown {me}: {path}"
        )


def user_name(uid: int) -> str:
    """The name of user ``uid`` (what ``chown`` takes), or the number when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
