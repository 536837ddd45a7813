"""Leases and escalation: a saga outlives its coordinator; an overdue down member is
taken over. Part of `TakeoverService` (see `services.takeover.base`)."""

from __future__ import annotations

import asyncio
import datetime as dt
from functools import partial

from contracts.state import DownDecision, EscalationDecision, PlacementRecord
from contracts.takeover import TakeoverRequested
from mesh import layout
from mesh.envelope import new_msg_id
from mesh.errors import CasConflict
from mesh.state import bucket
from services.failover.decisions import DOWN_PREFIX
from services.takeover import saga as S
from services.takeover.base import SagaBase, log, now_utc
from services.takeover.escalation import escalation_key, overdue, takeover_under_way


class LeaseRole(SagaBase):
    # -- leases ------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.LEASE_S / 3)
            try:
                await self._leases_once()
                await self._escalate_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease round failed", error=str(exc))

    async def _escalate_once(self) -> None:
        """Request a calamity takeover of a down member whose stateful workloads passed
        their RTO, if this member wins the escalation's CAS (`services.takeover.escalation`)."""
        me = self.ctx.member
        decisions = await bucket(self.ctx.bus, layout.KV_DECISIONS, DownDecision)
        # Only the down.* keys: the bucket also holds leases and escalations.
        downs = await decisions.keys(f"{DOWN_PREFIX}>")
        if not downs:
            return
        placements: list[PlacementRecord] | None = None
        for key in downs:
            entry = await decisions.get(key)
            if entry is None or entry.value.state != "down" or entry.value.member == me:
                continue
            down = entry.value
            if placements is None:
                placements = [e.value for e in await self.placements.items()]
            late = overdue(down, placements, now_utc())
            if not late:
                continue
            sagas = [e.value for e in await self.sagas.items(layout.SAGA_KEYS)]
            if takeover_under_way(down.member, sagas):
                continue
            escalations = await bucket(self.ctx.bus, layout.KV_DECISIONS, EscalationDecision)
            saga = new_msg_id()
            try:
                await escalations.create(
                    escalation_key(down.member, down.epoch),
                    EscalationDecision(member=down.member, epoch=down.epoch, saga=saga,
                                       requested_by=me, at=now_utc(), overdue=late))
            except CasConflict:
                continue  # another member escalated this epoch
            log.warning("escalating: stateful workloads of a down member passed their RTO",
                        member=down.member, workloads=late, saga=saga)
            await self.ctx.bus.publish(
                TakeoverRequested(saga=saga, member=down.member, reason="calamity",
                                  drill=False),
                msg_id=f"request-{saga}-{me}")

    async def _renew(self, saga: str) -> None:
        """While this member coordinates `saga`: renew its lease every third of it. Its
        own task, so a busy coordinator (many workloads at once) still renews in time."""
        me = self.ctx.member
        while True:
            await asyncio.sleep(self.LEASE_S / 3)
            now = now_utc()
            try:
                renewed = await self._modify(saga, partial(
                    S.with_lease, member=me, until=now + dt.timedelta(seconds=self.LEASE_S),
                    now=now))
            except CasConflict:
                continue  # a busy record; the next round renews
            if renewed is None:
                record = await self._record(saga)
                if record is None or record.state in S.FINISHED or record.coordinator != me:
                    # Another member took the saga over (or it ended): the runner steps
                    # back at its next step.
                    self._superseded.add(saga)
                    return

    async def _leases_once(self) -> None:
        me, now = self.ctx.member, now_utc()
        for entry in await self.sagas.items(layout.SAGA_KEYS):
            record = entry.value
            if record.state in S.FINISHED or record.member == me:
                continue
            runner = self._runners.get(record.saga)
            running = runner is not None and not runner.done()
            if record.coordinator == me:
                if not running:
                    self._spawn_runner(record.saga)
                continue  # its runner renews the lease
            if record.lease_until is None or record.lease_until > now:
                continue  # someone else's, alive (or from before leases: its own node)
            until = now + dt.timedelta(seconds=self.LEASE_S)
            try:
                updated = await self._modify(record.saga, partial(
                    S.with_lease, member=me, until=until, now=now))
            except CasConflict:
                continue
            if updated is not None and record.coordinator != me:
                log.warning("resuming a saga whose coordinator went silent",
                            saga=record.saga, previous=record.coordinator)
                taken = S.find_step(updated, S.COORDINATOR, statuses=("ok",), member=me)
                if taken is not None:
                    await self._publish_step(updated, taken)
                self._spawn_runner(record.saga)

