"""Free capacity per site: what each site may book (capacity x declared overcommit),
minus what placements reserve there."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from contracts.registry import MemberProfile
from contracts.resources import Resources
from contracts.workload import Assignment, WorkloadSpec


def free_capacity(
    profiles: Mapping[str, MemberProfile],
    placements: Iterable[tuple[WorkloadSpec, Sequence[Assignment]]],
) -> dict[str, dict[str, Resources]]:
    """member id → site id → free resources. Clamped at zero: an overbooked site is full,
    not negative. Assignments to members or sites that are unknown are ignored (the
    member may have left; its reservations no longer bind anyone)."""
    free = {
        member_id: {site.id: site.schedulable() for site in profile.sites}
        for member_id, profile in profiles.items()
    }
    for spec, assignments in placements:
        for assignment in assignments:
            sites = free.get(assignment.member)
            if sites is not None and assignment.site in sites:
                sites[assignment.site] = sites[assignment.site].minus(spec.resources)
    return free
