"""Failover re-placement, the pure part: which placements to move, in what order, how fast,
and what the record looks like afterwards.

The async shell (`service.SchedulerService`) reads the records, asks `decide` where the
lost replicas go, and commits what `replaced_record` builds with compare-and-set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from contracts.registry import MemberProfile
from contracts.state import (
    DownDecision,
    FailoverMove,
    PlacementRecord,
    PlacementState,
    ReplicaStatus,
    SiteLedger,
)
from contracts.workload import CRITICALITY_ORDER, Assignment, DecisionRecord
from mesh.trust import TrustStore
from services.failover import quorum
from services.scheduler.ledger import is_takeover_attempt

# Placement states that hold no replicas: nothing of theirs can be lost with a member.
INACTIVE_STATES: frozenset[str] = frozenset({"released", "unplaceable"})


def _lost(a: Assignment, member: str, site: str) -> bool:
    return a.member == member and (not site or a.site == site)


def hit_by(record: PlacementRecord, member: str, site: str = "") -> bool:
    """True when the placement has a replica on `member` (on its `site`, when only that
    site is down), and so must be re-placed."""
    return record.state not in INACTIVE_STATES and any(
        _lost(a, member, site) for a in record.assignments
    )


def dark_sites(decisions: Iterable[DownDecision]) -> set[tuple[str, str]]:
    """(member, site) of every site declared down on its own (and not recovered)."""
    return {(d.member, d.site) for d in decisions if d.site and d.state == "down"}


def without_sites(
    profiles: Mapping[str, MemberProfile], dark: Collection[tuple[str, str]]
) -> dict[str, MemberProfile]:
    """The profiles as placement must see them: the member's dark sites left out, its
    other sites still there (a site-level failure moves only that site's replicas)."""
    if not dark:
        return dict(profiles)
    out = {}
    for member, profile in profiles.items():
        gone = {site for m, site in dark if m == member}
        out[member] = msgspec.structs.replace(
            profile, sites=[s for s in profile.sites if s.id not in gone]) if gone else profile
    return out


def failover_order(records: Iterable[tuple[str, PlacementRecord]]) -> list[str]:
    """Keys in the order failover re-places them: critical first, then the shortest RTO
    (the tightest promise), then by id so every scheduler agrees on the order."""

    def rank(item: tuple[str, PlacementRecord]) -> tuple[int, int, str]:
        key, record = item
        spec = record.spec
        criticality = (
            CRITICALITY_ORDER.index(spec.criticality)
            if spec.criticality in CRITICALITY_ORDER
            else len(CRITICALITY_ORDER)
        )
        return (criticality, spec.rto_seconds, key)

    return [key for key, _ in sorted(records, key=rank)]


def _owner(key: str, ring: int) -> int:
    # sha256, not hash(): every scheduler, in every process, must agree on the owner.
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % ring


def split_share(
    keys: Iterable[str], *, me: str, peers: Collection[str]
) -> tuple[list[str], list[str]]:
    """Share a failover among the surviving schedulers (`peers`, `me` among them or not):
    (the keys this scheduler owns, the rest), each in the order given.

    Every scheduler hears the declaration at once; working through the same list in the
    same order, they would fight over every placement by CAS. Each takes its own share
    first, then sweeps the rest *backwards* (see `sweep_order`), so a peer that died or
    lags is covered while the owners, going forwards, meet the sweepers only at the end.
    """
    ring = sorted(set(peers) | {me})
    mine = ring.index(me)
    own: list[str] = []
    rest: list[str] = []
    for key in keys:
        (own if _owner(key, len(ring)) == mine else rest).append(key)
    return own, rest


def sweep_order(rest: list[str]) -> list[str]:
    """The order to help with the others' shares: backwards, away from their owners."""
    return list(reversed(rest))


def moved_by_a_rival(
    ledgers: Iterable[SiteLedger], workload: str, generation: int, *, lost: str,
    own: Collection[str], site: str = "",
) -> bool:
    """Whether another commit is re-placing `workload` right now: a site off the lost
    member holds it for a newer generation than its record (`generation`), booked by an
    attempt not in `own`. Deciding it meanwhile would see that booking as taken capacity
    and could write "nowhere to go" over a move that had room (the rival's). A takeover's
    reservation is no rival: a saga (or a drill) may hold it for minutes, and a failover
    does not wait for it; the saga's cut-over then finds the workload moved."""
    for ledger in ledgers:
        if ledger.member == lost and (not site or ledger.site == site):
            continue
        hold = ledger.holds.get(workload)
        if (hold is not None and hold.generation > generation and hold.attempt not in own
                and not is_takeover_attempt(hold.attempt)):
            return True
    return False


def survivors(record: PlacementRecord, lost: str, site: str = "") -> list[Assignment]:
    """The assignments that stay where they are when `lost` (or its `site`) is gone."""
    return [a for a in record.assignments if not _lost(a, lost, site)]


def state_after(decision: DecisionRecord) -> PlacementState:
    if not decision.chosen:
        return "unplaceable"
    return "degraded" if decision.degraded else "placed"


def history_line(
    generation: int, lost: str, before: list[Assignment], after: list[Assignment],
    *, rto_s: float | None = None, rto_target_s: int | None = None,
) -> str:
    """One short line per change, e.g. ``gen 2: failover from dommel → zuidas``."""
    kept = {a.member for a in before}
    new = [a.member for a in after if a.member not in kept]
    if new:
        target = ", ".join(new)
    elif after:
        target = "nowhere (degraded; survivors kept)"
    else:
        target = "nowhere (unplaceable)"
    line = f"gen {generation}: failover from {lost} → {target}"
    if rto_s is not None:
        line += f" ({rto_s:.1f} s after down"
        line += f"; RTO target {rto_target_s} s)" if rto_target_s is not None else ")"
    return line


def _next_record(
    record: PlacementRecord, decision: DecisionRecord, *, now: dt.datetime, line: str
) -> PlacementRecord:
    """The next generation of `record` after `decision`: replicas that stay keep their
    status (they still run), new ones start "assigned", one history line more."""
    previous = {(r.member, r.site): r for r in record.replicas}
    replicas = [
        previous.get((a.member, a.site))
        or ReplicaStatus(member=a.member, site=a.site, state="assigned", since=now)
        for a in decision.chosen
    ]
    return PlacementRecord(
        spec=record.spec,
        state=state_after(decision),
        generation=record.generation + 1,
        assignments=list(decision.chosen),
        replicas=replicas,
        decision=decision,
        submitted_by=record.submitted_by,
        submitted_at=record.submitted_at,
        updated_at=now,
        published_generation=record.published_generation,
        history=[*record.history, line],
    )


def replaced_record(
    record: PlacementRecord,
    decision: DecisionRecord,
    *,
    lost: str,
    now: dt.datetime,
    rto_s: float | None = None,
    declared_at: dt.datetime | None = None,
    site: str = "",
) -> PlacementRecord:
    """The record after a failover decision: the lost member's replica placed anew.

    With `declared_at` (the down declaration) the record keeps a `FailoverMove`, so the
    achieved RTO can be told once the new replicas run (`achieved_rto_s`)."""
    if declared_at is not None:
        rto_s = (now - declared_at).total_seconds()
    target = record.spec.rto_seconds if declared_at is not None else None
    kept_before = survivors(record, lost, site)
    label = f"{lost}/{site}" if site else lost
    line = history_line(record.generation + 1, label, kept_before,
                        list(decision.chosen), rto_s=rto_s, rto_target_s=target)
    new = _next_record(record, decision, now=now, line=line)
    if declared_at is not None:
        kept = {(a.member, a.site) for a in record.assignments}
        new.failover = FailoverMove(
            lost=lost, site=site, declared_at=declared_at, placed_at=now,
            rto_target_s=record.spec.rto_seconds,
            to=[a.member for a in decision.chosen if (a.member, a.site) not in kept])
    return new


def achieved_rto_s(record: PlacementRecord) -> float | None:
    """Seconds from the down declaration to the last new replica running; None when the
    placement was not failed over, or its new replicas do not all run yet."""
    move = record.failover
    if move is None:
        return None
    moved = [r for r in record.replicas if r.member in move.to]
    if not moved or any(r.state != "running" or r.since is None for r in moved):
        return None
    last = max(r.since or move.placed_at for r in moved)
    return max(0.0, (last - move.declared_at).total_seconds())


def moved_record(
    record: PlacementRecord, decision: DecisionRecord, *, leave: str, arrive: str,
    why: str, now: dt.datetime,
) -> PlacementRecord:
    """The record after an asked-for rebalance: one replica moved from `leave` to
    `arrive` in one new generation (`stekker workload rebalance`)."""
    line = f"gen {record.generation + 1}: rebalance {leave} → {arrive} ({why})"
    return _next_record(record, decision, now=now, line=line)


# Placements short of replicas: a member that comes back may take the missing ones.
SHORT_STATES: frozenset[str] = frozenset({"degraded", "unplaceable"})


def short_of_replicas(record: PlacementRecord) -> bool:
    return record.state in SHORT_STATES and len(record.assignments) < record.spec.replicas


def healed_record(
    record: PlacementRecord, decision: DecisionRecord, *, recovered: str, now: dt.datetime
) -> PlacementRecord | None:
    """The record after a recovery decision, or None when it adds no replica.

    Healing only adds missing replicas next to the ones that run: nothing moves back, so
    a recovery never evicts anything by surprise (moving back is `workload rebalance`).
    """
    before = {a.member for a in record.assignments}
    added = [a.member for a in decision.chosen if a.member not in before]
    if not added:
        return None
    line = (f"gen {record.generation + 1}: {recovered} recovered → replica(s) added on "
            f"{', '.join(added)}")
    return _next_record(record, decision, now=now, line=line)


@dataclass
class TokenBucket:
    """A token bucket: `rate` tokens a second, at most `burst` saved up.

    Pure: the caller passes the clock and sleeps for the delay `reserve` returns, so a
    failover of thousands of workloads does not hammer the bus all at once.
    """

    rate: float
    burst: float = 0.0
    tokens: float = field(default=-1.0)
    last: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.burst <= 0:
            self.burst = max(1.0, self.rate)
        if self.tokens < 0:
            self.tokens = self.burst

    def reserve(self, now: float) -> float:
        """Take one token; return how many seconds to wait before using it (0 = now)."""
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= 1.0
        # A negative balance is a debt paid off at `rate`: wait until it is back to zero.
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def quorum_problem(*, member: str, observers: Iterable[str], trust: TrustStore) -> str | None:
    """Why a member-down declaration is not backed by a quorum, or None when it is.

    The failover service's own rule (`services.failover.quorum`), so the scheduler never
    acts on a declaration the observers could not have made: ⌈2n/3⌉ of the active members
    other than the one declared down, never fewer than two (invariant 4).
    """
    return quorum.evidence_problem(
        member=member, observers=observers, active=trust.member_ids(),
        needed=quorum.needed_against(trust, member),
    )
