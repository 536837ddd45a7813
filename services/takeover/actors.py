"""The actors of a takeover: the source exports, the successor fetches, verifies,
imports and starts a shadow, an approver endorses a suspension. Each records its outcome
in the saga and publishes it signed. Part of `TakeoverService`."""

from __future__ import annotations

import asyncio
import shutil
import time

from contracts.state import SagaRecord
from contracts.takeover import PlanItem, TakeoverStep
from mesh.envelope import Envelope
from mesh.errors import RetryableError
from mesh.objects import BlobMissing
from services.agent.drivers.base import DriverError
from services.iam.endorsing import endorse_change
from services.takeover import saga as S
from services.takeover.base import ACTOR_STEPS, SagaBase, log, now_utc, shadow_instance_id
from services.takeover.data import export_to_store, fetch_verified
from services.takeover.errors import DigestMismatch


class ActorRole(SagaBase):
    # -- actors ------------------------------------------------------------------------

    async def _on_step(self, event: TakeoverStep, env: Envelope) -> None:
        if event.status == "started":
            if event.step == S.SUSPEND:
                await self._on_suspend_request(event, env)
            elif event.step in ACTOR_STEPS and event.actor == self.ctx.member:
                await self._on_action_request(event, env)
            return
        if event.step not in ACTOR_STEPS or not event.workload or not event.actor:
            return  # the coordinator's own bookkeeping (plan, approval, cut-over, ...)
        runner = self._runners.get(event.saga)
        plan = self._plans.get(event.saga)
        if runner is None or runner.done() or plan is None:
            return  # the actor recorded it; the coordinator finds it in the record
        if env.member == self.ctx.member and event.actor != env.member:
            return  # a result this coordinator recorded itself (a timeout)
        item = plan.get(event.workload)
        expected = None if item is None else (
            item.source if event.step == S.EXPORT else item.successor)
        if env.member != event.actor or expected != env.member:
            await self._violation(
                "bad_step", f"{env.member} reported {event.step} of {event.workload} in "
                f"saga {event.saga}, but it is not that step's planned actor", env)
            return
        # The actor recorded its outcome itself; wake the one waiter for it, which keeps
        # this copy when the actor's write was lost.
        key = (event.saga, event.step, event.workload, event.attempt)
        self._arrived[key] = S.step_entry(
            event.step, event.status, at=env.time, workload=event.workload,
            actor=env.member, elapsed_ms=event.elapsed_ms, detail=event.detail,
            msg_id=env.msg_id, attempt=event.attempt, digest=event.digest)
        arrival = self._arrival.get(key)
        if arrival is not None:
            arrival.set()

    async def _saga_for_actor(self, saga: str, coordinator: str) -> SagaRecord | None:
        """The saga record as an actor needs it (plan, coordinator, state), read once per
        saga rather than once per request: the plan grows with the saga, and it never
        changes once recorded. Read again when the asker is not the coordinator we know
        or the saga was not running yet."""
        known = self._actor_sagas.get(saga)
        if known is None or known.coordinator != coordinator or known.state != "running":
            known = await self._record(saga)
            if known is None:
                return None
            self._actor_sagas[saga] = known
            self._actor_plans[saga] = {i.workload: i for i in known.plan}
        return known

    async def _on_action_request(self, event: TakeoverStep, env: Envelope) -> None:
        assert event.workload is not None
        record = await self._saga_for_actor(event.saga, env.member)
        if record is None:
            raise RetryableError(f"saga {event.saga} not visible yet")
        if record.state in S.FINISHED or await self._outcome(
                event.saga, event.step, event.workload, attempt=event.attempt):
            return  # answered already
        item = self._actor_plans.get(event.saga, {}).get(event.workload)
        problem = None
        if env.member != record.coordinator:
            problem = f"only the coordinator {record.coordinator} asks for {event.step}"
        elif record.state != "running":
            problem = f"{event.step} asked before the quorum approved the plan"
        elif item is None or item.site is None or self.ctx.member != (
                item.source if event.step == S.EXPORT else item.successor):
            problem = f"{self.ctx.member} is not the planned actor"
        if problem is not None:
            await self._violation("bad_step", f"saga {event.saga}, {event.workload}: "
                                  f"{problem}", env)
            return
        assert item is not None
        key = (event.step, event.saga, event.workload, str(event.attempt))
        task = self._actions.get(key)
        if task is not None and not task.done():
            return
        work = self._export if event.step == S.EXPORT else self._shadow_start
        self._actions[key] = asyncio.create_task(
            work(record, item, event.attempt), name=f"{event.step}:{event.saga}:{event.workload}")

    async def _answer(self, record: SagaRecord, entry: dict[str, object]) -> None:
        """Record an actor's result in the saga, then publish it (signed, for audit)."""
        try:
            await self._record_and_publish(record.saga, entry)
        except Exception as exc:
            # The coordinator's bound turns a lost answer into a failed step.
            log.error("could not report a takeover step", saga=record.saga, error=str(exc))

    async def _export(self, record: SagaRecord, item: PlanItem, attempt: int) -> None:
        """On the source: the real replica's data into the store (read only)."""
        started = time.monotonic()
        spec = await self._spec(item.workload)
        try:
            if spec is None:
                raise DriverError(f"no placement record for {item.workload}")
            name, digest, size = await export_to_store(
                self.ctx.bus, self.real_driver(), spec, saga=record.saga, attempt=attempt)
            entry = S.step_entry(
                S.EXPORT, "ok", at=now_utc(), workload=item.workload, actor=self.ctx.member,
                attempt=attempt, object=name, digest=digest, size=size, origin="source",
                rpo_s=0.0, rpo_target_s=spec.rpo_seconds,
                elapsed_ms=round((time.monotonic() - started) * 1000, 1),
                detail=f"{size} bytes exported by {self.ctx.member}, sha256 {digest[:16]}…")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            entry = S.step_entry(S.EXPORT, "failed", at=now_utc(), workload=item.workload,
                                 actor=self.ctx.member, attempt=attempt,
                                 detail=f"export failed on {self.ctx.member}: {exc}")
        await self._answer(record, entry)

    async def _data_ref(self, saga: str, workload: str, attempt: int
                        ) -> dict[str, object] | None:
        """The data recorded for this attempt (the source's export or a backup)."""
        return S.data_of(await self._steps_of(saga, workload), workload, attempt)

    async def _shadow_start(self, record: SagaRecord, item: PlanItem, attempt: int) -> None:
        """On the successor: fetch and verify the data (stateful), start a shadow copy on
        it, check its health, stop it; for a real takeover import it for the replica."""
        assert item.site is not None
        status, detail, elapsed = "failed", "", None
        extra: dict[str, object] = {}
        instance_id = shadow_instance_id(record.saga, item.workload)
        started = time.monotonic()
        driver = self.driver()
        data: bytes | None = None
        try:
            spec = await self._spec(item.workload)
            if spec is None:
                raise DriverError(f"no placement record for {item.workload}")
            extra["rto_target_s"] = spec.rto_seconds
            if spec.stateful:
                # The data was recorded before the shadow start was asked for.
                ref = await self._data_ref(record.saga, item.workload, attempt)
                if ref is None:
                    raise DriverError(f"no exported data recorded for attempt {attempt}")
                digest = str(ref.get("digest"))
                data = await fetch_verified(self.ctx.bus, str(ref.get("object")), digest)
                extra["digest"] = digest
                await driver.import_(instance_id, spec, data)
            async with asyncio.timeout(self.HEALTH_TIMEOUT_S):
                instance = await driver.start(instance_id, spec, item.site)
                try:
                    # A process needs a moment before it answers its health check.
                    while not await driver.healthy(instance):  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                    elapsed = round((time.monotonic() - started) * 1000, 1)
                finally:
                    # Tear down: a shadow never keeps running on the successor.
                    await driver.stop(instance)
            detail = (f"{instance_id} healthy on {self.ctx.member}/{item.site} "
                      f"({driver.name} driver), then stopped")
            if data is not None:
                detail = f"{len(data)} bytes imported, sha256 verified; " + detail
                if not record.drill:
                    await self.real_driver().import_(item.workload, spec, data)
                    detail += "; data in place for the replica"
            status = "ok"
        except DigestMismatch as exc:
            detail, extra["corrupt"] = f"{exc}: not imported", True
        except BlobMissing as exc:
            detail, extra["corrupt"] = f"{exc}: not imported", True
        except TimeoutError:
            detail = f"{instance_id} not healthy within {self.HEALTH_TIMEOUT_S:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            detail = f"{instance_id} could not start: {exc}"
        finally:
            if data is not None:
                # The shadow's copy of the data has served its check; do not keep
                # megabytes per workload per drill on the successor.
                shutil.rmtree(self.ctx.data_dir / "drills" / self.ctx.member / instance_id
                              / "data", ignore_errors=True)
        log.info("shadow start", saga=record.saga, workload=item.workload, status=status,
                 elapsed_ms=elapsed, attempt=attempt)
        await self._answer(record, S.step_entry(
            S.SHADOW_START, status, at=now_utc(), workload=item.workload, actor=self.ctx.member,
            attempt=attempt, elapsed_ms=elapsed, detail=detail, **extra))

    async def _on_suspend_request(self, event: TakeoverStep, env: Envelope) -> None:
        record = await self._record(event.saga)
        me = self.ctx.member
        if record is None or me not in record.approvals or record.member == me:
            return
        if env.member != record.coordinator or record.reason != "acquisition" \
                or record.drill or S.find_step(record, S.SUSPEND) is not None:
            return
        if record.member not in self.ctx.trust.member_ids():
            return  # suspended already
        key = (S.SUSPEND, record.saga)
        if key in self._actions:
            return
        self._actions[key] = asyncio.create_task(self._endorse(record),
                                                 name=f"suspend:{record.saga}")

    async def _endorse(self, record: SagaRecord) -> None:
        try:
            await endorse_change(self.ctx.bus, "suspend", record.member)
            log.info("endorsed a suspension after a takeover", saga=record.saga,
                     member=record.member)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("could not endorse the suspension", saga=record.saga, error=str(exc))

