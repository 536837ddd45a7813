"""The per-site reservation ledger, pure: reserve, release, fits (no I/O).

`fed_reservations/<member>.<site>` holds a `SiteLedger`: the total reserved there and the
workloads that hold it. A commit books each new site of its decision by CAS on that
record (the shell does the I/O), refused when the total would exceed the site's
schedulable capacity. A repeat by the same attempt changes nothing; a release frees
exactly what the workload held.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from contracts.resources import ZERO, Resources
from contracts.state import Hold, SiteLedger

# A hold of the same generation taken by another attempt is a rival committing the same
# workload right now; after this long it is an orphan (its attempt crashed) and yields.
STALE_HOLD_S = 30.0


class Overbooked(Exception):
    """The site has no room left for the hold."""


class Contended(Exception):
    """Another attempt holds this workload's reservation at the site right now."""


TAKEOVER_ATTEMPT = "takeover:"


def ledger_key(member: str, site: str) -> str:
    return f"{member}.{site}"


def takeover_attempt(saga: str) -> str:
    """The attempt id of every hold a takeover saga takes for its successors: the same
    for every try and every coordinator of the saga, so a repeat reserves nothing twice,
    and the janitor knows which saga accounts for a hold."""
    return f"{TAKEOVER_ATTEMPT}{saga}"


def is_takeover_attempt(attempt: str) -> bool:
    """Whether a hold was taken by a takeover saga (`takeover_attempt`)."""
    return attempt.startswith(TAKEOVER_ATTEMPT)


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
    new, refused = reserve_many(ledger, member=member, site=site, holds=[(workload, hold)],
                                limit=limit, now=now)
    if workload in refused:
        raise refused[workload]
    return new


def reserve_many(
    ledger: SiteLedger | None, *, member: str, site: str, holds: Iterable[tuple[str, Hold]],
    limit: Resources, now: dt.datetime,
) -> tuple[SiteLedger | None, dict[str, Overbooked | Contended]]:
    """Add many holds in one write (a batch's group commit), in the order given: each
    that fits is added, each that does not is refused with its reason. Returns the new
    ledger (None when nothing changed) and workload → why it was refused."""
    current = ledger or SiteLedger(member=member, site=site)
    new_holds = dict(current.holds)
    reserved = total(new_holds.values())  # once; then kept as holds are added
    refused: dict[str, Overbooked | Contended] = {}
    changed = False
    for workload, hold in holds:
        held = new_holds.get(workload)
        base = reserved
        if held is not None:
            if held.attempt == hold.attempt:
                continue  # a repeat of this attempt
            fresh = (now - held.since).total_seconds() < STALE_HOLD_S
            if held.generation >= hold.generation and fresh:
                refused[workload] = Contended(
                    f"{workload} is being booked at {member}/{site} by another attempt")
                continue
            base = reserved.minus(held.amount)  # an older generation or an orphan yields
        if not (base + hold.amount).fits_in(limit):
            refused[workload] = Overbooked(f"{member}/{site} has no room for {workload}")
            continue
        new_holds[workload] = hold
        reserved = base + hold.amount
        changed = True
    if not changed:
        return None, refused
    return SiteLedger(member=current.member, site=current.site,
                      reserved=total(new_holds.values()), holds=new_holds), refused


def release_many(
    ledger: SiteLedger | None, workloads: Iterable[str], *, attempt: str | None = None,
) -> SiteLedger | None:
    """`release` for many workloads in one write; None when there is nothing to free."""
    if ledger is None:
        return None
    holds = dict(ledger.holds)
    for workload in workloads:
        held = holds.get(workload)
        if held is not None and (attempt is None or held.attempt == attempt):
            del holds[workload]
    if len(holds) == len(ledger.holds):
        return None
    return SiteLedger(member=ledger.member, site=ledger.site, reserved=total(holds.values()),
                      holds=holds)


def orphaned(
    ledger: SiteLedger, assigned: Callable[[str], bool], now: dt.datetime,
    *, older_than_s: float = STALE_HOLD_S,
) -> list[str]:
    """Workloads holding capacity here that no placement assigns here, and whose hold is
    older than a commit can take: what a scheduler that crashed between booking and
    writing the placement left behind. `assigned(workload)` says whether the workload's
    placement (as read) has a replica on this ledger's site."""
    return sorted(
        workload for workload, hold in ledger.holds.items()
        if (now - hold.since).total_seconds() > older_than_s and not assigned(workload)
    )


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
