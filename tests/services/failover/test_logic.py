"""The pure pieces of failover: heartbeat book, detector, suspicions, quorum, hysteresis."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.failover import Evidence
from contracts.state import DownDecision
from mesh.cli.sites import next_dark
from mesh.trust import TrustStore
from services.failover import quorum
from services.failover.decisions import confirms, down_event, next_down, next_recovered
from services.failover.detector import Detector, Suspect, Withdraw
from services.failover.heartbeats import HeartbeatBook
from services.failover.recovery import Streaks, may_recover, suspicion_timeout
from services.failover.suspicions import Suspicion, SuspicionSet
from support_failover import trust_of as roster_of

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def trust_of(n: int, suspended: tuple[str, ...] = ()) -> TrustStore:
    return roster_of(*(f"m{i}" for i in range(n)), suspended=suspended)


def sus(observer: str, t: float = 0.0, *, target: str = "m0", suspected: bool = True
        ) -> Suspicion:
    return Suspicion(target=target, observer=observer, msg_id=f"{observer}-{t}",
                     silence_s=1.0, at=at(t), suspected=suspected)


# -- heartbeat book -------------------------------------------------------------------------


def test_book_counts_a_never_heard_member_from_start_plus_grace() -> None:
    book = HeartbeatBook(100.0, startup_grace_s=2.0)
    assert book.last_heard("a") is None
    assert book.silence("a", 101.0) == 0.0
    assert book.silence("a", 105.0) == pytest.approx(3.0)
    book.heard("a", 104.0)
    assert book.silence("a", 105.0) == pytest.approx(1.0)


def test_book_never_moves_back_in_time() -> None:
    book = HeartbeatBook(0.0)
    book.heard("a", 5.0)
    book.heard("a", 3.0)
    assert book.last_heard("a") == 5.0
    assert book.beats("a") == 2


# -- detector ---------------------------------------------------------------------------------


def test_detector_one_suspicion_per_episode_and_withdrawal_needs_a_fresh_beat() -> None:
    book = HeartbeatBook(0.0)
    det = Detector(timeout_s=3.0, renew_s=15.0)
    book.heard("b", 1.0)
    assert det.decide("b", book, 3.0) is None
    action = det.decide("b", book, 4.5)
    assert action == Suspect("b", 3.5)
    det.published(action, 4.5)
    assert det.suspected == ["b"]
    # Still silent: nothing new until the renewal.
    assert det.decide("b", book, 6.0) is None
    # A fresh beat withdraws.
    book.heard("b", 6.5)
    assert det.decide("b", book, 6.6) == Withdraw("b")
    det.published(Withdraw("b"), 6.6)
    assert det.suspected == []


def test_detector_does_not_withdraw_on_a_beat_that_falls_silent_again() -> None:
    book = HeartbeatBook(0.0)
    det = Detector(timeout_s=3.0, renew_s=15.0)
    book.heard("b", 0.0)
    det.published(Suspect("b", 3.0), 3.0)
    book.heard("b", 3.5)  # one beat, then silence again before the tick sees it
    assert det.decide("b", book, 7.0) is None
    assert det.suspected == ["b"]


def test_detector_renews_a_long_silence_before_it_goes_stale() -> None:
    book = HeartbeatBook(0.0)
    det = Detector(timeout_s=3.0, renew_s=15.0)
    det.published(Suspect("b", 3.0), 3.0)
    assert det.decide("b", book, 17.0) is None
    renewal = det.decide("b", book, 18.0)
    assert isinstance(renewal, Suspect) and renewal.renewal
    det.published(renewal, 18.0)
    assert det.decide("b", book, 20.0) is None


def test_detector_suspicion_published_only_counts_after_publish() -> None:
    book = HeartbeatBook(0.0)
    det = Detector(timeout_s=3.0, renew_s=15.0)
    assert isinstance(det.decide("b", book, 4.0), Suspect)
    # The publish failed (never recorded): the next tick tries again.
    assert isinstance(det.decide("b", book, 4.5), Suspect)


# -- suspicions -------------------------------------------------------------------------------


def test_withdrawn_and_stale_suspicions_do_not_count() -> None:
    book = SuspicionSet()
    book.record(sus("m1", 0.0))
    book.record(sus("m2", 0.0))
    book.record(sus("m2", 5.0, suspected=False))  # withdrawn
    book.record(sus("m3", -40.0))  # stale by the time we look
    current = book.current("m0", now=at(6.0), stale_s=30.0)
    assert [s.observer for s in current] == ["m1"]


def test_an_older_statement_never_replaces_a_newer_one() -> None:
    book = SuspicionSet()
    assert book.record(sus("m1", 5.0, suspected=False))
    assert not book.record(sus("m1", 1.0))  # late redelivery of the older suspicion
    assert book.current("m0", now=at(6.0), stale_s=30.0) == []


def test_suspicions_before_the_last_recovery_do_not_count() -> None:
    book = SuspicionSet()
    book.record(sus("m1", 1.0))
    book.record(sus("m2", 9.0))
    current = book.current("m0", now=at(10.0), stale_s=30.0, since=at(5.0))
    assert [s.observer for s in current] == ["m2"]


def test_prune_forgets_stale_statements() -> None:
    book = SuspicionSet()
    book.record(sus("m1", 0.0))
    book.record(sus("m2", 0.0, target="m5"))
    book.record(sus("m3", 50.0, target="m5"))
    book.prune(now=at(60.0), stale_s=30.0)
    assert book.targets() == ["m5"]


# -- quorum -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "needed"), [(3, 2), (4, 2), (5, 3), (7, 4)])
def test_quorum_sizes(n: int, needed: int) -> None:
    trust = trust_of(n)
    assert quorum.needed_against(trust, "m0") == needed


def test_two_members_never_let_one_decide_alone() -> None:
    # ⌈2·1/3⌉ would be 1: the floor of two observers keeps invariant 4.
    assert quorum.needed_against(trust_of(2), "m0") == 2


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7])
def test_a_lone_observer_never_reaches_quorum(n: int) -> None:
    trust = trust_of(n)
    active = trust.member_ids()
    for observer in active[1:]:
        counted = quorum.counting([sus(observer)], target="m0", active=active)
        assert not quorum.reached(counted, quorum.needed_against(trust, "m0"))


def test_minority_partition_suspecting_everyone_declares_nobody() -> None:
    # m0 is cut off: it suspects all others, nobody suspects anyone else.
    trust = trust_of(5)
    active = trust.member_ids()
    for target in active[1:]:
        counted = quorum.counting([sus("m0", target=target)], target=target, active=active)
        assert not quorum.reached(counted, quorum.needed_against(trust, target))


def test_only_other_active_members_count() -> None:
    trust = trust_of(5, suspended=("m4",))
    active = trust.member_ids()
    assert quorum.needed_against(trust, "m0") == 2  # others: m1, m2, m3
    suspicions = [sus("m0"), sus("m4"), sus("stranger"), sus("m1"), sus("m1", 2.0)]
    counted = quorum.counting(suspicions, target="m0", active=active)
    assert [s.observer for s in counted] == ["m1"]
    assert not quorum.reached(counted, 2)
    counted = quorum.counting([*suspicions, sus("m2")], target="m0", active=active)
    assert quorum.reached(counted, 2)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=2, max_value=12), data=st.data())
def test_a_minority_side_of_any_partition_declares_nobody(n: int, data: st.DataObject) -> None:
    """Split the members in two; each side suspects everyone on the other side (and,
    being cut off, hears nobody there). Only a side holding a quorum of the others may
    declare, so a target is never declared by both sides, and a minority never."""
    trust = trust_of(n)
    active = trust.member_ids()
    side = set(data.draw(st.lists(st.sampled_from(active), unique=True, max_size=n // 2)))
    other = set(active) - side
    for target in active:
        observers = other if target in side else side
        counted = quorum.counting([sus(o, target=target) for o in observers],
                                  target=target, active=active)
        needed = quorum.needed_against(trust, target)
        if quorum.reached(counted, needed):
            assert len(observers) >= 2 and 3 * len(observers) >= 2 * (n - 1)
        if 2 * len(observers) < n - 1:  # a strict minority of the others
            assert not quorum.reached(counted, needed)


def test_an_observer_knows_when_it_is_on_the_minority_side() -> None:
    # Three members: hearing the one other non-target member is enough.
    assert quorum.majority_side(heard_others=1, needed=2)
    assert not quorum.majority_side(heard_others=0, needed=2)
    # Five members, split 2 | 3 (needed 3): the pair is cut off, the trio is not.
    assert not quorum.majority_side(heard_others=1, needed=3)
    assert quorum.majority_side(heard_others=2, needed=3)


def test_evidence_problem() -> None:
    active = ["a", "b", "c"]
    assert quorum.evidence_problem(member="c", observers=["a", "b"], active=active,
                                   needed=2) is None
    problem = quorum.evidence_problem(member="c", observers=["a", "a", "c", "x"],
                                      active=active, needed=2)
    assert problem is not None and "1 valid observer" in problem


# -- hysteresis -------------------------------------------------------------------------------


def test_recovery_needs_a_steady_streak() -> None:
    streaks = Streaks(max_gap_s=3.0, min_beats=3, min_span_s=2.0)
    streaks.beat("b", 10.0)
    assert not streaks.steady("b", 10.0)
    streaks.beat("b", 11.0)
    assert not streaks.steady("b", 11.0)  # two beats
    streaks.beat("b", 11.5)
    assert not streaks.steady("b", 11.5)  # three beats but over 1.5 s only
    streaks.beat("b", 12.0)
    assert streaks.steady("b", 12.0)
    assert not streaks.steady("b", 16.0)  # silent again: no longer steady


def test_a_flapping_member_does_not_recover() -> None:
    streaks = Streaks(max_gap_s=3.0, min_beats=3, min_span_s=2.0)
    for t in (0.0, 1.0, 5.0, 6.0, 10.0, 11.0):  # two beats, silence, two beats, ...
        streaks.beat("b", t)
        assert not streaks.steady("b", t)
    streaks.beat("b", 12.0)
    streaks.beat("b", 13.0)
    assert streaks.steady("b", 13.0)
    streaks.reset("b")
    assert not streaks.steady("b", 13.0)


def test_may_recover_only_when_the_quorum_let_go() -> None:
    assert may_recover(is_down=True, steady=True, standing=1, needed=2)
    assert not may_recover(is_down=True, steady=True, standing=2, needed=2)
    assert not may_recover(is_down=True, steady=False, standing=0, needed=2)
    assert not may_recover(is_down=False, steady=True, standing=0, needed=2)


def test_rebase_restarts_every_silence() -> None:
    # The observer was cut off from 10 s to 40 s: nobody's silence counts from before.
    book = HeartbeatBook(0.0, startup_grace_s=2.0)
    book.heard("b", 10.0)
    book.rebase(40.0)
    assert book.silence("b", 41.0) == 1.0
    assert book.silence("never-heard", 41.0) == 1.0  # its grace restarts too
    book.heard("c", 50.0)
    book.rebase(45.0)  # never moves a clock backwards
    assert book.silence("c", 50.0) == 0.0


def test_a_site_report_adds_or_removes_one_site() -> None:
    assert next_dark([], "aac1", dark=True) == ["aac1"]
    assert next_dark(["ehv1"], "aac1", dark=True) == ["aac1", "ehv1"]
    assert next_dark(["aac1", "ehv1"], "aac1", dark=False) == ["ehv1"]
    assert next_dark(["ehv1"], "aac1", dark=False) == ["ehv1"]


def test_flap_guard_lengthens_the_timeout_for_a_while_after_recovery() -> None:
    def timeout(since: float | None) -> float:
        return suspicion_timeout(3.0, since_recovery_s=since, guard_s=60.0, factor=3.0)

    assert timeout(None) == 3.0  # never recovered
    assert timeout(5.0) == 9.0
    assert timeout(59.9) == 9.0
    assert timeout(60.0) == 3.0  # the guard has passed
    assert suspicion_timeout(3.0, since_recovery_s=5.0, guard_s=0.0, factor=3.0) == 3.0


def test_detector_honours_a_longer_timeout_for_one_target() -> None:
    book = HeartbeatBook(0.0)
    book.heard("b", 0.0)
    detector = Detector(timeout_s=3.0, renew_s=15.0)
    assert detector.decide("b", book, 4.0, timeout_s=9.0) is None  # flap guard: not yet
    action = detector.decide("b", book, 9.5, timeout_s=9.0)
    assert isinstance(action, Suspect)


# -- the decision record ------------------------------------------------------------------------


def test_down_record_transitions() -> None:
    evidence = [Evidence(observer="b", msg_id="2", silence_s=3.1),
                Evidence(observer="a", msg_id="1", silence_s=3.2)]
    first = next_down(None, member="c", declared_by="a", now=T0, evidence=evidence, quorum=2)
    assert first is not None and (first.state, first.epoch) == ("down", 1)
    assert first.observers == ["a", "b"]
    assert next_down(first, member="c", declared_by="b", now=T0, evidence=evidence,
                     quorum=2) is None
    back = next_recovered(first, recovered_by="b", now=at(60))
    assert back is not None and (back.state, back.epoch, back.recovered_by) == (
        "recovered", 1, "b")
    assert back.declared_by == "a"
    assert next_recovered(back, recovered_by="a", now=at(61)) is None
    again = next_down(back, member="c", declared_by="b", now=at(90), evidence=evidence,
                      quorum=2)
    assert again is not None and (again.state, again.epoch) == ("down", 2)
    event = down_event(first)
    assert (event.member, event.epoch, event.quorum) == ("c", 1, 2)
    assert [e.observer for e in event.evidence] == ["a", "b"]


def test_confirms_a_declaration_against_its_record() -> None:
    record = DownDecision(member="c", state="down", epoch=2, declared_by="a", declared_at=T0)
    event = down_event(record)
    assert confirms(record, event, "a") is True
    assert confirms(record, event, "b") is False  # not the CAS winner
    assert confirms(None, event, "a") is None  # not readable yet
    newer = DownDecision(member="c", state="recovered", epoch=3, declared_by="b",
                         declared_at=T0)
    assert confirms(newer, event, "a") is True  # history
