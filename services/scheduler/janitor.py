"""Freeing reservations nobody will use: holds a crashed commit left in the ledgers.

A commit books its sites first and writes the placement second (see `booking`). A
scheduler killed in between leaves holds that no placement accounts for: capacity
reserved for ever, the site slowly filling with ghosts. Every scheduler sweeps now and
then: a hold older than `ORPHAN_AFTER_S` (far longer than any commit takes) whose
workload's placement does not assign that site is released — by its own attempt id, so
a booking made meanwhile by a live commit is never touched. Sweeps by several
schedulers at once are harmless: a release is idempotent.

A takeover reserves its successors' capacity when it plans, minutes before the cut-over
writes the placement (`services.takeover.reservations`). Those holds carry the saga's
attempt id (`takeover_attempt`); while the saga lives (not completed or failed) they are
accounted for: while it plans, every hold of its attempt; once planned, those its plan
names (workload, successor site). The saga gives them back itself when it ends; one it
could not (its coordinator died at the very end) is an orphan after the saga ended.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from functools import partial

import msgspec

from contracts.state import SagaRecord, SiteLedger
from contracts.takeover import PlanItem
from contracts.workload import Assignment
from mesh import layout
from mesh.observability import logger
from mesh.state import Bucket, bucket
from services.scheduler.ledger import ledger_key, orphaned, release, takeover_attempt
from services.scheduler.reader import NOT_RESERVING

log = logger("services.scheduler.janitor")

ORPHAN_AFTER_S = 120.0
SWEEP_EVERY_S = 300.0


class _Where(msgspec.Struct):
    """What a sweep reads of a placement: its state and its sites; the rest unparsed."""

    state: str
    assignments: list[Assignment] = []


class _Saga(msgspec.Struct):
    """What a sweep reads of a saga record: its state and its plan; the rest unparsed."""

    saga: str
    state: str
    plan: list[PlanItem] = []


# The (workload, member, site) a live saga reserved; None: every hold of its attempt.
Reserved = frozenset[tuple[str, str, str]] | None
FINISHED = frozenset({"completed", "failed"})


def saga_holds(sagas: Iterable[_Saga | SagaRecord]) -> dict[str, Reserved]:
    """attempt id → the holds a live takeover saga accounts for."""
    out: dict[str, Reserved] = {}
    for saga in sagas:
        if saga.state in FINISHED:
            continue
        out[takeover_attempt(saga.saga)] = None if saga.state == "planning" else frozenset(
            (i.workload, i.successor, i.site) for i in saga.plan
            if i.successor is not None and i.site is not None)
    return out


def orphans(
    ledgers: Iterable[SiteLedger], placements: Mapping[str, _Where], now: dt.datetime,
    *, older_than_s: float = ORPHAN_AFTER_S, sagas: Mapping[str, Reserved] | None = None,
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(member, site) → [(workload, attempt)] of holds no placement (and no live
    takeover saga, `saga_holds`) accounts for."""
    sagas = sagas or {}
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for ledger in ledgers:
        def assigned(workload: str, ledger: SiteLedger = ledger) -> bool:
            record = placements.get(workload)
            if record is not None and record.state not in NOT_RESERVING and any(
                    a.member == ledger.member and a.site == ledger.site
                    for a in record.assignments):
                return True
            attempt = ledger.holds[workload].attempt
            if attempt not in sagas:
                return False
            reserved = sagas[attempt]
            return reserved is None or (workload, ledger.member, ledger.site) in reserved

        found = orphaned(ledger, assigned, now, older_than_s=older_than_s)
        if found:
            out[(ledger.member, ledger.site)] = [(w, ledger.holds[w].attempt) for w in found]
    return out


def _free(workload: str, attempt: str, current: SiteLedger | None) -> SiteLedger | None:
    return release(current, workload, attempt=attempt)


async def sweep(bus: object, *, now: dt.datetime | None = None,
                older_than_s: float = ORPHAN_AFTER_S) -> int:
    """Release every orphaned hold; returns how many were freed."""
    now = now or dt.datetime.now(dt.UTC)
    ledgers: Bucket[SiteLedger] = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)
    # Ledgers first: a placement written after this read cannot make its own fresh
    # hold look orphaned, since only holds older than `older_than_s` are candidates.
    held = [e.value for e in await ledgers.items()]
    placements = await bucket(bus, layout.KV_PLACEMENTS, _Where)
    where = {e.key: e.value for e in await placements.items()}
    records = await bucket(bus, layout.KV_SAGAS, _Saga)
    live = saga_holds(e.value for e in await records.items(layout.SAGA_KEYS))
    freed = 0
    for (member, site), holds in orphans(held, where, now, older_than_s=older_than_s,
                                         sagas=live).items():
        for workload, attempt in holds:
            await ledgers.modify(ledger_key(member, site), partial(_free, workload, attempt))
            freed += 1
            log.warning("freed an orphaned reservation", member=member, site=site,
                        workload=workload)
    return freed
