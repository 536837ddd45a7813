"""The scheduler shell's pure helpers: failover order, re-placed records, the token
bucket, the quorum check and member statuses from KV records."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from contracts.registry import MemberProfile, Site
from contracts.resources import Resources
from contracts.state import (
    DownDecision,
    Hold,
    PlacementRecord,
    ReplicaStatus,
    SagaRecord,
    SiteLedger,
)
from contracts.workload import Assignment, DecisionRecord, WorkloadSpec
from mesh.state import Entry
from services.scheduler.reader import FederationState, member_statuses
from services.scheduler.replace import (
    TokenBucket,
    achieved_rto_s,
    dark_sites,
    failover_order,
    hit_by,
    moved_by_a_rival,
    quorum_problem,
    replaced_record,
    split_share,
    sweep_order,
    without_sites,
)
from support_failover import trust_of

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
R = Resources(vcpu=2, memory_gib=4, storage_gib=10)


def rec(id: str, criticality: str = "normal", rto: int = 300, *members: str,
        state: str = "placed") -> PlacementRecord:
    assignments = [Assignment(member=m, site=f"{m}1", replica=i) for i, m in enumerate(members)]
    return PlacementRecord(
        spec=WorkloadSpec(id=id, tenant="t", criticality=criticality,  # type: ignore[arg-type]
                          rto_seconds=rto, replicas=max(1, len(members)), resources=R),
        state=state,  # type: ignore[arg-type]
        generation=1,
        assignments=assignments,
        replicas=[ReplicaStatus(member=a.member, site=a.site, state="running")
                  for a in assignments],
        published_generation=1,
        history=["gen 1: placed"],
    )


def test_failover_order_is_criticality_then_rto_then_id() -> None:
    records = [
        ("low-a", rec("low-a", "low", 10, "a")),
        ("crit-slow", rec("crit-slow", "critical", 600, "a")),
        ("crit-fast", rec("crit-fast", "critical", 60, "a")),
        ("high-b", rec("high-b", "high", 60, "a")),
        ("high-a", rec("high-a", "high", 60, "a")),
    ]
    assert failover_order(records) == ["crit-fast", "crit-slow", "high-a", "high-b", "low-a"]


def test_hit_by_ignores_inactive_placements() -> None:
    assert hit_by(rec("w", "normal", 300, "a", "b"), "b")
    assert not hit_by(rec("w", "normal", 300, "a"), "b")
    assert not hit_by(rec("w", "normal", 300, "b", state="released"), "b")


CHOSEN = [Assignment(member="amstel", site="amstel1", replica=0),
          Assignment(member="zuidas", site="zuidas1", replica=1)]
TO_ZUIDAS = DecisionRecord(workload="w", cause="failover", decided_by="x", decided_at=NOW,
                           chosen=CHOSEN)


def test_replaced_record_keeps_survivors_and_adds_history() -> None:
    old = rec("w", "normal", 300, "amstel", "dommel")
    chosen = CHOSEN
    new = replaced_record(old, TO_ZUIDAS, lost="dommel", now=NOW)
    assert new.generation == 2 and new.state == "placed"
    assert new.published_generation == 1  # set only once the event is out
    assert [(r.member, r.state) for r in new.replicas] == [("amstel", "running"),
                                                          ("zuidas", "assigned")]
    assert new.history == ["gen 1: placed", "gen 2: failover from dommel → zuidas"]
    degraded = replaced_record(
        old, DecisionRecord(workload="w", decided_by="x", decided_at=NOW, chosen=chosen[:1],
                            degraded=True), lost="dommel", now=NOW)
    assert degraded.state == "degraded"
    assert "survivors kept" in degraded.history[-1]
    gone = replaced_record(
        rec("w", "normal", 300, "dommel"),
        DecisionRecord(workload="w", decided_by="x", decided_at=NOW, feasible=False),
        lost="dommel", now=NOW)
    assert gone.state == "unplaceable" and gone.assignments == []


def test_a_failover_move_records_its_rto_against_the_target() -> None:
    old = rec("w", "critical", 60, "amstel", "dommel")
    declared = NOW - dt.timedelta(seconds=2)
    new = replaced_record(old, TO_ZUIDAS, lost="dommel", now=NOW, declared_at=declared)
    assert new.history[-1] == "gen 2: failover from dommel → zuidas (2.0 s after down; " \
        "RTO target 60 s)"
    assert new.failover is not None and new.failover.to == ["zuidas"]
    assert achieved_rto_s(new) is None  # zuidas's replica is only assigned
    bound = NOW + dt.timedelta(seconds=1.5)
    new.replicas = [r if r.member != "zuidas" else
                    ReplicaStatus(member="zuidas", site="zuidas1", state="running", since=bound)
                    for r in new.replicas]
    assert achieved_rto_s(new) == 3.5  # declaration → the new replica running
    assert achieved_rto_s(old) is None  # never failed over


@given(keys=st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=60),
       peers=st.lists(st.sampled_from(["amstel", "zuidas", "noord", "west"]), min_size=1,
                      unique=True))
def test_failover_shares_cover_every_key_once_in_order(keys: list[str],
                                                       peers: list[str]) -> None:
    shares = {me: split_share(keys, me=me, peers=peers) for me in peers}
    owned = [k for own, _ in shares.values() for k in own]
    assert sorted(owned) == sorted(keys)  # each key has exactly one owner
    for own, rest in shares.values():
        assert sorted(own + rest) == sorted(keys)  # and every scheduler may help with all
        assert own == [k for k in keys if k in set(own)]  # failover order kept
        assert sweep_order(rest) == rest[::-1]


def test_a_site_failover_moves_only_that_sites_replica() -> None:
    old = rec("w", "normal", 300, "amstel", "dommel")  # dommel's replica is on dommel1
    assert hit_by(old, "dommel", "dommel1") and not hit_by(old, "dommel", "dommel2")
    chosen = [Assignment(member="amstel", site="amstel1", replica=0),
              Assignment(member="dommel", site="dommel2", replica=1)]
    decision = DecisionRecord(workload="w", cause="failover", decided_by="x", decided_at=NOW,
                              chosen=chosen)
    new = replaced_record(old, decision, lost="dommel", site="dommel1", now=NOW,
                          declared_at=NOW)
    assert new.history[-1].startswith("gen 2: failover from dommel/dommel1 → dommel ")
    assert new.failover is not None and (new.failover.site, new.failover.to) == (
        "dommel1", ["dommel"])
    profile = MemberProfile(id="dommel", name="d", legal_seat="NL", sov={}, sites=[
        Site(id=s, country="NL", capacity=R) for s in ("dommel1", "dommel2")])
    dark = dark_sites([DownDecision(member="dommel", state="down", epoch=1, declared_by="a",
                                    declared_at=NOW, site="dommel1"),
                       DownDecision(member="zuidas", state="recovered", epoch=1,
                                    declared_by="a", declared_at=NOW, site="z1")])
    assert dark == {("dommel", "dommel1")}
    seen = without_sites({"dommel": profile}, dark)["dommel"]
    assert [s.id for s in seen.sites] == ["dommel2"]


def test_token_bucket_spaces_out_after_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    assert bucket.reserve(0.0) == 0.0
    assert bucket.reserve(0.0) == 0.0
    assert abs(bucket.reserve(0.0) - 0.1) < 1e-9
    assert abs(bucket.reserve(0.0) - 0.2) < 1e-9
    assert bucket.reserve(10.0) == 0.0  # refilled, capped at the burst


def test_quorum_problem_is_the_failover_rule() -> None:
    trust = trust_of("amstel", "dommel", "zuidas")
    assert quorum_problem(member="dommel", observers=["amstel", "zuidas"], trust=trust) is None
    # Repeats, the subject itself and strangers do not count.
    problem = quorum_problem(member="dommel", observers=["amstel", "amstel", "dommel", "evil"],
                             trust=trust)
    assert problem is not None and "1 valid observer" in problem
    # Two members: ⌈2·1/3⌉ = 1, but the scheduler, like the observers, needs two.
    pair = trust_of("amstel", "dommel")
    problem = quorum_problem(member="dommel", observers=["amstel"], trust=pair)
    assert problem is not None and "quorum of 2" in problem


def test_member_statuses_down_wins_and_drills_never_freeze() -> None:
    sagas = [
        SagaRecord(saga="s1", member="zuidas", coordinator="amstel", reason="x", drill=True,
                   state="running"),
        SagaRecord(saga="s2", member="dommel", coordinator="amstel", reason="x", drill=False,
                   state="running"),
        SagaRecord(saga="s3", member="amstel", coordinator="dommel", reason="x", drill=False,
                   state="completed"),
    ]
    downs = {
        "down.dommel": DownDecision(member="dommel", state="down", epoch=1, declared_by="a",
                                    declared_at=NOW),
        "down.amstel": DownDecision(member="amstel", state="recovered", epoch=1,
                                    declared_by="a", declared_at=NOW),
    }
    assert member_statuses(downs, sagas) == {"dommel": "down"}
    assert member_statuses({}, sagas) == {"dommel": "frozen"}


def test_federation_state_counts_only_reserving_placements() -> None:
    site = Site(id="a1", country="NL", capacity=Resources(vcpu=10, memory_gib=40,
                                                          storage_gib=1000))
    profile = MemberProfile(id="amstel", name="A", legal_seat="NL", sov={}, sites=[site])
    placed = rec("w1", "normal", 300, "amstel")
    placed.assignments = [Assignment(member="amstel", site="a1")]
    released = rec("w2", "normal", 300, "amstel", state="released")
    released.assignments = [Assignment(member="amstel", site="a1")]
    state = FederationState(
        profiles={"amstel": profile}, statuses={}, member_revisions={"amstel": 4},
        revisions={"members/amstel": 4},
        placements={"w1": Entry("w1", placed, 1), "w2": Entry("w2", released, 1)},
    )
    snap = state.snapshot(NOW.date())
    assert snap.members["amstel"].free["a1"].vcpu == 8
    assert snap.revisions == {"members/amstel": 4}
    assert state.snapshot(NOW.date(), exclude_status=()).members["amstel"].free["a1"].vcpu == 6


def _ledger(member: str, site: str, **holds: tuple[int, str]) -> SiteLedger:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return SiteLedger(member=member, site=site, holds={
        w: Hold(amount=Resources(vcpu=1), generation=g, attempt=a, since=at)
        for w, (g, a) in holds.items()})


def test_a_workload_another_commit_is_moving_is_left_for_a_re_read():
    ledgers = [
        _ledger("dommel", "ehv1", w1=(1, "first"), w2=(1, "first"), w3=(1, "first")),
        _ledger("amstel", "ams1", w1=(2, "rival"), w2=(2, "mine")),
        _ledger("zuidas", "rtm1", w3=(2, "takeover:saga-1")),
    ]
    rival = [w for w in ("w1", "w2", "w3", "w4")
             if moved_by_a_rival(ledgers, w, 1, lost="dommel", own={"mine"})]
    # w2: our own earlier attempt; w3: a takeover's reservation; w4: nobody's.
    assert rival == ["w1"]
    # Once the rival's commit is through, the record is at its generation: no rival.
    assert not moved_by_a_rival(ledgers, "w1", 2, lost="dommel", own=set())
    # A hold on the lost member itself (its old booking) is never a rival's move...
    lost_site = [_ledger("dommel", "ehv1", w5=(2, "other"))]
    assert not moved_by_a_rival(lost_site, "w5", 1, lost="dommel", own=set())
    # ... unless only another site of that member went dark.
    assert moved_by_a_rival(lost_site, "w5", 1, lost="dommel", site="ehv2", own=set())
