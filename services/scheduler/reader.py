"""Reading the federation's state from JetStream KV into a scheduler `Snapshot`.

Public and stable: the scheduler, failover and takeover services all place workloads
from the same view, so they call `load_snapshot` (or `read_state` when they re-place
many workloads in a row and want to rebuild the snapshot as placements change).

Sources (DESIGN §5):

- `fed_members/<member>` (`MemberRecord`): profiles; the entry's revision is recorded as
  `snapshot.revisions["members/<member>"]` so a decision can be re-checked later.
- `fed_decisions/down.<member>` (`DownDecision`) with state "down": status "down".
- `fed_sagas/<saga>` (`SagaRecord`): a non-drill saga in state "running" freezes its
  member (status "frozen"); a drill never does, it leaves the source untouched.
- `fed_placements/<workload>` (`PlacementRecord`): reserved capacity, counting every
  record whose state is not in `exclude_status` (released/unplaceable reserve nothing).
- `fed_reservations/<member>.<site>` (`SiteLedger`): what commits reserved per site; a
  site's free capacity subtracts the larger of the ledger's total and the placements'.

Members that the roster in force does not list as active are left out: only roster
members may host (a suspended member's profile may linger in `fed_members`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from contracts.registry import MemberProfile
from contracts.resources import Resources
from contracts.state import (
    DownDecision,
    MemberRecord,
    PlacementRecord,
    SagaRecord,
    SiteLedger,
)
from mesh import layout
from mesh.observability import logger
from mesh.state import Entry, bucket
from services.scheduler.replace import dark_sites, without_sites
from services.scheduler.snapshot import Snapshot, snapshot_of

log = logger("services.scheduler.reader")

# Placement states that reserve no capacity.
NOT_RESERVING: frozenset[str] = frozenset({"released", "unplaceable"})
DOWN_PREFIX = "down."


def member_statuses(
    decisions: Mapping[str, DownDecision], sagas: Iterable[SagaRecord]
) -> dict[str, str]:
    """member → "down" | "frozen" for those that are not plainly active. Down wins."""
    statuses: dict[str, str] = {}
    for saga in sagas:
        if saga.state == "running" and not saga.drill:
            statuses[saga.member] = "frozen"
    for decision in decisions.values():
        if decision.state == "down" and not decision.site:  # a dark site is not the member
            statuses[decision.member] = "down"
    return statuses


@dataclass
class FederationState:
    """What `read_state` found; `snapshot()` turns it into a `Snapshot` (pure)."""

    profiles: dict[str, MemberProfile]
    statuses: dict[str, str]
    member_revisions: dict[str, int]
    revisions: dict[str, int]
    placements: dict[str, Entry[PlacementRecord]] = field(default_factory=dict)
    # `fed_reservations` by key (<member>.<site>); the shell keeps it current as it books.
    ledgers: dict[str, Entry[SiteLedger]] = field(default_factory=dict)

    def reserved(self, *, apart_from: str | None = None) -> dict[tuple[str, str], Resources]:
        """The ledgers' totals by (member, site); `apart_from` leaves that workload's own
        holds out (deciding for it, a rival's booking of the same workload in flight must
        not count against it)."""
        out: dict[tuple[str, str], Resources] = {}
        for e in self.ledgers.values():
            ledger = e.value
            own = ledger.holds.get(apart_from) if apart_from is not None else None
            out[(ledger.member, ledger.site)] = (
                ledger.reserved if own is None else ledger.reserved.minus(own.amount))
        return out

    def snapshot(
        self,
        today: dt.date,
        *,
        exclude_status: Collection[str] = NOT_RESERVING,
        placements: Iterable[PlacementRecord] | None = None,
        deciding: str | None = None,
    ) -> Snapshot:
        """The snapshot; `placements` overrides the records read (a failover updates them
        one by one and rebuilds the snapshot so each decision sees the previous ones).
        The ledgers count only when the records read are used: an override (a rebalance
        plan leaving its own workload out) is read from the placements alone. `deciding`:
        the workload being decided, whose own ledger holds are left out."""
        records = (
            placements if placements is not None
            else (e.value for e in self.placements.values())
        )
        reserving = [
            (r.spec, list(r.assignments)) for r in records if r.state not in exclude_status
        ]
        return snapshot_of(
            self.profiles,
            today=today,
            statuses=self.statuses,
            placements=reserving,
            revisions=self.revisions,
            member_revisions=self.member_revisions,
            reserved=self.reserved(apart_from=deciding) if placements is None else None,
        )


async def _raw_items(bus: Any, name: str, keys: str = ">") -> list[Entry[msgspec.Raw]]:
    raw = await bucket(bus, name, msgspec.Raw)
    return await raw.items(keys)


def _decode(entry: Entry[msgspec.Raw], record: type[Any], bucket_name: str) -> Any | None:
    try:
        return msgspec.json.decode(bytes(entry.value), type=record)
    except msgspec.DecodeError as exc:
        # One unreadable record must not stop every placement in the federation.
        log.warning("skipping unreadable record", bucket=bucket_name, key=entry.key,
                    error=str(exc))
        return None


async def read_state(bus: Any) -> FederationState:
    """Read members, down decisions, sagas and placements (four KV scans)."""
    active = set(bus.trust.member_ids()) if bus.trust.ready else None
    profiles: dict[str, MemberProfile] = {}
    member_revisions: dict[str, int] = {}
    revisions: dict[str, int] = {}
    for raw in await _raw_items(bus, layout.KV_MEMBERS):
        member = _decode(raw, MemberRecord, layout.KV_MEMBERS)
        if member is None:
            continue
        profile = member.profile
        if profile.id != raw.key or (active is not None and profile.id not in active):
            continue
        profiles[profile.id] = profile
        member_revisions[profile.id] = raw.revision
        revisions[f"members/{profile.id}"] = raw.revision

    decisions: dict[str, DownDecision] = {}
    for raw in await _raw_items(bus, layout.KV_DECISIONS):
        if not raw.key.startswith(DOWN_PREFIX):
            continue  # leases and other decisions live in the same bucket
        decision = _decode(raw, DownDecision, layout.KV_DECISIONS)
        if decision is not None:
            decisions[raw.key] = decision
            if decision.state == "down":
                revisions[f"decisions/{raw.key}"] = raw.revision

    sagas: list[SagaRecord] = []
    for raw in await _raw_items(bus, layout.KV_SAGAS, layout.SAGA_KEYS):
        saga = _decode(raw, SagaRecord, layout.KV_SAGAS)
        if saga is not None:
            sagas.append(saga)
            if saga.state == "running" and not saga.drill:
                revisions[f"sagas/{raw.key}"] = raw.revision

    placement_entries: dict[str, Entry[PlacementRecord]] = {}
    for raw in await _raw_items(bus, layout.KV_PLACEMENTS):
        record = _decode(raw, PlacementRecord, layout.KV_PLACEMENTS)
        if record is not None:
            placement_entries[raw.key] = Entry(raw.key, record, raw.revision)

    ledgers: dict[str, Entry[SiteLedger]] = {}
    for raw in await _raw_items(bus, layout.KV_RESERVATIONS):
        ledger = _decode(raw, SiteLedger, layout.KV_RESERVATIONS)
        if ledger is not None:
            ledgers[raw.key] = Entry(raw.key, ledger, raw.revision)

    # failover hook: a site declared down on its own is left out of its member's profile
    profiles = without_sites(profiles, dark_sites(decisions.values()))
    return FederationState(
        profiles=profiles,
        ledgers=ledgers,
        statuses=member_statuses(decisions, sagas),
        member_revisions=member_revisions,
        revisions=revisions,
        placements=placement_entries,
    )


async def load_snapshot(
    bus: Any,
    *,
    today: dt.date,
    exclude_status: Collection[str] = NOT_RESERVING,
) -> tuple[Snapshot, list[Entry[PlacementRecord]]]:
    """The federation as a scheduler `Snapshot`, and every placement entry read.

    `today` decides which certifications have expired. `exclude_status` lists placement
    states whose records reserve no capacity (default: released and unplaceable). The
    entries come back sorted by key, with their KV revisions, for CAS updates.
    """
    state = await read_state(bus)
    entries = [state.placements[k] for k in sorted(state.placements)]
    return state.snapshot(today, exclude_status=exclude_status), entries


__all__ = [
    "NOT_RESERVING",
    "FederationState",
    "load_snapshot",
    "member_statuses",
    "read_state",
]
