"""Free capacity per site: what each site may book (capacity x declared overcommit),
minus what is reserved there: the reservation ledger's total where the site has one,
and never less than what the placements themselves book (so a site without a ledger
entry, or with a placement whose ledger write is still to come, is not undercounted)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from contracts.registry import MemberProfile
from contracts.resources import ZERO, Resources
from contracts.workload import Assignment, WorkloadSpec
from services.scheduler.ledger import at_least


def free_capacity(
    profiles: Mapping[str, MemberProfile],
    placements: Iterable[tuple[WorkloadSpec, Sequence[Assignment]]],
    reserved: Mapping[tuple[str, str], Resources] | None = None,
) -> dict[str, dict[str, Resources]]:
    """member id → site id → free resources. Clamped at zero: an overbooked site is full,
    not negative. Assignments to members or sites that are unknown are ignored (the
    member may have left; its reservations no longer bind anyone). `reserved` maps
    (member, site) to the ledger's total there."""
    used: dict[tuple[str, str], Resources] = {}
    for spec, assignments in placements:
        for a in assignments:
            used[(a.member, a.site)] = used.get((a.member, a.site), ZERO) + spec.resources
    reserved = reserved or {}
    return {
        member_id: {
            site.id: site.schedulable().minus(at_least(
                used.get((member_id, site.id), ZERO), reserved.get((member_id, site.id), ZERO)))
            for site in profile.sites
        }
        for member_id, profile in profiles.items()
    }
