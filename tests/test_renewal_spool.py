"""Renewals through the shared directory (spokeshare.renewal_spool) and the merged view
of several hubs' snapshots (spokeshare.hubstatus.read_deployment), on files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from spokeshare import enrollment, hubstatus, pki, renewal, renewal_spool
from spokeshare.errors import EnrollmentError
from spokeshare.stats import HubStatistics, to_json
from tests.helpers import make_deployment


@pytest.fixture
def dep_dir(tmp_path: Path) -> Path:
    return make_deployment(tmp_path, {"smb": 9}).dir


def _csr(office: str) -> bytes:
    return renewal.make_request(office, pki.new_key())


def test_a_request_is_signed_by_the_ca_host_and_read_once(dep_dir: Path) -> None:
    rid = renewal_spool.submit(dep_dir, "nyc", _csr("nyc"), None, "hub1")
    assert renewal_spool.answer(dep_dir, rid) is None  # not served yet
    done = renewal_spool.serve(dep_dir, None)
    assert [office for office, _ in done] == ["nyc"]
    got = renewal_spool.answer(dep_dir, rid)
    assert isinstance(got, renewal_spool.Issued)
    cert, ca = got.certificates()
    cert.verify_directly_issued_by(ca)
    assert pki.office_of(cert) == "nyc"
    assert enrollment.load_registry(dep_dir)["nyc"].serial == cert.serial_number
    assert not list(renewal_spool.spool_dir(dep_dir).iterdir())  # both files gone
    assert renewal_spool.answer(dep_dir, rid) is None


def test_refusals_go_back_as_answers(dep_dir: Path) -> None:
    enrollment.revoke_office(dep_dir, "nyc")
    revoked = renewal_spool.submit(dep_dir, "nyc", _csr("nyc"), None, "hub1")
    foreign = renewal_spool.submit(dep_dir, "nyc", _csr("sfo"), None, "hub1")
    renewal_spool.serve(dep_dir, None)
    for rid in (revoked, foreign):
        got = renewal_spool.answer(dep_dir, rid)
        assert isinstance(got, renewal.Refuse) and got.reason


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[1, 2]",
        b'{"office": "nyc"}',
        b'{"office": "NOT A NAME!", "csr": "", "in_use": null, "time": 0}',
        b'{"office": "nyc", "csr": "***", "in_use": null, "time": 0}',
        b'{"office": "nyc", "csr": "MAMCAQA=", "in_use": "zz", "time": 0}',
        b'{"office": "nyc", "csr": "' + b"A" * 20000 + b'", "in_use": null, "time": 0}',
    ],
)
def test_a_bad_request_is_refused_once_and_disturbs_nothing(dep_dir: Path, content: bytes) -> None:
    before = enrollment.load_registry(dep_dir)
    d = renewal_spool.spool_dir(dep_dir)
    d.mkdir(parents=True)
    (d / "bad-0.req.json").write_bytes(content)
    good = renewal_spool.submit(dep_dir, "nyc", _csr("nyc"), None, "hub1")
    renewal_spool.serve(dep_dir, None)
    got = renewal_spool.answer(dep_dir, "bad-0")
    assert isinstance(got, renewal.Refuse)
    assert isinstance(renewal_spool.answer(dep_dir, good), renewal_spool.Issued)
    after = enrollment.load_registry(dep_dir)
    assert set(after) == set(before)
    assert renewal_spool.serve(dep_dir, None) == []  # nothing left to answer


def test_a_stale_request_is_dropped_unanswered(dep_dir: Path) -> None:
    rid = renewal_spool.submit(dep_dir, "nyc", _csr("nyc"), None, "hub1")
    later = time.time() + renewal_spool.STALE_SECONDS + 1
    assert renewal_spool.serve(dep_dir, None, now=later) == []
    assert not list(renewal_spool.spool_dir(dep_dir).iterdir())
    assert renewal_spool.answer(dep_dir, rid) is None


def test_an_unreadable_answer_is_a_refusal(dep_dir: Path) -> None:
    rid = renewal_spool.submit(dep_dir, "nyc", _csr("nyc"), None, "hub1")
    (renewal_spool.spool_dir(dep_dir) / f"{rid}.res.json").write_text('{"chain": [1]}')
    assert isinstance(renewal_spool.answer(dep_dir, rid), renewal.Refuse)


def test_the_deployment_view_counts_each_snapshot_once(tmp_path: Path) -> None:
    now = time.time()
    state, shared = tmp_path / "state", tmp_path / "dir" / hubstatus.SHARED
    state.mkdir()
    shared.mkdir(parents=True)
    mine = to_json(HubStatistics(pid=10, pids=(10,), hubs=("hub0",), time=now, tunnels=3))
    other = to_json(HubStatistics(pid=10, pids=(10,), hubs=("hub1",), time=now, tunnels=4))
    stale = to_json(HubStatistics(pid=11, pids=(11,), hubs=("hub2",), time=now - 60))
    (state / "status.json").write_text(json.dumps(mine))
    (shared / "hub0.json").write_text(json.dumps(mine))  # the same process's copy
    (shared / "hub1.json").write_text(json.dumps(other))  # same pid, another host
    (shared / "hub2.json").write_text(json.dumps(stale))
    (shared / "junk.json").write_text("{")
    snaps = hubstatus.read_deployment(tmp_path / "dir", state, now)
    merged = hubstatus.merge(snaps)
    assert merged is not None
    assert merged.tunnels == 7 and sorted(merged.hubs) == ["hub0", "hub1"]


def test_no_ca_key_means_a_refusal_naming_the_ca_host(dep_dir: Path, tmp_path: Path) -> None:
    (dep_dir / "ca.key").rename(tmp_path / "elsewhere.key")
    assert not enrollment.has_ca_key(dep_dir)
    assert enrollment.has_ca_key(dep_dir, tmp_path / "elsewhere.key")
    rid = renewal_spool.submit(dep_dir, "nyc", _csr("nyc"), None, "hub1")
    with pytest.raises(EnrollmentError, match="ca_host"):
        renewal_spool.serve(dep_dir, None)
    assert renewal_spool.answer(dep_dir, rid) is None  # left for the CA host
    assert renewal_spool.serve(dep_dir, tmp_path / "elsewhere.key")
    assert isinstance(renewal_spool.answer(dep_dir, rid), renewal_spool.Issued)
