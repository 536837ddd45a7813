"""The capacity a takeover reserves for its successors: booked when the plan is made.

The plan step decides a successor per workload and books its site in the ledgers
(`services.scheduler.booking.book_many`: one CAS per site) before the plan is recorded,
so what the approvers sign is capacity that is really there, and nothing placed in the
meantime can take it. Every hold of a saga carries the attempt id
`takeover_attempt(saga)`, the same for every try and every coordinator of the saga:

- a coordinator killed after booking and before recording the plan leaves holds; the
  member that resumes plans again on the ledgers *without* them (they are its own) and
  books again with the same attempt id: a repeat changes nothing, a hold at a site the
  new plan no longer picks is freed. Nothing is reserved twice;
- the janitor (`services.scheduler.janitor`) leaves a live saga's holds alone;
- at the cut-over the hold becomes the placement's booking (`book` with the same attempt
  id finds it there and writes nothing);
- a workload that fails, a saga that is refused or aborted, and every workload of a drill
  give their holds back (`release_holds`), one write per site.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from contracts.state import PlacementRecord, SiteLedger
from contracts.takeover import PlanItem
from contracts.workload import Assignment
from mesh import layout
from mesh.state import Bucket, Entry, bucket
from services.scheduler.booking import Booking, book_many, unbook_many
from services.scheduler.ledger import release_many, takeover_attempt
from services.scheduler.reader import FederationState, read_state
from services.takeover.plan import build_plan

# Plan and book again when a site refused (another commit took the room in between).
ROUNDS = 3

Site = tuple[str, str]


def without_own_holds(state: FederationState, attempt: str) -> FederationState:
    """`state` with the holds of `attempt` left out of the ledgers: planning again, a
    saga must not count its own earlier reservations against itself."""
    ledgers: dict[str, Entry[SiteLedger]] = {}
    for key, entry in state.ledgers.items():
        own = [w for w, h in entry.value.holds.items() if h.attempt == attempt]
        freed = release_many(entry.value, own, attempt=attempt) if own else None
        ledgers[key] = entry if freed is None else Entry(key, freed, entry.revision)
    return dataclasses.replace(state, ledgers=ledgers)


def bookings(plan: Iterable[PlanItem], placements: Mapping[str, PlacementRecord]
             ) -> list[Booking]:
    """One booking per planned successor: the workload's resources at its site, for the
    generation its cut-over will write."""
    out = []
    for item in plan:
        record = placements.get(item.workload)
        if item.successor is None or item.site is None or record is None:
            continue
        out.append(Booking(workload=item.workload, amount=record.spec.resources,
                           sites=[Assignment(member=item.successor, site=item.site)],
                           generation=record.generation + 1, tenant=record.spec.tenant))
    return out


def planned_sites(plan: Iterable[PlanItem]) -> dict[str, Site]:
    return {i.workload: (i.successor, i.site) for i in plan
            if i.successor is not None and i.site is not None}


def strays(state: FederationState, attempt: str, plan: Iterable[PlanItem]
           ) -> dict[Site, list[str]]:
    """Holds of `attempt` that the plan does not account for (an earlier try, or a dead
    coordinator's, picked another site): (member, site) → workloads."""
    wanted = planned_sites(plan)
    out: dict[Site, list[str]] = defaultdict(list)
    for entry in state.ledgers.values():
        ledger = entry.value
        for workload, hold in ledger.holds.items():
            if hold.attempt == attempt and wanted.get(workload) != (ledger.member, ledger.site):
                out[(ledger.member, ledger.site)].append(workload)
    return dict(out)


def unreserved(item: PlanItem, why: str) -> PlanItem:
    """A plan item whose successor's capacity could not be reserved: no successor."""
    return msgspec.structs.replace(
        item, successor=None, site=None,
        reason=f"no capacity could be reserved at {item.successor}/{item.site}: {why}")


def unused(mine: Iterable[PlanItem], recorded: Iterable[PlanItem]) -> list[PlanItem]:
    """Items of `mine` whose successor site the recorded plan does not use for them."""
    wanted = planned_sites(recorded)
    return [i for i in mine if wanted.get(i.workload) != (i.successor, i.site)]


async def plan_and_reserve(
    bus: Any, target: str, saga: str, *, decided_by: str, now: dt.datetime,
) -> tuple[list[PlanItem], int]:
    """The plan, with every successor's capacity booked by this saga's attempt; and how
    many were booked. A site that refuses is planned again on a fresh read (up to
    `ROUNDS` times); what is still refused then has no successor."""
    attempt = takeover_attempt(saga)
    ledgers: Bucket[SiteLedger] = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)
    state = await read_state(bus)
    plan: list[PlanItem] = []
    refused: dict[str, str] = {}
    for round_ in range(ROUNDS):
        if round_:
            state = await read_state(bus)  # a site refused: decide again on a fresh read
        placements = {k: e.value for k, e in state.placements.items()}
        snapshot = without_own_holds(state, attempt).snapshot(now.date())
        plan = build_plan(target, [placements[k] for k in sorted(placements)], snapshot,
                          decided_by=decided_by, now=now)
        _, refused = await book_many(ledgers, state, bookings(plan, placements),
                                     attempt=attempt)
        if not refused:
            break
    plan = [unreserved(i, refused[i.workload]) if i.workload in refused else i for i in plan]
    await unbook_many(ledgers, state, strays(state, attempt, plan), attempt=attempt)
    return plan, len(planned_sites(plan))


async def release_holds(bus: Any, saga: str, items: Iterable[PlanItem]) -> None:
    """Give back the capacity this saga reserved for `items` (only its own holds: a
    placement's booking made since, by another attempt, stays). Idempotent."""
    by_site: dict[Site, list[str]] = defaultdict(list)
    for workload, site in planned_sites(items).items():
        by_site[site].append(workload)
    if not by_site:
        return
    ledgers: Bucket[SiteLedger] = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)
    await unbook_many(ledgers, None, dict(by_site), attempt=takeover_attempt(saga))
