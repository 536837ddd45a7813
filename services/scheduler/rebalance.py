"""Rebalancing, the pure part: which replica of a placement moves where, one at a time.

Never automatic (a surprise eviction is what made Karmada switch its failover off by
default): `stekker workload rebalance` asks for it, and its shell commits each move by
compare-and-set, rate-limited.

A move is one new generation whose assignments drop the leaving member and add the new
one; everything else stays. Agents stop replicas no longer assigned to them and start new
ones, so a workload never runs on more members than it asked for — at worst, for a
moment, on one fewer.

Which placements move:
- with a member named (typically one that just recovered): those it used to host before a
  failover, or that a decision from scratch would now give it — when it is feasible there;
- without: those where a decision from scratch now picks a member that scores clearly
  better (`MIN_GAIN`) than the worst-scoring replica that runs (or than a replica on a
  member that no longer passes the rules at all).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from contracts.state import PlacementRecord
from contracts.workload import Assignment, DecisionRecord
from services.scheduler.pipeline import decide
from services.scheduler.snapshot import Snapshot

# Placements whose every replica is assigned: only these are moved. Short ones are for
# the scheduler's own healing after a recovery, which adds replicas and moves nothing.
MOVABLE_STATES: frozenset[str] = frozenset({"placed", "running"})
# Score points (0..100) a new member must gain over the leaving one: moving costs a
# restart, so near-equal members do not trade replicas back and forth.
MIN_GAIN = 5.0


@dataclass(frozen=True)
class Move:
    """One replica moving: `leave` stops, `arrive` starts, in the same new generation."""

    workload: str
    leave: Assignment
    arrive: Assignment
    decision: DecisionRecord
    why: str


def member_scores(decision: DecisionRecord) -> dict[str, float]:
    """Each member's best site score in a decision (members with no feasible site absent)."""
    best: dict[str, float] = {}
    for key, score in decision.scores.items():
        member = key.split("/", 1)[0]
        best[member] = max(score, best.get(member, score))
    return best


def takers_from(record: PlacementRecord, member: str) -> list[str] | None:
    """The members that took `member`'s replica in its newest failover, or None when
    `member` never lost a replica of this placement. (The history lines written by
    `replace.history_line` are the only trace a record keeps of that.)"""
    marker = f"failover from {member} → "
    for line in reversed(record.history):
        if marker in line:
            taken = line.split(marker, 1)[1].split(" (", 1)[0]
            return [] if taken.startswith("nowhere") else taken.split(", ")
    return None


def used_to_host(record: PlacementRecord, member: str) -> bool:
    return takers_from(record, member) is not None


def movable(record: PlacementRecord) -> bool:
    return (record.state in MOVABLE_STATES and bool(record.assignments)
            and len(record.assignments) >= record.spec.replicas)


def plan_move(
    record: PlacementRecord,
    snapshot: Snapshot,
    *,
    decided_by: str,
    now: dt.datetime,
    member: str | None = None,
) -> Move | None:
    """The one move that improves `record`, or None. `snapshot` must not count `record`'s
    own reservation, so that its current members and the others compare fairly."""
    if not movable(record):
        return None
    spec = record.spec
    current = {a.member for a in record.assignments}
    fresh = decide(spec, snapshot, decided_by=decided_by, now=now, cause="rebalance")
    scores = member_scores(fresh)
    wanted = [a.member for a in fresh.chosen]

    def score(m: str) -> float:
        return scores.get(m, float("-inf"))  # no feasible site any more: leaves first

    # The replica that leaves: the worst-scoring one (min keeps the first of equals:
    # sorted by member id descending, ties go to the highest id) — or, moving back to a
    # member, the replica that took its place when it failed.
    by_id_desc = sorted(record.assignments, key=lambda a: a.member, reverse=True)
    if member is not None:
        takers = set(takers_from(record, member) or ())
        by_id_desc = [a for a in by_id_desc if a.member in takers] or by_id_desc
    leave = min(by_id_desc, key=lambda a: score(a.member))
    if member is not None:
        if member in current or member not in scores:
            return None
        if not (used_to_host(record, member) or member in wanted):
            return None
        target = member
        why = ("it used to host it" if used_to_host(record, member)
               else f"a fresh decision picks it ({scores[member]:.1f})")
    else:
        better = [m for m in wanted if m not in current and score(m) >= score(leave.member)
                  + MIN_GAIN]
        if not better:
            return None
        target = max(sorted(better), key=score)  # ties to the lowest member id
        why = f"score {score(target):.1f} against {score(leave.member):.1f}"
    decision = _decide_move(record, snapshot, leave=leave, target=target,
                            decided_by=decided_by, now=now, everyone=scores.keys() | current
                            | set(snapshot.members))
    arrived = [a for a in decision.chosen if a.member == target]
    if not arrived:
        return None
    return Move(workload=spec.id, leave=leave, arrive=arrived[0], decision=decision, why=why)


def _decide_move(
    record: PlacementRecord, snapshot: Snapshot, *, leave: Assignment, target: str,
    decided_by: str, now: dt.datetime, everyone: Collection[str],
) -> DecisionRecord:
    """The pipeline's record of the move: every replica but `leave` kept, and the only
    member it may choose for the freed replica is `target` (the rest are excluded)."""
    stay = [a for a in record.assignments if a != leave]
    kept = {a.member for a in stay}
    exclude = frozenset(m for m in everyone if m != target and m not in kept)
    return decide(record.spec, snapshot, decided_by=decided_by, now=now, cause="rebalance",
                  exclude=exclude, keep=stay)
