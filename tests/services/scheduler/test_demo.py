"""The demo federation's files load, and the pipeline places each workload as documented."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from contracts.workload import DecisionRecord, WorkloadSpec
from mesh.specfile import load_member_profile, load_workload
from services.scheduler.pipeline import decide
from services.scheduler.snapshot import snapshot_of
from services.scheduler.sovereignty import overall_seal
from services.scheduler.verdicts import record_verdicts

DEMO = Path(__file__).resolve().parents[3] / "deploy" / "demo"
# A fixed day, so the test does not start failing when the demo's certificates age.
TODAY = dt.date(2026, 11, 28)
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

# workload id → the members that host it (empty: nobody may).
EXPECTED = {
    "rvig-brp-kern": {"amstel"},
    "nctv-dreigingsbeeld": set(),
    "gemeente-utrecht-website": {"amstel", "dommel", "zuidas"},
    "belastingdienst-toeslagen-api": {"amstel", "dommel"},
    "rivm-meetdata": {"dommel"},
    "rivm-luchtkwaliteit-dashboard": {"amstel", "dommel"},
    "kadaster-kaartviewer": {"amstel", "dommel"},
    "duo-studiefinanciering-portaal": {"amstel", "dommel", "zuidas"},
}


@pytest.fixture(scope="module")
def profiles():
    loaded = [load_member_profile(p) for p in sorted((DEMO / "members").glob("*.toml"))]
    return {p.id: p for p in loaded}


@pytest.fixture(scope="module")
def workloads() -> dict[str, WorkloadSpec]:
    files = sorted((DEMO / "workloads").glob("*.y*ml"))
    specs = {spec.id: spec for spec in map(load_workload, files)}
    assert len(specs) == len(files)  # ids are unique
    return specs


def place(spec, profiles, placements=()) -> DecisionRecord:
    snap = snapshot_of(profiles, today=TODAY, placements=placements)
    return decide(spec, snap, decided_by="amstel", now=NOW)


def failed(record: DecisionRecord, member: str) -> dict[str, str]:
    return {
        v.reason or "": v.detail
        for v in record_verdicts(record) if v.member == member and not v.passed
    }


def test_members_load_and_differ(profiles):
    assert set(profiles) == {"amstel", "dommel", "zuidas"}
    assert {m: overall_seal(p) for m, p in profiles.items()} == {
        "amstel": 4,
        "dommel": 3,
        "zuidas": 2,
    }
    assert profiles["zuidas"].parent_seat == "US"
    assert profiles["zuidas"].non_eu_law_exposure == ["US CLOUD Act"]
    hypervisors = {p.stack.hypervisor for p in profiles.values()}
    assert len(hypervisors) == 3
    countries = {s.country for p in profiles.values() for s in p.sites}
    assert countries == {"NL", "DE"}
    assert [s.country for s in profiles["dommel"].sites].count("DE") == 1
    grids = [s.grid_region for p in profiles.values() for s in p.sites]
    assert len(set(grids)) == len(grids)
    expired = [
        c for p in profiles.values() for c in p.certifications if c.expires and c.expires < TODAY
    ]
    assert [c.name for c in expired] == ["ISO27017"]


def test_workloads_load(workloads):
    assert set(workloads) == set(EXPECTED)
    assert {w.criticality for w in workloads.values()} == {"critical", "high", "normal", "low"}
    meetdata = workloads["rivm-meetdata"]
    assert meetdata.stateful and meetdata.run is not None
    assert meetdata.run.command == [
        "{python}",
        "-m",
        "http.server",
        "{port}",
        "--bind",
        "127.0.0.1",
        "--directory",
        "{data_dir}",
    ]
    assert meetdata.run.health_path == "/"


@pytest.mark.parametrize("workload_id", sorted(EXPECTED))
def test_each_workload_lands_as_documented(workload_id, workloads, profiles):
    spec = workloads[workload_id]
    record = place(spec, profiles)
    members = [a.member for a in record.chosen]
    assert set(members) == EXPECTED[workload_id]
    assert len(members) == len(set(members))
    assert record.feasible == bool(EXPECTED[workload_id])
    assert not record.degraded


def test_only_amstel_may_host_the_brp(workloads, profiles):
    record = place(workloads["rvig-brp-kern"], profiles)
    assert "seal_too_low" in failed(record, "dommel")
    assert "classification_not_cleared" in failed(record, "zuidas")


def test_nobody_may_host_stg_geheim(workloads, profiles):
    record = place(workloads["nctv-dreigingsbeeld"], profiles)
    assert record.chosen == [] and not record.feasible
    for member in profiles:
        assert "classification_not_cleared" in failed(record, member)
    assert record.summary.startswith("no member may host it: 3 members failed")


def test_dutch_jurisdiction_keeps_dommel_out_of_aachen(workloads, profiles):
    record = place(workloads["belastingdienst-toeslagen-api"], profiles)
    assert [a.site for a in record.chosen if a.member == "dommel"] != ["aac1"]
    aachen = [v for v in record_verdicts(record) if v.site == "aac1" and not v.passed]
    assert [v.reason for v in aachen] == ["jurisdiction_not_allowed"]
    assert "bbn2" in failed(record, "zuidas")["classification_not_cleared"]


def test_expired_certificate_keeps_zuidas_out(workloads, profiles):
    record = place(workloads["kadaster-kaartviewer"], profiles)
    assert failed(record, "zuidas") == {"certification_missing": "ISO27017 expired 2026-03-31"}


def test_whole_demo_fits_together(workloads, profiles):
    # Submitted one after the other, each decision sees the reservations of the previous;
    # balancing may then send an open workload elsewhere, but never to a member that may
    # not host it, and every placement stays complete.
    may_host = {
        **EXPECTED,
        "rivm-meetdata": set(profiles),
        "rivm-luchtkwaliteit-dashboard": set(profiles),
    }
    placements = []
    for workload_id in sorted(workloads):
        spec = workloads[workload_id]
        record = place(spec, profiles, placements)
        members = {a.member for a in record.chosen}
        assert members <= may_host[workload_id]
        assert len(members) == (spec.replicas if may_host[workload_id] else 0)
        placements.append((spec, record.chosen))


def test_the_workload_left_for_the_reader_is_placeable(profiles, workloads):
    # `later/` is what the README has a newcomer submit by hand; `up` does not read it.
    (path,) = sorted((DEMO / "workloads" / "later").glob("*.yaml"))
    spec = load_workload(path)
    assert spec.id not in workloads
    record = place(spec, profiles)
    assert record.feasible and not record.degraded
    assert len({a.member for a in record.chosen}) == spec.replicas
