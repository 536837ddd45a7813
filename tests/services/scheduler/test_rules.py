"""Issue 3's hard rules: new filters, spread and diversity in selection, the cache."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.registry import SOV_OBJECTIVES, MemberProfile, Site, Stack
from contracts.resources import Resources
from contracts.workload import Preferences, Requirements, Spread, WorkloadSpec
from services.scheduler.feasibility import FeasibilityCache
from services.scheduler.pipeline import decide
from services.scheduler.snapshot import MemberView, Placed, Snapshot
from services.scheduler.verdicts import record_verdicts

TODAY = dt.date(2026, 6, 1)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
BIG = Resources(vcpu=64, memory_gib=64, storage_gib=64)


def member(mid: str, *, hv: str = "KVM", region: str = "r1", country: str = "NL",
           **extra: object) -> MemberView:
    profile = MemberProfile(
        id=mid, name=mid, legal_seat="NL", sov=dict.fromkeys(SOV_OBJECTIVES, 3),
        stack=Stack(hypervisor=hv),
        sites=[Site(id="s1", country=country, region=region, capacity=BIG)], **extra,  # type: ignore[arg-type]
    )
    return MemberView(profile=profile, status="active")


def snap(*views: MemberView, placed: dict[str, Placed] | None = None) -> Snapshot:
    return Snapshot(members={v.id: v for v in views}, today=TODAY, placed=placed or {})


def spec(replicas: int = 1, **reqs: object) -> WorkloadSpec:
    return WorkloadSpec(id="w", tenant="t", replicas=replicas,
                        resources=Resources(vcpu=1), requirements=Requirements(**reqs))  # type: ignore[arg-type]


def reasons(record, mid):  # type: ignore[no-untyped-def]
    return {v.reason for v in record_verdicts(record) if v.member == mid and not v.passed}


def test_new_member_filters_name_their_reasons():
    s = snap(member("a", non_eu_law_exposure=["US CLOUD Act"]),
             member("b", eu_resident_staff=False), member("c", country="DE"))
    record = decide(spec(min_sov={"SOV-2": 4}), s, decided_by="a", now=NOW)
    assert all("sov_objective_too_low" in reasons(record, m) for m in "abc")
    record = decide(spec(no_non_eu_law=True, eu_resident_staff=True, residency=["NL"]), s,
                    decided_by="a", now=NOW)
    assert reasons(record, "a") == {"non_eu_law_exposure"}
    assert reasons(record, "b") == {"staff_not_eu_resident"}
    assert reasons(record, "c") == {"residency_not_allowed"}
    assert not record.feasible


def test_affinity_and_anti_affinity_of_the_same_tenant_only():
    placed = {"db": Placed("t", frozenset({"a"})), "other": Placed("x", frozenset({"b"}))}
    s = snap(member("a"), member("b"), placed=placed)
    near = decide(spec(affinity=["db"]), s, decided_by="a", now=NOW)
    assert [c.member for c in near.chosen] == ["a"]
    apart = decide(spec(anti_affinity=["db", "other"]), s, decided_by="a", now=NOW)
    assert [c.member for c in apart.chosen] == ["b"]  # another tenant's workload is ignored
    assert "anti_affinity" in reasons(apart, "a")


def test_diversity_is_hard_and_reported():
    s = snap(member("a", hv="KVM"), member("b", hv="kvm"), member("c", hv="Xen"))
    record = decide(spec(replicas=3, diversity=["hypervisor"]), s, decided_by="a", now=NOW)
    assert len(record.chosen) == 2 and record.degraded
    assert record.unsatisfied == ["diversity_unsatisfiable"]
    undeclared = decide(spec(diversity=["storage"]), s, decided_by="a", now=NOW)
    assert not undeclared.feasible and "stack_undeclared" in reasons(undeclared, "a")


def test_spread_across_regions_skips_a_better_score_in_the_same_region():
    s = snap(member("a", region="r1"), member("b", region="r1"), member("c", region="r2"))
    rule = Spread(across="regions", min_domains=2, max_skew=0)
    record = decide(spec(replicas=2, spread=rule), s, decided_by="a", now=NOW)
    assert sorted(c.member for c in record.chosen) == ["a", "c"]
    record = decide(spec(replicas=3, spread=rule), s, decided_by="a", now=NOW)
    assert record.degraded and "spread_unsatisfiable" in record.unsatisfied


def test_preferences_and_binpack_score():
    s = snap(member("a"), member("b"))
    assert decide(spec(preferences=Preferences(members=["b"])), s, decided_by="a",
                  now=NOW).chosen[0].member == "b"
    record = decide(spec(strategy="binpack"), s, decided_by="a", now=NOW)
    assert record.scores["a/s1"] < 50


def test_cache_runs_filters_once_per_member_class():
    views = [member(f"m{i:02d}") for i in range(30)]
    cache = FeasibilityCache()
    for _ in range(3):
        decide(spec(), snap(*views), decided_by="a", now=NOW, cache=cache)
    assert cache.filter_runs == 1


HVS = ["KVM", "Xen", "bhyve"]
REGIONS = ["r1", "r2", "r3"]


@settings(max_examples=150, deadline=None)
@given(
    layout=st.lists(st.tuples(st.sampled_from(HVS), st.sampled_from(REGIONS)),
                    min_size=1, max_size=6),
    replicas=st.integers(1, 4),
    min_domains=st.integers(1, 3),
    max_skew=st.integers(0, 2),
    diverse=st.booleans(),
)
def test_spread_and_diversity_hold_whenever_possible(
    layout, replicas, min_domains, max_skew, diverse
):  # type: ignore[no-untyped-def]
    views = [member(f"m{i}", hv=hv, region=r) for i, (hv, r) in enumerate(layout)]
    rule = Spread(across="regions", min_domains=min_domains, max_skew=max_skew)
    s = spec(replicas=replicas, spread=rule, diversity=["hypervisor"] if diverse else [])

    def ok(group) -> bool:  # type: ignore[no-untyped-def]
        regions = [v.profile.sites[0].region for v in group]
        counts = [regions.count(r) for r in set(regions)]
        hvs = [v.profile.stack.hypervisor for v in group]
        return (len(set(regions)) >= min(min_domains, len(group))
                and max(counts) - min(counts) <= max_skew
                and (not diverse or len(set(hvs)) == len(hvs)))

    record = decide(s, snap(*views), decided_by="a", now=NOW)
    again = decide(s, snap(*views), decided_by="a", now=NOW)
    assert record == again  # deterministic
    chosen = [next(v for v in views if v.id == a.member) for a in record.chosen]
    assert len({v.id for v in chosen}) == len(chosen)
    if chosen:
        assert ok(chosen)
    full = any(ok(g) and len({v.profile.sites[0].region for v in g}) >= min_domains
               for g in itertools.combinations(views, replicas))
    assert (len(chosen) == replicas) == full
    if not full and len(views) >= replicas:
        assert record.unsatisfied  # the rule that stood in the way is named
