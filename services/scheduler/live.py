"""The scheduler's live view of the federation: KV watched, kept in memory, never re-read.

`read_state` scans five buckets; done for every submission it made the scheduler spend
its time reading (about 13 workloads/s on the bus). `LiveState` watches what a placement
decision reads once and keeps it up to date as changes arrive:

- `fed_members`, `fed_decisions` (down.*), `fed_sagas`: profiles and statuses; a change
  there bumps `structure`, so a snapshot built on an unchanged structure reuses the
  previous roster and every feasibility cache keyed on it stays warm;
- `fed_reservations`: the site ledgers, the commits' own writes applied at once. They
  are the capacity truth (every commit books before it writes its placement), and their
  holds say where each tenant's workloads are (affinity), so the placements themselves
  (several writes per workload, by schedulers and agents) are not watched at all.

Stale is safe: a booking or a placement write is a CAS at the revision this view holds,
so a view that missed a change loses the CAS, re-reads that one key and decides again.
Entries are applied only when newer than what the view holds (revisions only grow in a
bucket), so a watcher's late initial value never overwrites the commit's own write.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgspec

from contracts.state import DownDecision, MemberRecord, SagaRecord, SiteLedger
from mesh import layout
from mesh.observability import logger
from mesh.runtime import cancel_tasks
from mesh.state import Entry, bucket
from services.scheduler.reader import (
    DOWN_PREFIX,
    FederationState,
    member_statuses,
)
from services.scheduler.replace import dark_sites, without_sites
from services.scheduler.snapshot import Placed, Roster, Snapshot, roster_of, snapshot_of

log = logger("services.scheduler.live")

READY_BOUND_S = 30.0


class TrackedLedgers(dict[str, Entry[SiteLedger]]):
    """The ledgers by key; every change (a watcher's, or a commit's own write through
    `booking`) is passed to `track(before, after)` as it happens. Only `[key] = entry` and
    `pop` change it: what `booking` uses."""

    def __init__(self, track: Callable[[SiteLedger | None, SiteLedger | None], None]) -> None:
        super().__init__()
        self._track = track

    def __setitem__(self, key: str, entry: Entry[SiteLedger]) -> None:
        held = self.get(key)
        super().__setitem__(key, entry)
        self._track(held.value if held is not None else None, entry.value)

    def pop(self, key: str, *default: Any) -> Any:
        held = self.get(key)
        out = super().pop(key, *default)
        if held is not None:
            self._track(held.value, None)
        return out


class LiveState:
    """The watched buckets in memory: `snapshot()` for a batch's decisions, `state` (its
    ledgers kept current by the commits' own writes too) for booking them."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.state = FederationState(profiles={}, statuses={}, member_revisions={},
                                     revisions={}, ledgers=TrackedLedgers(self._track))
        self._members: dict[str, Entry[MemberRecord]] = {}
        self._decisions: dict[str, Entry[DownDecision]] = {}
        self._sagas: dict[str, Entry[SagaRecord]] = {}
        # workload → member → how many of its sites there hold it; and the tenant
        self._where: dict[str, dict[str, int]] = {}
        self._tenant: dict[str, str] = {}
        self._placed: dict[str, Placed] = {}
        self.structure = 0  # bumped when profiles, statuses or the roster may differ
        self._roster: tuple[Any, Roster] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[str] = set()
        self.ready = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        watches: list[tuple[str, type[Any], Callable[[Entry[Any] | None, str], None]]] = [
            (layout.KV_MEMBERS, MemberRecord, self._on_member),
            (layout.KV_DECISIONS, msgspec.Raw, self._on_decision),
            (layout.KV_SAGAS, SagaRecord, self._on_saga),
            (layout.KV_RESERVATIONS, SiteLedger, self._on_ledger),
        ]
        self._pending = {name for name, _, _ in watches}
        for name, record, apply in watches:
            kv = await bucket(self.bus, name, record)
            # fed_sagas: the saga records only, not their workloads' progress records.
            keys = layout.SAGA_KEYS if name == layout.KV_SAGAS else ">"
            # A ledger this view holds at that revision already (its own commit's write,
            # applied when it was made) is not decoded again: ledgers grow with the
            # workloads they hold.
            wanted = self._ledger_wanted if name == layout.KV_RESERVATIONS else None
            self._tasks.append(await kv.watch(self._applier(apply), keys=keys,
                                              on_ready=self._ready_callback(name),
                                              wanted=wanted))
        # The watcher's end-of-initial-values marker can come early on a cluster; the
        # members' profiles decide what is feasible at all, so they are also read whole.
        members = await bucket(self.bus, layout.KV_MEMBERS, MemberRecord)
        for entry in await members.items():
            self._on_member(entry, entry.key)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), READY_BOUND_S)
        if not self.ready.is_set():
            log.warning("live view not complete; deciding on what arrived",
                        missing=sorted(self._pending))
            self.ready.set()

    async def stop(self) -> None:
        await cancel_tasks(self._tasks)

    def _ready_callback(self, name: str) -> Callable[[], None]:
        def done() -> None:
            self._pending.discard(name)
            if not self._pending:
                self.ready.set()
        return done

    @staticmethod
    def _applier(
        apply: Callable[[Entry[Any] | None, str], None],
    ) -> Callable[[Entry[Any] | None, str], Any]:
        async def callback(entry: Entry[Any] | None, key: str) -> None:
            apply(entry, key)
        return callback

    # -- applying changes -----------------------------------------------------------------

    @staticmethod
    def _newer(held: Entry[Any] | None, entry: Entry[Any] | None) -> bool:
        return entry is None or held is None or entry.revision > held.revision

    def _on_member(self, entry: Entry[MemberRecord] | None, key: str) -> None:
        if not self._newer(self._members.get(key), entry):
            return
        if entry is None:
            self._members.pop(key, None)
        else:
            self._members[key] = entry
        self.structure += 1

    def _on_decision(self, entry: Entry[msgspec.Raw] | None, key: str) -> None:
        if not key.startswith(DOWN_PREFIX):
            return  # leases and other decisions live in the same bucket
        if entry is None:
            self._decisions.pop(key, None)
        else:
            held = self._decisions.get(key)
            if held is not None and entry.revision <= held.revision:
                return
            try:
                decision = msgspec.json.decode(bytes(entry.value), type=DownDecision)
            except msgspec.DecodeError as exc:
                log.warning("skipping unreadable record", bucket=layout.KV_DECISIONS,
                            key=key, error=str(exc))
                return
            self._decisions[key] = Entry(key, decision, entry.revision)
        self.structure += 1

    async def refresh_decision(self, key: str) -> None:
        """Read one `fed_decisions` key now and apply it. A watcher whose consumer lived on
        a server that just died lags until it is recreated; a member declared down must
        not get new placements meanwhile (failover calls this on every declaration)."""
        entry = await (await bucket(self.bus, layout.KV_DECISIONS, msgspec.Raw)).get(key)
        if entry is not None:
            self._on_decision(entry, key)

    def decision(self, key: str) -> DownDecision | None:
        """The `fed_decisions` record at `key` as the view holds it (down.* keys only)."""
        held = self._decisions.get(key)
        return held.value if held is not None else None

    def _on_saga(self, entry: Entry[SagaRecord] | None, key: str) -> None:
        if not self._newer(self._sagas.get(key), entry):
            return
        if entry is None:
            self._sagas.pop(key, None)
        else:
            self._sagas[key] = entry
        self.structure += 1

    def _ledger_wanted(self, key: str, revision: int) -> bool:
        held = self.state.ledgers.get(key)
        return held is None or revision > held.revision

    def _on_ledger(self, entry: Entry[SiteLedger] | None, key: str) -> None:
        self.note_ledger(key, entry)

    def note_ledger(self, key: str, entry: Entry[SiteLedger] | None) -> None:
        """A ledger as a watcher saw it (None: deleted); older than what we hold: ignored."""
        ledgers = self.state.ledgers
        if entry is None:
            ledgers.pop(key, None)
        elif self._newer(ledgers.get(key), entry):
            ledgers[key] = entry

    def _track(self, before: SiteLedger | None, after: SiteLedger | None) -> None:
        """Keep `placed` (workload → tenant and members) in step with one ledger."""
        old = before.holds if before is not None else {}
        new = after.holds if after is not None else {}
        either = after or before
        if either is None:
            return
        member = either.member
        changed: set[str] = set()
        for workload in old.keys() - new.keys():
            where = self._where.get(workload)
            if where is not None:
                where[member] = where.get(member, 0) - 1
                if where[member] <= 0:
                    del where[member]
                changed.add(workload)
        for workload in new.keys() - old.keys():
            self._where.setdefault(workload, {})
            self._where[workload][member] = self._where[workload].get(member, 0) + 1
            if new[workload].tenant:
                self._tenant[workload] = new[workload].tenant
            changed.add(workload)
        for workload in changed:
            where = self._where.get(workload)
            if not where:
                self._where.pop(workload, None)
                self._tenant.pop(workload, None)
                self._placed.pop(workload, None)
            else:
                self._placed[workload] = Placed(tenant=self._tenant.get(workload, ""),
                                                members=frozenset(where))

    # -- reading --------------------------------------------------------------------------

    def _refresh_structure(self) -> None:
        """Profiles, statuses and revisions into `state`, for the roster in force."""
        trust = self.bus.trust
        active = set(trust.member_ids()) if trust.ready else None
        state = self.state
        state.profiles.clear()
        state.member_revisions.clear()
        state.revisions.clear()
        for key, entry in self._members.items():
            profile = entry.value.profile
            if profile.id != key or (active is not None and profile.id not in active):
                continue
            state.profiles[key] = profile
            state.member_revisions[key] = entry.revision
            state.revisions[f"members/{key}"] = entry.revision
        # failover hook: a site declared down on its own is left out of its member's profile
        state.profiles.update(without_sites(
            state.profiles, dark_sites(e.value for e in self._decisions.values())))
        for key, decision in self._decisions.items():
            if decision.value.state == "down":
                state.revisions[f"decisions/{key}"] = decision.revision
        for key, saga in self._sagas.items():
            if saga.value.state == "running" and not saga.value.drill:
                state.revisions[f"sagas/{key}"] = saga.revision
        state.statuses = member_statuses({k: e.value for k, e in self._decisions.items()},
                                         (e.value for e in self._sagas.values()))

    def snapshot(self, today: dt.date) -> Snapshot:
        """A snapshot of now: O(members * sites + placements); cheap enough per batch."""
        trust = self.bus.trust
        shape = (self.structure, trust.version if trust.ready else -1, today)
        if self._roster is None or self._roster[0] != shape:
            self._refresh_structure()
        state = self.state
        snap = snapshot_of(state.profiles, today=today, statuses=state.statuses,
                           revisions=state.revisions,
                           member_revisions=state.member_revisions,
                           reserved=state.reserved())
        snap = replace(snap, placed=dict(self._placed))
        if self._roster is not None and self._roster[0] == shape:
            object.__setattr__(snap, "_roster", self._roster[1])
        else:
            self._roster = (shape, roster_of(snap))
        return snap


async def live_state(bus: Any) -> LiveState:
    live = LiveState(bus)
    await live.start()
    return live


__all__ = ["LiveState", "live_state"]
