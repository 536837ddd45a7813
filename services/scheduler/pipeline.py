"""The placement pipeline: filter every member and site, score, select, record.

Pure and deterministic: the same spec, snapshot and arguments give the same record, so
any member can recompute a decision from its record and check it (DESIGN §6, §7.1).

Cost (see also `feasibility` and `selection`): member-level filters run once per
(member class, requirement class) through a `FeasibilityCache`; per decision each
member costs a cache lookup. Scoring is bounded: for a spec without spread or
diversity, every feasible member is an equally valid host, so only a deterministic
sample is scored — a window of the members in id order, rotated by a hash of the
workload id so that workloads do not all crowd the same members — walked until
`SAMPLE_SIZE` feasible members are found (Nomad's limit iterator, Kubernetes'
percentageOfNodesToScore). The sample can only cost optimality, never a hard rule:
every sampled site passed every filter. Specs with spread or diversity are scored in
full, because the rules may need any member; `selection` keeps their search small.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zlib
from collections import Counter
from collections.abc import Sequence

from contracts.registry import Site
from contracts.workload import Assignment, Cause, DecisionRecord, Verdict, WorkloadSpec
from services.scheduler.feasibility import (
    FeasibilityCache,
    no_sites,
    placement_verdicts,
    requirement_class,
)
from services.scheduler.filters import REASONS, FilterContext
from services.scheduler.scoring import capacity_score, preference_bonus
from services.scheduler.selection import Candidate, Rules, select
from services.scheduler.snapshot import MemberView, Snapshot
from services.scheduler.verdicts import by_member, ruling_failure

# Feasible members scored per decision when a sample is safe (no spread, no diversity).
SAMPLE_SIZE = 16


def _domain(spec: WorkloadSpec, member: str, site: Site | None, site_id: str) -> str:
    spread = spec.requirements.spread
    if spread is None:
        return ""
    if spread.across == "members":
        return member
    if spread.across == "sites":
        return f"{member}/{site_id}"
    if site is None:
        return f"?{member}/{site_id}"  # unknown site: a domain of its own
    return site.region if spread.across == "regions" else site.grid_region


def _stack(spec: WorkloadSpec, member: MemberView | None) -> tuple[str, ...]:
    if member is None:
        return tuple("?" for _ in spec.requirements.diversity)
    return tuple(getattr(member.profile.stack, c) for c in spec.requirements.diversity)


def _kept(keep: Sequence[Assignment], ctx: FilterContext, replicas: int) -> list[Assignment]:
    """Surviving replicas that stay: one per member, none on an excluded member
    (exclusion wins, so a takeover can keep everything but the member it empties)."""
    kept: list[Assignment] = []
    for assignment in keep:
        if assignment.member in ctx.exclude or any(k.member == assignment.member for k in kept):
            continue
        kept.append(assignment)
    return kept[:replicas]


def _failure_counts(failed: dict[str, Verdict]) -> str:
    counts = Counter(v.reason or "unknown" for v in failed.values())
    order = sorted(counts, key=lambda r: (-counts[r], REASONS.index(r) if r in REASONS else 99))
    plural = "member" if len(failed) == 1 else "members"
    listed = ", ".join(f"{reason}: {counts[reason]}" for reason in order)
    return f"{len(failed)} {plural} failed ({listed})"


def _summary(
    spec: WorkloadSpec,
    chosen: list[Assignment],
    kept: list[Assignment],
    failed: dict[str, Verdict],
    unsatisfied: list[str],
) -> str:
    rules = f" ({', '.join(unsatisfied)})" if unsatisfied else ""
    if not chosen:
        if unsatisfied:
            return f"no placement satisfies the rules{rules}"
        if not failed:
            return "no member may host it: no members known"
        return f"no member may host it: {_failure_counts(failed)}"
    text = f"placed {len(chosen)}/{spec.replicas} on {', '.join(a.member for a in chosen)}"
    if kept:
        text += f" (kept {', '.join(a.member for a in kept)})"
    if len(chosen) < spec.replicas:
        if unsatisfied:
            text += f"; degraded{rules}"
        else:
            text += f"; degraded: {_failure_counts(failed) if failed else 'no more members'}"
    return text


def _order(snapshot: Snapshot, spec: WorkloadSpec, sampling: bool) -> list[MemberView]:
    members = sorted(snapshot.members.values(), key=lambda m: m.id)
    if not sampling or len(members) <= SAMPLE_SIZE:
        return members
    # crc32, not hash(): the same on every member's machine, so decisions recompute.
    start = zlib.crc32(spec.id.encode()) % len(members)
    return members[start:] + members[:start]


def decide(
    spec: WorkloadSpec,
    snapshot: Snapshot,
    *,
    decided_by: str,
    now: dt.datetime,
    cause: Cause = "submitted",
    exclude: frozenset[str] = frozenset(),
    keep: Sequence[Assignment] = (),
    cache: FeasibilityCache | None = None,
    sample: bool = True,
) -> DecisionRecord:
    """Place `spec`'s replicas on distinct members; `keep` holds replicas that stay.
    `cache` may be kept by the caller between decisions; `sample=False` scores every
    feasible member (the sample never breaks a hard rule, only trades optimality)."""
    cache = cache or FeasibilityCache()
    r = spec.requirements
    ctx = FilterContext(today=snapshot.today, exclude=frozenset(exclude), placed=snapshot.placed)
    rules = Rules(spread=r.spread, diversity=bool(r.diversity))
    sampling = sample and not rules.any
    req = requirement_class(spec)
    verdicts: list[Verdict] = []
    scores: dict[str, float] = {}
    candidates: list[Candidate] = []
    scored_members = 0
    for member in _order(snapshot, spec, sampling):
        outcome = cache.member_outcome(spec, req, member, ctx)
        verdicts.extend(outcome.verdicts)
        if not outcome.passed:
            continue  # ruled out as a whole: its sites need no verdicts
        affinity = placement_verdicts(spec, member, ctx)
        if affinity:
            verdicts.extend(affinity)
            if not all(v.passed for v in affinity):
                continue
        if sampling and scored_members >= SAMPLE_SIZE:
            continue  # outside the sample: its member-level verdicts are recorded
        if not member.profile.sites:
            verdicts.append(no_sites(member))
            continue
        feasible = False
        for site in sorted(member.profile.sites, key=lambda s: s.id):
            site_verdicts = cache.site_verdicts(spec, member, site, ctx)
            verdicts.extend(site_verdicts)
            free = member.free_at(site)
            fits = cache.capacity_verdict(spec, member, site, free, ctx)
            verdicts.append(fits)  # recorded even abroad: explain shows every check
            if not (fits.passed and all(v.passed for v in site_verdicts)):
                continue
            feasible = True
            score = capacity_score(r.strategy, spec.resources, free, site.schedulable())
            score = round(score + preference_bonus(r.preferences, member.id, site.region), 3)
            scores[f"{member.id}/{site.id}"] = score
            candidates.append(Candidate(
                member.id, site.id, score, _domain(spec, member.id, site, site.id),
                _stack(spec, member),
            ))
        scored_members += feasible

    kept = _kept(keep, ctx, spec.replicas)
    kept_candidates = [
        Candidate(a.member, a.site, 0.0, _site_domain(spec, snapshot, a),
                  _stack(spec, snapshot.members.get(a.member)))
        for a in kept
    ]
    if not rules.any:
        # Without rules, only each member's best site can matter (fewer candidates).
        best: dict[str, Candidate] = {}
        for c in candidates:
            if c.member not in best or (-c.score, c.site) < (-best[c.member].score,
                                                             best[c.member].site):
                best[c.member] = c
        candidates = list(best.values())
    new, unsatisfied = select(candidates, kept_candidates, spec.replicas, rules)
    chosen = list(kept)
    used = {a.replica for a in kept}
    free_replicas = (i for i in itertools.count() if i not in used)  # lowest unused first
    for c in new:
        chosen.append(Assignment(member=c.member, site=c.site, replica=next(free_replicas)))
    taken = {a.member for a in chosen}

    # Reading every verdict back costs as much as the decision: only when the summary
    # must say why replicas are missing.
    ruled_out = {} if len(chosen) >= spec.replicas else {
        member: failure
        for member, member_verdicts in by_member(verdicts).items()
        if member not in taken and (failure := ruling_failure(member_verdicts)) is not None
    }
    return DecisionRecord(
        workload=spec.id,
        cause=cause,
        decided_by=decided_by,
        decided_at=now,
        inputs=dict(snapshot.revisions),
        excluded=sorted(ctx.exclude),
        verdicts=verdicts,
        scores=scores,
        chosen=chosen,
        feasible=bool(chosen),
        degraded=bool(chosen) and len(chosen) < spec.replicas,
        summary=_summary(spec, chosen, kept, ruled_out, unsatisfied),
        unsatisfied=unsatisfied,
        sampled=scored_members if sampling and scored_members >= SAMPLE_SIZE else 0,
    )


def _site_domain(spec: WorkloadSpec, snapshot: Snapshot, a: Assignment) -> str:
    view = snapshot.members.get(a.member)
    site = next((s for s in view.profile.sites if s.id == a.site), None) if view else None
    return _domain(spec, a.member, site, a.site)
