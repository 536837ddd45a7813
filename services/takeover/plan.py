"""The takeover plan: a successor for each of the target's workloads, and the plan's hash.

Pure. The plan is what the approvers sign (through its hash), so its hash must not depend
on the order the coordinator happened to build it in: the hash covers the canonical JSON
of the items sorted by workload id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence

import msgspec

from contracts.state import PlacementRecord
from contracts.takeover import PlanItem
from contracts.workload import CRITICALITY_ORDER, Assignment, WorkloadSpec
from services.scheduler.pipeline import decide
from services.scheduler.snapshot import Snapshot

# A placement in these states holds no replica anywhere, so there is nothing to take over.
INACTIVE_STATES = frozenset({"released", "unplaceable"})


def sorted_plan(plan: Iterable[PlanItem]) -> list[PlanItem]:
    return sorted(plan, key=lambda item: (item.workload, item.source))


def plan_hash(plan: Iterable[PlanItem]) -> str:
    """sha256 (hex) of the canonical msgspec JSON of the plan sorted by workload."""
    # msgspec writes struct fields in definition order, defaults included: the same
    # items give the same bytes in every process.
    return hashlib.sha256(msgspec.json.encode(sorted_plan(plan))).hexdigest()


def hosted_on(target: str, placements: Iterable[PlacementRecord]) -> list[PlacementRecord]:
    """The live placements with a replica on `target`, most critical first, then by id."""
    rank = {c: i for i, c in enumerate(CRITICALITY_ORDER)}
    hosted = [
        p for p in placements
        if p.state not in INACTIVE_STATES and any(a.member == target for a in p.assignments)
    ]
    return sorted(hosted, key=lambda p: (rank.get(p.spec.criticality, 99), p.spec.id))


def _reserve(snapshot: Snapshot, member: str, site: str, spec: WorkloadSpec) -> Snapshot:
    """The snapshot with `spec`'s resources taken from `member`/`site`, so the next item
    of the same plan does not count on capacity an earlier item already claimed."""
    view = snapshot.members.get(member)
    if view is None:
        return snapshot
    profile_site = next((s for s in view.profile.sites if s.id == site), None)
    if profile_site is None:
        return snapshot
    free = dict(view.free)
    free[site] = view.free_at(profile_site).minus(spec.resources)
    members = dict(snapshot.members)
    members[member] = dataclasses.replace(view, free=free)
    return dataclasses.replace(snapshot, members=members)


def plan_item(
    target: str,
    placement: PlacementRecord,
    snapshot: Snapshot,
    *,
    decided_by: str,
    now: dt.datetime,
) -> PlanItem:
    """Where `placement`'s replica on `target` would go, keeping its other replicas."""
    keep: Sequence[Assignment] = [a for a in placement.assignments if a.member != target]
    decision = decide(
        placement.spec, snapshot, exclude=frozenset({target}), keep=keep,
        cause="takeover", decided_by=decided_by, now=now,
    )
    kept = {a.member for a in keep}
    new = [a for a in decision.chosen if a.member not in kept]
    if not new:
        return PlanItem(workload=placement.spec.id, source=target, successor=None,
                        reason=decision.summary or "no member may host it")
    chosen = new[0]
    return PlanItem(workload=placement.spec.id, source=target, successor=chosen.member,
                    site=chosen.site, reason=decision.summary)


def build_plan(
    target: str,
    placements: Iterable[PlacementRecord],
    snapshot: Snapshot,
    *,
    decided_by: str,
    now: dt.datetime,
) -> list[PlanItem]:
    """A plan item per workload with a replica on `target`, sorted by workload id.

    Items are decided most critical first, each on the capacity the earlier ones left,
    so a critical workload gets first pick when successors are nearly full.
    """
    items: list[PlanItem] = []
    for placement in hosted_on(target, placements):
        item = plan_item(target, placement, snapshot, decided_by=decided_by, now=now)
        if item.successor is not None and item.site is not None:
            snapshot = _reserve(snapshot, item.successor, item.site, placement.spec)
        items.append(item)
    return sorted_plan(items)
