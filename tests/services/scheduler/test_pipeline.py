"""The placement pipeline: distinct members, keep, exclude, degraded, infeasible, determinism."""

from __future__ import annotations

import datetime as dt

import msgspec

from contracts.registry import Certification, MemberProfile, Site
from contracts.resources import Resources
from contracts.workload import Assignment, Requirements, WorkloadSpec
from services.scheduler.explain import explain_rows
from services.scheduler.pipeline import decide
from services.scheduler.snapshot import MemberView, Snapshot
from services.scheduler.verdicts import record_verdicts

TODAY = dt.date(2026, 6, 1)
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def sov(level: int) -> dict[str, int]:
    return {f"SOV-{i}": level for i in range(1, 9)}


def member(
    id: str,
    *,
    seal: int = 4,
    sites: tuple[tuple[str, str, float], ...] = (("s1", "NL", 64.0),),
    cleared=("openbaar", "bbn1"),
    status: str = "active",
    free: dict[str, Resources] | None = None,
) -> MemberView:
    profile = MemberProfile(
        id=id,
        name=id.title(),
        legal_seat="NL",
        sov=sov(seal),
        cleared_classifications=list(cleared),
        certifications=[Certification(name="BIO2", expires=dt.date(2027, 1, 1))],
        sites=[
            Site(
                id=site_id,
                country=country,
                capacity=Resources(vcpu=vcpu, memory_gib=vcpu * 4, storage_gib=vcpu * 100),
            )
            for site_id, country, vcpu in sites
        ],
    )
    return MemberView(profile=profile, status=status, free=free or {})


def snapshot(*members: MemberView, revisions=None) -> Snapshot:
    return Snapshot(members={m.id: m for m in members}, today=TODAY, revisions=revisions or {})


def workload(replicas: int = 1, **requirements) -> WorkloadSpec:
    return WorkloadSpec(
        id="w1",
        tenant="rivm",
        replicas=replicas,
        resources=Resources(vcpu=4, memory_gib=8, storage_gib=100),
        requirements=Requirements(**requirements),
    )


def run(spec, snap, **kwargs):
    return decide(spec, snap, decided_by="amstel", now=NOW, **kwargs)


def members_of(record) -> list[str]:
    return [a.member for a in record.chosen]


def test_places_on_distinct_members_highest_score_first():
    snap = snapshot(
        member("amstel", sites=(("a1", "NL", 64.0), ("a2", "NL", 128.0))),
        member("dommel", sites=(("d1", "NL", 256.0),)),
        member("zuidas", sites=(("z1", "NL", 32.0),)),
    )
    record = run(workload(replicas=2), snap)
    assert [(a.member, a.site, a.replica) for a in record.chosen] == [
        ("dommel", "d1", 0),
        ("amstel", "a2", 1),
    ]
    assert record.feasible and not record.degraded
    assert record.summary == "placed 2/2 on dommel, amstel"
    assert set(record.scores) == {"amstel/a1", "amstel/a2", "dommel/d1", "zuidas/z1"}
    assert record.workload == "w1" and record.decided_by == "amstel" and record.decided_at == NOW


def test_never_two_replicas_on_one_member_even_with_many_sites():
    snap = snapshot(member("amstel", sites=(("a1", "NL", 64.0), ("a2", "NL", 64.0))))
    record = run(workload(replicas=2), snap)
    assert members_of(record) == ["amstel"]
    assert record.degraded and record.feasible
    assert record.summary.startswith("placed 1/2 on amstel; degraded")


def test_ties_break_by_member_then_site_id():
    snap = snapshot(
        member("zuidas", sites=(("b", "NL", 64.0), ("a", "NL", 64.0))),
        member("amstel", sites=(("y", "NL", 64.0), ("x", "NL", 64.0))),
    )
    record = run(workload(replicas=2), snap)
    assert [(a.member, a.site) for a in record.chosen] == [("amstel", "x"), ("zuidas", "a")]


def test_records_all_verdicts_and_skips_sites_of_members_ruled_out():
    snap = snapshot(
        member("amstel", sites=(("a1", "NL", 64.0), ("a2", "DE", 64.0))),
        member("dommel", seal=2),
    )
    record = run(workload(min_seal=3, jurisdictions=["NL"]), snap)
    amstel = [v for v in record_verdicts(record) if v.member == "amstel"]
    assert all(v.reason for v in amstel)
    assert {(v.site, v.reason, v.passed) for v in amstel if v.site} == {
        ("a1", "jurisdiction_not_allowed", True),
        ("a1", "residency_not_allowed", True),
        ("a1", "insufficient_capacity", True),
        ("a2", "jurisdiction_not_allowed", False),
        ("a2", "residency_not_allowed", True),
        ("a2", "insufficient_capacity", True),
    }
    dommel = [v for v in record_verdicts(record) if v.member == "dommel"]
    assert all(v.site is None for v in dommel)
    assert [v.reason for v in dommel if not v.passed] == ["seal_too_low"]
    # Every member-level filter ran, passed ones recorded too (9 since issue 3 added
    # per-objective SEAL, non-EU law, EU staff and stack checks).
    assert len(dommel) == 9
    assert "amstel/a2" not in record.scores


def test_infeasible_names_the_reasons():
    snap = snapshot(
        member("amstel", cleared=("openbaar",)),
        member("dommel", seal=2),
        member("zuidas", seal=1),
    )
    record = run(workload(min_seal=3, classification="bbn1"), snap)
    assert not record.feasible and record.chosen == [] and not record.degraded
    assert record.summary == (
        "no member may host it: 3 members failed (seal_too_low: 2, classification_not_cleared: 1)"
    )


def test_infeasible_without_members():
    record = run(workload(), snapshot())
    assert not record.feasible
    assert record.summary == "no member may host it: no members known"


def test_site_level_failure_rules_a_member_out():
    snap = snapshot(member("amstel", free={"s1": Resources(vcpu=1)}))
    record = run(workload(), snap)
    assert record.summary == "no member may host it: 1 member failed (insufficient_capacity: 1)"


def test_member_without_sites_is_ruled_out():
    snap = snapshot(member("amstel", sites=()))
    record = run(workload(), snap)
    assert not record.feasible
    assert "insufficient_capacity: 1" in record.summary


def test_degraded_when_fewer_members_qualify():
    snap = snapshot(member("amstel"), member("dommel", status="down"), member("zuidas"))
    record = run(workload(replicas=3), snap)
    assert sorted(members_of(record)) == ["amstel", "zuidas"]
    assert record.degraded and record.feasible
    assert record.summary.endswith("degraded: 1 member failed (member_not_active: 1)")


def test_exclude_keeps_a_member_out_and_is_recorded_sorted():
    snap = snapshot(member("amstel"), member("dommel"), member("zuidas"))
    record = run(workload(replicas=2), snap, exclude=frozenset({"zuidas", "amstel"}))
    assert members_of(record) == ["dommel"]
    assert record.excluded == ["amstel", "zuidas"]
    failed = {v.member: v.reason for v in record_verdicts(record) if not v.passed}
    assert failed == {"amstel": "member_excluded", "zuidas": "member_excluded"}


def test_keep_stays_counts_and_gets_no_second_replica():
    snap = snapshot(member("amstel"), member("dommel"), member("zuidas"))
    kept = Assignment(member="zuidas", site="s1", replica=0)
    record = run(workload(replicas=2), snap, cause="failover", keep=[kept])
    assert record.chosen[0] == kept
    assert len(record.chosen) == 2 and members_of(record).count("zuidas") == 1
    assert record.chosen[1].replica == 1
    assert record.cause == "failover"
    assert "(kept zuidas)" in record.summary


def test_keep_fills_every_replica():
    snap = snapshot(member("amstel"), member("dommel"))
    keep = [Assignment(member="dommel", site="s1", replica=0)]
    record = run(workload(replicas=1), snap, keep=keep)
    assert record.chosen == keep and not record.degraded


def test_keep_on_an_excluded_member_is_dropped():
    # A takeover keeps every replica but those of the member it empties.
    snap = snapshot(member("amstel"), member("dommel"), member("zuidas"))
    keep = [
        Assignment(member="amstel", site="s1", replica=0),
        Assignment(member="zuidas", site="s1", replica=1),
    ]
    record = run(workload(replicas=2), snap, exclude=frozenset({"zuidas"}), keep=keep)
    assert [(a.member, a.replica) for a in record.chosen] == [("amstel", 0), ("dommel", 1)]


def test_kept_member_may_be_unknown_to_the_snapshot_and_not_counted_as_failed():
    snap = snapshot(member("amstel"))
    keep = [Assignment(member="gone", site="x", replica=3)]
    record = run(workload(replicas=2), snap, keep=keep)
    assert [(a.member, a.replica) for a in record.chosen] == [("gone", 3), ("amstel", 0)]


def test_inputs_copy_revisions():
    snap = snapshot(member("amstel"), revisions={"fed_members.amstel": 7, "fed_capacity": 12})
    record = run(workload(), snap)
    assert record.inputs == {"fed_members.amstel": 7, "fed_capacity": 12}


def test_same_inputs_same_record_whatever_the_mapping_order():
    members = [
        member("amstel", sites=(("a1", "NL", 64.0), ("a2", "NL", 64.0))),
        member("dommel", seal=2),
        member("zuidas", sites=(("z1", "DE", 64.0),)),
    ]
    spec = workload(replicas=2, min_seal=3)
    first = run(spec, snapshot(*members))
    again = run(spec, snapshot(*reversed(members)))
    assert msgspec.json.encode(first) == msgspec.json.encode(again)


def test_explain_rows_one_per_member():
    snap = snapshot(
        member("amstel", sites=(("a1", "NL", 128.0),)),
        member("dommel", seal=2),
        member("zuidas", sites=(("z1", "NL", 64.0),)),
        member("xanten", sites=(("x1", "DE", 64.0),)),
    )
    record = run(workload(replicas=1, min_seal=3, jurisdictions=["NL"]), snap)
    rows = {row["member"]: row for row in explain_rows(record)}
    assert list(rows) == ["amstel", "dommel", "xanten", "zuidas"]
    checks = {c["check"]: c["passed"] for c in rows["amstel"].pop("checks")}
    assert checks == dict.fromkeys(
        ["not-excluded", "active", "seal", "classification", "certifications",
         "sov-objectives", "non-eu-law", "eu-staff", "stack",  # issue 3's checks
         "jurisdiction", "residency", "capacity"], True)
    dommel_checks = {c["check"]: c["passed"] for c in rows["dommel"]["checks"]}
    assert dommel_checks["seal"] is False and dommel_checks["classification"] is True
    xanten_checks = {c["check"]: c["passed"] for c in rows["xanten"]["checks"]}
    assert xanten_checks["jurisdiction"] is False
    assert rows["amstel"] == {
        "member": "amstel",
        "site": "a1",
        "passed": True,
        "reason": None,
        "detail": "chosen",
        "score": record.scores["amstel/a1"],
        "chosen": True,
    }
    assert rows["dommel"]["reason"] == "seal_too_low" and rows["dommel"]["site"] is None
    assert rows["dommel"]["detail"].startswith("SEAL-2 < required SEAL-3")
    assert (rows["xanten"]["reason"], rows["xanten"]["site"]) == ("jurisdiction_not_allowed", "x1")
    assert rows["zuidas"]["passed"] and not rows["zuidas"]["chosen"]
    assert rows["zuidas"]["score"] == record.scores["zuidas/z1"]
    assert msgspec.json.encode(rows)  # --json must be able to print it


def test_explain_prefers_the_site_that_got_furthest():
    snap = snapshot(
        member("amstel", sites=(("a1", "DE", 64.0), ("a2", "NL", 64.0)), free={"a2": Resources()})
    )
    record = run(workload(jurisdictions=["NL"]), snap)
    (row,) = explain_rows(record)
    assert (row["reason"], row["site"]) == ("insufficient_capacity", "a2")
