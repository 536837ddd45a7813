"""Properties of `decide` over random federations and specs (DESIGN §7.1)."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.registry import CLASSIFICATION_ORDER, SOV_OBJECTIVES, Certification, MemberProfile
from contracts.registry import Site as SiteProfile
from contracts.resources import Resources
from contracts.workload import Assignment, Requirements, WorkloadSpec
from services.scheduler.pipeline import decide
from services.scheduler.snapshot import STATUSES, MemberView, Snapshot
from services.scheduler.verdicts import record_verdicts

TODAY = dt.date(2026, 6, 1)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
FAST = settings(max_examples=200, deadline=None)

COUNTRIES = ["NL", "DE", "BE", "NO", "IS", "CH", "US", "GB"]
countries = st.sampled_from(["NL", "NL", "NL", "DE", "DE", *COUNTRIES])
EU_LIKE = {"EU": {"NL", "DE", "BE"}, "EEA": {"NL", "DE", "BE", "NO", "IS"}}  # of COUNTRIES
CERTS = ["BIO2", "ISO27001", "NEN7510", "ISO27017"]

# Drawn so that a good share of decisions place something and a good share do not:
# properties over decisions that always come back empty would prove nothing.
amounts = st.integers(min_value=0, max_value=64).map(float)
small = st.integers(min_value=0, max_value=12).map(float)
capacities = st.builds(Resources, vcpu=amounts, memory_gib=amounts, storage_gib=amounts)
requests = st.builds(Resources, vcpu=small, memory_gib=small, storage_gib=small)
expiries = st.one_of(
    st.none(), st.integers(min_value=-9, max_value=9).map(lambda d: TODAY + dt.timedelta(days=d))
)
statuses = st.sampled_from(("active",) * 9 + STATUSES[1:])


@st.composite
def sov_levels(draw) -> dict[str, int]:
    floor = draw(st.sampled_from([0, 1, 2, 2, 3, 3, 4, 4]))
    levels = {o: draw(st.integers(floor, 4)) for o in SOV_OBJECTIVES}
    if draw(st.integers(0, 9)) == 0:  # now and then an objective left unsaid (counts 0)
        del levels[draw(st.sampled_from(list(SOV_OBJECTIVES)))]
    return levels


@st.composite
def member_views(draw, member_id: str) -> MemberView:
    site_ids = ["s1", "s2", "s3"][: draw(st.sampled_from([0, 1, 1, 2, 2, 3]))]
    sites = [
        SiteProfile(id=s, country=draw(countries), capacity=draw(capacities)) for s in site_ids
    ]
    cleared = list(CLASSIFICATION_ORDER[: draw(st.sampled_from([0, 1, 2, 3, 4, 4, 5, 6]))])
    if cleared and draw(st.integers(0, 4)) == 0:  # clearances need not be contiguous
        cleared.remove(draw(st.sampled_from(cleared)))
    profile = MemberProfile(
        id=member_id,
        name=member_id,
        legal_seat="NL",
        sov=draw(sov_levels()),
        certifications=[
            Certification(name=name, expires=draw(expiries))
            for name in CERTS
            if draw(st.integers(0, 4)) > 0
        ],
        cleared_classifications=cleared,
        sites=sites,
    )
    # Free capacity may be reported for some sites only (the others count as empty).
    free = {s.id: draw(capacities) for s in sites if draw(st.integers(0, 2)) == 0}
    return MemberView(profile=profile, status=draw(statuses), free=free)


@st.composite
def qualified_views(draw, member_id: str) -> MemberView:
    """A member that meets most requirements, so that decisions often have a choice."""
    sites = [
        SiteProfile(
            id=s,
            country=draw(countries),
            capacity=Resources(vcpu=64, memory_gib=64, storage_gib=64),
        )
        for s in ["s1", "s2"][: draw(st.integers(1, 2))]
    ]
    profile = MemberProfile(
        id=member_id,
        name=member_id,
        legal_seat="NL",
        sov={o: draw(st.integers(3, 4)) for o in SOV_OBJECTIVES},
        certifications=[Certification(name=name, expires=draw(expiries)) for name in CERTS],
        cleared_classifications=list(CLASSIFICATION_ORDER[:5]),
        sites=sites,
    )
    free = {s.id: draw(capacities) for s in sites if draw(st.booleans())}
    return MemberView(profile=profile, status=draw(statuses), free=free)


@st.composite
def snapshots(draw) -> Snapshot:
    names = st.sampled_from(["amstel", "dommel", "zuidas", "maas", "waal"])
    ids = draw(st.lists(names, max_size=5, unique=True))  # also: no members at all
    members = {
        member_id: draw(qualified_views(member_id) | member_views(member_id)) for member_id in ids
    }
    return Snapshot(members=members, today=TODAY, revisions={"fed_members": draw(st.integers(0))})


specs = st.builds(
    WorkloadSpec,
    id=st.just("w1"),
    tenant=st.just("rivm"),
    replicas=st.integers(1, 4),
    resources=requests,
    requirements=st.builds(
        Requirements,
        min_seal=st.sampled_from([0, 0, 1, 2, 3, 4]),
        jurisdictions=st.sampled_from([["EU"], ["EEA"], ["NL"]])
        | st.lists(st.sampled_from([*COUNTRIES, "EU", "EEA"]), max_size=3),
        classification=st.sampled_from(CLASSIFICATION_ORDER[:2] * 4 + CLASSIFICATION_ORDER),
        certifications=st.lists(st.sampled_from(CERTS), max_size=1),
    ),
)
excludes = st.just(frozenset()) | st.frozensets(st.sampled_from(["amstel", "dommel"]), max_size=2)


def allowed(country: str, jurisdictions: list[str]) -> bool:
    return any(country == j or country in EU_LIKE.get(j, ()) for j in jurisdictions)


def breaks_a_hard_rule(spec: WorkloadSpec, snap: Snapshot, chosen: Assignment, exclude) -> bool:
    """An oracle written apart from the filters, from the rules as DESIGN states them."""
    view = snap.members[chosen.member]
    profile, req = view.profile, spec.requirements
    site = next(s for s in profile.sites if s.id == chosen.site)
    seal = min(profile.sov.get(o, 0) for o in SOV_OBJECTIVES)
    valid = {c.name for c in profile.certifications if c.expires is None or c.expires >= TODAY}
    free = view.free.get(site.id, site.capacity)
    return (
        chosen.member in exclude
        or view.status != "active"
        or seal < req.min_seal
        or req.classification not in profile.cleared_classifications
        or not set(req.certifications) <= valid
        or not allowed(site.country, req.jurisdictions)
        or spec.resources.vcpu > free.vcpu
        or spec.resources.memory_gib > free.memory_gib
        or spec.resources.storage_gib > free.storage_gib
    )


@FAST
@given(snapshots(), specs, excludes)
def test_chosen_members_pass_every_hard_rule(snap, spec, exclude):
    record = decide(spec, snap, decided_by="amstel", now=NOW, exclude=exclude)
    for assignment in record.chosen:
        assert not breaks_a_hard_rule(spec, snap, assignment, exclude)


@FAST
@given(snapshots(), specs, excludes)
def test_one_decision_never_overfills_a_site(snap, spec, exclude):
    record = decide(spec, snap, decided_by="amstel", now=NOW, exclude=exclude)
    used: dict[tuple[str, str], Resources] = {}
    for a in record.chosen:
        used[(a.member, a.site)] = used.get((a.member, a.site), Resources()) + spec.resources
    for (member_id, site_id), total in used.items():
        view = snap.members[member_id]
        site = next(s for s in view.profile.sites if s.id == site_id)
        assert total.fits_in(view.free.get(site_id, site.capacity))


@FAST
@given(snapshots(), specs, excludes, st.data())
def test_never_more_members_than_replicas(snap, spec, exclude, data):
    keep = [
        Assignment(member=m, site="s1", replica=i)
        for i, m in enumerate(data.draw(st.lists(st.sampled_from(["amstel", "dommel"]))))
    ]
    record = decide(spec, snap, decided_by="amstel", now=NOW, exclude=exclude, keep=keep)
    members = [a.member for a in record.chosen]
    assert len(members) <= spec.replicas
    assert len(set(members)) == len(members)
    assert len({a.replica for a in record.chosen}) == len(record.chosen)
    assert record.feasible == bool(record.chosen)
    assert record.degraded == (0 < len(members) < spec.replicas)
    kept: dict[str, Assignment] = {}
    for a in keep:
        if a.member not in exclude:
            kept.setdefault(a.member, a)
    assert record.chosen[: min(len(kept), spec.replicas)] == list(kept.values())[: spec.replicas]


@FAST
@given(snapshots(), specs, excludes)
def test_same_inputs_same_record(snap, spec, exclude):
    first = decide(spec, snap, decided_by="amstel", now=NOW, exclude=exclude)
    shuffled = Snapshot(
        members=dict(reversed(list(snap.members.items()))),
        today=snap.today,
        revisions=snap.revisions,
    )
    again = decide(spec, shuffled, decided_by="amstel", now=NOW, exclude=exclude)
    assert msgspec.json.encode(first) == msgspec.json.encode(again)
    assert first.inputs == dict(snap.revisions)


@FAST
@given(snapshots(), specs)
def test_a_member_left_out_was_infeasible_or_replicas_were_full(snap, spec):
    record = decide(spec, snap, decided_by="amstel", now=NOW)
    chosen = {a.member for a in record.chosen}
    if len(chosen) < spec.replicas:
        for member_id in set(snap.members) - chosen:
            assert not any(key.startswith(f"{member_id}/") for key in record.scores)
            assert any(v.member == member_id and not v.passed for v in record_verdicts(record))
