"""The fast path decides exactly as the plain one, and its record explains as before.

The fast path: one `FeasibilityCache` kept across decisions, snapshots derived by
`booked` (sharing one roster, so member-level feasibility is reused), member-level
verdicts recorded per class. The plain path: a fresh cache and a freshly built snapshot
for every decision. Both must give equal records for the same inputs.
"""

from __future__ import annotations

import datetime as dt
import random

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.registry import SOV_OBJECTIVES, Certification, MemberProfile, Site, Stack
from contracts.resources import Resources
from contracts.workload import Assignment, DecisionRecord, Requirements, Spread, WorkloadSpec
from services.scheduler.explain import explain_rows
from services.scheduler.feasibility import FeasibilityCache
from services.scheduler.filters import MEMBER_FILTERS, FilterContext
from services.scheduler.pipeline import decide
from services.scheduler.snapshot import MemberView, Snapshot, booked
from services.scheduler.verdicts import by_member, record_verdicts

TODAY = dt.date(2026, 6, 1)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
HYPERVISORS = ["KVM", "Xen", "bhyve", "Hyper-V"]


def federation(rng: random.Random, n: int) -> Snapshot:
    members = {}
    for i in range(n):
        floor = rng.choice([1, 2, 3, 4])
        profile = MemberProfile(
            id=f"m{i:02d}", name=f"m{i}", legal_seat="NL",
            sov={o: rng.randint(floor, 4) for o in SOV_OBJECTIVES},
            non_eu_law_exposure=["US CLOUD Act"] if rng.random() < 0.2 else [],
            eu_resident_staff=rng.random() < 0.8,
            certifications=[Certification(name="BIO2", expires=TODAY + dt.timedelta(days=d))
                            for d in [rng.randint(-3, 30)] if rng.random() < 0.7],
            cleared_classifications=["openbaar", "bbn1", "bbn2"][: rng.randint(1, 3)],
            stack=Stack(hypervisor=rng.choice(HYPERVISORS)),
            sites=[Site(id=f"s{j}", country=rng.choice(["NL", "NL", "DE", "NO", "US"]),
                        region=f"r{rng.randint(0, 4)}",
                        capacity=Resources(vcpu=rng.choice([2, 8, 32]), memory_gib=32,
                                           storage_gib=100))
                   for j in range(rng.randint(0, 3))],
        )
        status = "active" if rng.random() < 0.9 else "down"
        members[profile.id] = MemberView(profile=profile, status=status)
    return Snapshot(members=members, today=TODAY)


def workload(rng: random.Random, i: int, members: list[str]) -> WorkloadSpec:
    kind = rng.random()
    reqs = Requirements(jurisdictions=rng.choice([["EU"], ["NL"], ["EEA"], ["NL", "DE"]]))
    if kind < 0.3:
        reqs = Requirements(min_seal=2, classification="bbn1", certifications=["BIO2"],
                            jurisdictions=["NL"], strategy="binpack")
    elif kind < 0.5:
        reqs = Requirements(no_non_eu_law=True, eu_resident_staff=True, residency=["NL"],
                            jurisdictions=["EEA"])
    elif kind < 0.7:
        reqs = Requirements(spread=Spread(across=rng.choice(["regions", "members"]),
                                          min_domains=rng.randint(1, 3),
                                          max_skew=rng.randint(0, 1)),
                            jurisdictions=["EEA"])
    elif kind < 0.85:
        reqs = Requirements(diversity=["hypervisor"], jurisdictions=["EEA"])
    return WorkloadSpec(
        id=f"w{i}", tenant="t", replicas=rng.randint(1, 4),
        resources=Resources(vcpu=rng.choice([1, 2, 4]), memory_gib=4, storage_gib=10),
        requirements=reqs,
    )


def plain(snapshot: Snapshot) -> Snapshot:
    """The same snapshot built afresh: no roster shared with any other."""
    return Snapshot(members=dict(snapshot.members), today=snapshot.today,
                    revisions=snapshot.revisions, placed=snapshot.placed)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40))
def test_cached_path_decides_as_the_plain_path(seed: int, n: int) -> None:
    rng = random.Random(seed)
    snap, cache = federation(rng, n), FeasibilityCache()
    ids = sorted(snap.members)
    for i in range(25):
        spec = workload(rng, i, ids)
        exclude = frozenset(rng.sample(ids, 1)) if ids and rng.random() < 0.2 else frozenset()
        keep = [Assignment(member=ids[0], site="s0", replica=0)] if ids and rng.random() < 0.1 \
            else []
        fast = decide(spec, snap, decided_by="a", now=NOW, cache=cache, exclude=exclude,
                      keep=keep)
        slow = decide(spec, plain(snap), decided_by="a", now=NOW, exclude=exclude, keep=keep)
        assert fast == slow
        assert explain_rows(fast) == explain_rows(slow)
        snap = booked(snap, spec.resources, [a for a in fast.chosen if a not in keep])


def _rules_hold(spec: WorkloadSpec, snap: Snapshot, record: DecisionRecord) -> bool:
    r = spec.requirements
    views = [snap.members[a.member] for a in record.chosen]
    if len({v.id for v in views}) != len(views):
        return False
    if r.diversity:
        hvs = [v.profile.stack.hypervisor.casefold() for v in views]
        if len(set(hvs)) != len(hvs):
            return False
    if r.spread and views and not record.unsatisfied:
        if r.spread.across == "members":
            domains = [v.id for v in views]
        else:
            domains = [next(s for s in v.profile.sites if s.id == a.site).region
                       for v, a in zip(views, record.chosen, strict=True)]
        counts = [domains.count(d) for d in set(domains)]
        if len(set(domains)) < r.spread.min_domains:
            return False
        if max(counts) - min(counts) > r.spread.max_skew:
            return False
    return True


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_sample_for_spread_and_diversity_keeps_the_rules_and_never_gives_up_early(
    seed: int,
) -> None:
    """A spec with spread or diversity is first tried on a sample; whatever the sample
    places obeys the rules, and whenever the whole feasible set can place every replica
    under the rules, so does the sampled decision (it falls back to the whole set)."""
    rng = random.Random(seed)
    snap = federation(rng, 40)
    for i in range(10):
        spec = workload(rng, i, sorted(snap.members))
        if not (spec.requirements.spread or spec.requirements.diversity):
            continue
        sampled = decide(spec, snap, decided_by="a", now=NOW)
        full = decide(spec, snap, decided_by="a", now=NOW, sample=False)
        assert _rules_hold(spec, snap, sampled)
        full_ok = len(full.chosen) == spec.replicas and not full.unsatisfied
        if full_ok:
            assert len(sampled.chosen) == spec.replicas and not sampled.unsatisfied
        else:
            assert (sampled.unsatisfied, len(sampled.chosen)) == (
                full.unsatisfied, len(full.chosen))


def test_records_without_classes_explain_the_same() -> None:
    """Records written before `classes` carry every verdict in `verdicts`."""
    rng = random.Random(7)
    snap = federation(rng, 30)
    for i in range(20):
        record = decide(workload(rng, i, sorted(snap.members)), snap, decided_by="a", now=NOW)
        assert record.classes
        old = msgspec.structs.replace(record, verdicts=record_verdicts(record), classes=[])
        assert explain_rows(old) == explain_rows(record)
        wire = msgspec.json.decode(msgspec.json.encode(record), type=DecisionRecord)
        assert wire == record
        assert len(explain_rows(record)) == len(snap.members)


def test_members_with_the_same_verdicts_share_one_class_in_the_record() -> None:
    """The record groups members by what the filters said, not by their attributes:
    members that differ only where no filter of this workload looks are one class, and
    every member keeps exactly its own verdicts."""
    rng = random.Random(11)
    snap = federation(rng, 40)
    for i in range(20):
        spec = workload(rng, i, sorted(snap.members))
        record = decide(spec, snap, decided_by="a", now=NOW)
        lists = [tuple(c.verdicts) for c in record.classes]
        assert len(lists) == len(set(lists))  # no two classes say the same
        assert sorted(m for c in record.classes for m in c.members) == sorted(snap.members)
        # Each member's verdicts are what the filters say of it alone.
        ctx = FilterContext(today=snap.today, placed=snap.placed)
        recorded = by_member(v for v in record_verdicts(record) if v.site is None)
        for member_id, view in snap.members.items():
            # (the pipeline adds one more for a member without sites)
            assert recorded[member_id][: len(MEMBER_FILTERS)] == [
                msgspec.structs.replace(check(spec, view, ctx), member=member_id)
                for check in MEMBER_FILTERS]
