"""Moving one workload, the coordinator's side: data (export or backup), shadow start on
the successor (with retries for corrupted transfers), cut-over by CAS, verification,
or the release of the source's replica. Part of `TakeoverService`.

Each workload's outcomes live in its own progress record (`fed_sagas/<saga>.<workload>`),
so a move reads and writes only that: its cost does not grow with the saga."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time

from contracts.state import SagaProgress, SagaRecord, SiteLedger
from contracts.takeover import PlanItem
from contracts.workload import Assignment, WorkloadSpec
from mesh import layout
from mesh.errors import CasConflict
from mesh.state import bucket
from services.agent.backup import Backup, backups_of
from services.scheduler.booking import NotBooked, book, unbook
from services.scheduler.ledger import takeover_attempt
from services.scheduler.reader import read_state
from services.scheduler.service import announce
from services.takeover import saga as S
from services.takeover.base import SagaBase, now_utc
from services.takeover.cutover import cut_over_already, cutover_record, released_record
from services.takeover.errors import NoData
from services.takeover.reservations import release_holds


class MoveRole(SagaBase):
    async def _run_workloads(self, record: SagaRecord) -> None:
        self._plans[record.saga] = {i.workload: i for i in record.plan}
        self._targets[record.saga] = record.member
        limit = asyncio.Semaphore(self.CONCURRENCY)

        async def one(item: PlanItem) -> None:
            async with limit:
                await self._move(record, item)

        await asyncio.gather(*(one(i) for i in record.plan if i.successor is not None))
        for item in record.plan:
            if item.successor is None:
                if record.drill:
                    await self._release_in_drill(record.saga, item)
                else:
                    await self._release(record.saga, item)

    async def _release_in_drill(self, saga: str, item: PlanItem) -> None:
        """What `_release` would do, said and not done: a drill leaves the source alone,
        but its report must judge the workload as the real takeover would."""
        self._still_mine(saga)
        if await self._outcome(saga, S.RELEASE, item.workload):
            return
        entry = await self.placements.get(item.workload)
        if entry is None:
            return
        others = [a.member for a in entry.value.assignments if a.member != item.source]
        if not others:
            return  # its only replica: a real takeover could not keep it either
        await self._record_and_publish(saga, S.step_entry(
            S.RELEASE, "ok", at=now_utc(), workload=item.workload,
            generation=entry.value.generation,
            detail=f"drill: {item.source}'s replica would be released; served by "
                   f"{', '.join(others)} (degraded)"))

    async def _release(self, saga: str, item: PlanItem) -> None:
        """No member may host a new replica: drop the source's, if others remain."""
        self._still_mine(saga)
        if await self._outcome(saga, S.RELEASE, item.workload):
            return
        for _ in range(10):
            entry = await self.placements.get(item.workload)
            if entry is None:
                return
            new = released_record(entry.value, item, saga=saga, decided_by=self.ctx.member,
                                  now=now_utc())
            if new is None:
                if item.source in {a.member for a in entry.value.assignments}:
                    return  # its only replica: nothing to keep; the report says so
                new = entry.value  # released already (a resumed saga): announce again
            else:
                try:
                    await self.placements.update(item.workload, new, entry.revision)
                except CasConflict:
                    continue
            await announce(self.ctx.bus, self.placements, item.workload, new)
            await self._record_and_publish(saga, S.step_entry(
                S.RELEASE, "ok", at=now_utc(), workload=item.workload, generation=new.generation,
                detail=f"{item.source}'s replica released; served by "
                       f"{', '.join(a.member for a in new.assignments)} (degraded)"))
            return

    async def _move(self, record: SagaRecord, item: PlanItem) -> None:
        """One workload: (data) → shadow start on the successor → (real) cut-over. A
        workload that fails gives its successor's reserved capacity back at once."""
        if not await self._moved(record, item):
            await release_holds(self.ctx.bus, record.saga, [item])

    async def _moved(self, record: SagaRecord, item: PlanItem) -> bool:
        """`_move`; False when the workload failed (its reservation is not needed)."""
        saga, workload = record.saga, item.workload
        spec = await self._spec(workload)
        if spec is None:
            await self._record_and_publish(saga, S.step_entry(
                S.SHADOW_START, "failed", at=now_utc(), workload=workload,
                detail=f"no placement record for {workload}"))
            return False
        for attempt in range(1, self.ATTEMPTS + 1):
            if spec.stateful:
                try:
                    await self._data_for(saga, item, spec, attempt)
                except NoData as exc:
                    await self._record_and_publish(saga, S.step_entry(
                        S.SHADOW_START, "failed", at=now_utc(), workload=workload,
                        attempt=attempt, detail=str(exc)))
                    return False
                await self._boundary(saga, f"exported:{workload}")
            result = await self._shadow_step(saga, item, attempt)
            if result is None or result.get("status") == "ok":
                break
            if not result.get("corrupt"):
                return False
        else:
            return False
        self._still_mine(saga)
        if await self._outcome(saga, S.SHADOW_START, workload, statuses=("ok",)) is None:
            return True  # not for this member to judge (the saga went on without it)
        await self._boundary(saga, f"imported:{workload}")
        if not record.drill:
            return await self._cutover(saga, item)
        return True

    # -- data: export or restore -------------------------------------------------------

    async def _data_for(
        self, saga: str, item: PlanItem, spec: WorkloadSpec, attempt: int
    ) -> dict[str, object]:
        """The data this attempt moves: the source's export, or else a backup."""
        workload = item.workload
        self._still_mine(saga)
        current = await self._steps_of(saga, workload)
        done = S.data_of(current, workload, attempt)
        if done is not None:
            return done
        previous = S.attempts(current, S.EXPORT, workload) + \
            S.attempts(current, S.RESTORE, workload)
        from_backup_before = any(e.get("step") == S.RESTORE and e.get("status") == "ok"
                                 for e in previous)
        source_failed = any(e.get("step") == S.EXPORT and e.get("status") == "failed"
                            for e in previous)
        down = await self._down(item.source)
        if down is None and not from_backup_before and not source_failed:
            exported = await self._export_step(saga, item, attempt)
            if exported is not None and exported.get("status") == "ok":
                return exported
            current = await self._steps_of(saga, workload)
        return await self._restore_step(saga, current, item, spec, attempt)

    async def _export_step(
        self, saga: str, item: PlanItem, attempt: int
    ) -> dict[str, object] | None:
        """Ask the source to export; its result, or a failure after the bound.

        Requests are not written to the record (only outcomes are: the record stays
        small, and every write of it is a CAS on one key): a resumed coordinator asks
        again, and the actor, finding no outcome recorded, answers again."""
        started = S.step_entry(S.EXPORT, "started", at=now_utc(), workload=item.workload,
                               actor=item.source, attempt=attempt,
                               detail=f"export on {item.source}")
        await self._publish_entry(saga, item.source, started)
        return await self._await_result(saga, S.EXPORT, item, attempt,
                                        time.monotonic(), self.EXPORT_TIMEOUT_S,
                                        actor=item.source)

    async def _restore_step(
        self, saga: str, progress: SagaProgress, item: PlanItem, spec: WorkloadSpec,
        attempt: int,
    ) -> dict[str, object]:
        """The newest backup not tried yet, with its age as the achieved RPO."""
        tried = {str(e.get("object")) for e in S.attempts(progress, S.RESTORE, item.workload)}
        backups: list[Backup] = [b for b in await backups_of(self.ctx.bus, item.workload)
                                 if b.name not in tried]
        now = now_utc()
        if not backups:
            entry = S.step_entry(S.RESTORE, "failed", at=now, workload=item.workload,
                                 attempt=attempt,
                                 detail=f"no usable backup of {item.workload} "
                                        f"({len(tried)} tried)")
            await self._record_and_publish(saga, entry)
            raise NoData(f"no data for {item.workload}: the source cannot export and no "
                         "usable backup is left")
        chosen = backups[0]
        age = round(chosen.age_s(now), 3)
        entry = S.step_entry(
            S.RESTORE, "ok", at=now, workload=item.workload, attempt=attempt,
            object=chosen.name, digest=chosen.sha256, size=chosen.size, origin="backup",
            rpo_s=age, rpo_target_s=spec.rpo_seconds,
            detail=f"backup {chosen.name} by {chosen.member}, {age:.1f} s old "
                   f"(RPO target {spec.rpo_seconds} s)")
        await self._record_and_publish(saga, entry)
        found = await self._outcome(saga, S.RESTORE, item.workload, attempt=attempt,
                                    statuses=("ok",))
        return found or entry

    async def _await_result(
        self, saga: str, step: str, item: PlanItem, attempt: int,
        started: float, bound_s: float, *, actor: str | None,
    ) -> dict[str, object] | None:
        key = (saga, step, item.workload, attempt)
        arrival = self._arrival.setdefault(key, asyncio.Event())
        try:
            while True:
                self._still_mine(saga)
                done = await self._outcome(saga, step, item.workload, attempt=attempt)
                if done is not None:
                    return done
                seen = self._arrived.get(key)
                if seen is not None:
                    # On the bus but not in the record (the actor's write was lost).
                    await self._record_outcome(saga, seen)
                    continue
                remaining = bound_s - (time.monotonic() - started)
                if remaining <= 0:
                    failed = S.step_entry(
                        step, "failed", at=now_utc(), workload=item.workload, actor=actor,
                        attempt=attempt,
                        detail=f"no answer from {actor} within {bound_s:g} s")
                    await self._record_and_publish(saga, failed)
                    return await self._outcome(saga, step, item.workload,
                                               attempt=attempt) or failed
                # The result's event wakes us; the record is read again now and then
                # anyway, for an outcome written by an actor whose event we missed.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrival.wait(), timeout=min(remaining, 3.0))
        finally:
            self._arrival.pop(key, None)
            self._arrived.pop(key, None)

    async def _shadow_step(
        self, saga: str, item: PlanItem, attempt: int
    ) -> dict[str, object] | None:
        """Ask the successor for the import and a shadow start; wait (bounded)."""
        self._still_mine(saga)
        done = await self._outcome(saga, S.SHADOW_START, item.workload, attempt=attempt)
        if done is not None:
            return done
        started = S.step_entry(S.SHADOW_START, "started", at=now_utc(), workload=item.workload,
                               actor=item.successor, attempt=attempt,
                               detail=f"shadow start on {item.successor}/{item.site}")
        await self._publish_entry(saga, item.source, started)
        return await self._await_result(saga, S.SHADOW_START, item, attempt,
                                        time.monotonic(), self.SHADOW_TIMEOUT_S,
                                        actor=item.successor)

    # -- cut-over ----------------------------------------------------------------------

    async def _cutover(self, saga: str, item: PlanItem) -> bool:
        """Move the placement to the successor by CAS (its site was booked at the plan),
        announce it, then wait until the successor's agent runs it: the workload's RTO.
        False when the placement could not be moved."""
        workload = item.workload
        self._still_mine(saga)
        current = await self._steps_of(saga, workload)
        cut = S.find_step(current, S.CUTOVER, workload=workload)
        if cut is None:
            cut = await self._commit_cutover(saga, item)
        if cut is None or cut.get("status") != "ok":
            return False
        await self._boundary(saga, f"cut_over:{workload}")
        if S.find_step(current, S.VERIFY, workload=workload) is None:
            await self._verify(saga, item, cut)
        return True

    async def _commit_cutover(self, saga: str, item: PlanItem) -> dict[str, object] | None:
        assert item.successor is not None and item.site is not None
        workload = item.workload
        ledgers = await bucket(self.ctx.bus, layout.KV_RESERVATIONS, SiteLedger)
        detail = ""
        for _ in range(10):
            entry = await self.placements.get(workload)
            if entry is None:
                detail = f"no placement record for {workload}"
                break
            now = now_utc()
            if cut_over_already(entry.value, item):
                new, revision_ok = entry.value, True
            else:
                new = cutover_record(entry.value, item, saga=saga, decided_by=self.ctx.member,
                                     now=now)
                arrive = [Assignment(member=item.successor, site=item.site)]
                # One booking at a time: the shared ledger view stays consistent.
                async with self._cutover_lock:
                    state = await read_state(self.ctx.bus)
                    try:
                        # The saga's hold from the plan: found there, nothing is written
                        # (booked again only if it was lost).
                        await book(ledgers, state, workload=workload,
                                   amount=new.spec.resources, sites=arrive,
                                   generation=new.generation, tenant=new.spec.tenant,
                                   attempt=takeover_attempt(saga))
                    except NotBooked as exc:
                        detail = f"{item.successor}/{item.site} cannot be booked: {exc}"
                        if exc.full:
                            break
                        continue
                    try:
                        await self.placements.update(workload, new, entry.revision)
                        revision_ok = True
                    except CasConflict:
                        continue  # the hold stays the saga's; the next round uses it
                    leaving = [a for a in entry.value.assignments if a.member == item.source]
                    await unbook(ledgers, state, workload=workload, sites=leaving)
            if revision_ok:
                await announce(self.ctx.bus, self.placements, workload, new)
                result = S.step_entry(
                    S.CUTOVER, "ok", at=now_utc(), workload=workload, actor=item.successor,
                    generation=new.generation,
                    detail=f"placement generation {new.generation}: {item.source} → "
                           f"{item.successor}/{item.site}")
                await self._record_and_publish(saga, result)
                return await self._outcome(saga, S.CUTOVER, workload) or result
        failed = S.step_entry(S.CUTOVER, "failed", at=now_utc(), workload=workload,
                              detail=detail or "too many concurrent writers")
        await self._record_and_publish(saga, failed)
        return failed

    async def _verify(self, saga: str, item: PlanItem, cut: dict[str, object]) -> None:
        workload = item.workload
        generation = cut.get("generation")
        down = await self._down(item.source)
        # The outage began when the source went down, or (it was alive) at the cut-over,
        # when its agent stops its replica.
        began = down.declared_at if down is not None else \
            dt.datetime.fromisoformat(str(cut.get("at")))
        deadline = time.monotonic() + self.VERIFY_TIMEOUT_S
        spec = await self._spec(workload)
        target = spec.rto_seconds if spec else None
        while True:
            entry = await self.placements.get(workload)
            record = entry.value if entry else None
            running = record is not None and isinstance(generation, int) and \
                record.generation >= generation and any(
                    r.member == item.successor and r.state == "running"
                    for r in record.replicas)
            if running:
                now = now_utc()
                rto = round((now - began).total_seconds(), 3)
                await self._record_and_publish(saga, S.step_entry(
                    S.VERIFY, "ok", at=now, workload=workload, actor=item.successor,
                    rto_s=rto, rto_target_s=target,
                    detail=f"runs on {item.successor} (generation {generation}), "
                           f"RTO {rto:.1f} s (target {target} s)"))
                return
            if time.monotonic() > deadline:
                await self._record_and_publish(saga, S.step_entry(
                    S.VERIFY, "failed", at=now_utc(), workload=workload, actor=item.successor,
                    rto_target_s=target,
                    detail=f"{item.successor} did not report it running within "
                           f"{self.VERIFY_TIMEOUT_S:g} s"))
                return
            await asyncio.sleep(0.2)  # the agent writes the record; nothing to wait on

