"""The reservation ledger's I/O: book a decision's new sites by CAS, free dropped ones.

`book` CAS-updates `fed_reservations/<member>.<site>` for each new site, in key order (two
schedulers booking the same sites meet at the first one, so neither holds one the other
waits for), at the revision the caller's `FederationState` read. When any site refuses
(full, or another attempt is booking the same workload, or the record changed since it
was read) it frees what this attempt took and raises `NotBooked`; the caller decides
again on a fresh view. Only once every site is booked does the caller write the
placement; if that CAS loses, it frees this attempt's holds (`attempt=`), never a
rival's. After a placement drops a site, `unbook` frees the workload's hold there.

`book_many` is the same for a batch of decisions, as a group commit: one CAS per site for
every workload of the batch that goes there (all sites at once), so a thousand
placements cost a handful of ledger writes, not three thousand.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from contracts.resources import Resources
from contracts.state import Hold, SiteLedger
from contracts.workload import Assignment
from mesh.errors import CasConflict
from mesh.observability import logger
from mesh.state import Bucket, Entry
from services.scheduler.ledger import (
    Contended,
    Overbooked,
    ledger_key,
    release_many,
    reserve,
    reserve_many,
)
from services.scheduler.reader import FederationState

log = logger("services.scheduler.booking")


class NotBooked(Exception):
    """A site refused; `full` when it had no room (deciding again may pick another)."""

    def __init__(self, reason: str, *, full: bool) -> None:
        super().__init__(reason)
        self.full = full


def sites_of(assignments: Iterable[Assignment]) -> set[tuple[str, str]]:
    return {(a.member, a.site) for a in assignments}


def added_sites(before: Sequence[Assignment], after: Sequence[Assignment]) -> list[Assignment]:
    kept = sites_of(before)
    return [a for a in after if (a.member, a.site) not in kept]


def dropped_sites(before: Sequence[Assignment], after: Sequence[Assignment]) -> list[Assignment]:
    return added_sites(after, before)


def stale_holds(
    state: FederationState, workload: str, assignments: Sequence[Assignment],
) -> list[Assignment]:
    """Sites whose ledger (as `state` read it) holds `workload` but `assignments` do not."""
    kept = sites_of(assignments)
    return [
        Assignment(member=e.value.member, site=e.value.site)
        for e in state.ledgers.values()
        if workload in e.value.holds and (e.value.member, e.value.site) not in kept
    ]


@dataclass(frozen=True)
class Booking:
    """One decision's booking request: `amount` at each of `sites`."""

    workload: str
    amount: Resources
    sites: Sequence[Assignment]
    generation: int
    tenant: str = ""


CAS_ROUNDS = 20


def _limit(state: FederationState, member: str, site: str) -> Resources | None:
    profile = state.profiles.get(member)
    if profile is None:
        return None
    return next((s.schedulable() for s in profile.sites if s.id == site), None)


async def _refresh(ledgers: Bucket[SiteLedger], state: FederationState, key: str) -> None:
    fresh = await ledgers.get(key)
    if fresh is None:
        state.ledgers.pop(key, None)
    else:
        state.ledgers[key] = fresh


async def book(
    ledgers: Bucket[SiteLedger], state: FederationState, *, workload: str,
    amount: Resources, sites: Sequence[Assignment], generation: int, tenant: str = "",
    attempt: str | None = None,
) -> str:
    """Reserve `amount` for `workload` at every site; returns this attempt's id. A given
    `attempt` (a takeover's, which reserved at its plan) makes a hold it took already a
    repeat that changes nothing."""
    attempt = attempt or uuid.uuid4().hex
    taken: list[Assignment] = []
    for a in sorted(sites, key=lambda a: ledger_key(a.member, a.site)):
        key = ledger_key(a.member, a.site)
        limit = _limit(state, a.member, a.site)
        entry = state.ledgers.get(key)
        now = dt.datetime.now(dt.UTC)
        try:
            if limit is None:
                raise Overbooked(f"{a.member}/{a.site} is not a known site")
            new = reserve(
                entry.value if entry else None, member=a.member, site=a.site,
                workload=workload, limit=limit, now=now,
                hold=Hold(amount=amount, generation=generation, attempt=attempt, since=now,
                          tenant=tenant),
            )
            if new is not None:
                if entry is None:
                    revision = await ledgers.create(key, new)
                else:
                    revision = await ledgers.update(key, new, entry.revision)
                state.ledgers[key] = Entry(key, new, revision)
                taken.append(a)
        except (Overbooked, Contended, CasConflict) as exc:
            if isinstance(exc, CasConflict):
                await _refresh(ledgers, state, key)
            await unbook(ledgers, state, workload=workload, sites=taken, attempt=attempt)
            raise NotBooked(str(exc), full=isinstance(exc, Overbooked)) from None
    return attempt


async def unbook(
    ledgers: Bucket[SiteLedger], state: FederationState | None, *, workload: str,
    sites: Iterable[Assignment], attempt: str | None = None,
) -> None:
    """Free `workload`'s hold at each site (only `attempt`'s, when given). Idempotent."""
    await unbook_many(ledgers, state, {(a.member, a.site): [workload] for a in sites},
                      attempt=attempt)


async def _write_site(
    ledgers: Bucket[SiteLedger], state: FederationState, key: str,
    change: Callable[[SiteLedger | None], tuple[SiteLedger | None, dict[str, str]]],
) -> dict[str, str]:
    """Apply `change` to one site's ledger by CAS at the revision `state` holds, re-reading
    on conflict; returns what `change` refused (workload → reason)."""
    for _ in range(CAS_ROUNDS):
        entry = state.ledgers.get(key)
        new, refused = change(entry.value if entry else None)
        if new is None:
            return refused
        try:
            if entry is None:
                revision = await ledgers.create(key, new)
            else:
                revision = await ledgers.update(key, new, entry.revision)
        except CasConflict:
            await _refresh(ledgers, state, key)
            continue
        state.ledgers[key] = Entry(key, new, revision)
        return refused
    raise CasConflict(f"{ledgers.name}/{key}: too many concurrent writers")


async def book_many(
    ledgers: Bucket[SiteLedger], state: FederationState, bookings: Sequence[Booking],
    *, attempt: str | None = None,
) -> tuple[str, dict[str, str]]:
    """Book every request's sites, one write per site; returns (attempt id, refused),
    refused mapping workload → reason. A workload is booked only where every one of its
    sites took it: a refused workload's holds at the other sites are freed again. With a
    given `attempt` (a takeover's own, the same on every try), booking again what that
    attempt holds already is a repeat: nothing is reserved twice."""
    attempt = attempt or uuid.uuid4().hex
    now = dt.datetime.now(dt.UTC)
    by_site: dict[tuple[str, str], list[Booking]] = defaultdict(list)
    for b in bookings:
        for a in b.sites:
            by_site[(a.member, a.site)].append(b)

    async def one_site(member: str, site: str, wanted: list[Booking]) -> dict[str, str]:
        limit = _limit(state, member, site)
        if limit is None:
            return {b.workload: f"{member}/{site} is not a known site" for b in wanted}
        holds = [(b.workload, Hold(amount=b.amount, generation=b.generation,
                                   attempt=attempt, since=now, tenant=b.tenant))
                 for b in wanted]
        try:
            def change(current: SiteLedger | None) -> tuple[SiteLedger | None, dict[str, str]]:
                new, refused = reserve_many(current, member=member, site=site, holds=holds,
                                            limit=limit, now=now)
                return new, {workload: str(why) for workload, why in refused.items()}

            return await _write_site(ledgers, state, ledger_key(member, site), change)
        except CasConflict as exc:
            return {b.workload: str(exc) for b in wanted}

    results = await asyncio.gather(*(one_site(m, s, wanted)
                                     for (m, s), wanted in by_site.items()))
    refused: dict[str, str] = {}
    for result in results:
        refused.update(result)
    if refused:
        # Free what the refused ones got elsewhere (only this attempt's holds).
        await unbook_many(ledgers, state, {
            site: [b.workload for b in wanted if b.workload in refused]
            for site, wanted in by_site.items()
        }, attempt=attempt)
    return attempt, refused


async def unbook_many(
    ledgers: Bucket[SiteLedger], state: FederationState | None,
    workloads_by_site: dict[tuple[str, str], list[str]], *, attempt: str | None = None,
) -> None:
    """Free each listed workload's hold at its site, one write per site. Idempotent."""
    scratch = state or FederationState(profiles={}, statuses={}, member_revisions={},
                                       revisions={})

    async def one_site(member: str, site: str, workloads: list[str]) -> None:
        key = ledger_key(member, site)
        if state is None or key not in scratch.ledgers:
            await _refresh(ledgers, scratch, key)
        try:
            await _write_site(ledgers, scratch, key,
                              lambda current: (release_many(current, workloads,
                                                            attempt=attempt), {}))
        except CasConflict:
            log.warning("could not free reservations", key=key, workloads=len(workloads))

    await asyncio.gather(*(one_site(m, s, w) for (m, s), w in workloads_by_site.items()
                           if w))
