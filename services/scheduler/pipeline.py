"""The placement pipeline: filter every member and site, score, select, record.

Pure and deterministic: the same spec, snapshot and arguments give the same record, so
any member can recompute a decision from its record and check it (DESIGN §6, §7.1).

Cost (see also `feasibility`, `selection` and docs/placement.md): member-level filters
run once per (member class, requirement class) through a `FeasibilityCache`, and their
outcome is kept per roster (who the members are; `snapshot.Roster`), so a decision
costs one lookup for the member level whatever the member count, and records those
verdicts per class (`DecisionRecord.classes`). Only members that passed are walked,
site by site. Scoring is bounded: only a deterministic sample is scored — the members
that passed, in id order, from a start chosen by a crc32 of the workload id so that
workloads do not all crowd the same members — walked until `SAMPLE_SIZE` feasible
members are found (Nomad's limit iterator, Kubernetes' percentageOfNodesToScore).
Capacity is checked at every site walked, on the snapshot's free amount.

Why the sample can only cost optimality, never a hard rule: every sampled site passed
every filter, capacity included, and `select` enforces spread and diversity on any
candidate set. Without spread or diversity every feasible member is an equally valid
host. With them, the sample (`RULES_SAMPLE_SIZE`) is tried first and kept only when it
places every replica under the rules; otherwise the whole feasible set is walked, so a
decision says "no full placement" or "degraded" only of the whole set (one shortcut,
`_no_better`, where the whole set provably cannot answer otherwise).
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from contracts.registry import Site
from contracts.workload import (
    Assignment,
    Cause,
    DecisionRecord,
    Verdict,
    VerdictClass,
    WorkloadSpec,
)
from services.scheduler.feasibility import (
    FeasibilityCache,
    no_sites,
    placement_verdicts,
    requirement_class,
    site_class,
)
from services.scheduler.filters import REASONS, FilterContext
from services.scheduler.scoring import balance_score, binpack_score, preference_bonus
from services.scheduler.selection import SPREAD_UNSATISFIABLE, Candidate, Rules, select
from services.scheduler.snapshot import MemberView, Roster, Snapshot, roster_of
from services.scheduler.verdicts import by_member, ruling_failure

# Feasible members scored per decision when a sample is safe (no spread, no diversity).
SAMPLE_SIZE = 8
# Feasible members scored first for a spec with spread or diversity; the whole feasible
# set only when these cannot place every replica under the rules.
RULES_SAMPLE_SIZE = 8


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


@dataclass
class _Walk:
    verdicts: list[Verdict] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    scored_members: int = 0
    limited: bool = False  # stopped at the sample's size: members were left unscored


def _positions(spec: WorkloadSpec, roster: Roster, passing: list[int], rotate: bool) -> list[int]:
    """Members that passed the member-level filters, in id order, rotated for a sample
    so that it starts at a member chosen by a hash of the workload id."""
    if not rotate or len(roster.ids) <= SAMPLE_SIZE:
        return passing
    # crc32, not hash(): the same on every member's machine, so decisions recompute.
    start = zlib.crc32(spec.id.encode()) % len(roster.ids)
    i = bisect.bisect_left(passing, start)
    return passing[i:] + passing[:i]


def _walk(
    spec: WorkloadSpec, snapshot: Snapshot, roster: Roster, positions: list[int],
    ctx: FilterContext, cache: FeasibilityCache, limit: int | None,
) -> _Walk:
    """Check and score the sites of members in `positions` order, until `limit` members
    with a feasible site were found (None: all of them)."""
    r = spec.requirements
    out = _Walk()
    affinity = bool(r.affinity or r.anti_affinity)
    request, strategy, prefs = spec.resources, r.strategy, r.preferences
    scored_any_pref = bool(prefs.members or prefs.regions)
    where = site_class(spec)
    members, keys = snapshot.members, roster.keys
    verdicts, scores = out.verdicts, out.scores
    scorer = binpack_score if strategy == "binpack" else balance_score
    fits_by_free = cache.fits.get
    candidates = out.candidates
    # Without spread or diversity only each member's best site can matter to selection.
    all_sites = bool(r.spread or r.diversity)
    for pos in positions:
        member = members[keys[pos]]
        if affinity:
            placement = placement_verdicts(spec, member, ctx)
            out.verdicts.extend(placement)
            if not all(v.passed for v in placement):
                continue
        if limit is not None and out.scored_members >= limit:
            out.limited = True
            if affinity:
                continue  # affinity verdicts are recorded for every member
            break
        if not member.profile.sites:
            out.verdicts.append(no_sites(member))
            continue
        feasible = False
        stack = _stack(spec, member)
        free_at, member_id = member.free.get, member.id
        best: tuple[float, str] | None = None  # without rules: the member's best site
        for site, site_verdicts, allowed, schedulable, key in cache.site_checks(
            spec, member, ctx, where
        ):
            verdicts.extend(site_verdicts)
            site_id = site.id
            free = free_at(site_id)
            if free is None:
                free = schedulable
            hit = fits_by_free(id(free))  # the common case of capacity_verdict, inline
            if (hit is not None and hit[0] is free and hit[1] == member_id
                    and hit[2] == site_id and request.fits_in(free)):
                fits = hit[3]
            else:
                fits = cache.capacity_verdict(spec, member, site, free, ctx)
            verdicts.append(fits)  # recorded even abroad: explain shows every check
            if not (fits.passed and allowed):
                continue
            feasible = True
            score = scorer(request, free, schedulable)
            if scored_any_pref:
                score = round(score + preference_bonus(prefs, member_id, site.region), 3)
            scores[key] = score
            if not all_sites:
                # Sites come in id order: a tie keeps the lower id, as selection would.
                if best is None or score > best[0]:
                    best = (score, site_id)
                continue
            candidates.append(Candidate(
                member_id, site_id, score, _domain(spec, member_id, site, site_id), stack,
            ))
        if best is not None:
            candidates.append(Candidate(member_id, best[1], best[0], "", stack))
        out.scored_members += feasible
    return out


def _ruled_out(classes: Sequence[VerdictClass], walk: _Walk, taken: set[str]) -> dict[str, Verdict]:
    """The failure that rules out each member not taken (`ruling_failure` of its
    verdicts, read from the classes without copying a verdict per member; the summary
    only counts their reasons)."""
    out: dict[str, Verdict] = {}
    for cls in classes:
        failure = next((v for v in cls.verdicts if not v.passed), None)
        if failure is not None:  # a failed member-level filter wins, first in order
            out.update((m, failure) for m in cls.members if m not in taken)
    for member, member_verdicts in by_member(walk.verdicts).items():
        if member not in taken and member not in out:
            failure = ruling_failure(member_verdicts)
            if failure is not None:
                out[member] = failure
    return out


def _no_better(
    spec: WorkloadSpec, rules: Rules, kept: int, new: list[Candidate], unsatisfied: list[str]
) -> bool:
    """Whether the whole feasible set provably cannot do better than a sample did.

    Only one case, the common one: spread without diversity whose `min_domains`
    exceeds the replicas. No candidates can ever meet it, so the whole set reports
    `spread_unsatisfiable` too; and a degraded placement never has more than one replica
    fewer than needed, which the sample already reached (every sampled candidate
    passed every filter, and the degraded spread rule holds within the sample)."""
    spread = rules.spread
    return (
        spread is not None and not rules.diversity and spread.min_domains > spec.replicas
        and unsatisfied == [SPREAD_UNSATISFIABLE]
        and len(new) == max(spec.replicas - kept - 1, 0)
    )


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
    roster = roster_of(snapshot)
    level = cache.member_level(spec, requirement_class(spec), roster, ctx)

    kept = _kept(keep, ctx, spec.replicas)
    kept_candidates = [
        Candidate(a.member, a.site, 0.0, _site_domain(spec, snapshot, a),
                  _stack(spec, snapshot.members.get(a.member)))
        for a in kept
    ]
    limit = (RULES_SAMPLE_SIZE if rules.any else SAMPLE_SIZE) if sample else None
    walk = _walk(spec, snapshot, roster, _positions(spec, roster, level.passing, sample),
                 ctx, cache, limit)
    new, unsatisfied = select(walk.candidates, kept_candidates, spec.replicas, rules)
    if (rules.any and walk.limited and (unsatisfied or len(kept) + len(new) < spec.replicas)
            and not _no_better(spec, rules, len(kept), new, unsatisfied)):
        # The sample could not place every replica under the rules: only the whole
        # feasible set may say that no placement exists (see module doc).
        walk = _walk(spec, snapshot, roster, level.passing, ctx, cache, None)
        new, unsatisfied = select(walk.candidates, kept_candidates, spec.replicas, rules)
    chosen = list(kept)
    used = {a.replica for a in kept}
    free_replicas = (i for i in itertools.count() if i not in used)  # lowest unused first
    for c in new:
        chosen.append(Assignment(member=c.member, site=c.site, replica=next(free_replicas)))
    taken = {a.member for a in chosen}

    # Reading verdicts back costs as much as the decision: only when the summary must
    # say why replicas are missing.
    ruled_out = {} if len(chosen) >= spec.replicas else _ruled_out(level.classes, walk, taken)
    return DecisionRecord(
        workload=spec.id,
        cause=cause,
        decided_by=decided_by,
        decided_at=now,
        inputs=dict(snapshot.revisions),
        excluded=sorted(ctx.exclude),
        verdicts=walk.verdicts,
        scores=walk.scores,
        chosen=chosen,
        feasible=bool(chosen),
        degraded=bool(chosen) and len(chosen) < spec.replicas,
        summary=_summary(spec, chosen, kept, ruled_out, unsatisfied),
        unsatisfied=unsatisfied,
        sampled=walk.scored_members if walk.limited else 0,
        classes=level.classes,
    )


def _site_domain(spec: WorkloadSpec, snapshot: Snapshot, a: Assignment) -> str:
    view = snapshot.members.get(a.member)
    site = next((s for s in view.profile.sites if s.id == a.site), None) if view else None
    return _domain(spec, a.member, site, a.site)
