"""Freeing reservations nobody will use: holds a crashed commit left in the ledgers.

A commit books its sites first and writes the placement second (see `booking`). A
scheduler killed in between leaves holds that no placement accounts for: capacity
reserved for ever, the site slowly filling with ghosts. Every scheduler sweeps now and
then: a hold older than `ORPHAN_AFTER_S` (far longer than any commit takes) whose
workload's placement does not assign that site is released — by its own attempt id, so
a booking made meanwhile by a live commit is never touched. Sweeps by several
schedulers at once are harmless: a release is idempotent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from functools import partial

import msgspec

from contracts.state import SiteLedger
from contracts.workload import Assignment
from mesh import layout
from mesh.observability import logger
from mesh.state import Bucket, bucket
from services.scheduler.ledger import ledger_key, orphaned, release
from services.scheduler.reader import NOT_RESERVING

log = logger("services.scheduler.janitor")

ORPHAN_AFTER_S = 120.0
SWEEP_EVERY_S = 300.0


class _Where(msgspec.Struct):
    """What a sweep reads of a placement: its state and its sites; the rest unparsed."""

    state: str
    assignments: list[Assignment] = []


def orphans(
    ledgers: Iterable[SiteLedger], placements: Mapping[str, _Where], now: dt.datetime,
    *, older_than_s: float = ORPHAN_AFTER_S,
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(member, site) → [(workload, attempt)] of holds no placement accounts for."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for ledger in ledgers:
        def assigned(workload: str, ledger: SiteLedger = ledger) -> bool:
            record = placements.get(workload)
            return record is not None and record.state not in NOT_RESERVING and any(
                a.member == ledger.member and a.site == ledger.site
                for a in record.assignments)

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
    freed = 0
    for (member, site), holds in orphans(held, where, now, older_than_s=older_than_s).items():
        for workload, attempt in holds:
            await ledgers.modify(ledger_key(member, site), partial(_free, workload, attempt))
            freed += 1
            log.warning("freed an orphaned reservation", member=member, site=site,
                        workload=workload)
    return freed
