"""The takeover service: the saga of DESIGN §6 "takeover", drill mode (invariant 4).

Every member's takeover service runs a per-member durable `takeover-<member>` on
`fed.v1.takeover.>`, so each sees every takeover event, and plays up to three parts:

- **coordinator** of a saga when it receives a `takeover.requested` that its own member
  published (an operator's `stekker drill takeover`); requests from others are ignored.
  It plans (the scheduler's pure pipeline, target excluded), proposes the plan with its
  hash, counts approvals until the quorum, asks each successor for a shadow start, and
  writes the report. Each step is recorded in `fed_sagas/<saga>` by compare-and-set
  (`services.takeover.saga`) and published as a `takeover.step.v1`.
- **approver** of every proposal that is not about its own member: it re-checks the plan
  and signs its hash with a `takeover.approved.v1` (the coordinator approves its own
  proposal the same way; the target never approves).
- **successor** for a workload when a step names it as actor: it starts a shadow instance
  with its own driver, checks it is healthy, measures the time to running, stops it, and
  answers with a step of its own.

The saga record is the truth: a redelivered request or step whose outcome is recorded
already changes nothing, and msg ids are deterministic so a fact published twice is kept
once by JetStream. The coordinator's loop runs as a task (the consumer only records and
wakes it), so approvals and step results keep flowing while it waits for them.

Not yet: resuming another member's saga when its coordinator dies (a saga is resumed
only by its own coordinator when its service restarts), and real takeovers (freeze,
export, transfer, cut-over, revocation): a request with `drill=False` fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from contracts.base import Event
from contracts.state import PlacementRecord, SagaRecord
from contracts.takeover import (
    PlanItem,
    TakeoverApproved,
    TakeoverCompleted,
    TakeoverProposed,
    TakeoverRequested,
    TakeoverStep,
)
from mesh import layout
from mesh.bus import Consumer, consumer_health
from mesh.envelope import Envelope
from mesh.errors import Rejected, RetryableError
from mesh.observability import logger
from mesh.runtime import NodeContext
from mesh.state import Bucket, bucket
from services.agent.drivers.base import Driver, DriverError
from services.agent.drivers.factory import make_driver
from services.iam.enforcement import refused_by_token
from services.iam.tokens import TAKEOVER_ROLES
from services.scheduler.reader import load_snapshot
from services.takeover import saga as S
from services.takeover.approval import Approval, check_proposal, refusal, tally
from services.takeover.plan import build_plan, plan_hash
from services.takeover.report import build_report

log = logger("services.takeover")

SUBJECTS = ["fed.v1.takeover.>"]


def durable_name(member: str) -> str:
    return f"takeover-{member}"


def step_msg_id(saga: str, step: str, status: str, workload: str | None = None) -> str:
    return f"step-{saga}-{workload}-{step}-{status}" if workload else f"step-{saga}-{step}-{status}"


def shadow_instance_id(saga: str, workload: str) -> str:
    """`shadow-<saga8>-<workload>`. saga8 is the *last* 8 hex digits of the uuid7: its first
    ones are a millisecond clock, equal for every saga started in the same minute."""
    return f"shadow-{saga.replace('-', '')[-8:]}-{workload}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _age_s(entry: dict[str, object] | None, now: dt.datetime) -> float:
    """Seconds since a recorded step, so bounds hold across a coordinator restart."""
    at = entry.get("at") if entry else None
    if not isinstance(at, str):
        return 0.0
    return (now - dt.datetime.fromisoformat(at)).total_seconds()


class TakeoverService:
    name = "takeover"
    # Bounds of the coordinator's waits (class attributes, so tests can shorten them).
    APPROVAL_TIMEOUT_S = 20.0
    SHADOW_TIMEOUT_S = 30.0
    # How long a successor waits for a started shadow to report healthy.
    HEALTH_TIMEOUT_S = 20.0
    # Workloads shadow-started at the same time.
    CONCURRENCY = 8

    def __init__(self) -> None:
        self._ctx: NodeContext | None = None
        self._consumer: Consumer | None = None
        self._sagas: Bucket[SagaRecord] | None = None
        self._placements: Bucket[PlacementRecord] | None = None
        self._driver: Driver | None = None
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._shadows: dict[tuple[str, str], asyncio.Task[None]] = {}
        # One event per saga, replaced on every notification, so no waiter misses one.
        self._signals: dict[str, asyncio.Event] = {}
        self._completed = 0
        self._approved = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._sagas = await bucket(ctx.bus, layout.KV_SAGAS, SagaRecord)
        self._placements = await bucket(ctx.bus, layout.KV_PLACEMENTS, PlacementRecord)
        # Resume the unfinished sagas this member coordinates (its node restarted).
        for entry in await self._sagas.items():
            if entry.value.coordinator == ctx.member and entry.value.state not in S.FINISHED:
                self._spawn_runner(entry.key)
        self._consumer = await ctx.bus.consume(
            self._handle, subjects=SUBJECTS, durable=durable_name(ctx.member)
        )

    async def stop(self) -> None:
        if self._consumer:
            await self._consumer.stop()
        tasks = [*self._runners.values(), *self._shadows.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._driver is not None:
            with contextlib.suppress(Exception):
                await self._driver.close()

    def health(self) -> dict[str, Any]:
        return {
            **consumer_health(self._consumer),
            "coordinating": sum(1 for t in self._runners.values() if not t.done()),
            "shadows": sum(1 for t in self._shadows.values() if not t.done()),
            "completed": self._completed,
            "approved": self._approved,
        }

    # -- helpers -----------------------------------------------------------------------

    @property
    def ctx(self) -> NodeContext:
        assert self._ctx is not None, "service not started"
        return self._ctx

    @property
    def sagas(self) -> Bucket[SagaRecord]:
        assert self._sagas is not None, "service not started"
        return self._sagas

    def _signal(self, saga: str) -> asyncio.Event:
        return self._signals.setdefault(saga, asyncio.Event())

    def _notify(self, saga: str) -> None:
        old = self._signals.pop(saga, None)
        if old is not None:
            old.set()

    async def _wait(self, signal: asyncio.Event, timeout: float) -> None:
        # Also wake up now and then: a change written by another process (a resumed
        # saga) reaches us only through the record, not through our own handler.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signal.wait(), timeout=max(0.0, min(timeout, 1.0)))

    async def _record(self, saga: str) -> SagaRecord | None:
        entry = await self.sagas.get(saga)
        return entry.value if entry else None

    async def _modify(
        self, saga: str, change: Callable[[SagaRecord], SagaRecord | None]
    ) -> SagaRecord | None:
        """Apply `change` by CAS; the new record, or None when it changed nothing."""
        written: list[SagaRecord] = []

        def apply(current: SagaRecord | None) -> SagaRecord | None:
            written.clear()
            new = change(current) if current is not None else None
            if new is not None:
                written.append(new)
            return new

        await self.sagas.modify(saga, apply)
        self._notify(saga)
        return written[0] if written else None

    async def _violation(self, reason: str, detail: str, env: Envelope) -> None:
        await self.ctx.bus.report_violation(Rejected(reason, detail), env.subject, env.headers)

    async def _publish_step(self, record: SagaRecord, entry: dict[str, object]) -> None:
        step, status = str(entry["step"]), str(entry["status"])
        workload = entry.get("workload")
        actor = entry.get("actor")
        elapsed = entry.get("elapsed_ms")
        event = TakeoverStep(
            saga=record.saga, member=record.member, step=step,
            status=status,  # type: ignore[arg-type]
            workload=str(workload) if workload else None,
            actor=str(actor) if actor else None,
            elapsed_ms=float(elapsed) if isinstance(elapsed, int | float) else None,
            detail=str(entry.get("detail") or ""),
        )
        await self.ctx.bus.publish(
            event, msg_id=step_msg_id(record.saga, step, status, event.workload)
        )

    # -- dispatch ----------------------------------------------------------------------

    async def _handle(self, event: Event, env: Envelope) -> None:
        if isinstance(event, TakeoverRequested):
            await self._on_request(event, env)
        elif isinstance(event, TakeoverProposed):
            await self._on_proposed(event, env)
        elif isinstance(event, TakeoverApproved):
            await self._on_approved(event, env)
        elif isinstance(event, TakeoverStep):
            await self._on_step(event, env)

    # -- coordinator -------------------------------------------------------------------

    async def _on_request(self, event: TakeoverRequested, env: Envelope) -> None:
        me = self.ctx.member
        if env.member != me:
            return  # the requester's own member coordinates
        if await refused_by_token(self.ctx, env, TAKEOVER_ROLES):
            return
        now = _now()
        entry = await self.sagas.modify(
            event.saga,
            lambda cur: None if cur is not None else S.new_saga(
                event.saga, target=event.member, coordinator=me, reason=event.reason,
                drill=event.drill, now=now),
        )
        assert entry is not None
        record = entry.value
        if record.coordinator != me or record.member != event.member:
            await self._violation(
                "bad_request", f"saga {event.saga} exists already for {record.member}, "
                f"coordinated by {record.coordinator}", env)
            return
        if record.state in S.FINISHED:
            await self._publish_completed(record)  # lost after the CAS last time?
            return
        problem = self._request_problem(event)
        if problem:
            log.warning("refusing takeover request", saga=event.saga, problem=problem)
            await self._finish(event.saga, S.step_entry("request", "failed", at=now,
                                                          detail=problem))
            return
        log.info("coordinating takeover", saga=event.saga, target=event.member,
                 drill=event.drill)
        self._spawn_runner(event.saga)

    def _request_problem(self, event: TakeoverRequested) -> str | None:
        trust = self.ctx.trust
        if event.member == self.ctx.member:
            return "a member cannot coordinate its own takeover; ask another member"
        if not trust.is_member(event.member):
            return f"{event.member} is not a member of the roster in force"
        if not event.drill or event.reason != "drill":
            # Real takeovers (acquisition, calamity) freeze the source, move data and
            # revoke rights: a later issue. Until then only drills run.
            return "only drills are implemented; a real takeover cannot run yet"
        return None

    def _spawn_runner(self, saga: str) -> None:
        task = self._runners.get(saga)
        if task is not None and not task.done():
            return
        self._runners[saga] = asyncio.create_task(self._run(saga), name=f"takeover:{saga}")

    async def _run(self, saga: str) -> None:
        try:
            record = await self._record(saga)
            if record is not None and record.state == "planning":
                record = await self._plan(record)
            if record is not None and record.state == "approving":
                record = await self._await_quorum(record)
            if record is not None and record.state == "running":
                await self._run_workloads(record)
                await self._finish(saga)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("takeover saga failed", saga=saga)
            with contextlib.suppress(Exception):
                await self._finish(saga, S.step_entry("coordinator", "failed", at=_now(),
                                                      detail=f"coordinator error: {exc}"))

    async def _plan(self, record: SagaRecord) -> SagaRecord | None:
        now = _now()
        snapshot, entries = await load_snapshot(self.ctx.bus, today=now.date())
        plan = build_plan(record.member, [e.value for e in entries], snapshot,
                          decided_by=self.ctx.member, now=now)
        digest = plan_hash(plan)
        quorum = self.ctx.trust.quorum_against(record.member)
        updated = await self._modify(
            record.saga, lambda cur: S.with_plan(cur, plan, digest, quorum, now)
        )
        if updated is None:
            return await self._record(record.saga)
        planned = S.find_step(updated, S.PLAN, statuses=("ok",))
        if planned is not None:
            await self._publish_step(updated, planned)
        return updated

    async def _propose(self, record: SagaRecord) -> None:
        proposal = TakeoverProposed(
            saga=record.saga, member=record.member,
            reason=record.reason,  # type: ignore[arg-type]
            drill=record.drill, plan=record.plan, plan_hash=record.plan_hash,
            quorum=record.quorum,
        )
        await self.ctx.bus.publish(proposal, msg_id=f"propose-{record.saga}")

    async def _await_quorum(self, record: SagaRecord) -> SagaRecord | None:
        await self._propose(record)
        saga = record.saga
        while True:
            signal = self._signal(saga)
            current = await self._record(saga)
            if current is None or current.state != "approving":
                return current
            count = tally(
                [Approval(member=m, plan_hash=current.plan_hash) for m in current.approvals],
                plan_hash=current.plan_hash, target=current.member,
                active=set(self.ctx.trust.member_ids()), quorum=current.quorum,
            )
            now = _now()
            if count.reached:
                updated = await self._modify(
                    saga, partial(S.with_quorum, approvers=list(count.approvers), now=now)
                )
                if updated is not None:
                    reached = S.find_step(updated, S.APPROVAL, statuses=("ok",))
                    if reached is not None:
                        await self._publish_step(updated, reached)
                return updated or await self._record(saga)
            waited = _age_s(S.find_step(current, S.PLAN, statuses=("ok",)), now)
            remaining = self.APPROVAL_TIMEOUT_S - waited
            if remaining <= 0:
                names = ", ".join(count.approvers) or "none"
                await self._finish(saga, S.step_entry(
                    S.APPROVAL, "failed", at=now,
                    detail=f"quorum not reached within {self.APPROVAL_TIMEOUT_S:g} s: "
                           f"{len(count.approvers)}/{current.quorum} approvals ({names})"))
                return None
            await self._wait(signal, remaining)

    async def _run_workloads(self, record: SagaRecord) -> None:
        limit = asyncio.Semaphore(self.CONCURRENCY)

        async def one(item: PlanItem) -> None:
            async with limit:
                await self._shadow_step(record, item)

        await asyncio.gather(*(one(i) for i in record.plan if i.successor is not None))

    async def _shadow_step(self, record: SagaRecord, item: PlanItem) -> None:
        """Ask the successor for a shadow start and wait (bounded) for its answer."""
        saga, workload = record.saga, item.workload
        current = await self._record(saga)
        if current is None or S.find_step(current, S.SHADOW_START, workload=workload):
            return  # done already (a resumed saga)
        started = S.find_step(current, S.SHADOW_START, workload=workload,
                              statuses=("started",))
        if started is None:
            started = S.step_entry(S.SHADOW_START, "started", at=_now(), workload=workload,
                                   actor=item.successor,
                                   detail=f"shadow start on {item.successor}/{item.site}")
            entry = started
            await self._modify(saga, lambda cur: S.with_step(cur, entry, _now()))
        await self._publish_step(current, started)
        while True:
            signal = self._signal(saga)
            current = await self._record(saga)
            if current is None or current.state in S.FINISHED:
                return
            if S.find_step(current, S.SHADOW_START, workload=workload) is not None:
                return
            now = _now()
            remaining = self.SHADOW_TIMEOUT_S - _age_s(started, now)
            if remaining <= 0:
                failed = S.step_entry(
                    S.SHADOW_START, "failed", at=now, workload=workload, actor=item.successor,
                    detail=f"no answer from {item.successor} within {self.SHADOW_TIMEOUT_S:g} s")
                updated = await self._modify(saga, partial(S.with_result, entry=failed, now=now))
                if updated is not None:
                    await self._publish_step(updated, failed)
                return
            await self._wait(signal, remaining)

    async def _finish(self, saga: str, failed_step: dict[str, object] | None = None) -> None:
        """End the saga: record the report (state completed or failed), publish it."""
        now = _now()

        def end(current: SagaRecord) -> SagaRecord | None:
            if current.state in S.FINISHED:
                return None
            if failed_step is not None:
                current = S.with_step(current, failed_step, now) or current
            report = build_report(current, finished_at=now)
            return S.with_end(current, passed=bool(report["passed"]), report=report, now=now)

        record = await self._modify(saga, end)
        if record is None:
            return
        if failed_step is not None:
            await self._publish_step(record, failed_step)
        await self._publish_completed(record)

    async def _publish_completed(self, record: SagaRecord) -> None:
        report = record.report or {}
        duration = report.get("duration_ms")
        event = TakeoverCompleted(
            saga=record.saga, member=record.member, drill=record.drill,
            passed=bool(report.get("passed")), workloads=len(record.plan),
            approvers=sorted(record.approvals),
            duration_ms=float(duration) if isinstance(duration, int | float) else 0.0,
            summary=str(report.get("summary", "")),
        )
        await self.ctx.bus.publish(event, msg_id=f"completed-{record.saga}")
        self._completed += 1
        log.info("takeover finished", saga=record.saga, target=record.member,
                 state=record.state, passed=event.passed)

    async def _on_approved(self, event: TakeoverApproved, env: Envelope) -> None:
        record = await self._record(event.saga)
        if record is None or record.coordinator != self.ctx.member:
            return  # not ours to count
        if record.state == "planning":
            raise RetryableError("approval before the plan is visible; later")
        why = refusal(
            Approval(member=env.member, plan_hash=event.plan_hash, target=event.member),
            plan_hash=record.plan_hash, target=record.member,
            active=set(self.ctx.trust.member_ids()),
        )
        now = _now()
        if why is not None:
            # A signed approval that must not count is a security matter (invariant 4).
            await self._violation(
                "bad_approval", f"{env.member} approving saga {event.saga} "
                f"({record.member}): {why}", env)
            await self._modify(event.saga, lambda cur: S.with_refused_approval(
                cur, member=env.member, key_id=env.key_id, msg_id=env.msg_id, why=why, now=now))
            return
        await self._modify(event.saga, lambda cur: S.with_approval(
            cur, member=env.member, key_id=env.key_id, msg_id=env.msg_id, now=now))

    # -- approver ----------------------------------------------------------------------

    async def _on_proposed(self, event: TakeoverProposed, env: Envelope) -> None:
        me, trust = self.ctx.member, self.ctx.trust
        if event.member == me:
            return  # the target never approves its own takeover
        record = await self._record(event.saga)
        if record is None or record.state == "planning":
            # Written before the proposal was published; a replica may lag behind.
            raise RetryableError(f"saga {event.saga} not visible yet")
        if record.state in S.FINISHED:
            return
        problem = check_proposal(
            event, roster=set(trust.member_ids(active_only=False)),
            active=set(trust.member_ids()), quorum=trust.quorum_against(event.member),
        )
        if problem is None and record.coordinator != env.member:
            problem = f"saga is coordinated by {record.coordinator}, not {env.member}"
        if problem is None and (record.plan_hash != event.plan_hash
                                or record.member != event.member
                                or record.drill != event.drill):
            problem = "proposal differs from the saga record"
        if problem is not None:
            await self._violation("bad_proposal", f"saga {event.saga}: {problem}", env)
            return
        if not event.drill:
            # A real takeover needs more than a consistent plan before a member signs it
            # (the member down or the change of control confirmed, an operator's consent):
            # a later issue. Until then only drills are approved, automatically.
            log.warning("not approving a real takeover", saga=event.saga, target=event.member)
            return
        await self.ctx.bus.publish(
            TakeoverApproved(saga=event.saga, member=event.member, plan_hash=event.plan_hash),
            msg_id=f"approve-{event.saga}-{me}",
        )
        self._approved += 1

    # -- successor ---------------------------------------------------------------------

    async def _on_step(self, event: TakeoverStep, env: Envelope) -> None:
        if event.status == "started":
            if event.step == S.SHADOW_START and event.actor == self.ctx.member:
                await self._on_shadow_request(event, env)
            return
        if not event.workload or not event.actor:
            return  # the coordinator's own bookkeeping (plan, approval, ...)
        record = await self._record(event.saga)
        if record is None or record.coordinator != self.ctx.member:
            return
        if env.member == self.ctx.member and event.actor != self.ctx.member:
            return  # a result this coordinator recorded itself (a timeout)
        item = next((i for i in record.plan if i.workload == event.workload), None)
        if env.member != event.actor or item is None or item.successor != env.member:
            await self._violation(
                "bad_step", f"{env.member} reported {event.step} of {event.workload} in saga "
                f"{event.saga}, but it is not that workload's planned successor", env)
            return
        entry = S.step_entry(event.step, event.status, at=env.time, workload=event.workload,
                             actor=env.member, elapsed_ms=event.elapsed_ms,
                             detail=event.detail, msg_id=env.msg_id)
        await self._modify(event.saga, lambda cur: S.with_result(cur, entry, _now()))

    async def _on_shadow_request(self, event: TakeoverStep, env: Envelope) -> None:
        assert event.workload is not None
        record = await self._record(event.saga)
        if record is None:
            raise RetryableError(f"saga {event.saga} not visible yet")
        if record.state in S.FINISHED or S.find_step(record, S.SHADOW_START,
                                                     workload=event.workload):
            return  # answered already
        item = next((i for i in record.plan if i.workload == event.workload), None)
        problem = None
        if env.member != record.coordinator:
            problem = f"only the coordinator {record.coordinator} asks for shadow starts"
        elif record.state != "running":
            problem = "shadow start asked before the quorum approved the plan"
        elif item is None or item.successor != self.ctx.member or item.site is None:
            problem = f"{self.ctx.member} is not the planned successor"
        if problem is not None:
            await self._violation("bad_step", f"saga {event.saga}, {event.workload}: "
                                  f"{problem}", env)
            return
        assert item is not None
        key = (event.saga, event.workload)
        task = self._shadows.get(key)
        if task is not None and not task.done():
            return
        self._shadows[key] = asyncio.create_task(
            self._shadow_start(record, item), name=f"shadow:{event.saga}:{event.workload}")

    def driver(self) -> Driver:
        """This member's driver for shadows, apart from the agent's: its own instances
        and (for `process`) its own folder, so a drill never touches a real replica."""
        if self._driver is None:
            ctx = self.ctx
            sites = {s.id: s.capacity for s in ctx.profile.sites}
            self._driver = make_driver(ctx.settings.driver,
                                       ctx.data_dir / "drills" / ctx.member, sites=sites)
        return self._driver

    async def _shadow_start(self, record: SagaRecord, item: PlanItem) -> None:
        assert self._placements is not None and item.site is not None
        status, detail, elapsed = "failed", "", None
        instance_id = shadow_instance_id(record.saga, item.workload)
        started = time.monotonic()
        try:
            placement = await self._placements.get(item.workload)
            if placement is None:
                raise DriverError(f"no placement record for {item.workload}")
            driver = self.driver()
            async with asyncio.timeout(self.HEALTH_TIMEOUT_S):
                instance = await driver.start(instance_id, placement.value.spec, item.site)
                try:
                    # A process needs a moment before it answers its health check.
                    while True:
                        if await driver.healthy(instance):
                            break
                        await asyncio.sleep(0.1)
                    elapsed = round((time.monotonic() - started) * 1000, 1)
                finally:
                    # Tear down: a drill leaves nothing running on the successor.
                    await driver.stop(instance)
            status = "ok"
            detail = (f"{instance_id} healthy on {self.ctx.member}/{item.site} "
                      f"({driver.name} driver), then stopped")
        except TimeoutError:
            detail = f"{instance_id} not healthy within {self.HEALTH_TIMEOUT_S:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            detail = f"{instance_id} could not start: {exc}"
        log.info("shadow start", saga=record.saga, workload=item.workload, status=status,
                 elapsed_ms=elapsed)
        event = TakeoverStep(
            saga=record.saga, member=record.member, step=S.SHADOW_START,
            status=status,  # type: ignore[arg-type]
            workload=item.workload, actor=self.ctx.member, elapsed_ms=elapsed, detail=detail,
        )
        try:
            await self.ctx.bus.publish(
                event, msg_id=step_msg_id(record.saga, S.SHADOW_START, status, item.workload))
        except Exception as exc:
            # The coordinator's bound turns a lost answer into a failed step.
            log.error("could not report shadow start", saga=record.saga, error=str(exc))
