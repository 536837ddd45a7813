"""The takeover service: the saga of DESIGN §6 "takeover", real and drill (invariant 4, 5).

Every member's takeover service runs a per-member durable `takeover-<member>` on
`fed.v1.takeover.>`, so each sees every takeover event, and plays up to four parts:

- **coordinator** of a saga when it receives a `takeover.requested` that its own member
  published (`stekker drill takeover`, `stekker takeover declare`), or, for a change of
  control the target declared itself, when it wins the create-only CAS of the saga
  record. It plans (the scheduler's pure pipeline, target excluded), proposes the plan
  with its hash, counts approvals until the quorum, then per workload: export on the
  source (or the newest backup when the source cannot), transfer through `fed_data` with
  a sha256, import and start on the successor, verify digest and health; for a real
  takeover also the cut-over of the placement by CAS (`services.takeover.cutover`) and,
  for an acquisition, the source's suspension in the roster; and it writes the report.
  It holds a lease on the saga (`SagaRecord.lease_until`), renewed while it lives.
- **resumer**: any other member (not the target) that finds an unfinished saga whose
  lease expired takes it over by CAS and resumes it from its last recorded step.
- **approver** of every proposal that is not about its own member: it re-checks the plan
  and signs its hash with a `takeover.approved.v1` (the target never approves). A real
  takeover also needs consent (`services.takeover.policy`).
- **actor** when a step names it: the source exports its data; the successor imports it
  into a shadow instance, starts it, checks its health and stops it (a drill stops there;
  a real takeover also imports into the real replica's folder, started by its agent at
  the cut-over); an approver endorses the acquired member's suspension.

The saga record is the truth: every step checks it first and records its outcome by CAS
(`services.takeover.saga`), so a redelivered message or a resumed coordinator never does
a step twice, and msg ids are deterministic so a fact published twice is kept once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import msgspec

from contracts.base import Event
from contracts.state import (
    DownDecision,
    EscalationDecision,
    PlacementRecord,
    SagaRecord,
    SiteLedger,
)
from contracts.takeover import (
    PlanItem,
    TakeoverApproved,
    TakeoverCompleted,
    TakeoverProposed,
    TakeoverRequested,
    TakeoverStep,
)
from contracts.workload import Assignment, WorkloadSpec
from mesh import layout
from mesh.bus import Consumer, consumer_health
from mesh.envelope import Envelope, new_msg_id
from mesh.errors import CasConflict, Rejected, RetryableError
from mesh.objects import BlobMissing
from mesh.observability import logger
from mesh.runtime import NodeContext
from mesh.state import Bucket, bucket
from services.agent.backup import Backup, backups_of
from services.agent.drivers.base import Driver, DriverError
from services.agent.drivers.factory import make_driver
from services.failover.decisions import DOWN_PREFIX
from services.iam.endorsing import endorse_change
from services.iam.enforcement import refused_by_token
from services.iam.tokens import TAKEOVER_ROLES
from services.scheduler.booking import NotBooked, book, unbook
from services.scheduler.reader import load_snapshot, read_state
from services.scheduler.service import announce
from services.takeover import saga as S
from services.takeover.approval import Approval, check_proposal, refusal, tally
from services.takeover.cutover import cut_over_already, cutover_record, released_record
from services.takeover.data import export_to_store, fetch_verified
from services.takeover.errors import DigestMismatch, NoData, Superseded
from services.takeover.escalation import escalation_key, overdue, takeover_under_way
from services.takeover.plan import build_plan, plan_hash
from services.takeover.policy import approval_problem
from services.takeover.report import build_report

log = logger("services.takeover")

SUBJECTS = ["fed.v1.takeover.>"]
# Steps an actor answers: the coordinator's "started" names the actor.
ACTOR_STEPS = frozenset({S.SHADOW_START, S.EXPORT})

Hook = Callable[[str, str], Awaitable[None]]


def durable_name(member: str) -> str:
    return f"takeover-{member}"


def step_msg_id(saga: str, step: str, status: str, workload: str | None = None,
                attempt: int = 1) -> str:
    base = f"step-{saga}-{workload}-{step}-{status}" if workload else \
        f"step-{saga}-{step}-{status}"
    return base if attempt == 1 else f"{base}-{attempt}"


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


def _attempt(entry: dict[str, object] | None) -> int:
    value = entry.get("attempt", 1) if entry else 1
    return value if isinstance(value, int) else 1


class TakeoverService:
    name = "takeover"
    # Bounds of the coordinator's waits (class attributes, so tests can shorten them).
    APPROVAL_TIMEOUT_S = 20.0
    # A real takeover waits longer: its approvers' operators must consent first.
    CONSENT_TIMEOUT_S = 3600.0
    SHADOW_TIMEOUT_S = 30.0
    EXPORT_TIMEOUT_S = 15.0
    VERIFY_TIMEOUT_S = 30.0
    SUSPEND_TIMEOUT_S = 30.0
    # How long a successor waits for a started shadow to report healthy.
    HEALTH_TIMEOUT_S = 20.0
    # A coordinator's lease on its saga; renewed every third of it while it lives.
    LEASE_S = 6.0
    # Tries per workload when a transfer arrives corrupted (digest mismatch).
    ATTEMPTS = 3
    # Workloads moved at the same time.
    CONCURRENCY = 8

    def __init__(self) -> None:
        self._ctx: NodeContext | None = None
        self._consumer: Consumer | None = None
        self._sagas: Bucket[SagaRecord] | None = None
        self._placements: Bucket[PlacementRecord] | None = None
        self._driver: Driver | None = None
        self._real_driver: Driver | None = None
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._actions: dict[tuple[str, ...], asyncio.Task[None]] = {}
        self._lease_task: asyncio.Task[None] | None = None
        # One event per saga, replaced on every notification, so no waiter misses one.
        self._signals: dict[str, asyncio.Event] = {}
        self._cutover_lock = asyncio.Lock()
        self._completed = 0
        self._approved = 0
        # Called at each step boundary of a saga this member coordinates (tests stop a
        # node there to prove a saga resumes; None in production).
        self.boundary_hook: Hook | None = None

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
        self._lease_task = asyncio.create_task(self._lease_loop(),
                                               name=f"takeover-leases:{ctx.member}")

    async def stop(self) -> None:
        if self._consumer:
            await self._consumer.stop()
        tasks = [*self._runners.values(), *self._actions.values()]
        if self._lease_task is not None:
            tasks.append(self._lease_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for driver in (self._driver, self._real_driver):
            if driver is not None:
                with contextlib.suppress(Exception):
                    await driver.close()

    def health(self) -> dict[str, Any]:
        return {
            **consumer_health(self._consumer),
            "coordinating": sum(1 for t in self._runners.values() if not t.done()),
            "shadows": sum(1 for k, t in self._actions.items()
                           if k[0] == S.SHADOW_START and not t.done()),
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

    @property
    def placements(self) -> Bucket[PlacementRecord]:
        assert self._placements is not None, "service not started"
        return self._placements

    def _signal(self, saga: str) -> asyncio.Event:
        return self._signals.setdefault(saga, asyncio.Event())

    def _notify(self, saga: str) -> None:
        old = self._signals.pop(saga, None)
        if old is not None:
            old.set()

    async def _wait(self, signal: asyncio.Event, timeout: float) -> None:
        # Also wake up now and then: a change written by another process (an actor's
        # result, a resumed saga) reaches us only through the record.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signal.wait(), timeout=max(0.0, min(timeout, 1.0)))

    async def _record(self, saga: str) -> SagaRecord | None:
        entry = await self.sagas.get(saga)
        return entry.value if entry else None

    async def _mine(self, saga: str) -> SagaRecord | None:
        """The record, while this member still coordinates it (else Superseded)."""
        record = await self._record(saga)
        if record is not None and record.coordinator != self.ctx.member:
            raise Superseded(saga)
        return record

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

    async def _boundary(self, saga: str, step: str) -> None:
        if self.boundary_hook is not None:
            await self.boundary_hook(saga, step)

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
            detail=str(entry.get("detail") or ""), attempt=_attempt(entry),
            digest=str(entry.get("digest") or ""),
        )
        await self.ctx.bus.publish(
            event, msg_id=step_msg_id(record.saga, step, status, event.workload,
                                      event.attempt))

    async def _record_and_publish(self, saga: str, entry: dict[str, object]) -> None:
        updated = await self._modify(saga, partial(S.with_result, entry=entry, now=_now()))
        if updated is not None:
            await self._publish_step(updated, entry)

    def driver(self) -> Driver:
        """This member's driver for shadows, apart from the agent's: its own instances
        and its own folder, so a drill never touches a real replica."""
        if self._driver is None:
            ctx = self.ctx
            sites = {s.id: s.capacity for s in ctx.profile.sites}
            self._driver = make_driver(ctx.settings.driver,
                                       ctx.data_dir / "drills" / ctx.member, sites=sites)
        return self._driver

    def real_driver(self) -> Driver:
        """A driver over the agent's folder (`workloads/<member>`): the real replicas'
        data, exported on a source and imported on a successor. It starts nothing."""
        if self._real_driver is None:
            ctx = self.ctx
            self._real_driver = make_driver(ctx.settings.driver,
                                            ctx.data_dir / "workloads" / ctx.member)
        return self._real_driver

    async def _spec(self, workload: str) -> WorkloadSpec | None:
        entry = await self.placements.get(workload)
        return entry.value.spec if entry else None

    async def _down(self, member: str) -> DownDecision | None:
        decisions = await bucket(self.ctx.bus, layout.KV_DECISIONS, DownDecision)
        entry = await decisions.get(DOWN_PREFIX + member)
        return entry.value if entry and entry.value.state == "down" else None

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
        downs = [k for k in await decisions.keys() if k.startswith(DOWN_PREFIX)]
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
            late = overdue(down, placements, _now())
            if not late or takeover_under_way(down.member,
                                              [e.value for e in await self.sagas.items()]):
                continue
            escalations = await bucket(self.ctx.bus, layout.KV_DECISIONS, EscalationDecision)
            saga = new_msg_id()
            try:
                await escalations.create(
                    escalation_key(down.member, down.epoch),
                    EscalationDecision(member=down.member, epoch=down.epoch, saga=saga,
                                       requested_by=me, at=_now(), overdue=late))
            except CasConflict:
                continue  # another member escalated this epoch
            log.warning("escalating: stateful workloads of a down member passed their RTO",
                        member=down.member, workloads=late, saga=saga)
            await self.ctx.bus.publish(
                TakeoverRequested(saga=saga, member=down.member, reason="calamity",
                                  drill=False),
                msg_id=f"request-{saga}-{me}")

    async def _leases_once(self) -> None:
        me, now = self.ctx.member, _now()
        for entry in await self.sagas.items():
            record = entry.value
            if record.state in S.FINISHED or record.member == me:
                continue
            runner = self._runners.get(record.saga)
            running = runner is not None and not runner.done()
            if record.coordinator == me and not running:
                self._spawn_runner(record.saga)
            if record.coordinator != me and (record.lease_until is None
                                             or record.lease_until > now):
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
        # A change of control the target declares itself: the other members race to
        # create the saga (create-only CAS); the winner coordinates.
        self_declared = env.member == event.member and not event.drill
        if self_declared and event.member == me:
            return
        if not self_declared and env.member != me:
            return  # the requester's own member coordinates
        if await refused_by_token(self.ctx, env, TAKEOVER_ROLES):
            return
        now = _now()
        fresh = msgspec.structs.replace(
            S.new_saga(event.saga, target=event.member, coordinator=me, reason=event.reason,
                       drill=event.drill, now=now),
            lease_until=now + dt.timedelta(seconds=self.LEASE_S),
            consents=[] if event.drill else [env.member])
        entry = await self.sagas.modify(event.saga,
                                        lambda cur: None if cur is not None else fresh)
        assert entry is not None
        record = entry.value
        if record.coordinator != me:
            if self_declared:
                return  # another member won the CAS and coordinates the declaration
            if record.member == event.member and not event.drill and not record.drill:
                # Our operator joins a takeover another member coordinates: consent.
                updated = await self._modify(event.saga, partial(
                    S.with_consent, member=me, now=now))
                if updated is not None and updated.plan_hash:
                    await self._approve(updated)
                return
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
                 drill=event.drill, reason=event.reason)
        self._spawn_runner(event.saga)

    def _request_problem(self, event: TakeoverRequested) -> str | None:
        trust = self.ctx.trust
        if event.member == self.ctx.member:
            return "a member cannot coordinate its own takeover; ask another member"
        if not trust.is_member(event.member):
            return f"{event.member} is not a member of the roster in force"
        if event.drill != (event.reason == "drill"):
            return "reason 'drill' goes with a drill, and only with a drill"
        return None

    def _spawn_runner(self, saga: str) -> None:
        task = self._runners.get(saga)
        if task is not None and not task.done():
            return
        self._runners[saga] = asyncio.create_task(self._run(saga), name=f"takeover:{saga}")

    async def _run(self, saga: str) -> None:
        try:
            record = await self._mine(saga)
            if record is not None and record.state == "planning":
                record = await self._plan(record)
                await self._boundary(saga, "planned")
            if record is not None and record.state == "approving":
                record = await self._await_quorum(record)
                await self._boundary(saga, "approved")
            if record is not None and record.state == "running":
                if not record.drill:
                    await self._freeze(record)
                await self._run_workloads(record)
                await self._boundary(saga, "moved")
                if not record.drill and record.reason == "acquisition":
                    await self._suspend(saga)
                    await self._boundary(saga, "suspended")
                await self._mine(saga)
                await self._finish(saga)
        except asyncio.CancelledError:
            raise
        except Superseded:
            log.warning("another member resumed this saga; stepping back", saga=saga)
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
            return await self._mine(record.saga)
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
            current = await self._mine(saga)
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
                return updated or await self._mine(saga)
            waited = _age_s(S.find_step(current, S.PLAN, statuses=("ok",)), now)
            bound = self.APPROVAL_TIMEOUT_S if current.drill else self.CONSENT_TIMEOUT_S
            remaining = bound - waited
            if remaining <= 0:
                names = ", ".join(count.approvers) or "none"
                await self._finish(saga, S.step_entry(
                    S.APPROVAL, "failed", at=now,
                    detail=f"quorum not reached within {bound:g} s: "
                           f"{len(count.approvers)}/{current.quorum} approvals ({names})"))
                return None
            await self._wait(signal, remaining)

    async def _freeze(self, record: SagaRecord) -> None:
        """Recorded for the report: a running real saga freezes its target already
        (`services.scheduler.reader.member_statuses`), so nothing new lands there."""
        entry = S.step_entry(S.FREEZE, "ok", at=_now(),
                             detail=f"{record.member} receives no new placements")
        updated = await self._modify(record.saga, partial(S.with_step, entry=entry,
                                                          now=_now()))
        if updated is not None:
            await self._publish_step(updated, entry)

    async def _run_workloads(self, record: SagaRecord) -> None:
        limit = asyncio.Semaphore(self.CONCURRENCY)

        async def one(item: PlanItem) -> None:
            async with limit:
                await self._move(record, item)

        await asyncio.gather(*(one(i) for i in record.plan if i.successor is not None))
        if not record.drill:
            for item in record.plan:
                if item.successor is None:
                    await self._release(record.saga, item)

    async def _release(self, saga: str, item: PlanItem) -> None:
        """No member may host a new replica: drop the source's, if others remain."""
        current = await self._mine(saga)
        if current is None or S.find_step(current, S.RELEASE, workload=item.workload):
            return
        for _ in range(10):
            entry = await self.placements.get(item.workload)
            if entry is None:
                return
            new = released_record(entry.value, item, saga=saga, decided_by=self.ctx.member,
                                  now=_now())
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
                S.RELEASE, "ok", at=_now(), workload=item.workload, generation=new.generation,
                detail=f"{item.source}'s replica released; served by "
                       f"{', '.join(a.member for a in new.assignments)} (degraded)"))
            return

    async def _move(self, record: SagaRecord, item: PlanItem) -> None:
        """One workload: (data) → shadow start on the successor → (real) cut-over."""
        saga, workload = record.saga, item.workload
        spec = await self._spec(workload)
        if spec is None:
            await self._record_and_publish(saga, S.step_entry(
                S.SHADOW_START, "failed", at=_now(), workload=workload,
                detail=f"no placement record for {workload}"))
            return
        for attempt in range(1, self.ATTEMPTS + 1):
            if spec.stateful:
                try:
                    await self._data_for(record, item, spec, attempt)
                except NoData as exc:
                    await self._record_and_publish(saga, S.step_entry(
                        S.SHADOW_START, "failed", at=_now(), workload=workload,
                        attempt=attempt, detail=str(exc)))
                    return
                await self._boundary(saga, f"exported:{workload}")
            result = await self._shadow_step(saga, item, attempt)
            if result is None or result.get("status") == "ok":
                break
            if not result.get("corrupt"):
                return
        else:
            return
        current = await self._mine(saga)
        if current is None or S.find_step(current, S.SHADOW_START, workload=workload,
                                          statuses=("ok",)) is None:
            return
        await self._boundary(saga, f"imported:{workload}")
        if not record.drill:
            await self._cutover(saga, item)

    # -- data: export or restore -------------------------------------------------------

    async def _data_for(
        self, record: SagaRecord, item: PlanItem, spec: WorkloadSpec, attempt: int
    ) -> dict[str, object]:
        """The data this attempt moves: the source's export, or else a backup."""
        saga, workload = record.saga, item.workload
        current = await self._mine(saga)
        assert current is not None
        for step in (S.EXPORT, S.RESTORE):
            done = S.find_step(current, step, workload=workload, attempt=attempt,
                               statuses=("ok",))
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
            exported = await self._export_step(current, item, attempt)
            if exported is not None and exported.get("status") == "ok":
                return exported
        return await self._restore_step(current, item, spec, attempt)

    async def _export_step(
        self, record: SagaRecord, item: PlanItem, attempt: int
    ) -> dict[str, object] | None:
        """Ask the source to export; its result, or a failure after the bound.

        Requests are not written to the record (only outcomes are: the record stays
        small, and every write of it is a CAS on one key): a resumed coordinator asks
        again, and the actor, finding no outcome recorded, answers again."""
        started = S.step_entry(S.EXPORT, "started", at=_now(), workload=item.workload,
                               actor=item.source, attempt=attempt,
                               detail=f"export on {item.source}")
        await self._publish_step(record, started)
        return await self._await_result(record.saga, S.EXPORT, item, attempt,
                                        time.monotonic(), self.EXPORT_TIMEOUT_S,
                                        actor=item.source)

    async def _restore_step(
        self, record: SagaRecord, item: PlanItem, spec: WorkloadSpec, attempt: int
    ) -> dict[str, object]:
        """The newest backup not tried yet, with its age as the achieved RPO."""
        tried = {str(e.get("object")) for e in S.attempts(record, S.RESTORE, item.workload)}
        backups: list[Backup] = [b for b in await backups_of(self.ctx.bus, item.workload)
                                 if b.name not in tried]
        now = _now()
        if not backups:
            entry = S.step_entry(S.RESTORE, "failed", at=now, workload=item.workload,
                                 attempt=attempt,
                                 detail=f"no usable backup of {item.workload} "
                                        f"({len(tried)} tried)")
            await self._record_and_publish(record.saga, entry)
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
        await self._record_and_publish(record.saga, entry)
        current = await self._record(record.saga)
        found = S.find_step(current, S.RESTORE, workload=item.workload, attempt=attempt,
                            statuses=("ok",)) if current else None
        return found or entry

    async def _await_result(
        self, saga: str, step: str, item: PlanItem, attempt: int,
        started: float, bound_s: float, *, actor: str | None,
    ) -> dict[str, object] | None:
        while True:
            signal = self._signal(saga)
            current = await self._mine(saga)
            if current is None or current.state in S.FINISHED:
                return None
            done = S.find_step(current, step, workload=item.workload, attempt=attempt)
            if done is not None:
                return done
            remaining = bound_s - (time.monotonic() - started)
            if remaining <= 0:
                failed = S.step_entry(
                    step, "failed", at=_now(), workload=item.workload, actor=actor,
                    attempt=attempt, detail=f"no answer from {actor} within {bound_s:g} s")
                await self._record_and_publish(saga, failed)
                current = await self._record(saga)
                return (S.find_step(current, step, workload=item.workload, attempt=attempt)
                        if current else failed)
            await self._wait(signal, remaining)

    async def _shadow_step(
        self, saga: str, item: PlanItem, attempt: int
    ) -> dict[str, object] | None:
        """Ask the successor for the import and a shadow start; wait (bounded)."""
        current = await self._mine(saga)
        if current is None:
            return None
        done = S.find_step(current, S.SHADOW_START, workload=item.workload, attempt=attempt)
        if done is not None:
            return done
        started = S.step_entry(S.SHADOW_START, "started", at=_now(), workload=item.workload,
                               actor=item.successor, attempt=attempt,
                               detail=f"shadow start on {item.successor}/{item.site}")
        await self._publish_step(current, started)
        return await self._await_result(saga, S.SHADOW_START, item, attempt,
                                        time.monotonic(), self.SHADOW_TIMEOUT_S,
                                        actor=item.successor)

    # -- cut-over ----------------------------------------------------------------------

    async def _cutover(self, saga: str, item: PlanItem) -> None:
        """Move the placement to the successor by CAS (booking its site), announce it,
        then wait until the successor's agent runs it: the workload's RTO."""
        workload = item.workload
        current = await self._mine(saga)
        if current is None:
            return
        cut = S.find_step(current, S.CUTOVER, workload=workload)
        if cut is None:
            cut = await self._commit_cutover(saga, item)
            if cut is None or cut.get("status") != "ok":
                return
        await self._boundary(saga, f"cut_over:{workload}")
        if S.find_step(current, S.VERIFY, workload=workload) is None:
            await self._verify(saga, item, cut)

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
            now = _now()
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
                        held = await book(ledgers, state, workload=workload,
                                          amount=new.spec.resources, sites=arrive,
                                          generation=new.generation)
                    except NotBooked as exc:
                        detail = f"{item.successor}/{item.site} cannot be booked: {exc}"
                        if exc.full:
                            break
                        continue
                    try:
                        await self.placements.update(workload, new, entry.revision)
                        revision_ok = True
                    except CasConflict:
                        await unbook(ledgers, state, workload=workload, sites=arrive,
                                     attempt=held)
                        continue
                    leaving = [a for a in entry.value.assignments if a.member == item.source]
                    await unbook(ledgers, state, workload=workload, sites=leaving)
            if revision_ok:
                await announce(self.ctx.bus, self.placements, workload, new)
                result = S.step_entry(
                    S.CUTOVER, "ok", at=_now(), workload=workload, actor=item.successor,
                    generation=new.generation,
                    detail=f"placement generation {new.generation}: {item.source} → "
                           f"{item.successor}/{item.site}")
                await self._record_and_publish(saga, result)
                current = await self._record(saga)
                return (S.find_step(current, S.CUTOVER, workload=workload)
                        if current else result)
        failed = S.step_entry(S.CUTOVER, "failed", at=_now(), workload=workload,
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
                now = _now()
                rto = round((now - began).total_seconds(), 3)
                await self._record_and_publish(saga, S.step_entry(
                    S.VERIFY, "ok", at=now, workload=workload, actor=item.successor,
                    rto_s=rto, rto_target_s=target,
                    detail=f"runs on {item.successor} (generation {generation}), "
                           f"RTO {rto:.1f} s (target {target} s)"))
                return
            if time.monotonic() > deadline:
                await self._record_and_publish(saga, S.step_entry(
                    S.VERIFY, "failed", at=_now(), workload=workload, actor=item.successor,
                    rto_target_s=target,
                    detail=f"{item.successor} did not report it running within "
                           f"{self.VERIFY_TIMEOUT_S:g} s"))
                return
            await asyncio.sleep(0.2)  # the agent writes the record; nothing to wait on

    # -- acquisition: suspension -------------------------------------------------------

    async def _suspend(self, saga: str) -> None:
        """Ask the approvers to endorse the target's suspension; wait until the roster
        in force shows it suspended (issue 5's threshold mechanics)."""
        record = await self._mine(saga)
        if record is None or S.find_step(record, S.SUSPEND) is not None:
            return
        started = S.find_step(record, S.SUSPEND, statuses=("started",))
        if started is None:
            started = S.step_entry(S.SUSPEND, "started", at=_now(),
                                   detail=f"approvers endorse the suspension of "
                                          f"{record.member}")
            entry = started
            await self._modify(saga, lambda cur: S.with_step(cur, entry, _now()))
        await self._publish_step(record, started)
        if record.member not in self.ctx.trust.member_ids():
            pass  # suspended already
        while record.member in self.ctx.trust.member_ids():
            if _age_s(started, _now()) > self.SUSPEND_TIMEOUT_S:
                await self._record_and_publish(saga, S.step_entry(
                    S.SUSPEND, "failed", at=_now(),
                    detail=f"{record.member} not suspended within "
                           f"{self.SUSPEND_TIMEOUT_S:g} s"))
                return
            await asyncio.sleep(0.2)  # the roster arrives through the IAM service
        await self._record_and_publish(saga, S.step_entry(
            S.SUSPEND, "ok", at=_now(),
            detail=f"{record.member} suspended in roster version "
                   f"{self.ctx.trust.version}; its signatures count no more"))

    # -- the end -----------------------------------------------------------------------

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
        """Every member records a valid approval (so a member resuming the saga has
        them all); the coordinator reports the invalid ones."""
        record = await self._record(event.saga)
        if record is None or record.state in S.FINISHED:
            return
        if record.state == "planning":
            raise RetryableError("approval before the plan is visible; later")
        why = refusal(
            Approval(member=env.member, plan_hash=event.plan_hash, target=event.member),
            plan_hash=record.plan_hash, target=record.member,
            active=set(self.ctx.trust.member_ids()),
        )
        now = _now()
        if why is not None:
            if record.coordinator != self.ctx.member:
                return
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
        await self._approve(record)

    async def _approve(self, record: SagaRecord) -> None:
        me = self.ctx.member
        if me == record.member or me not in self.ctx.trust.member_ids():
            return
        why = approval_problem(record, me=me,
                               target_down=await self._down(record.member) is not None)
        if why is not None:
            log.warning("not approving a takeover", saga=record.saga, why=why)
            return
        await self.ctx.bus.publish(
            TakeoverApproved(saga=record.saga, member=record.member,
                             plan_hash=record.plan_hash),
            msg_id=f"approve-{record.saga}-{me}",
        )
        self._approved += 1

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
        if runner is None or runner.done():
            return  # the actor recorded it; the coordinator checks it and wakes up
        record = await self._record(event.saga)
        if record is None:
            return
        if env.member == record.coordinator and event.actor != env.member:
            return  # a result the coordinator recorded itself (a timeout)
        item = next((i for i in record.plan if i.workload == event.workload), None)
        expected = None if item is None else (
            item.source if event.step == S.EXPORT else item.successor)
        if env.member != event.actor or expected != env.member:
            await self._violation(
                "bad_step", f"{env.member} reported {event.step} of {event.workload} in "
                f"saga {event.saga}, but it is not that step's planned actor", env)
            return
        # The actor recorded its result itself; this keeps it when that write was lost.
        entry = S.step_entry(event.step, event.status, at=env.time, workload=event.workload,
                             actor=env.member, elapsed_ms=event.elapsed_ms,
                             detail=event.detail, msg_id=env.msg_id, attempt=event.attempt,
                             digest=event.digest)
        await self._modify(event.saga, lambda cur: S.with_result(cur, entry, _now()))

    async def _on_action_request(self, event: TakeoverStep, env: Envelope) -> None:
        assert event.workload is not None
        record = await self._record(event.saga)
        if record is None:
            raise RetryableError(f"saga {event.saga} not visible yet")
        if record.state in S.FINISHED or S.find_step(
                record, event.step, workload=event.workload, attempt=event.attempt):
            return  # answered already
        item = next((i for i in record.plan if i.workload == event.workload), None)
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
                S.EXPORT, "ok", at=_now(), workload=item.workload, actor=self.ctx.member,
                attempt=attempt, object=name, digest=digest, size=size, origin="source",
                rpo_s=0.0, rpo_target_s=spec.rpo_seconds,
                elapsed_ms=round((time.monotonic() - started) * 1000, 1),
                detail=f"{size} bytes exported by {self.ctx.member}, sha256 {digest[:16]}…")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            entry = S.step_entry(S.EXPORT, "failed", at=_now(), workload=item.workload,
                                 actor=self.ctx.member, attempt=attempt,
                                 detail=f"export failed on {self.ctx.member}: {exc}")
        await self._answer(record, entry)

    def _data_ref(self, record: SagaRecord, workload: str, attempt: int
                  ) -> dict[str, object] | None:
        for step in (S.EXPORT, S.RESTORE):
            found = S.find_step(record, step, workload=workload, attempt=attempt,
                                statuses=("ok",))
            if found is not None:
                return found
        return None

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
                # The data was recorded before the shadow start was asked for; read the
                # record again only if the copy we got is older than that.
                ref = self._data_ref(record, item.workload, attempt)
                if ref is None:
                    current = await self._record(record.saga) or record
                    ref = self._data_ref(current, item.workload, attempt)
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
            S.SHADOW_START, status, at=_now(), workload=item.workload, actor=self.ctx.member,
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
