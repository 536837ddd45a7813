"""What an agent does about a placement, given what runs locally. Pure.

The agent's shell feeds every `workload.placed` event (and, at start, every record of
`fed_placements`) through `plan`, then carries out the action with its driver.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from contracts.registry import Site, SiteCapacity
from contracts.resources import ZERO, Resources
from contracts.state import PlacementRecord, ReplicaState, ReplicaStatus
from contracts.workload import Assignment

Action = Literal["start", "restart", "rebind", "confirm", "stop", "ignore"]


@dataclass(frozen=True)
class Local:
    """What runs here for one workload: the generation it was bound for, and where."""

    generation: int
    site: str


@dataclass(frozen=True)
class Plan:
    action: Action
    site: str | None = None
    why: str = ""


def plan(
    *,
    me: str,
    generation: int,
    assignments: Sequence[Assignment],
    local: Local | None,
    newest_seen: int = 0,
) -> Plan:
    """The action for a placement of `generation` with `assignments`.

    - older than what runs here, or than a newer one already handled → ignore
    - assigns me, nothing runs → start; runs on another site → restart there
    - assigns me, runs at an older generation on that site → rebind (keep it, bind anew)
    - assigns me, runs at this generation → confirm (redelivery: bind again, idempotent)
    - does not assign me, something runs → stop (it moved away)
    """
    if local is not None and generation < local.generation:
        return Plan("ignore", why=f"generation {generation} < running {local.generation}")
    if generation < newest_seen:
        return Plan("ignore", why=f"generation {generation} < handled {newest_seen}")
    mine = [a for a in assignments if a.member == me]
    if not mine:
        if local is None:
            return Plan("ignore", why="not assigned here")
        return Plan("stop", why="moved away")
    site = mine[0].site
    if local is None:
        return Plan("start", site)
    if local.site != site:
        return Plan("restart", site, why=f"site {local.site} → {site}")
    if local.generation < generation:
        return Plan("rebind", site)
    return Plan("confirm", site)


def with_replica_state(
    record: PlacementRecord | None,
    *,
    member: str,
    generation: int,
    state: ReplicaState,
    now: dt.datetime,
    detail: str = "",
    published: bool = False,
) -> PlacementRecord | None:
    """`record` with `member`'s replica in `state`, or None when nothing is to change
    (no record, a newer generation, or already so). All assigned replicas running makes
    the placement "running"; a degraded one stays degraded, so nobody forgets it.
    `published`: the agent acts on the placed event of this generation, which proves it
    is on FED (the scheduler then need not note that itself, one write less)."""
    if record is None or record.generation != generation:
        return None
    assigned = [a for a in record.assignments if a.member == member]
    if not assigned:
        return None
    replicas = list(record.replicas)
    index = next((i for i, r in enumerate(replicas) if r.member == member), None)
    current = replicas[index] if index is not None else None
    if current is not None and current.state == state and current.detail == detail:
        return None
    replicas_new = ReplicaStatus(member=member, site=assigned[0].site, state=state, since=now,
                                 detail=detail)
    if index is None:
        replicas.append(replicas_new)
    else:
        replicas[index] = replicas_new
    placement_state = record.state
    members = {a.member for a in record.assignments}
    running = {r.member for r in replicas if r.state == "running"}
    if record.state in ("placed", "running"):
        placement_state = "running" if members <= running else "placed"
    record.replicas = replicas
    record.state = placement_state
    record.updated_at = now
    if published:
        record.published_generation = max(record.published_generation, generation)
    return record


def site_usage(
    sites: Iterable[Site], instances: Iterable[tuple[str, Resources]]
) -> list[SiteCapacity]:
    """Capacity report: each site's total, and the sum of what runs there."""
    used: dict[str, Resources] = {}
    for site, resources in instances:
        used[site] = used.get(site, ZERO) + resources
    return [
        SiteCapacity(site=s.id, total=s.capacity, used=used.get(s.id, ZERO)) for s in sites
    ]
