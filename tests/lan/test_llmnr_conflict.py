"""LLMNR uniqueness verification and conflicts (RFC 4795 §4): the sans-IO NameClaims
core, driven with a response captured from llmnrd and constructed packets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spokeshare.errors import UsageError
from spokeshare.lan import llmnr
from spokeshare.lan.llmnr import (
    CLASS_IN,
    FLAG_C,
    FLAG_QR,
    TYPE_A,
    TYPE_ANY,
    LlmnrConflict,
    LlmnrReclaimed,
    Message,
    NameClaims,
    Question,
    ResourceRecord,
    UniquenessQuery,
)

VECTORS = Path(__file__).parent / "vectors_discovery"
#: llmnrd -H GLOBAL-NFS on 198.18.202.1 answering query id 0x5a5a (see test_llmnr.py).
LLMNRD_ANSWER = (VECTORS / "llmnrd-response-a.bin").read_bytes()
LLMNRD = "198.18.202.1"
OURS = ("198.18.202.2", "fe80::2")
QID = 0x5A5A


def claims(**kw: float) -> NameClaims:
    return NameClaims(["GLOBAL-NFS"], OURS, new_id=lambda: QID, **kw)


def answer(
    qid: int = QID, address: str = "198.18.202.9", flags: int = FLAG_QR, name: str = "GLOBAL-NFS"
) -> Message:
    packed = bytes(int(x) for x in address.split("."))
    rr = ResourceRecord(name, TYPE_A, CLASS_IN, 30, packed)
    return Message(qid, flags, (Question(name, TYPE_A),), (rr,))


def started(c: NameClaims, now: float = 0.0) -> None:
    (q,) = c.verify(now)
    assert q == UniquenessQuery("GLOBAL-NFS", QID, llmnr.build_query(QID, "GLOBAL-NFS", TYPE_ANY))
    # The query as llmnr-query -T ANY sends it, but with our id and C clear.
    assert llmnr.decode(q.data) == Message(QID, 0, (Question("GLOBAL-NFS", TYPE_ANY),))


def test_silence_claims_the_name() -> None:
    c = claims()
    started(c)
    assert not c.answering("GLOBAL-NFS")  # not before the check is over (§4.1)
    assert c.handle_timer(0.5) == []
    assert c.handle_timer(1.0) == [] and c.answering("global-nfs")
    assert c.get_timer() is None


def test_llmnrd_answering_our_query_is_a_conflict_then_reclaimed_when_gone() -> None:
    c = claims(recheck_interval=60.0)
    started(c)
    assert c.received(llmnr.decode(LLMNRD_ANSWER), LLMNRD, 0.2) == []
    assert c.handle_timer(1.0) == [LlmnrConflict("GLOBAL-NFS", LLMNRD, recheck_in=5.0)]
    assert not c.answering("GLOBAL-NFS") and c.conflicts() == {"GLOBAL-NFS": LLMNRD}
    assert c.get_timer() == 6.0
    # Re-check 5 s later: llmnrd still there, a repeat conflict, the next wait doubled.
    query = llmnr.build_query(QID, "GLOBAL-NFS", TYPE_ANY)
    assert c.handle_timer(6.0) == [UniquenessQuery("GLOBAL-NFS", QID, query)]
    c.received(llmnr.decode(LLMNRD_ANSWER), LLMNRD, 6.1)
    assert c.handle_timer(7.0) == [
        LlmnrConflict("GLOBAL-NFS", LLMNRD, repeat=True, recheck_in=10.0)
    ]
    # Next re-check meets silence: reclaimed.
    assert c.handle_timer(16.9) == [] and c.get_timer() == 17.0
    assert [type(x) for x in c.handle_timer(17.0)] == [UniquenessQuery]
    assert c.handle_timer(18.0) == [LlmnrReclaimed("GLOBAL-NFS")] and c.answering("GLOBAL-NFS")
    assert c.statistics() == llmnr.ClaimStatistics(conflicts=2, reclaimed=1, challenges_ignored=0)


@pytest.mark.parametrize(
    ("msg", "source", "why"),
    [
        (answer(qid=0x1234), "198.18.202.9", "another id: nobody asked"),
        (answer(flags=FLAG_QR | FLAG_C), "198.18.202.9", "C set: the same host twice (§4.1)"),
        (answer(address=OURS[0]), "198.18.202.9", "answers with our own address"),
        (answer(), OURS[0], "our own packet looped back"),
        (answer(), "fe80::2%lan0", "our own IPv6 packet looped back"),
        (answer(name="OTHER"), "198.18.202.9", "another name"),
        (Message(QID, FLAG_QR, (Question("GLOBAL-NFS", TYPE_A),)), "198.18.202.9", "no answer"),
        (Message(QID, 0, (Question("GLOBAL-NFS", TYPE_A),)), "198.18.202.9", "a query"),
    ],
)
def test_not_a_conflict(msg: Message, source: str, why: str) -> None:
    c = claims()
    started(c)
    assert c.received(msg, source, 0.5) == [], why
    assert c.handle_timer(1.0) == [], why
    assert c.answering("GLOBAL-NFS"), why


def test_unsolicited_answer_after_start_takes_nothing() -> None:
    c = claims()
    started(c)
    c.handle_timer(1.0)
    for t in range(100):
        assert c.received(answer(), "198.18.202.9", 2.0 + t) == []
        assert c.handle_timer(2.0 + t) == []
    assert c.answering("GLOBAL-NFS")
    assert c.statistics().challenges_ignored == 100


def test_c_bit_query_re_verifies_and_keeps_answering_meanwhile() -> None:
    # RFC 4795 §4.2: a querier that saw conflicting answers sends a query with C set;
    # the owner does not answer it but checks its name again.
    c = claims()
    started(c)
    c.handle_timer(1.0)
    conflict_query = Message(0x0101, FLAG_C, (Question("GLOBAL-NFS", TYPE_A),))
    (q,) = c.received(conflict_query, "198.18.202.7", 5.0)
    assert isinstance(q, UniquenessQuery)
    assert c.answering("GLOBAL-NFS")  # a spoofed C query silences nothing
    # A flood of C queries while that check is in flight sends no more queries.
    assert all(c.received(conflict_query, "198.18.202.7", 5.1) == [] for _ in range(50))
    assert c.handle_timer(6.0) == [] and c.answering("GLOBAL-NFS")


def test_c_bit_query_re_verification_finds_real_owner() -> None:
    c = claims()
    started(c)
    c.handle_timer(1.0)
    c.received(Message(9, FLAG_C, (Question("GLOBAL-NFS", TYPE_A),)), "198.18.202.7", 5.0)
    c.received(llmnr.decode(LLMNRD_ANSWER), LLMNRD, 5.5)
    assert c.handle_timer(6.0) == [LlmnrConflict("GLOBAL-NFS", LLMNRD, recheck_in=5.0)]


def test_spoofed_answer_during_a_check_lasts_at_most_one_recheck() -> None:
    c = claims(recheck_interval=60.0)
    started(c)
    c.received(answer(), "198.18.202.66", 0.5)  # a spoofer that guessed the id
    assert c.handle_timer(1.0) == [LlmnrConflict("GLOBAL-NFS", "198.18.202.66", recheck_in=5.0)]
    c.handle_timer(6.0)
    assert c.handle_timer(7.0) == [LlmnrReclaimed("GLOBAL-NFS")] and c.answering("GLOBAL-NFS")


def test_verify_again_at_interface_up_re_checks_claimed_names() -> None:
    c = claims()
    started(c)
    c.handle_timer(1.0)
    assert len(c.verify(100.0)) == 1 and c.answering("GLOBAL-NFS")
    assert c.verify(100.1) == []  # already in flight


def test_recheck_must_outlast_the_wait() -> None:
    with pytest.raises(UsageError):
        NameClaims(["GLOBAL-NFS"], OURS, wait=1.0, recheck_interval=1.0)


EVENT = st.one_of(
    st.tuples(
        st.just("answer"),
        st.sampled_from([QID, 1]),
        st.sampled_from(["198.18.202.9", OURS[0]]),
        st.sampled_from([FLAG_QR, FLAG_QR | FLAG_C]),
    ),
    st.tuples(st.just("cquery"), st.just(0), st.just("198.18.202.7"), st.just(FLAG_C)),
    st.tuples(st.just("verify"), st.just(0), st.just(""), st.just(0)),
    st.tuples(st.just("tick"), st.just(0), st.just(""), st.just(0)),
)


@settings(max_examples=200)
@given(st.lists(st.tuples(EVENT, st.floats(0.0, 30.0)), max_size=40))
def test_property_any_sequence_ends_with_the_name_back_once_peers_are_silent(
    events: list[tuple[tuple[str, int, str, int], float]],
) -> None:
    """Whatever arrives (spoofed answers, C queries, restarts), a conflict lasts at
    most until the first re-check that meets silence, and a name is never answered
    while in conflict."""
    recheck = 60.0
    c = claims(recheck_interval=recheck)
    now = 0.0
    c.verify(now)
    for (kind, qid, src, flags), dt in events:
        now += dt
        if kind == "answer":
            c.received(answer(qid=qid, flags=flags), src, now)
        elif kind == "cquery":
            c.received(Message(3, flags, (Question("GLOBAL-NFS", TYPE_A),)), src, now)
        elif kind == "verify":
            c.verify(now)
        c.handle_timer(now)
        if c.conflicts():
            assert not c.answering("GLOBAL-NFS")
    # The peers go quiet: within one wait plus one re-check the name is ours again.
    end = now + 1.0 + recheck + 1.0
    while now < end:
        now += 0.5
        c.handle_timer(now)
    assert c.answering("GLOBAL-NFS") and c.conflicts() == {}


def test_service_counts_unsolicited_answers_and_keeps_answering() -> None:
    """The asyncio adapter feeds every datagram to NameClaims: llmnrd's answer, arriving
    with no check in flight, is counted in the service's statistics and the name is
    still answered (LlmnrService without sockets: nothing is sent)."""
    from uuid import UUID

    from spokeshare.lan.discovery_service import LlmnrService
    from tests.lan.settings import discovery_settings

    ns = UUID("00000000-0000-0000-0000-000000000001")
    svc = LlmnrService(discovery_settings("eth0", "198.18.202.2", ("GLOBAL-NFS",), ns))
    svc._received(LLMNRD_ANSWER, (LLMNRD, 5355))
    stats = svc.statistics()
    assert stats.challenges_ignored == 1 and stats.conflicts == 0
    assert svc.conflicts == {} and svc.core.owns("GLOBAL-NFS")
