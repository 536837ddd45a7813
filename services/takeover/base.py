"""What every part of the takeover service shares: its state, settings and helpers.

`TakeoverService` (`services.takeover.service`) is made of roles, one module each, over
this base: the coordinator (service.py), the moves of workloads (moves.py), the actors
that export, import and endorse (actors.py), and the leases and escalation (leases.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from functools import partial

from contracts.state import DownDecision, PlacementRecord, SagaProgress, SagaRecord
from contracts.takeover import PlanItem, TakeoverStep
from contracts.workload import WorkloadSpec
from mesh import layout
from mesh.bus import Consumer
from mesh.envelope import Envelope
from mesh.errors import Rejected
from mesh.observability import logger
from mesh.runtime import NodeContext
from mesh.state import Bucket, bucket
from services.agent.drivers.base import Driver
from services.agent.drivers.factory import make_driver
from services.failover.decisions import DOWN_PREFIX
from services.takeover import saga as S
from services.takeover.errors import Superseded

log = logger("services.takeover")

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


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def age_s(entry: dict[str, object] | None, now: dt.datetime) -> float:
    """Seconds since a recorded step, so bounds hold across a coordinator restart."""
    at = entry.get("at") if entry else None
    if not isinstance(at, str):
        return 0.0
    return (now - dt.datetime.fromisoformat(at)).total_seconds()


def attempt_of(entry: dict[str, object] | None) -> int:
    value = entry.get("attempt", 1) if entry else 1
    return value if isinstance(value, int) else 1


class SagaBase:
    name = "takeover"
    # Bounds of the coordinator's waits (class attributes, so tests can shorten them).
    APPROVAL_TIMEOUT_S = 20.0
    # A real takeover waits longer: its approvers' operators must consent first.
    CONSENT_TIMEOUT_S = 3600.0
    # While approvals are missing, read them from FED and propose again this often.
    ASK_AGAIN_S = 3.0
    SHADOW_TIMEOUT_S = 30.0
    EXPORT_TIMEOUT_S = 15.0
    VERIFY_TIMEOUT_S = 30.0
    SUSPEND_TIMEOUT_S = 30.0
    # How long a successor waits for a started shadow to report healthy.
    HEALTH_TIMEOUT_S = 20.0
    # A coordinator's lease on its saga; renewed every third of it while it lives. Long
    # enough that a loaded machine does not hand a live saga over, short next to the
    # minutes a takeover may take.
    LEASE_S = 15.0
    # Tries per workload when a transfer arrives corrupted (digest mismatch).
    ATTEMPTS = 3
    # Workloads moved at the same time.
    CONCURRENCY = 8

    def __init__(self) -> None:
        self._ctx: NodeContext | None = None
        self._consumer: Consumer | None = None
        self._sagas: Bucket[SagaRecord] | None = None
        # The same bucket, its `<saga>.<workload>` keys: each workload's steps.
        self._progress: Bucket[SagaProgress] | None = None
        self._placements: Bucket[PlacementRecord] | None = None
        self._driver: Driver | None = None
        self._real_driver: Driver | None = None
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._actions: dict[tuple[str, ...], asyncio.Task[None]] = {}
        self._lease_task: asyncio.Task[None] | None = None
        # One event per saga, replaced on every notification, so no waiter misses one.
        self._signals: dict[str, asyncio.Event] = {}
        # Actors' outcomes seen on the bus by this coordinator, each with its own signal:
        # a result wakes only the waiter for it, which then reads the record once (with
        # many workloads in flight, waking every waiter on every result costs a read of
        # the whole record per waiter per result).
        self._plans: dict[str, dict[str, PlanItem]] = {}
        self._arrived: dict[tuple[str, str, str, int], dict[str, object]] = {}
        self._arrival: dict[tuple[str, str, str, int], asyncio.Event] = {}
        self._cutover_lock = asyncio.Lock()
        # saga → its target member (fixed for a saga's life), so a workload's step is
        # published without reading the saga record (its plan grows with the saga).
        self._targets: dict[str, str] = {}
        # Sagas this member coordinated until another took them over (its lease renewal
        # found out): their runners step back at the next step.
        self._superseded: set[str] = set()
        # An actor's copy of each saga record (and its plan by workload), read once.
        self._actor_sagas: dict[str, SagaRecord] = {}
        self._actor_plans: dict[str, dict[str, PlanItem]] = {}
        self._completed = 0
        self._approved = 0
        # Called at each step boundary of a saga this member coordinates (tests stop a
        # node there to prove a saga resumes; None in production).
        self.boundary_hook: Hook | None = None


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

    @property
    def progress(self) -> Bucket[SagaProgress]:
        assert self._progress is not None, "service not started"
        return self._progress

    async def _record(self, saga: str) -> SagaRecord | None:
        entry = await self.sagas.get(saga)
        if entry is not None:
            self._targets[saga] = entry.value.member
        return entry.value if entry else None

    async def _steps_of(self, saga: str, workload: str) -> SagaProgress:
        """The workload's progress record (empty when none was written yet)."""
        entry = await self.progress.get(layout.progress_key(saga, workload))
        return entry.value if entry else SagaProgress(saga=saga, workload=workload)

    async def _all_progress(self, saga: str) -> list[SagaProgress]:
        return [e.value for e in await self.progress.items(layout.progress_keys(saga))]

    def _still_mine(self, saga: str) -> None:
        """Step back (Superseded) once another member took this saga over. Cheap: the
        lease renewal finds that out; what keeps a step from happening twice is its
        record (every outcome CAS-written once), not this check."""
        if saga in self._superseded:
            raise Superseded(saga)

    async def _target(self, saga: str) -> str:
        if saga not in self._targets:
            await self._record(saga)
        return self._targets.get(saga, "")

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
        await self._publish_entry(record.saga, record.member, entry)

    async def _publish_entry(self, saga: str, target: str, entry: dict[str, object]) -> None:
        step, status = str(entry["step"]), str(entry["status"])
        workload = entry.get("workload")
        actor = entry.get("actor")
        elapsed = entry.get("elapsed_ms")
        event = TakeoverStep(
            saga=saga, member=target, step=step,
            status=status,  # type: ignore[arg-type]
            workload=str(workload) if workload else None,
            actor=str(actor) if actor else None,
            elapsed_ms=float(elapsed) if isinstance(elapsed, int | float) else None,
            detail=str(entry.get("detail") or ""), attempt=attempt_of(entry),
            digest=str(entry.get("digest") or ""),
        )
        await self.ctx.bus.publish(
            event, msg_id=step_msg_id(saga, step, status, event.workload, event.attempt))

    async def _record_and_publish(self, saga: str, entry: dict[str, object]) -> None:
        """Record an outcome once, then publish it: a workload's in its own progress
        record, a saga-level one in the saga record."""
        if not entry.get("workload"):
            updated = await self._modify(saga, partial(S.with_result, entry=entry,
                                                       now=now_utc()))
            if updated is not None:
                await self._publish_step(updated, entry)
            return
        if await self._record_outcome(saga, entry) is not None:
            await self._publish_entry(saga, await self._target(saga), entry)

    async def _record_outcome(
        self, saga: str, entry: dict[str, object]
    ) -> SagaProgress | None:
        """CAS `entry` into its workload's progress record; the new record, or None when
        that outcome was recorded already."""
        written: list[SagaProgress] = []

        def apply(current: SagaProgress | None) -> SagaProgress | None:
            written.clear()
            new = S.with_outcome(current, entry, saga=saga)
            if new is not None:
                written.append(new)
            return new

        key = layout.progress_key(saga, str(entry["workload"]))
        await self.progress.modify(key, apply)
        return written[0] if written else None

    async def _outcome(
        self, saga: str, step: str, workload: str, *, attempt: int | None = None,
        statuses: tuple[str, ...] = ("ok", "failed"),
    ) -> dict[str, object] | None:
        """The recorded outcome of a workload's step, if any."""
        return S.find_step(await self._steps_of(saga, workload), step, workload=workload,
                           attempt=attempt, statuses=statuses)

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

    def _spawn_runner(self, saga: str) -> None:
        task = self._runners.get(saga)
        if task is not None and not task.done():
            return
        self._superseded.discard(saga)
        self._runners[saga] = asyncio.create_task(self._leased(saga), name=f"takeover:{saga}")

    async def _leased(self, saga: str) -> None:
        renewing = asyncio.create_task(self._renew(saga), name=f"takeover-lease:{saga}")
        try:
            await self._run(saga)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _run(self, saga: str) -> None:
        raise NotImplementedError  # the coordinator's loop (service.py)

    async def _renew(self, saga: str) -> None:
        raise NotImplementedError  # the lease (leases.py)
