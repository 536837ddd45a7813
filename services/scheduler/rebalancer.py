"""`workload rebalance`, the async part: plan each move on a fresh view, commit it by CAS
(generation + 1), announce it, at most `max_moves`, paced by a token bucket."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from contracts.state import PlacementRecord, SiteLedger
from mesh import layout
from mesh.errors import CasConflict, RetryableError
from mesh.state import Bucket, Entry, bucket
from services.scheduler.booking import NotBooked, added_sites, book, dropped_sites, unbook
from services.scheduler.reader import FederationState, read_state
from services.scheduler.rebalance import Move, plan_move
from services.scheduler.replace import TokenBucket, failover_order, moved_record
from services.scheduler.service import CAS_ATTEMPTS, announce


@dataclass(frozen=True)
class Outcome:
    """One planned move, and whether it was committed (not in a dry run)."""

    move: Move
    generation: int
    committed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.move.workload,
            "from": f"{self.move.leave.member}/{self.move.leave.site}",
            "to": f"{self.move.arrive.member}/{self.move.arrive.site}",
            "generation": self.generation,
            "why": self.move.why,
            "committed": self.committed,
        }


def _plan(state: FederationState, key: str, *, decided_by: str,
          member: str | None) -> Move | None:
    entry = state.placements[key]
    now = dt.datetime.now(dt.UTC)
    # The others' reservations only: the placement's own members compete on equal terms.
    others = [e.value for k, e in state.placements.items() if k != key]
    snapshot = state.snapshot(now.date(), placements=others)
    return plan_move(entry.value, snapshot, decided_by=decided_by, now=now, member=member)


async def _commit(
    bus: Any, placements: Bucket[PlacementRecord], ledgers: Bucket[SiteLedger],
    state: FederationState, key: str, *, decided_by: str, member: str | None,
) -> Outcome | None:
    """Book the arriving site in the reservation ledger, move by CAS, then free the site
    left. A full arriving site (the ledger knows of a booking the plan did not) skips
    the move."""
    for _ in range(CAS_ATTEMPTS):
        entry = state.placements[key]
        move = _plan(state, key, decided_by=decided_by, member=member)
        if move is None:
            return None
        now = dt.datetime.now(dt.UTC)
        new = moved_record(entry.value, move.decision, leave=move.leave.member,
                           arrive=move.arrive.member, why=move.why, now=now)
        added = added_sites(entry.value.assignments, new.assignments)
        try:
            held = await book(ledgers, state, workload=key, amount=entry.value.spec.resources,
                              sites=added, generation=new.generation,
                              tenant=entry.value.spec.tenant)
        except NotBooked as exc:
            if exc.full:
                return None
            fresh = await placements.get(key)  # a rival is moving it: plan again
            if fresh is None:
                state.placements.pop(key, None)
                return None
            state.placements[key] = fresh
            continue
        try:
            revision = await placements.update(key, new, entry.revision)
        except CasConflict:
            await unbook(ledgers, state, workload=key, sites=added, attempt=held)
            # An agent noted a replica's status, or a scheduler moved it: plan again.
            fresh = await placements.get(key)
            if fresh is None:
                state.placements.pop(key, None)
                return None
            state.placements[key] = fresh
            continue
        state.placements[key] = Entry(key, new, revision)
        await unbook(ledgers, state, workload=key,
                     sites=dropped_sites(entry.value.assignments, new.assignments))
        await announce(bus, placements, key, new)
        return Outcome(move=move, generation=new.generation, committed=True)
    raise RetryableError(f"fed_placements/{key}: too many concurrent writers")


async def rebalance(
    bus: Any, *, member: str | None, max_moves: int, dry_run: bool, rate_per_s: float,
) -> list[Outcome]:
    """Move up to `max_moves` replicas to where they now belong, critical workloads first.

    Each later plan sees the earlier moves (capacity taken, capacity freed).
    """
    state = await read_state(bus)
    placements = await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)
    ledgers = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)
    decided_by = bus.member
    limiter = TokenBucket(rate=rate_per_s)
    outcomes: list[Outcome] = []
    for key in failover_order((k, e.value) for k, e in state.placements.items()):
        if len(outcomes) >= max_moves:
            break
        if dry_run:
            move = _plan(state, key, decided_by=decided_by, member=member)
            if move is not None:
                generation = state.placements[key].value.generation + 1
                outcomes.append(Outcome(move=move, generation=generation, committed=False))
            continue
        if _plan(state, key, decided_by=decided_by, member=member) is None:
            continue  # nothing to move here: no token spent
        delay = limiter.reserve(time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the moves, not waiting for anything
        outcome = await _commit(bus, placements, ledgers, state, key, decided_by=decided_by,
                                member=member)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes
