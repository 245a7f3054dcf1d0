"""Certificate renewals through the shared deployment directory.

Several hubs share one deployment directory (docs/scale-out.md), and only the CA host
holds the CA key. An office renews over whichever hub holds its control channel
(spokeshare.renewal); a hub without the CA key hands the request to the CA host's hub
through files, and answers the edge when the certificate comes back. The shared
filesystem is the only channel: no protocol between hubs, nothing to elect.

Layout (``DIR/spool/renew``, mode 0700; every file written to a temporary name and
renamed, so a reader never sees half of one)::

    ID.req.json   {"office": NAME, "csr": base64 DER, "in_use": serial hex | null,
                   "hub": the asking hub's name, "time": unix seconds}
    ID.res.json   {"chain": [base64 DER certificate, base64 DER CA certificate]}
                  or {"refused": reason}

``ID`` is the office name and 16 random hex digits. The asking hub polls for its
answer (:func:`answer`) and removes both files; the CA host's hub answers every
request that has none (:func:`serve`) with :func:`spokeshare.enrollment.renew_from_request`
under the registry lock, as for a request that reached it directly, and removes
requests older than :data:`STALE_SECONDS` (their asker gave up). A request is at most
:data:`MAX_REQUEST` bytes; anything unreadable is answered with a refusal, never
retried forever.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spokeshare import enrollment, pki, renewal
from spokeshare.errors import EnrollmentError

#: Where requests and answers wait, under the deployment directory.
SPOOL = Path("spool") / "renew"
#: A request nobody answered for this long is removed (seconds): the asking hub
#: waits at most renewal.ANSWER_TIMEOUT_BOUNDS[1].
STALE_SECONDS = 300.0
#: Largest request file read (bytes): a CSR is at most control.MAX_CSR.
MAX_REQUEST = 16 * 1024


@dataclass(frozen=True, slots=True)
class Issued:
    """The CA host's answer: the office certificate and the CA certificate, DER."""

    chain: tuple[bytes, bytes]

    def certificates(self) -> tuple[x509.Certificate, x509.Certificate]:
        return (
            x509.load_der_x509_certificate(self.chain[0]),
            x509.load_der_x509_certificate(self.chain[1]),
        )


Answer = Issued | renewal.Refuse


def spool_dir(directory: Path) -> Path:
    return directory / SPOOL


def _write(path: Path, data: dict[str, object]) -> None:
    pki.write_private(path, json.dumps(data).encode())  # atomic: temporary + rename


def submit(directory: Path, office: str, csr: bytes, in_use: int | None, hub: str) -> str:
    """Leave a renewal request of ``office`` (its CSR, DER) for the CA host; return its
    ID. Raises OSError when the spool cannot be written."""
    d = spool_dir(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    rid = f"{pki.check_office_name(office)}-{secrets.token_hex(8)}"
    _write(
        d / f"{rid}.req.json",
        {
            "office": office,
            "csr": base64.b64encode(csr).decode(),
            "in_use": f"{in_use:x}" if in_use is not None else None,
            "hub": hub,
            "time": time.time(),
        },
    )
    return rid


def answer(directory: Path, rid: str) -> Answer | None:
    """The CA host's answer to request ``rid`` (None: none yet). Once read, the request
    and its answer are removed. A malformed answer is a refusal."""
    d = spool_dir(directory)
    path = d / f"{rid}.res.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    withdraw(directory, rid)
    try:
        data = json.loads(raw)
        if "refused" in data:
            return renewal.Refuse(str(data["refused"])[:200])
        a, b = (base64.b64decode(c, validate=True) for c in data["chain"])
        return Issued((a, b))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return renewal.Refuse("the CA host's answer was unreadable")


def withdraw(directory: Path, rid: str) -> None:
    """Remove request ``rid`` and its answer, if there."""
    d = spool_dir(directory)
    for name in (f"{rid}.req.json", f"{rid}.res.json"):
        try:
            (d / name).unlink()
        except FileNotFoundError:
            pass


def serve(
    directory: Path, ca_key: Path | None, now: float | None = None
) -> list[tuple[str, Answer]]:
    """On the CA host: answer every request without an answer, and remove stale ones.
    Returns (office, answer) per request answered. Raises EnrollmentError when the CA
    or the registry cannot be read (nothing is answered then)."""
    d = spool_dir(directory)
    if not d.is_dir():
        return []
    now = time.time() if now is None else now
    done: list[tuple[str, Answer]] = []
    for req in sorted(d.glob("*.req.json")):
        rid = req.name[: -len(".req.json")]
        res = d / f"{rid}.res.json"
        if res.exists():
            continue
        try:
            if req.stat().st_size > MAX_REQUEST:
                raise ValueError("request too large")
            data = json.loads(req.read_bytes())
            office = pki.check_office_name(str(data["office"]))
            csr = base64.b64decode(data["csr"], validate=True)
            in_use = int(data["in_use"], 16) if data.get("in_use") else None
            asked = float(data["time"])
        except FileNotFoundError:
            continue  # withdrawn meanwhile
        except (ValueError, KeyError, TypeError, binascii.Error, EnrollmentError) as exc:
            _write(res, {"refused": f"unreadable request: {exc}"[:200]})
            done.append(("?", renewal.Refuse("unreadable request")))
            continue
        if now - asked > STALE_SECONDS:
            withdraw(directory, rid)
            continue
        result = enrollment.renew_from_request(directory, office, csr, None, in_use, ca_key=ca_key)
        if isinstance(result, renewal.Refuse):
            _write(res, {"refused": result.reason})
            done.append((office, result))
            continue
        cert, ca_cert = result
        der = serialization.Encoding.DER
        chain = (cert.public_bytes(der), ca_cert.public_bytes(der))
        _write(res, {"chain": [base64.b64encode(c).decode() for c in chain]})
        done.append((office, Issued(chain)))
    return done
