"""The per-site reservation ledger, pure: reserve, release, fits (no I/O).

`fed_reservations/<member>.<site>` holds a `SiteLedger`: the total reserved there and the
workloads that hold it. A commit books each new site of its decision by CAS on that
record (the shell does the I/O), refused when the total would exceed the site's
schedulable capacity. A repeat by the same attempt changes nothing; a release frees
exactly what the workload held.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from contracts.resources import ZERO, Resources
from contracts.state import Hold, SiteLedger

# A hold of the same generation taken by another attempt is a rival committing the same
# workload right now; after this long it is an orphan (its attempt crashed) and yields.
STALE_HOLD_S = 30.0


class Overbooked(Exception):
    """The site has no room left for the hold."""


class Contended(Exception):
    """Another attempt holds this workload's reservation at the site right now."""


def ledger_key(member: str, site: str) -> str:
    return f"{member}.{site}"


def total(holds: Iterable[Hold]) -> Resources:
    out = ZERO
    for hold in holds:
        out = out + hold.amount
    return out


def fits(ledger: SiteLedger | None, amount: Resources, limit: Resources) -> bool:
    """Whether `amount` more fits under `limit` (the site's schedulable capacity)."""
    reserved = ledger.reserved if ledger is not None else ZERO
    return (reserved + amount).fits_in(limit)


def reserve(
    ledger: SiteLedger | None, *, member: str, site: str, workload: str, hold: Hold,
    limit: Resources, now: dt.datetime,
) -> SiteLedger | None:
    """The ledger with `hold` added for `workload`, or None when it holds it already
    (same attempt: a repeat). Raises Overbooked when it does not fit, Contended when a
    live rival attempt holds the same generation."""
    current = ledger or SiteLedger(member=member, site=site)
    held = current.holds.get(workload)
    if held is not None:
        if held.attempt == hold.attempt:
            return None
        fresh = (now - held.since).total_seconds() < STALE_HOLD_S
        if held.generation >= hold.generation and fresh:
            raise Contended(f"{workload} is being booked at {member}/{site} by another attempt")
    others = {k: v for k, v in current.holds.items() if k != workload}
    if not (total(others.values()) + hold.amount).fits_in(limit):
        raise Overbooked(f"{member}/{site} has no room for {workload}")
    holds = {**others, workload: hold}
    return SiteLedger(member=current.member, site=current.site, reserved=total(holds.values()),
                      holds=holds)


def release(
    ledger: SiteLedger | None, workload: str, *, attempt: str | None = None,
) -> SiteLedger | None:
    """The ledger without `workload`'s hold, or None when there is nothing to free.
    With `attempt`, only a hold taken by that attempt is freed (a losing commit)."""
    if ledger is None or workload not in ledger.holds:
        return None
    if attempt is not None and ledger.holds[workload].attempt != attempt:
        return None
    holds = {k: v for k, v in ledger.holds.items() if k != workload}
    return SiteLedger(member=ledger.member, site=ledger.site, reserved=total(holds.values()),
                      holds=holds)


def at_least(a: Resources, b: Resources) -> Resources:
    """Per resource, the larger of the two (the stricter reading of what is reserved)."""
    return Resources(vcpu=max(a.vcpu, b.vcpu), memory_gib=max(a.memory_gib, b.memory_gib),
                     storage_gib=max(a.storage_gib, b.storage_gib), gpu=max(a.gpu, b.gpu))
