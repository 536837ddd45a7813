"""The placement pipeline: filter every member and site, score, select, record.

Pure and deterministic: the same spec, snapshot and arguments give the same record, so
any member can recompute a decision from its record and check it (DESIGN §6, §7.1).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Sequence

from contracts.workload import Assignment, Cause, DecisionRecord, Verdict, WorkloadSpec
from services.scheduler.filters import (
    INSUFFICIENT_CAPACITY,
    MEMBER_FILTERS,
    REASONS,
    SITE_FILTERS,
    FilterContext,
)
from services.scheduler.scoring import balance_score
from services.scheduler.snapshot import MemberView, Snapshot
from services.scheduler.verdicts import by_member, ruling_failure


def _evaluate(
    spec: WorkloadSpec, member: MemberView, ctx: FilterContext
) -> tuple[list[Verdict], dict[str, float]]:
    """All verdicts on one member, and the score of each of its feasible sites."""
    verdicts = [check(spec, member, ctx) for check in MEMBER_FILTERS]
    if not all(v.passed for v in verdicts):
        return verdicts, {}  # ruled out as a whole: its sites need no verdicts
    if not member.profile.sites:
        verdicts.append(
            Verdict(
                member=member.id,
                passed=False,
                reason=INSUFFICIENT_CAPACITY,
                detail="member declares no sites",
            )
        )
        return verdicts, {}
    scores: dict[str, float] = {}
    for site in sorted(member.profile.sites, key=lambda s: s.id):
        site_verdicts = [check(spec, member, site, ctx) for check in SITE_FILTERS]
        verdicts.extend(site_verdicts)
        if all(v.passed for v in site_verdicts):
            scores[site.id] = balance_score(spec.resources, member.free_at(site), site.capacity)
    return verdicts, scores


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
) -> str:
    if not chosen:
        if not failed:
            return "no member may host it: no members known"
        return f"no member may host it: {_failure_counts(failed)}"
    text = f"placed {len(chosen)}/{spec.replicas} on {', '.join(a.member for a in chosen)}"
    if kept:
        text += f" (kept {', '.join(a.member for a in kept)})"
    if len(chosen) < spec.replicas:
        text += f"; degraded: {_failure_counts(failed) if failed else 'no more members'}"
    return text


def decide(
    spec: WorkloadSpec,
    snapshot: Snapshot,
    *,
    decided_by: str,
    now: dt.datetime,
    cause: Cause = "submitted",
    exclude: frozenset[str] = frozenset(),
    keep: Sequence[Assignment] = (),
) -> DecisionRecord:
    """Place `spec`'s replicas on distinct members; `keep` holds replicas that stay."""
    ctx = FilterContext(today=snapshot.today, exclude=frozenset(exclude))
    verdicts: list[Verdict] = []
    scores: dict[str, float] = {}
    candidates: list[tuple[float, str, str]] = []  # (score, member, site): best per member
    for member in sorted(snapshot.members.values(), key=lambda m: m.id):
        member_verdicts, site_scores = _evaluate(spec, member, ctx)
        verdicts.extend(member_verdicts)
        scores.update({f"{member.id}/{site}": s for site, s in site_scores.items()})
        if site_scores:
            # Best site: highest score, then lowest site id.
            site = min(site_scores, key=lambda s: (-site_scores[s], s))
            candidates.append((site_scores[site], member.id, site))

    kept = _kept(keep, ctx, spec.replicas)
    chosen = list(kept)
    taken = {a.member for a in kept}
    used = {a.replica for a in kept}
    free_replicas = (i for i in itertools.count() if i not in used)  # lowest unused first
    for _score, member_id, site in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if len(chosen) >= spec.replicas:
            break
        if member_id not in taken:  # never two replicas on one member
            chosen.append(Assignment(member=member_id, site=site, replica=next(free_replicas)))
            taken.add(member_id)

    ruled_out = {
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
        summary=_summary(spec, chosen, kept, ruled_out),
    )
