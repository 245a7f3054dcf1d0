"""Certificate renewal over the control channel: the messages, the schedule, the hub's
decision (spokeshare.renewal), the registry, and a real hub and edge on loopback with
certificates that live a minute."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from spokeshare import bundle, enrollment, pki, renewal
from spokeshare.errors import DecodeError, UsageError
from spokeshare.tunnel import control, wire
from spokeshare.tunnel.control import RenewIssued, RenewRefused, RenewRequest
from tests.helpers import Deployment, LoopThread, Stack, logged, wait_for
from tests.strategies import mutated_any

T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
DER = serialization.Encoding.DER


def _csr(office: str = "nyc") -> bytes:
    return renewal.make_request(office, pki.new_key())


# -- messages ----------------------------------------------------------------------------


def test_messages_both_ways() -> None:
    ca = pki.make_ca("t")
    cert = pki.issue_office(ca, "nyc").cert
    chain = (cert.public_bytes(DER), ca.cert.public_bytes(DER))
    for msg in (
        RenewRequest(3, _csr()),
        RenewIssued(3, chain),
        RenewRefused(3, "office nyc is revoked"),
    ):
        frame = control.encode(msg)
        (ev,) = wire.FrameReader(allow_control=True).feed(frame)
        assert isinstance(ev, wire.ControlReceived)
        assert control.decode_json(ev.message) == msg
        assert control.decode(frame[4:]) == msg


def test_wire_form_is_base64_der() -> None:
    raw = control.encode(RenewRequest(1, b"\x30\x03\x02\x01\x00"))
    assert raw[4:] == b'{"t":"renew","id":1,"csr":"MAMCAQA="}'
    assert control.decode(b'{"t":"renew-refused","id":9,"reason":"no"}') == RenewRefused(9, "no")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"t":"renew","id":1}',
        b'{"t":"renew","id":-1,"csr":"MAMCAQA="}',
        b'{"t":"renew","id":true,"csr":"MAMCAQA="}',
        b'{"t":"renew","id":1,"csr":"not base64!"}',
        b'{"t":"renew","id":1,"csr":""}',
        b'{"t":"renew","id":1,"csr":"' + b"A" * 1400 + b'"}',  # over MAX_CSR
        b'{"t":"renew-issued","id":1,"chain":[]}',
        b'{"t":"renew-issued","id":1,"chain":"MAMCAQA="}',
        b'{"t":"renew-issued","id":1,"chain":["MAMCAQA=","MAMCAQA=","MAMCAQA="]}',
        b'{"t":"renew-issued","id":1,"chain":[5]}',
        b'{"t":"renew-refused","id":1,"reason":""}',
        b'{"t":"renew-refused","id":1,"reason":"' + b"x" * 201 + b'"}',
        b'{"t":"renew-refused","id":1}',
    ],
)
def test_bad_renewal_messages(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        control.decode(raw)


def test_constructors_refuse_misuse() -> None:
    with pytest.raises(UsageError):
        RenewRequest(1, b"")
    with pytest.raises(UsageError):
        RenewRequest(1, b"x" * (control.MAX_CSR + 1))
    with pytest.raises(UsageError):
        RenewIssued(1, ())
    with pytest.raises(UsageError):
        RenewIssued(1, (b"x" * (control.MAX_CERT + 1),))
    with pytest.raises(UsageError):
        RenewRefused(-1, "x")


def test_largest_messages_fit_one_control_frame() -> None:
    big = b"\x00" * control.MAX_CERT
    assert len(control.encode(RenewIssued(control.MAX_SEQ, (big,) * control.MAX_CHAIN))) < (
        wire.MAX_CONTROL + 4
    )
    assert control.encode(RenewRequest(control.MAX_SEQ, b"\x00" * control.MAX_CSR))


@given(st.integers(0, control.MAX_SEQ), st.binary(min_size=1, max_size=control.MAX_CSR))
def test_request_round_trip(ident: int, csr: bytes) -> None:
    msg = RenewRequest(ident, csr)
    assert control.decode(control.encode(msg)[4:]) == msg


@given(mutated_any([control.encode(RenewRequest(1, b"\x30\x03\x02\x01\x00"))[4:]]))
def test_mutated_requests_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        control.decode(data)
    except DecodeError:
        pass


def test_heartbeat_hands_renewal_messages_on() -> None:
    hb = control.Heartbeat(control.HeartbeatConfig(1.0, 3.0), 0.0)
    msg = RenewRefused(1, "no")
    assert hb.receive(msg, 2.5) == [control.Deliver(msg)]
    assert hb.heard == 2.5  # and the peer counts as heard


# -- the schedule ----------------------------------------------------------------------


def test_renew_time_is_two_thirds_by_default() -> None:
    na = T0 + dt.timedelta(days=90)
    assert renewal.renew_time(T0, na, renewal.DEFAULT_RENEW_AT) == T0 + dt.timedelta(days=60)
    with pytest.raises(UsageError):
        renewal.renew_time(T0, na, 1.0)


def test_retry_delay_long_and_short_certificates() -> None:
    year = 825 * 86400.0
    assert renewal.retry_delay(year, 1) == 60.0
    assert renewal.retry_delay(year, 30) == 3600.0
    assert renewal.retry_delay(90.0, 1) == 1.0
    assert renewal.retry_delay(90.0, 30) == 2.0


@given(
    st.floats(60.0, 3000 * 86400.0),
    st.floats(0.1, 0.95),
    st.integers(0, 200),
    st.floats(0.0, 1.2),
    st.floats(0.5, 1.0),
)
def test_next_attempt_properties(
    life: float, renew_at: float, failures: int, at: float, jitter: float
) -> None:
    nb = T0
    na = T0 + dt.timedelta(seconds=life)
    last = nb + dt.timedelta(seconds=life * at)
    nxt = renewal.next_attempt(nb, na, renew_at, failures, last if failures else None, jitter)
    due = renewal.renew_time(nb, na, renew_at)
    assert nxt >= due  # never before the renewal time
    if failures:
        gap = (nxt - last).total_seconds()
        # after a failure: a real wait, never longer than RETRY_MAX of the lifetime
        assert nxt >= last
        assert gap <= max(life * renewal.RETRY_MAX, renewal.RETRY_MAX_BOUNDS[0]) + 1e-6 or (
            nxt == due
        )
        more = renewal.next_attempt(nb, na, renew_at, failures + 1, last, jitter)
        assert more >= nxt  # more failures never retry sooner
        # retries keep coming: at least 5 attempts fit in the last fifth of any lifetime
        assert renewal.retry_delay(life, failures, jitter) <= life / 25 + 1e-6 or life < 100


def test_overdue_for_check() -> None:
    na = T0 + dt.timedelta(days=90)
    assert renewal.overdue(T0, na, 2 / 3, T0 + dt.timedelta(days=61)) is None
    assert renewal.overdue(T0, na, 2 / 3, T0 + dt.timedelta(days=66)) == "warning"
    assert renewal.overdue(T0, na, 2 / 3, T0 + dt.timedelta(days=82)) == "error"


def test_describe() -> None:
    st_ = renewal.RenewalStatus(T0, T0, T0, renewed=T0)
    assert renewal.describe(st_) == "ok 2026-11-30"
    failing = renewal.RenewalStatus(T0, T0, T0, failures=3, failing_since=T0, reason="no answer")
    assert renewal.describe(failing).startswith("failing since 2026-11-30T12:00:00+00:00")


# -- the hub's decision ------------------------------------------------------------------


def test_decide_issues_for_the_tunnels_office() -> None:
    key = pki.new_key()
    got = renewal.decide("nyc", True, False, renewal.make_request("nyc", key))
    assert got == renewal.Issue(key.public_key())


def test_decide_refuses_another_office() -> None:
    got = renewal.decide("nyc", True, False, _csr("sfo"))
    assert isinstance(got, renewal.Refuse) and "sfo" in got.reason


def test_decide_refuses_revoked_and_unknown() -> None:
    assert renewal.decide("nyc", True, True, _csr()) == renewal.Refuse("office nyc is revoked")
    assert renewal.decide("nyc", False, False, _csr()) == renewal.Refuse(
        "office nyc is not enrolled"
    )


def test_decide_refuses_bad_requests() -> None:
    good = _csr()
    for bad in (b"", b"\x30\x00", good[:-5], b"x" * 2000, good[:40] + b"\x00" + good[41:]):
        assert isinstance(renewal.decide("nyc", True, False, bad), renewal.Refuse)


def test_decide_refuses_other_key_types() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "nyc")]))
        .sign(rsa_key, hashes.SHA256())
    )
    got = renewal.decide("nyc", True, False, csr.public_bytes(DER))
    assert isinstance(got, renewal.Refuse)
    p384 = ec.generate_private_key(ec.SECP384R1())
    got = renewal.decide("nyc", True, False, renewal.make_request("nyc", p384))
    assert got == renewal.Refuse("request key is not ECDSA P-256")


# -- the registry ------------------------------------------------------------------------


def test_registry_renewal_keeps_old_serial_and_lifetime(deployment: Deployment) -> None:
    d = deployment.dir
    before = enrollment.load_registry(d)["nyc"]
    key = pki.new_key()
    got = enrollment.renew_from_request(d, "nyc", renewal.make_request("nyc", key))
    assert not isinstance(got, renewal.Refuse)
    cert, ca_cert = got
    assert cert.public_key() == key.public_key()
    assert pki.office_of(cert) == "nyc"
    cert.verify_directly_issued_by(ca_cert)
    rec = enrollment.load_registry(d)["nyc"]
    assert rec.serial == cert.serial_number and rec.accepts(before.serial)
    assert rec.renewed is not None and rec.lifetime_days == before.lifetime_days
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=825) <= span <= dt.timedelta(days=825, minutes=6)


def test_registry_renewal_refused_when_revoked(deployment: Deployment) -> None:
    enrollment.revoke_office(deployment.dir, "nyc")
    got = enrollment.renew_from_request(deployment.dir, "nyc", _csr())
    assert got == renewal.Refuse("office nyc is revoked")
    rec = enrollment.load_registry(deployment.dir)["nyc"]
    assert rec.revoked is not None and rec.renewed is None


def test_revoke_during_renewals_is_never_lost(deployment: Deployment) -> None:
    """Renewals and a revocation at once: the registry lock keeps every change."""
    errors: list[BaseException] = []

    def renew() -> None:
        try:
            for _ in range(5):
                enrollment.renew_from_request(deployment.dir, "nyc", _csr())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=renew) for _ in range(3)]
    for t in threads:
        t.start()
    enrollment.revoke_office(deployment.dir, "nyc")
    for t in threads:
        t.join(60)
    assert not errors
    assert enrollment.load_registry(deployment.dir)["nyc"].revoked is not None


# -- a real hub and edge on loopback -----------------------------------------------------

LIFETIME = 60 / 86400  # days: certificates live 60 seconds (66 with the backdating)


def _peer_serials(stack: Stack) -> set[int]:
    def get() -> set[int]:
        out = set()
        for t in stack.hub.offices["bos"].tunnels:
            sslobj = t.transport.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True)
            out.add(x509.load_der_x509_certificate(der).serial_number)
        return out

    return stack.lt.call(get)


def test_edge_renews_over_its_tunnel(
    tmp_path: Path, deployment: Deployment, loop_thread: LoopThread
) -> None:
    out = deployment.add_office("bos", days=LIFETIME)
    old = bundle.read(out)
    stack = Stack(deployment, loop_thread, office="bos", pool={"min_idle": 1})
    # renewed after 40% of the lifetime (about 20 s from now); no NetBIOS session
    # listener (port 139 is not this test's business)
    cfg = stack.edge.cfg
    stack.edge.cfg = dataclasses.replace(
        cfg, renew_at=0.4, netbios=dataclasses.replace(cfg.netbios, session_port=0)
    )
    stack.start()
    try:
        # a stream opened with the old certificate, kept flowing across the renewal
        s = stack.connect()
        s.sendall(b"before")
        assert s.recv(6) == b"before"
        edge = stack.edge
        wait_for(lambda: edge.renewed is not None, timeout=90, what="renewal")
        new = bundle.read(out)
        assert new.cert.serial_number != old.cert.serial_number
        assert new.key_pem != old.key_pem
        assert out.stat().st_mode & 0o777 == 0o600
        rec = enrollment.load_registry(deployment.dir)["bos"]
        assert rec.serial == new.cert.serial_number and rec.accepts(old.cert.serial_number)
        # the old stream still flows; a new stream's tunnel uses the new certificate
        s.sendall(b"after")
        assert s.recv(5) == b"after"
        s2 = stack.connect()
        s2.sendall(b"x")
        assert s2.recv(1) == b"x"
        wait_for(
            lambda: new.cert.serial_number in _peer_serials(stack), what="a tunnel on the new cert"
        )
        assert loop_thread.call(lambda: edge.statistics().certificate["renew"]).startswith("ok ")
        s.close()
        s2.close()
    finally:
        stack.close()


# -- what operators see at the hub -------------------------------------------------------


def test_registry_view_phrases() -> None:
    na = T0 + dt.timedelta(days=90)

    def at(days: float, renewed: dt.datetime | None = None) -> str:
        return renewal.registry_view(T0, na, renewed, T0 + dt.timedelta(days=days))

    assert at(10) == "due 2027-01-29"
    assert at(10, T0) == "ok 2026-11-30"
    assert at(66).startswith("failing: due since 2027-01-29")
    assert at(85, T0).startswith("failing: expires 2027-02-28")
    assert at(91) == "expired 2027-02-28"


def test_office_list_shows_renewal(deployment: Deployment) -> None:
    import json
    import subprocess
    import sys

    def listed() -> dict[str, str]:
        res = subprocess.run(
            [sys.executable, "-m", "spokeshare", "office", "list", "--dir", str(deployment.dir),
             "--json"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return {o["office"]: o["renewal"] for o in json.loads(res.stdout)["offices"]}

    assert listed()["nyc"].startswith("due ")
    got = enrollment.renew_from_request(deployment.dir, "nyc", _csr())
    assert not isinstance(got, renewal.Refuse)
    assert listed()["nyc"] == f"ok {dt.datetime.now(dt.UTC):%Y-%m-%d}"


# -- spokeshare check --------------------------------------------------------------------


def test_check_phrases() -> None:
    na = T0 + dt.timedelta(days=90)

    def at(days: float, reported: dict[str, object] | None = None) -> tuple[str, str, str]:
        return renewal.check(T0, na, 2 / 3, T0 + dt.timedelta(days=days), "nyc", reported)

    assert at(10)[0] == "ok"
    failing = {"failures": 2, "renew": "failing since 2026-12-01T00:00:00+00:00 (no answer)"}
    level, message, fix = at(10, failing)
    assert level == "warning" and "failing since" in message and "edge's log" in fix
    assert at(66)[0] == "warning"  # past its renewal time, whatever the edge says
    assert at(85)[0] == "error" and "office renew nyc" in at(85)[2]
    assert at(91)[0] == "error" and "expired" in at(91)[1]
    assert at(10, {"failures": 0, "renew": "ok 2026-12-10"}) == (
        "ok",
        "the office certificate renews itself (ok 2026-12-10)",
        "",
    )


def test_check_reads_the_edges_status(deployment: Deployment) -> None:
    from spokeshare import check

    b = bundle.read(deployment.bundles["nyc"])
    now = dt.datetime.now(dt.UTC)
    assert check.cert_renewal(b, 2 / 3, now, None).level is check.Level.OK
    expires = b.cert.not_valid_after_utc.isoformat(timespec="seconds")
    failing = {"failures": 3, "renew": "failing since x (y)", "not_after": expires}
    got = check.cert_renewal(b, 2 / 3, now, {"certificate": failing})
    assert got.level is check.Level.WARNING and got.code == "edge.bundle.renewal"
    # a status file about another certificate (the running edge's, checking another
    # bundle) is not this one's
    other = {**failing, "not_after": "2030-01-01T00:00:00+00:00"}
    assert check.cert_renewal(b, 2 / 3, now, {"certificate": other}).level is check.Level.OK


def test_check_at_hq_names_offices_not_renewed(deployment: Deployment) -> None:
    from spokeshare import check

    now = dt.datetime.now(dt.UTC)
    assert check.offices_renewal(deployment.dir, now) == []
    # issued 70 days ago for 90 days: due at day 60, so renewals are failing
    deployment.add_office("sfo", days=90, now=now - dt.timedelta(days=70))
    (found,) = check.offices_renewal(deployment.dir, now)
    assert found.level is check.Level.WARNING and found.message.startswith("sfo: ")


def test_renew_at_setting(tmp_path: Path) -> None:
    from spokeshare.config import load_edge
    from spokeshare.errors import ConfigError

    conf = tmp_path / "edge.toml"
    conf.write_text("[edge]\nrenew_at = 0.5\n")
    assert load_edge(conf).renew_at == 0.5
    assert load_edge(None).renew_at == renewal.DEFAULT_RENEW_AT
    for bad in ("1.0", "0.05", '"soon"'):
        conf.write_text(f"[edge]\nrenew_at = {bad}\n")
        with pytest.raises(ConfigError, match="renew_at"):
            load_edge(conf)


@pytest.mark.expect_errors  # the hub logs that it cannot read its CA key
def test_failed_renewal_is_retried_and_reported(
    deployment: Deployment, loop_thread: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    """The hub cannot issue (its CA key unreadable): the edge's attempts are refused,
    counted and reported, the bundle untouched; once the key is back, the next attempt
    (backoff, no restart) renews."""
    caplog.set_level(logging.INFO, "spokeshare")
    out = deployment.add_office("bos", days=LIFETIME)
    old = bundle.read(out)
    ca_key = deployment.dir / "ca.key"
    hidden = deployment.dir / "ca.key.away"
    ca_key.rename(hidden)
    stack = Stack(deployment, loop_thread, office="bos", pool={"min_idle": 1})
    cfg = stack.edge.cfg
    stack.edge.cfg = dataclasses.replace(
        cfg, renew_at=0.3, netbios=dataclasses.replace(cfg.netbios, session_port=0)
    )
    stack.start()
    edge = stack.edge
    try:
        wait_for(lambda: edge.renew_failures >= 2, timeout=60, what="two refused renewals")
        status = loop_thread.call(lambda: edge.statistics().certificate)
        assert status["renew"].startswith("failing since")
        assert "refused by the hub" in status["reason"]
        hub_office = stack.hub.offices["bos"]
        assert loop_thread.call(lambda: hub_office.renew_refused) is not None
        seen = loop_thread.call(lambda: hub_office.statistics().certificate)
        assert str(seen["renew"]).startswith("failing since") and "refused:" in str(seen["renew"])
        assert bundle.read(out).cert.serial_number == old.cert.serial_number
        hidden.rename(ca_key)
        wait_for(lambda: edge.renewed is not None, timeout=30, what="renewal after the fix")
        assert bundle.read(out).cert.serial_number != old.cert.serial_number
        assert edge.renew_failures == 0
        assert loop_thread.call(lambda: hub_office.renew_refused) is None
        # the hub's snapshot (office list, dashboard) says ok once the refusal is over
        wait_for(
            lambda: str(
                loop_thread.call(lambda: hub_office.statistics().certificate)["renew"]
            ).startswith("ok "),
            what="the hub's view back to ok",
        )
    finally:
        stack.close()
    # What the operator reads: the edge's failures counted, the hub's refusals and why,
    # then the renewal at both ends with the new serial.
    failed = logged(caplog, "certificate renewal failed")
    assert [int(f["failures"]) for f in failed][:2] == [1, 2]
    assert {f["office"] for f in failed} == {"bos"} and "refused by the hub" in failed[0]["reason"]
    assert {ln["office"] for ln in logged(caplog, "certificate not issued")} == {"bos"}
    assert {ln["office"] for ln in logged(caplog, "certificate renewal refused")} == {"bos"}
    new = f"{bundle.read(out).cert.serial_number:x}"
    hub_line, edge_line = logged(caplog, "certificate renewed")
    assert (hub_line["office"], hub_line["serial"]) == ("bos", new) and "bundle" not in hub_line
    assert (edge_line["office"], edge_line["serial"], edge_line["bundle"]) == ("bos", new, str(out))
    assert int(edge_line["failures_before"]) == len(failed)


def test_serial_in_use_stays_accepted(deployment: Deployment) -> None:
    """An edge that could not install its renewals keeps running on its certificate:
    however many renewals follow, the serial the asking tunnel used is kept."""
    d = deployment.dir
    in_use = enrollment.load_registry(d)["nyc"].serial
    for _ in range(enrollment.MAX_PREVIOUS + 2):
        got = enrollment.renew_from_request(d, "nyc", _csr(), in_use=in_use)
        assert not isinstance(got, renewal.Refuse)
    rec = enrollment.load_registry(d)["nyc"]
    assert rec.accepts(in_use) and len(rec.previous) == enrollment.MAX_PREVIOUS
    # without it, the oldest serials go once more than MAX_PREVIOUS renewals followed
    for _ in range(enrollment.MAX_PREVIOUS + 1):
        enrollment.renew_from_request(d, "nyc", _csr())
    assert not enrollment.load_registry(d)["nyc"].accepts(in_use)


def test_hub_view_drops_failures_older_than_the_last_renewal() -> None:
    issued = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    expires = issued + dt.timedelta(days=90)
    renewed = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    now = renewed + dt.timedelta(seconds=5)
    before, after = renewed.timestamp() - 60, renewed.timestamp() + 1
    stale = renewal.hub_certificate(issued, expires, renewed, now, 2, before, (before, "x"))
    assert stale["renew"] == renewal.registry_view(issued, expires, renewed, now)
    assert stale["failures"] == 0
    fresh = renewal.hub_certificate(issued, expires, renewed, now, 2, after)
    assert str(fresh["renew"]).startswith("failing since") and fresh["failures"] == 2
    refused = renewal.hub_certificate(issued, expires, renewed, now, refused=(after, "revoked"))
    assert "refused: revoked" in str(refused["renew"])
