"""The read-only view of the federation that one placement decision is computed from."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from contracts.registry import MemberProfile, Site
from contracts.resources import Resources
from contracts.workload import Assignment, WorkloadSpec
from services.scheduler.capacity import free_capacity

# Member states as the failover service sees them; only "active" members may host.
STATUSES: tuple[str, ...] = ("active", "suspected", "down", "frozen")


@dataclass(frozen=True)
class MemberView:
    profile: MemberProfile
    status: str  # "active" | "suspected" | "down" | "frozen"
    revision: int = 0  # KV revision of the profile entry this view was read from
    # Free capacity per site id. A site without an entry has had nothing reserved on it
    # that the snapshot knows of, so its declared capacity counts as free.
    free: Mapping[str, Resources] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.profile.id

    def free_at(self, site: Site) -> Resources:
        free = self.free.get(site.id)
        return free if free is not None else site.schedulable()


@dataclass(frozen=True)
class Placed:
    """Where a placed workload runs, for affinity and anti-affinity of its tenant."""

    tenant: str
    members: frozenset[str]


@dataclass(frozen=True)
class Snapshot:
    members: Mapping[str, MemberView]
    today: dt.date  # certifications that expired before this day count as absent
    # KV revisions the decision read, copied into DecisionRecord.inputs so the exact
    # snapshot can be found again when the decision is re-checked.
    revisions: Mapping[str, int] = field(default_factory=dict)
    # Workload id → where it is placed (affinity rules read it).
    placed: Mapping[str, Placed] = field(default_factory=dict)


class Roster:
    """Who the members are, in id order, with their profiles and statuses: what
    member-level filters read. Free capacity is not part of it, so snapshots that
    differ only in capacity (one booking to the next) share one roster, and feasibility
    caches keyed on it stay valid. Compared by identity."""

    __slots__ = ("__weakref__", "ids", "keys", "profiles", "statuses")

    def __init__(self, members: Mapping[str, MemberView]) -> None:
        ordered = sorted(members.items(), key=lambda kv: kv[1].id)
        self.ids: list[str] = [view.id for _, view in ordered]  # member ids, in order
        self.keys: list[str] = [key for key, _ in ordered]  # their keys in `members`
        self.profiles: list[MemberProfile] = [view.profile for _, view in ordered]
        self.statuses: list[str] = [view.status for _, view in ordered]


def roster_of(snapshot: Snapshot) -> Roster:
    """The snapshot's roster, built once per snapshot (O(members)) and then remembered;
    `booked` passes it on to the snapshot it derives."""
    roster = snapshot.__dict__.get("_roster")
    if roster is None:
        roster = Roster(snapshot.members)
        object.__setattr__(snapshot, "_roster", roster)
    return roster


def booked(snapshot: Snapshot, request: Resources, assignments: Sequence[Assignment]) -> Snapshot:
    """The snapshot after reserving `request` at each assignment's site: free capacity
    changes, profiles and statuses do not, so the roster (and every cache keyed on it)
    carries over. What the shell's commit does to its next snapshot."""
    members = dict(snapshot.members)
    for a in assignments:
        view = members[a.member]
        site = next(s for s in view.profile.sites if s.id == a.site)
        free = dict(view.free)
        free[a.site] = view.free_at(site).minus(request)
        members[a.member] = MemberView(view.profile, view.status, view.revision, free)
    derived = Snapshot(members=members, today=snapshot.today, revisions=snapshot.revisions,
                       placed=snapshot.placed)
    if "_roster" in snapshot.__dict__:
        object.__setattr__(derived, "_roster", snapshot.__dict__["_roster"])
    return derived


def placed_of(
    placements: Iterable[tuple[WorkloadSpec, Sequence[Assignment]]],
) -> dict[str, Placed]:
    return {
        spec.id: Placed(tenant=spec.tenant, members=frozenset(a.member for a in assignments))
        for spec, assignments in placements
    }


def snapshot_of(
    profiles: Mapping[str, MemberProfile],
    *,
    today: dt.date,
    statuses: Mapping[str, str] | None = None,
    placements: Iterable[tuple[WorkloadSpec, Sequence[Assignment]]] = (),
    revisions: Mapping[str, int] | None = None,
    member_revisions: Mapping[str, int] | None = None,
    reserved: Mapping[tuple[str, str], Resources] | None = None,
) -> Snapshot:
    """Assemble a snapshot from registry state. Members without a status are "active".
    `reserved`: the reservation ledgers' totals by (member, site), see `free_capacity`."""
    placements = list(placements)
    free = free_capacity(profiles, placements, reserved)
    statuses = statuses or {}
    member_revisions = member_revisions or {}
    members = {
        member_id: MemberView(
            profile=profile,
            status=statuses.get(member_id, "active"),
            revision=member_revisions.get(member_id, 0),
            free=free[member_id],
        )
        for member_id, profile in profiles.items()
    }
    return Snapshot(
        members=members, today=today, revisions=dict(revisions or {}),
        placed=placed_of(placements),
    )
