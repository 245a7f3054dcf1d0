"""Office certificates renew themselves: the decisions, sans-IO.

How it works
------------
An office's certificate is renewed over its own control channel
(:mod:`spokeshare.tunnel.control`, the ``renew`` messages) once ``renew_at`` of its
lifetime has passed (two thirds by default, ``[edge] renew_at``). The edge makes a
new key (ECDSA P-256, as enrollment does), sends a PKCS#10 request (RFC 2986) for
it, and the hub issues a certificate for *the office the tunnel authenticated as*
with the same profile and lifetime as ``office add`` (:func:`decide` never trusts the
name in the request: one that names another office is refused). The hub records the
new serial; the old one stays accepted until it expires, so tunnels opened with it go
on. The edge installs the new key and certificate in its bundle atomically and dials
new tunnels with them.

A renewal that fails (refused, no answer, channel lost) is tried again after
:func:`retry_delay` (exponential, bounded by a fraction of the lifetime so attempts
keep coming long before expiry); :func:`next_attempt` is the one rule. What an
operator sees (``office list``, the edge's status file, ``spokeshare check``) is
:class:`RenewalStatus` and :func:`describe`.

Nothing here reads a clock or touches a file: ``now`` is a parameter (UTC datetimes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spokeshare import pki
from spokeshare.errors import UsageError
from spokeshare.stats import OfficeCertificate

#: Fraction of a certificate's lifetime after which the edge renews it.
DEFAULT_RENEW_AT = 2 / 3
#: First retry after a failed renewal, and the longest wait between attempts, as
#: fractions of the lifetime, bounded in seconds: an 825-day certificate retries after
#: a minute, then at most hourly; a 90-second test certificate every second or two.
RETRY_FIRST = 1 / 1000
RETRY_MAX = 1 / 50
RETRY_FIRST_BOUNDS = (1.0, 60.0)
RETRY_MAX_BOUNDS = (2.0, 3600.0)
#: Seconds the edge waits for the hub's answer to a request: 1/50 of the lifetime,
#: bounded (an old hub ignores the message: the attempt counts as failed).
ANSWER_TIMEOUT_BOUNDS = (5.0, 60.0)
#: ``spokeshare check`` warns when the certificate is past its renewal time by this
#: fraction of the lifetime (renewal failing), and errors in the last tenth.
CHECK_OVERDUE = 1 / 20
CHECK_CRITICAL = 1 / 10


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def lifetime(not_before: dt.datetime, not_after: dt.datetime) -> float:
    """A certificate's validity span in seconds (at least 1)."""
    return max(1.0, (not_after - not_before).total_seconds())


def renew_time(not_before: dt.datetime, not_after: dt.datetime, renew_at: float) -> dt.datetime:
    """When a certificate valid ``not_before``..``not_after`` is due for renewal.

    ``renew_at`` in (0, 1): the fraction of the lifetime; UsageError otherwise.
    """
    if not 0 < renew_at < 1:
        raise UsageError(f"renew_at {renew_at} is not in (0, 1)")
    return not_before + dt.timedelta(seconds=renew_at * lifetime(not_before, not_after))


def retry_delay(life: float, failures: int, jitter: float = 1.0) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (``failures`` >= 1) on a
    certificate living ``life`` seconds: doubling from RETRY_FIRST of the lifetime up to
    RETRY_MAX of it; ``jitter`` in [0.5, 1] spreads offices that failed together."""
    if failures < 1 or not 0.5 <= jitter <= 1.0:
        raise UsageError(f"retry_delay(failures={failures}, jitter={jitter})")
    first = _clamp(life * RETRY_FIRST, RETRY_FIRST_BOUNDS)
    cap = max(first, _clamp(life * RETRY_MAX, RETRY_MAX_BOUNDS))
    return float(min(cap, first * 2.0 ** min(failures - 1, 40)) * jitter)


def next_attempt(
    not_before: dt.datetime,
    not_after: dt.datetime,
    renew_at: float,
    failures: int,
    last_failure: dt.datetime | None,
    jitter: float = 1.0,
) -> dt.datetime:
    """When the edge should next ask for a renewal: at :func:`renew_time`, and after a
    failure (``failures`` so far, the last at ``last_failure``) not before
    :func:`retry_delay` has passed."""
    due = renew_time(not_before, not_after, renew_at)
    if failures <= 0 or last_failure is None:
        return due
    wait = retry_delay(lifetime(not_before, not_after), failures, jitter)
    return max(due, last_failure + dt.timedelta(seconds=wait))


def answer_timeout(life: float) -> float:
    """Seconds to wait for the hub's answer to one request."""
    return _clamp(life / 50, ANSWER_TIMEOUT_BOUNDS)


# -- the request (edge) and the decision (hub) ----------------------------------------


def make_request(office: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A PKCS#10 request (RFC 2986), DER, for ``key`` naming ``office`` as
    ``office add`` names it (CN and the SAN URI)."""
    office = pki.check_office_name(office)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spokeshare"),
                    x509.NameAttribute(NameOID.COMMON_NAME, office),
                ]
            )
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(pki.OFFICE_URI_PREFIX + office)]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True, slots=True)
class Issue:
    """Issue a certificate for ``public_key`` to the tunnel's office."""

    public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the request; ``reason`` goes to the edge and the hub's log."""

    reason: str


MAX_CSR = 1024  # DER bytes; the control message bounds it too (control.MAX_CSR)


def decide(office: str, enrolled: bool, revoked: bool, csr_der: bytes) -> Issue | Refuse:
    """The hub's answer to a renewal request on office ``office``'s control channel.

    ``office`` is the name the tunnel's certificate proved; ``enrolled``/``revoked``
    what the registry says of it now. The request must be at most MAX_CSR bytes of
    DER, correctly self-signed, for a P-256 key, and name ``office`` and nothing else
    (CN and any office URI): the name in a request is checked, never used.
    """
    if not enrolled:
        return Refuse(f"office {office} is not enrolled")
    if revoked:
        return Refuse(f"office {office} is revoked")
    if not 0 < len(csr_der) <= MAX_CSR:
        return Refuse(f"request of {len(csr_der)} bytes (at most {MAX_CSR})")
    try:
        csr = x509.load_der_x509_csr(csr_der)
        valid = csr.is_signature_valid
        key = csr.public_key()
        cns = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
    except (ValueError, TypeError, InvalidSignature):
        return Refuse("request is not a valid PKCS#10 certificate request")
    if not valid:
        return Refuse("request signature does not verify")
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return Refuse("request key is not ECDSA P-256")
    named = {str(c).lower() for c in cns}
    named |= {u[len(pki.OFFICE_URI_PREFIX) :].lower() for u in uris}
    if named != {office}:
        who = ", ".join(sorted(named)) or "no office"
        return Refuse(f"request names {who}, but this tunnel is office {office}")
    return Issue(key)


# -- what operators see ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenewalStatus:
    """The edge's renewal state, as its status file and ``spokeshare check`` read it.

    ``not_after``: the certificate in use expires then; ``renewed``: when it was last
    renewed over the tunnel (None: never); ``failures`` in a row since
    ``failing_since``, the last ``reason``; ``next_attempt``: when the edge asks next.
    """

    not_after: dt.datetime
    renew_time: dt.datetime
    next_attempt: dt.datetime
    renewed: dt.datetime | None = None
    failures: int = 0
    failing_since: dt.datetime | None = None
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        def iso(t: dt.datetime | None) -> str | None:
            return t.isoformat(timespec="seconds") if t is not None else None

        return {
            "not_after": iso(self.not_after),
            "renew_time": iso(self.renew_time),
            "next_attempt": iso(self.next_attempt),
            "renewed": iso(self.renewed),
            "failures": self.failures,
            "failing_since": iso(self.failing_since),
            "reason": self.reason,
            "renew": describe(self),
        }


def describe(st: RenewalStatus) -> str:
    """One phrase: ``ok 2026-12-01`` (renewed then; expires ...), ``due 2027-05-02``
    (not yet renewed), or ``failing since 2026-11-30T21:40:00+00:00 (reason)``."""
    if st.failures and st.failing_since is not None:
        since = st.failing_since.isoformat(timespec="seconds")
        return f"failing since {since} ({st.reason or 'no answer'}, {st.failures} attempts)"
    if st.renewed is not None:
        return f"ok {st.renewed:%Y-%m-%d}"
    return f"due {st.renew_time:%Y-%m-%d}"


def overdue(
    not_before: dt.datetime, not_after: dt.datetime, renew_at: float, now: dt.datetime
) -> str | None:
    """For ``check`` and ``office list``: None while renewal is not late, else
    ``"warning"`` (past its renewal time by CHECK_OVERDUE of the lifetime: renewals are
    failing) or ``"error"`` (in the last CHECK_CRITICAL of the lifetime, or expired)."""
    life = lifetime(not_before, not_after)
    if now >= not_after - dt.timedelta(seconds=life * CHECK_CRITICAL):
        return "error"
    late = renew_time(not_before, not_after, renew_at) + dt.timedelta(seconds=life * CHECK_OVERDUE)
    return "warning" if now >= late else None


def registry_view(
    not_before: dt.datetime,
    not_after: dt.datetime,
    renewed: dt.datetime | None,
    now: dt.datetime,
    renew_at: float = DEFAULT_RENEW_AT,
) -> str:
    """The hub's one phrase for ``office list`` from what the registry holds: ``ok
    DATE`` (last renewed over the tunnel), ``due DATE`` (not yet), ``failing: not
    renewed since DATE`` (:func:`overdue` warns: the edge's renewals are failing, see its
    log), ``failing: expires DATE`` (error) or ``expired DATE``."""
    if now >= not_after:
        return f"expired {not_after:%Y-%m-%d}"
    late = overdue(not_before, not_after, renew_at, now)
    due = renew_time(not_before, not_after, renew_at)
    if late == "error":
        return f"failing: expires {not_after:%Y-%m-%d %H:%M}"
    if late == "warning":
        return f"failing: due since {due:%Y-%m-%d %H:%M}"
    if renewed is not None:
        return f"ok {renewed:%Y-%m-%d}"
    return f"due {due:%Y-%m-%d}"


def check(
    not_before: dt.datetime,
    not_after: dt.datetime,
    renew_at: float,
    now: dt.datetime,
    office: str,
    reported: Mapping[str, object] | None = None,
) -> tuple[str, str, str]:
    """``spokeshare check``'s renewal finding: (level ``ok``/``warning``/``error``,
    message, fix). ``reported`` is the edge's own report (``certificate`` in its
    lan-status.json, :meth:`RenewalStatus.to_json`) when there is one: failures there
    warn at once, long before :func:`overdue` would from the dates alone."""
    late = overdue(not_before, not_after, renew_at, now)
    failures = reported.get("failures") if reported else 0
    said = str(reported.get("renew", "")) if reported else ""
    manual = f"at HQ: spokeshare office renew {office}, then install the new bundle"
    logs = (
        "see why in the edge's log ('certificate renewal failed') and the hub's "
        "('certificate renewal refused'); the edge keeps retrying by itself"
    )
    if now >= not_after:
        return "error", f"the office certificate expired {not_after:%Y-%m-%d %H:%M} UTC", manual
    if late == "error":
        why = f": renewal {said}" if said else ""
        return (
            "error",
            f"the office certificate expires {not_after:%Y-%m-%d %H:%M} UTC and has not "
            f"renewed itself{why}",
            f"{logs}; or {manual}",
        )
    if isinstance(failures, int) and failures > 0 or late == "warning":
        due = renew_time(not_before, not_after, renew_at)
        what = f"renewal {said}" if said else f"renewal due since {due:%Y-%m-%d %H:%M} UTC"
        return "warning", f"office certificate {what}", logs
    if said.startswith("ok"):
        return "ok", f"the office certificate renews itself ({said})", ""
    due = renew_time(not_before, not_after, renew_at)
    return "ok", f"the office certificate renews itself from {due:%Y-%m-%d %H:%M} UTC", ""


def hub_certificate(
    not_before: dt.datetime,
    not_after: dt.datetime,
    renewed: dt.datetime | None,
    now: dt.datetime,
    edge_failures: int = 0,
    edge_failing_since: float | None = None,
    refused: tuple[float, str] | None = None,
) -> OfficeCertificate:
    """The hub's view of one office's certificate for its status snapshot
    (stats.OfficeCertificate; the dashboard and ``office list`` read ``not_after``
    and ``renew``): the registry's
    dates, what the edge's last pong said of its failures (``edge_failing_since`` unix
    seconds, 0 or None: not failing) and the hub's own last refusal (unix seconds,
    reason). ``renew`` is ``failing since ISO (reason)`` when either side knows of a
    failure, else :func:`registry_view`'s phrase."""
    phrase = registry_view(not_before, not_after, renewed, now)
    # A failure from before the registry's last renewal is over: the pong that clears
    # the edge's count may not have come in yet.
    after = renewed.timestamp() if renewed else float("-inf")
    if refused is not None and refused[0] < after:
        refused = None
    if edge_failing_since and edge_failing_since < after:
        edge_failures = 0
    if refused is not None:
        since = dt.datetime.fromtimestamp(refused[0], dt.UTC).isoformat(timespec="seconds")
        phrase = f"failing since {since} (refused: {refused[1]})"
    elif edge_failures > 0 and edge_failing_since:
        since = dt.datetime.fromtimestamp(edge_failing_since, dt.UTC).isoformat(timespec="seconds")
        phrase = f"failing since {since} ({edge_failures} attempts; see the edge's log)"
    return {
        "not_after": not_after.isoformat(timespec="seconds"),
        "renewed": renewed.isoformat(timespec="seconds") if renewed else None,
        "failures": edge_failures,
        "renew": phrase,
    }
