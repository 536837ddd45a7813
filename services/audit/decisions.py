"""Placement decisions recomputed from their records (DESIGN §6: any member can re-check).

Pure. `DecisionAudit` follows the verified events of FED in order: it keeps the newest
announced profile of each member and the newest spec of each
workload; for every `workload.placed.v1` / `workload.failed.v1`, and every item of a
`workload.dispatched.v1` or `workload.placements.v1` (a scheduler's batch, signed once),
it checks the record:

- the chosen members are distinct, no more than the replicas asked for, and the event's
  assignments are the record's choice;
- every chosen member (and its chosen site) passed every verdict recorded on it;
- the member-level verdicts are what the scheduler's own filters say today of the profile
  that member had announced before the decision (same spec, day and exclusions).

Not recomputed: whether a member was active (the status comes from KV declarations and
takeover sagas, whose FED events alone do not settle it: a declaration without quorum is
refused), and the per-site verdicts (capacity depends on every other placement at that
moment). The rules a member cannot argue with — sovereignty level, classification,
certifications, exclusion — are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from contracts.base import Event
from contracts.registry import MemberAnnounced, MemberProfile
from contracts.workload import (
    Assignment,
    DecisionRecord,
    PlacementsDispatched,
    Verdict,
    WorkloadFailed,
    WorkloadPlaced,
    WorkloadSpec,
    WorkloadsPlaced,
    WorkloadSubmitted,
)
from services.scheduler.filters import (
    INSUFFICIENT_CAPACITY,
    MEMBER_FILTERS,
    MEMBER_NOT_ACTIVE,
    FilterContext,
)
from services.scheduler.snapshot import MemberView
from services.scheduler.verdicts import by_member, record_verdicts


@dataclass(frozen=True)
class Mismatch:
    """One thing in a decision record that does not hold."""

    seq: int
    workload: str
    generation: int | None
    problem: str


def kept_reservation(decision: DecisionRecord, verdict: Verdict) -> bool:
    """A re-placement keeps running replicas, whose own reservation the snapshot counts
    against their site: their capacity verdict may fail without anything being wrong."""
    return decision.cause != "submitted" and verdict.reason == INSUFFICIENT_CAPACITY


def _choice_problems(
    spec: WorkloadSpec | None, decision: DecisionRecord,
    assignments: Sequence[Assignment] | None,
) -> list[str]:
    problems = []
    chosen = [a.member for a in decision.chosen]
    twice = sorted(m for m, n in Counter(chosen).items() if n > 1)
    if twice:
        problems.append(f"member(s) chosen twice: {', '.join(twice)}")
    if spec is not None and len(chosen) > spec.replicas:
        problems.append(f"{len(chosen)} assignments for {spec.replicas} replica(s)")
    if assignments is not None and list(assignments) != list(decision.chosen):
        problems.append("the event's assignments differ from the record's choice")
    grouped = by_member(record_verdicts(decision))
    for assignment in decision.chosen:
        verdicts = grouped.get(assignment.member, [])
        if not any(v.site is None for v in verdicts):
            problems.append(f"chosen {assignment.member} has no recorded verdicts")
        for verdict in verdicts:
            if kept_reservation(decision, verdict):
                continue
            if verdict.site in (None, assignment.site) and not verdict.passed:
                where = f"{assignment.member}/{verdict.site}" if verdict.site else assignment.member
                problems.append(f"chosen {where} failed {verdict.reason} ({verdict.detail})")
    return problems


def _verdict_problems(
    spec: WorkloadSpec, decision: DecisionRecord, profiles: Mapping[str, MemberProfile],
) -> list[str]:
    problems = []
    ctx = FilterContext(today=decision.decided_at.date(), exclude=frozenset(decision.excluded))
    for member, verdicts in sorted(by_member(record_verdicts(decision)).items()):
        recorded = {v.reason: v for v in verdicts if v.site is None}
        profile = profiles.get(member)
        if profile is None:
            problems.append(f"{member} announced no profile before the decision")
            continue
        view = MemberView(profile=profile, status="active")
        for check in MEMBER_FILTERS:
            expected = check(spec, view, ctx)
            if expected.reason == MEMBER_NOT_ACTIVE:
                continue
            said = recorded.get(expected.reason)
            if said is None:
                problems.append(f"{member}: no recorded verdict for {expected.reason}")
            elif said.passed and not expected.passed:
                problems.append(f"{member} recorded as passing {expected.reason}, but "
                                f"its announced profile fails it ({expected.detail})")
            elif not said.passed and expected.passed:
                problems.append(f"{member} recorded as failing {expected.reason}, but its "
                                f"announced profile passes it ({expected.detail})")
    return problems


def check_decision(
    decision: DecisionRecord, *, spec: WorkloadSpec | None,
    assignments: Sequence[Assignment] | None, profiles: Mapping[str, MemberProfile],
) -> list[str]:
    """Every problem of one decision record; empty when it holds."""
    problems = _choice_problems(spec, decision, assignments)
    if spec is not None:
        problems += _verdict_problems(spec, decision, profiles)
    return problems


@dataclass
class DecisionAudit:
    profiles: dict[str, MemberProfile] = field(default_factory=dict)
    specs: dict[str, WorkloadSpec] = field(default_factory=dict)
    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    def feed(self, seq: int, event: Event, *, count: bool = True) -> None:
        """Follow one verified event; check it when it is a decision and `count` says so
        (events before `--since` still build up the profiles and specs)."""
        if isinstance(event, MemberAnnounced):
            self.profiles[event.profile.id] = event.profile
        elif isinstance(event, WorkloadSubmitted):
            self.specs.setdefault(event.spec.id, event.spec)  # the first submission stands
        elif isinstance(event, WorkloadPlaced):
            self.specs[event.spec.id] = event.spec
            if count:
                self._check(seq, event.spec.id, event.generation, event.decision,
                            spec=event.spec, assignments=event.assignments)
        elif isinstance(event, (PlacementsDispatched, WorkloadsPlaced)):
            for item in event.placements:
                self.specs[item.spec.id] = item.spec
                if count:
                    self._check(seq, item.spec.id, item.generation, item.decision,
                                spec=item.spec, assignments=item.assignments)
        elif isinstance(event, WorkloadFailed) and event.decision is not None and count:
            self._check(seq, event.workload, None, event.decision,
                        spec=self.specs.get(event.workload), assignments=None)

    def _check(
        self, seq: int, workload: str, generation: int | None, decision: DecisionRecord, *,
        spec: WorkloadSpec | None, assignments: Sequence[Assignment] | None,
    ) -> None:
        self.checked += 1
        for problem in check_decision(decision, spec=spec, assignments=assignments,
                                      profiles=self.profiles):
            self.mismatches.append(Mismatch(seq, workload, generation, problem))
