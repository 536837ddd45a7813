"""Feasibility of one spec on every member and site, computed per equivalence class.

Why: a decision must not cost (members x filters) of fresh work for every workload.
Member-level filters read only a few attributes of a member (status, whether it is
excluded, SOV levels, clearances, certifications, law exposure, staff residency, stack),
and only a few fields of a spec (its *requirement class*). Members with equal attributes
form an equivalence class; the filters run once per (member class, requirement class,
day), and `member_level` keeps, per roster, the verdicts per class (recorded as such,
never copied per member) and the positions of the members that passed. Site filters
are cached too: jurisdiction and residency per (member profile, allowed countries),
capacity per free-amount object (passing) or (free amount, request) (failing).

`FeasibilityCache` is a pure, explicit object: a caller may keep one between decisions
(the scheduler service, the benchmark) or pass none (a fresh one per decision). It is
safe when the snapshot changes because every key holds the values the verdict was
computed from (the profile object itself, status, day, free amount); nothing is keyed
on time or on a revision that could be reused. It is bounded: a table that grows past
`limit` entries is cleared, which costs only recomputation.

Affinity and anti-affinity read where other workloads run, not the member's profile, so
they are evaluated per member, and only for specs that name other workloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from contracts.registry import MemberProfile, Site
from contracts.resources import Resources
from contracts.workload import Verdict, VerdictClass, WorkloadSpec
from services.scheduler.filters import (
    INSUFFICIENT_CAPACITY,
    MEMBER_FILTERS,
    PLACEMENT_FILTERS,
    FilterContext,
    insufficient_capacity,
    jurisdiction_not_allowed,
    residency_not_allowed,
)
from services.scheduler.snapshot import MemberView, Roster


def requirement_class(spec: WorkloadSpec) -> tuple[object, ...]:
    """The fields of a spec that member-level filters read, as a hashable key."""
    r = spec.requirements
    return (
        r.min_seal,
        tuple(sorted(r.min_sov.items())),
        r.classification,
        tuple(r.certifications),
        r.no_non_eu_law,
        r.eu_resident_staff,
        tuple(r.diversity),
    )


def site_class(spec: WorkloadSpec) -> tuple[object, ...]:
    """The fields of a spec that site filters other than capacity read."""
    r = spec.requirements
    return (tuple(r.jurisdictions), tuple(r.residency))


def member_class(profile: MemberProfile) -> tuple[object, ...]:
    """The attributes of a profile that member-level filters read, as a hashable key."""
    return (
        tuple(sorted(profile.sov.items())),
        tuple(profile.cleared_classifications),
        tuple((c.name, c.expires) for c in profile.certifications),
        tuple(profile.non_eu_law_exposure),
        profile.eu_resident_staff,
        profile.stack,
    )


_Table = TypeVar("_Table", bound=dict[Any, Any])


@dataclass
class MemberLevel:
    """Member-level feasibility of one requirement class on one roster: the verdicts per
    equivalence class (for the record) and the positions, in the roster's id order, of
    the members that passed them all (the only ones whose sites need looking at)."""

    classes: list[VerdictClass]
    passing: list[int]


# Site verdicts of one member (jurisdiction, residency per site, sites in id order),
# whether each site passed them, its schedulable capacity and its key in `scores`.
SiteChecks = list[tuple[Site, list[Verdict], bool, Resources, str]]


class FeasibilityCache:
    def __init__(self, limit: int = 200_000, capacity_limit: int = 20_000) -> None:
        self.limit = limit
        # Capacity verdicts go stale with every booking (a new free amount) and each
        # entry keeps its free amount alive, so their tables are kept smaller.
        self.capacity_limit = capacity_limit
        self._classes: dict[int, tuple[MemberProfile, tuple[object, ...]]] = {}
        self._by_class: dict[tuple[object, ...], list[Verdict]] = {}
        self._level: dict[Roster, dict[tuple[object, ...], MemberLevel]] = {}
        self._sites: dict[tuple[object, ...], tuple[MemberProfile, SiteChecks]] = {}
        self._schedulable: dict[int, tuple[Site, Resources]] = {}
        self._site: dict[tuple[object, ...], list[Verdict]] = {}
        self._capacity: dict[tuple[object, ...], Verdict] = {}
        # Passing capacity verdicts by id(free amount); read inline by the pipeline.
        self.fits: dict[int, tuple[Resources, str, str, Verdict]] = {}
        self.filter_runs = 0  # how often the member-level filters really ran (for tests)

    def _bounded(self, table: _Table, limit: int | None = None) -> _Table:
        if len(table) >= (limit or self.limit):
            table.clear()
        return table

    def class_of(self, profile: MemberProfile) -> tuple[object, ...]:
        hit = self._classes.get(id(profile))
        if hit is not None and hit[0] is profile:
            return hit[1]
        key = member_class(profile)
        self._bounded(self._classes)[id(profile)] = (profile, key)
        return key

    def member_level(
        self, spec: WorkloadSpec, req: tuple[object, ...], roster: Roster, ctx: FilterContext
    ) -> MemberLevel:
        """Run the member-level filters once per (member class, status, excluded) and
        remember the outcome for this roster, requirement class, exclusions and day."""
        key = (req, ctx.exclude, ctx.today)
        per_roster = self._level.get(roster)
        if per_roster is None:
            if len(self._level) >= 64:  # rosters come and go; keep the recent ones
                self._level.pop(next(iter(self._level)))
            per_roster = self._level[roster] = {}
        hit = per_roster.get(key)
        if hit is not None:
            return hit
        groups: dict[tuple[object, ...], list[Verdict]] = {}
        # Members whose verdicts read the same share one class in the record, whatever
        # made their attributes differ: at 1,000 members nearly every member is a class
        # of its own, but the verdicts fall into a few dozen lists (a record of 40 kB,
        # not 1 MB, which is past what NATS carries in one message).
        same: dict[tuple[Verdict, ...], tuple[list[str], list[Verdict]]] = {}
        passing: list[int] = []
        for pos, (member_id, profile, status) in enumerate(
            zip(roster.ids, roster.profiles, roster.statuses, strict=True)
        ):
            excluded = member_id in ctx.exclude
            class_key = (self.class_of(profile), status, excluded, req, ctx.today)
            template = groups.get(class_key)
            if template is None:
                template = self._by_class.get(class_key)
                if template is None:
                    self.filter_runs += 1
                    view = MemberView(profile=profile, status=status)
                    template = [
                        msgspec.structs.replace(check(spec, view, ctx), member="")
                        for check in MEMBER_FILTERS
                    ]
                    self._bounded(self._by_class)[class_key] = template
                groups[class_key] = template
            same.setdefault(tuple(template), ([], template))[0].append(member_id)
            if all(v.passed for v in template):
                passing.append(pos)
        level = MemberLevel(
            [VerdictClass(members=m, verdicts=v) for m, v in same.values()], passing
        )
        per_roster[key] = level
        return level

    def site_checks(
        self, spec: WorkloadSpec, member: MemberView, ctx: FilterContext,
        where: tuple[object, ...] | None = None,
    ) -> SiteChecks:
        """Jurisdiction and residency of every site of `member`, sites in id order.
        `where` is `site_class(spec)`, when the caller has it at hand."""
        key = (id(member.profile), where or site_class(spec))
        hit = self._sites.get(key)
        if hit is not None and hit[0] is member.profile:
            return hit[1]
        checks: SiteChecks = []
        for site in sorted(member.profile.sites, key=lambda s: s.id):
            verdicts = self.site_verdicts(spec, member, site, ctx)
            checks.append((site, verdicts, all(v.passed for v in verdicts),
                           self.schedulable(site), f"{member.id}/{site.id}"))
        self._bounded(self._sites)[key] = (member.profile, checks)
        return checks

    def schedulable(self, site: Site) -> Resources:
        """`site.schedulable()`, computed once per site object."""
        hit = self._schedulable.get(id(site))
        if hit is not None and hit[0] is site:
            return hit[1]
        value = site.schedulable()
        self._bounded(self._schedulable)[id(site)] = (site, value)
        return value

    def site_verdicts(
        self, spec: WorkloadSpec, member: MemberView, site: Site, ctx: FilterContext
    ) -> list[Verdict]:
        r = spec.requirements
        key = (member.id, site.id, site.country, tuple(r.jurisdictions), tuple(r.residency))
        hit = self._site.get(key)
        if hit is None:
            hit = [
                jurisdiction_not_allowed(spec, member, site, ctx),
                residency_not_allowed(spec, member, site, ctx),
            ]
            self._bounded(self._site)[key] = hit
        return hit

    def capacity_verdict(
        self, spec: WorkloadSpec, member: MemberView, site: Site, free: Resources,
        ctx: FilterContext,
    ) -> Verdict:
        """`insufficient_capacity` of `free` at the site. A passing verdict names only the
        free amounts, not the request, so it is cached per free-amount object (free
        amounts are immutable and carried from snapshot to snapshot until booked);
        a failing one per (free, request)."""
        if spec.resources.fits_in(free):
            hit = self.fits.get(id(free))
            if hit is not None and hit[0] is free and hit[1] == member.id and hit[2] == site.id:
                return hit[3]
            verdict = insufficient_capacity(spec, member, site, ctx)
            fits = self._bounded(self.fits, self.capacity_limit)
            fits[id(free)] = (free, member.id, site.id, verdict)
            return verdict
        key = (member.id, site.id, free, spec.resources)
        failed = self._capacity.get(key)
        if failed is None:
            failed = insufficient_capacity(spec, member, site, ctx)
            self._bounded(self._capacity, self.capacity_limit)[key] = failed
        return failed


def no_sites(member: MemberView) -> Verdict:
    return Verdict(
        member=member.id, passed=False, reason=INSUFFICIENT_CAPACITY,
        detail="member declares no sites",
    )


def placement_verdicts(
    spec: WorkloadSpec, member: MemberView, ctx: FilterContext
) -> list[Verdict]:
    """Affinity rules, only when the spec names other workloads (else nothing to say)."""
    r = spec.requirements
    if not (r.affinity or r.anti_affinity):
        return []
    return [check(spec, member, ctx) for check in PLACEMENT_FILTERS]
