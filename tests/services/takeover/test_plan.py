"""The takeover plan (pure): successors per workload, capacity, and a stable plan hash."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from contracts.registry import MemberProfile
from contracts.resources import Resources
from contracts.state import DownDecision, PlacementRecord
from contracts.takeover import PlanItem
from contracts.workload import Assignment, Requirements, WorkloadSpec
from mesh.specfile import load_member_profile, load_workload
from services.scheduler.snapshot import snapshot_of
from services.takeover.escalation import overdue
from services.takeover.plan import build_plan, hosted_on, plan_hash

DEMO = Path(__file__).resolve().parents[3] / "deploy" / "demo"
TODAY = dt.date(2026, 11, 28)
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def profiles() -> dict[str, MemberProfile]:
    loaded = [load_member_profile(p) for p in sorted((DEMO / "members").glob("*.toml"))]
    return {p.id: p for p in loaded}


def spec(name: str) -> WorkloadSpec:
    return load_workload(DEMO / "workloads" / f"{name}.yaml")


def placed(s: WorkloadSpec, *where: tuple[str, str], state: str = "running") -> PlacementRecord:
    assignments = [Assignment(member=m, site=site, replica=i) for i, (m, site) in enumerate(where)]
    return PlacementRecord(spec=s, state=state, generation=1,  # type: ignore[arg-type]
                           assignments=assignments)


def item(workload: str, successor: str | None, site: str | None = None) -> PlanItem:
    return PlanItem(workload=workload, source="dommel", successor=successor, site=site)


def test_plan_hash_is_stable_and_order_independent() -> None:
    a, b, c = item("a", "amstel", "ams1"), item("b", "zuidas", "rtm1"), item("c", None)
    digest = plan_hash([a, b, c])
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert plan_hash([c, a, b]) == digest == plan_hash(x for x in [b, c, a])
    # Decoded from JSON (as an approver gets it) the hash is the same.
    wire = msgspec.json.decode(msgspec.json.encode([b, a, c]), type=list[PlanItem])
    assert plan_hash(wire) == digest


def test_plan_hash_changes_with_any_field() -> None:
    base = [item("a", "amstel", "ams1"), item("b", "zuidas", "rtm1")]
    digest = plan_hash(base)
    assert plan_hash([item("a", "amstel", "alm1"), base[1]]) != digest
    assert plan_hash([item("a", "zuidas", "ams1"), base[1]]) != digest
    assert plan_hash(base[:1]) != digest
    assert plan_hash([]) != digest


def test_demo_plan_for_dommel(profiles: dict[str, MemberProfile]) -> None:
    placements = [
        placed(spec("rivm-luchtkwaliteit-dashboard"), ("amstel", "ams1"), ("dommel", "ehv1")),
        placed(spec("kadaster-kaartviewer"), ("amstel", "ams1"), ("dommel", "ehv1")),
        placed(spec("rivm-meetdata"), ("dommel", "ehv1")),
        placed(spec("rvig-brp-kern"), ("amstel", "ams1")),
        placed(spec("gemeente-utrecht-website"), ("dommel", "dbo1"), state="released"),
    ]
    snap = snapshot_of(profiles, today=TODAY,
                       placements=[(p.spec, p.assignments) for p in placements])
    plan = build_plan("dommel", placements, snap, decided_by="amstel", now=NOW)
    by_id = {i.workload: i for i in plan}
    # Only live placements with a replica on dommel, sorted by workload id.
    assert [i.workload for i in plan] == sorted(
        ["rivm-luchtkwaliteit-dashboard", "kadaster-kaartviewer", "rivm-meetdata"])
    assert all(i.source == "dommel" for i in plan)
    # amstel keeps its replica, so the second one goes to the only other member.
    assert by_id["rivm-luchtkwaliteit-dashboard"].successor == "zuidas"
    assert by_id["rivm-meetdata"].successor in {"amstel", "zuidas"}
    assert by_id["rivm-meetdata"].site is not None
    # zuidas's ISO27017 expired and amstel has a replica already: nobody may host it.
    kaart = by_id["kadaster-kaartviewer"]
    assert kaart.successor is None and kaart.site is None
    assert "certification_missing" in kaart.reason
    # The same inputs give the same plan, and so the same hash (any member can re-check).
    again = build_plan("dommel", list(reversed(placements)), snap, decided_by="zuidas", now=NOW)
    assert plan_hash(again) == plan_hash(plan)


def test_plan_counts_capacity_claimed_by_earlier_items(
    profiles: dict[str, MemberProfile],
) -> None:
    big = Resources(vcpu=100, memory_gib=100, storage_gib=100)
    reqs = Requirements(jurisdictions=["NL"])
    specs = [WorkloadSpec(id=f"big-{n}", tenant="t", resources=big, requirements=reqs,
                          criticality=crit) for n, crit in (("a", "low"), ("b", "critical"))]
    placements = [placed(s, ("dommel", "ehv1")) for s in specs]
    # amstel is down: zuidas alone may take over; rtm1 (160 vCPU) holds one of them.
    snap = snapshot_of(profiles, today=TODAY, statuses={"amstel": "down"})
    plan = {i.workload: i for i in build_plan("dommel", placements, snap,
                                               decided_by="zuidas", now=NOW)}
    # The critical one is decided first and gets the room.
    assert plan["big-b"].successor == "zuidas" and plan["big-b"].site == "rtm1"
    assert plan["big-a"].successor is None
    assert "insufficient_capacity" in plan["big-a"].reason


def test_hosted_on_orders_by_criticality() -> None:
    records = [placed(spec(n), ("dommel", "ehv1")) for n in
               ("rivm-luchtkwaliteit-dashboard", "rvig-brp-kern", "rivm-meetdata")]
    assert [r.spec.id for r in hosted_on("dommel", records)] == [
        "rvig-brp-kern", "rivm-meetdata", "rivm-luchtkwaliteit-dashboard"]
    assert hosted_on("zuidas", records) == []


def test_only_a_down_member_escalates_never_one_dark_site() -> None:
    stateful = msgspec.structs.replace(spec("rvig-brp-kern"), stateful=True, rto_seconds=60)
    records = [placed(stateful, ("dommel", "ehv1"))]
    later = NOW + dt.timedelta(minutes=5)
    member = DownDecision(member="dommel", state="down", epoch=1, declared_by="amstel",
                          declared_at=NOW)
    assert overdue(member, records, later) == [stateful.id]
    site = msgspec.structs.replace(member, site="ehv1")
    assert overdue(site, records, later) == []  # failover's business, not a calamity
