"""Feasibility filters: hard rules a member (or one of its sites) must pass to host a spec.

Each filter is one function returning a `Verdict`. The verdict's `reason` always names the
rule that was checked, also when it passed, so `stekker workload explain` can show per
member which constraint it passed or failed; `passed` says which. Reason words are a
public vocabulary (the CLI, failover and SOC summaries count them): do not rename.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from contracts.registry import SOV_OBJECTIVES, Site
from contracts.resources import Resources
from contracts.workload import Verdict, WorkloadSpec
from services.scheduler.jurisdiction import allowed_countries
from services.scheduler.snapshot import MemberView, Placed
from services.scheduler.sovereignty import overall_seal

MEMBER_EXCLUDED = "member_excluded"
MEMBER_NOT_ACTIVE = "member_not_active"
SEAL_TOO_LOW = "seal_too_low"
CLASSIFICATION_NOT_CLEARED = "classification_not_cleared"
CERTIFICATION_MISSING = "certification_missing"
JURISDICTION_NOT_ALLOWED = "jurisdiction_not_allowed"
INSUFFICIENT_CAPACITY = "insufficient_capacity"
SOV_OBJECTIVE_TOO_LOW = "sov_objective_too_low"
NON_EU_LAW_EXPOSURE = "non_eu_law_exposure"
STAFF_NOT_EU_RESIDENT = "staff_not_eu_resident"
STACK_UNDECLARED = "stack_undeclared"
AFFINITY_NOT_MET = "affinity_not_met"
ANTI_AFFINITY = "anti_affinity"
RESIDENCY_NOT_ALLOWED = "residency_not_allowed"


@dataclass(frozen=True)
class FilterContext:
    today: dt.date
    exclude: frozenset[str] = frozenset()
    # Where other workloads run (affinity rules); see Snapshot.placed.
    placed: Mapping[str, Placed] = field(default_factory=dict)


def _verdict(
    member: MemberView, reason: str, ok: bool, detail: str, site: Site | None = None
) -> Verdict:
    return Verdict(
        member=member.id, site=site.id if site else None, passed=ok, reason=reason, detail=detail
    )


def member_excluded(spec: WorkloadSpec, member: MemberView, ctx: FilterContext) -> Verdict:
    if member.id in ctx.exclude:
        return _verdict(member, MEMBER_EXCLUDED, False, "excluded from this decision")
    return _verdict(member, MEMBER_EXCLUDED, True, "not excluded")


def member_not_active(spec: WorkloadSpec, member: MemberView, ctx: FilterContext) -> Verdict:
    if member.status != "active":
        return _verdict(member, MEMBER_NOT_ACTIVE, False, f"member is {member.status}")
    return _verdict(member, MEMBER_NOT_ACTIVE, True, "member is active")


def seal_too_low(spec: WorkloadSpec, member: MemberView, ctx: FilterContext) -> Verdict:
    seal, required = overall_seal(member.profile), spec.requirements.min_seal
    if seal < required:
        weakest = [o for o in SOV_OBJECTIVES if member.profile.sov.get(o, 0) == seal]
        detail = f"SEAL-{seal} < required SEAL-{required} (weakest: {', '.join(weakest)})"
        return _verdict(member, SEAL_TOO_LOW, False, detail)
    return _verdict(member, SEAL_TOO_LOW, True, f"SEAL-{seal} >= required SEAL-{required}")


def classification_not_cleared(
    spec: WorkloadSpec, member: MemberView, ctx: FilterContext
) -> Verdict:
    wanted = spec.requirements.classification
    if wanted not in member.profile.cleared_classifications:
        return _verdict(member, CLASSIFICATION_NOT_CLEARED, False, f"not cleared for {wanted}")
    return _verdict(member, CLASSIFICATION_NOT_CLEARED, True, f"cleared for {wanted}")


def _cert_key(name: str) -> str:
    # "ISO 27001", "iso-27001" and "ISO27001" are the same certificate to a human.
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def certification_missing(spec: WorkloadSpec, member: MemberView, ctx: FilterContext) -> Verdict:
    required = spec.requirements.certifications
    if not required:
        return _verdict(member, CERTIFICATION_MISSING, True, "no certification required")
    held: dict[str, list[dt.date | None]] = {}
    for cert in member.profile.certifications:
        held.setdefault(_cert_key(cert.name), []).append(cert.expires)
    problems = []
    for name in required:
        expiries = held.get(_cert_key(name))
        if not expiries:
            problems.append(f"{name} missing")
        elif all(e is not None and e < ctx.today for e in expiries):
            # An expired certificate proves nothing any more: it counts as absent.
            problems.append(f"{name} expired {max(e for e in expiries if e is not None)}")
    if problems:
        return _verdict(member, CERTIFICATION_MISSING, False, "; ".join(problems))
    return _verdict(member, CERTIFICATION_MISSING, True, f"holds {', '.join(required)}")


def sov_objective_too_low(spec: WorkloadSpec, member: MemberView, ctx: FilterContext) -> Verdict:
    wanted = spec.requirements.min_sov
    if not wanted:
        return _verdict(member, SOV_OBJECTIVE_TOO_LOW, True, "no per-objective minimum")
    short = [
        f"{o} SEAL-{member.profile.sov.get(o, 0)} < SEAL-{level}"
        for o, level in sorted(wanted.items())
        if member.profile.sov.get(o, 0) < level
    ]
    if short:
        return _verdict(member, SOV_OBJECTIVE_TOO_LOW, False, "; ".join(short))
    return _verdict(member, SOV_OBJECTIVE_TOO_LOW, True, "meets every per-objective minimum")


def non_eu_law_exposure(spec: WorkloadSpec, member: MemberView, ctx: FilterContext) -> Verdict:
    exposure = member.profile.non_eu_law_exposure
    if spec.requirements.no_non_eu_law and exposure:
        return _verdict(member, NON_EU_LAW_EXPOSURE, False, f"subject to {', '.join(exposure)}")
    detail = "no non-EU law exposure" if not exposure else "exposure allowed by the workload"
    return _verdict(member, NON_EU_LAW_EXPOSURE, True, detail)


def staff_not_eu_resident(spec: WorkloadSpec, member: MemberView, ctx: FilterContext) -> Verdict:
    if spec.requirements.eu_resident_staff and not member.profile.eu_resident_staff:
        detail = "privileged staff not all EU/EEA residents working from Europe"
        return _verdict(member, STAFF_NOT_EU_RESIDENT, False, detail)
    return _verdict(member, STAFF_NOT_EU_RESIDENT, True, "staff requirement met")


def stack_undeclared(spec: WorkloadSpec, member: MemberView, ctx: FilterContext) -> Verdict:
    """Diversity can only be shown with declared components: an unnamed hypervisor may
    be the same as every other replica's, so it cannot count as different."""
    missing = [c for c in spec.requirements.diversity if not getattr(member.profile.stack, c)]
    if missing:
        return _verdict(member, STACK_UNDECLARED, False, f"declares no {', '.join(missing)}")
    return _verdict(member, STACK_UNDECLARED, True, "declares the components diversity needs")


def _same_tenant(spec: WorkloadSpec, ids: list[str], ctx: FilterContext) -> list[str]:
    # Only the tenant's own workloads count: a tenant must not steer relative to others'.
    return [w for w in ids if w != spec.id and (w not in ctx.placed
                                                or ctx.placed[w].tenant == spec.tenant)]


def affinity_not_met(spec: WorkloadSpec, member: MemberView, ctx: FilterContext) -> Verdict:
    missing = [
        w for w in _same_tenant(spec, spec.requirements.affinity, ctx)
        if w not in ctx.placed or member.id not in ctx.placed[w].members
    ]
    if missing:
        detail = f"hosts no replica of {', '.join(missing)}"
        return _verdict(member, AFFINITY_NOT_MET, False, detail)
    return _verdict(member, AFFINITY_NOT_MET, True, "affinity met")


def anti_affinity(spec: WorkloadSpec, member: MemberView, ctx: FilterContext) -> Verdict:
    clash = [
        w for w in _same_tenant(spec, spec.requirements.anti_affinity, ctx)
        if w in ctx.placed and member.id in ctx.placed[w].members
    ]
    if clash:
        return _verdict(member, ANTI_AFFINITY, False, f"hosts {', '.join(clash)}")
    return _verdict(member, ANTI_AFFINITY, True, "no anti-affine workload here")


MemberFilter = Callable[[WorkloadSpec, MemberView, FilterContext], Verdict]
# Order matters only for explanations: the first failing filter is the member's reason.
MEMBER_FILTERS: tuple[MemberFilter, ...] = (
    member_excluded,
    member_not_active,
    seal_too_low,
    classification_not_cleared,
    certification_missing,
    sov_objective_too_low,
    non_eu_law_exposure,
    staff_not_eu_resident,
    stack_undeclared,
)
# Filters that read where other workloads run, not the member's profile: they cannot be
# cached per member class, and run only for specs that name other workloads.
PLACEMENT_FILTERS: tuple[MemberFilter, ...] = (affinity_not_met, anti_affinity)


def jurisdiction_not_allowed(
    spec: WorkloadSpec, member: MemberView, site: Site, ctx: FilterContext
) -> Verdict:
    allowed = spec.requirements.jurisdictions
    if site.country not in allowed_countries(allowed):
        detail = f"{site.country} not in {', '.join(allowed) or 'no jurisdiction'}"
        return _verdict(member, JURISDICTION_NOT_ALLOWED, False, detail, site)
    return _verdict(member, JURISDICTION_NOT_ALLOWED, True, f"{site.country} allowed", site)


def residency_not_allowed(
    spec: WorkloadSpec, member: MemberView, site: Site, ctx: FilterContext
) -> Verdict:
    residency = spec.requirements.residency
    if residency and site.country not in allowed_countries(residency):
        detail = f"data may not rest in {site.country} (residency {', '.join(residency)})"
        return _verdict(member, RESIDENCY_NOT_ALLOWED, False, detail, site)
    return _verdict(member, RESIDENCY_NOT_ALLOWED, True, "residency allows it", site)


def _amounts(r: Resources) -> str:
    text = f"{r.vcpu:g} vcpu, {r.memory_gib:g} GiB memory, {r.storage_gib:g} GiB storage"
    return text + (f", {r.gpu:g} gpu" if r.gpu else "")


def insufficient_capacity(
    spec: WorkloadSpec, member: MemberView, site: Site, ctx: FilterContext
) -> Verdict:
    free = member.free_at(site)
    short = spec.resources.shortfall(free)
    if short:
        detail = f"short of {', '.join(short)} (free {_amounts(free)})"
        return _verdict(member, INSUFFICIENT_CAPACITY, False, detail, site)
    return _verdict(member, INSUFFICIENT_CAPACITY, True, f"fits (free {_amounts(free)})", site)


SiteFilter = Callable[[WorkloadSpec, MemberView, Site, FilterContext], Verdict]
SITE_FILTERS: tuple[SiteFilter, ...] = (
    jurisdiction_not_allowed,
    residency_not_allowed,
    insufficient_capacity,
)

# Every reason word, in the order filters run (later = the candidate got further).
REASONS: tuple[str, ...] = (
    MEMBER_EXCLUDED,
    MEMBER_NOT_ACTIVE,
    SEAL_TOO_LOW,
    CLASSIFICATION_NOT_CLEARED,
    CERTIFICATION_MISSING,
    SOV_OBJECTIVE_TOO_LOW,
    NON_EU_LAW_EXPOSURE,
    STAFF_NOT_EU_RESIDENT,
    STACK_UNDECLARED,
    AFFINITY_NOT_MET,
    ANTI_AFFINITY,
    JURISDICTION_NOT_ALLOWED,
    RESIDENCY_NOT_ALLOWED,
    INSUFFICIENT_CAPACITY,
)
