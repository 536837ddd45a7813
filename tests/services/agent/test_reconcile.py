"""The agent's pure decisions: what to do about a placement, and the record it writes."""

from __future__ import annotations

import datetime as dt

from contracts.registry import Site
from contracts.resources import Resources
from contracts.state import PlacementRecord, ReplicaStatus
from contracts.workload import Assignment, WorkloadSpec
from services.agent.reconcile import Local, plan, site_usage, with_replica_state

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
R = Resources(vcpu=2, memory_gib=4, storage_gib=10)


def at(*where: tuple[str, str]) -> list[Assignment]:
    return [Assignment(member=m, site=s, replica=i) for i, (m, s) in enumerate(where)]


def test_plan_covers_every_case() -> None:
    here = at(("amstel", "ams1"), ("dommel", "ein1"))
    assert plan(me="amstel", generation=1, assignments=here, local=None).action == "start"
    assert plan(me="zuidas", generation=1, assignments=here, local=None).action == "ignore"
    running = Local(generation=1, site="ams1")
    assert plan(me="amstel", generation=1, assignments=here, local=running).action == "confirm"
    assert plan(me="amstel", generation=2, assignments=here, local=running).action == "rebind"
    moved = at(("amstel", "alm1"))
    step = plan(me="amstel", generation=2, assignments=moved, local=running)
    assert (step.action, step.site) == ("restart", "alm1")
    away = at(("dommel", "ein1"))
    assert plan(me="amstel", generation=2, assignments=away, local=running).action == "stop"
    newer = Local(generation=3, site="ams1")
    assert plan(me="amstel", generation=2, assignments=away, local=newer).action == "ignore"
    assert plan(me="amstel", generation=2, assignments=here, local=None,
                newest_seen=3).action == "ignore"


def record(state: str = "placed") -> PlacementRecord:
    return PlacementRecord(
        spec=WorkloadSpec(id="w", tenant="t", replicas=2, resources=R),
        state=state,  # type: ignore[arg-type]
        generation=2,
        assignments=at(("amstel", "ams1"), ("dommel", "ein1")),
        replicas=[ReplicaStatus(member="amstel", site="ams1"),
                  ReplicaStatus(member="dommel", site="ein1")],
    )


def test_replica_state_and_placement_state() -> None:
    one = with_replica_state(record(), member="amstel", generation=2, state="running", now=NOW)
    assert one is not None and one.state == "placed"
    both = with_replica_state(one, member="dommel", generation=2, state="running", now=NOW)
    assert both is not None and both.state == "running"
    assert [r.state for r in both.replicas] == ["running", "running"]
    # Nothing to change: already so, another generation, not assigned, no record.
    assert with_replica_state(both, member="dommel", generation=2, state="running",
                              now=NOW) is None
    assert with_replica_state(record(), member="amstel", generation=1, state="running",
                              now=NOW) is None
    assert with_replica_state(record(), member="zuidas", generation=2, state="running",
                              now=NOW) is None
    assert with_replica_state(None, member="amstel", generation=2, state="running",
                              now=NOW) is None
    degraded = record("degraded")
    for member in ("amstel", "dommel"):
        degraded = with_replica_state(degraded, member=member, generation=2, state="running",
                                      now=NOW) or degraded
    assert degraded.state == "degraded"


def test_site_usage_sums_per_site() -> None:
    sites = [Site(id="a", country="NL", capacity=R), Site(id="b", country="NL", capacity=R)]
    report = site_usage(sites, [("a", R), ("a", R), ("zz", R)])
    assert [(s.site, s.used.vcpu) for s in report] == [("a", 4.0), ("b", 0.0)]
    assert report[0].total == R
