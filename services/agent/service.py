"""The agent: the member's bridge to its own platform, through a driver.

- heartbeats (`health.heartbeat.v1`, HEALTH stream) every `heartbeat_interval_s`;
- capacity reports (`registry.capacity.v1`) at start, after changes (at most one per
  `coalesce_s`) and every `capacity_every_s`;
- a per-member durable consumer `agent-<member>` on `workload.placed`,
  `workload.dispatched` (a scheduler's batch) addressed to this member or to every
  agent, `workload.placements` (an unaddressed batch, from schedulers before that) and
  `workload.released`: it acts on its own replicas; it answers a placed event with a
  `workload.bound`, a batch with one `workload.bindings` for all its replicas in it;
- at start, a reconcile from `fed_placements` (what a restarted node must run again);
- backups of each stateful workload's data to `fed_data` at an interval derived from
  its `rpo_seconds` (`services.agent.backup`), so a takeover from a member that is gone
  can restore the newest one.

A placed event is acted on from the signed event alone: a record in `fed_placements` is
updated when there is one (replica "running", the placement "running" once every
replica runs), but not required (a conformance test may place without one).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import msgspec

from contracts.base import Event
from contracts.failover import SitesReported
from contracts.registry import CapacityReported, Heartbeat
from contracts.state import PlacementRecord, ReplicaState
from contracts.workload import (
    EVERY_AGENT,
    Assignment,
    BoundItem,
    PlacedItem,
    PlacementsDispatched,
    WorkloadBound,
    WorkloadFailed,
    WorkloadPlaced,
    WorkloadReleased,
    WorkloadsBound,
    WorkloadSpec,
    WorkloadsPlaced,
)
from mesh import layout
from mesh.bus import Consumer, consumer_health, passing_js_error
from mesh.envelope import Envelope, batch_msg_id
from mesh.errors import CasConflict, RetryableError
from mesh.observability import logger
from mesh.runtime import NodeContext, cancel_tasks
from mesh.state import Bucket, bucket
from services.agent import backup
from services.agent.drivers.base import Driver, DriverError, Instance
from services.agent.drivers.factory import make_driver
from services.agent.reconcile import Local, plan, site_usage, with_replica_state
from services.scheduler.records import rebuilt

log = logger("services.agent")

# Placement states with nothing to run.
IDLE_STATES = frozenset({"released", "unplaceable", "pending"})
# Heartbeat publishes awaiting their JetStream ack at once; past that, beats are skipped.
HEARTBEATS_IN_FLIGHT = 3


# Placements handled at once: a sim start is instant, the record's update and the bound
# event are round trips to JetStream that overlap.
AGENT_CONCURRENCY = 64
# A restore the store cannot answer yet is tried again this often, for at most this long.
RESTORE_RETRY_S = 0.25
RESTORE_BOUND_S = 30.0


class _Names(msgspec.Struct):
    member: str


class _SpecId(msgspec.Struct):
    id: str = ""


class _PlacedTargets(msgspec.Struct):
    assignments: list[_Names] = []
    spec: _SpecId = msgspec.field(default_factory=_SpecId)


class _Targets(msgspec.Struct):
    """What a placed or released event says about who is concerned; the rest unparsed."""

    assignments: list[_Names] = []
    member: str = ""
    workload: str = ""
    spec: _SpecId = msgspec.field(default_factory=_SpecId)
    placements: list[_PlacedTargets] = []  # a batch: `workload.dispatched/placements.v1`


_targets = msgspec.json.Decoder(_Targets)
_DISPATCHED = PlacementsDispatched.subject_pattern().removesuffix(".*.*")


def concerns(me: str, running: Mapping[str, object], subject: str, body: bytes) -> bool:
    """Whether a placed/released event may ask anything of this member's agent: it names
    the member, or it is about a workload running here (which then moves away). Others
    are skipped before their signature is checked; they would be ignored after it."""
    if subject.startswith(_DISPATCHED) and subject.endswith(f".{me}"):
        return True  # a batch addressed to this agent: all of it is for us
    targets = _targets.decode(body)
    if targets.member == me or any(a.member == me for a in targets.assignments):
        return True
    if any(item.spec.id in running or any(a.member == me for a in item.assignments)
           for item in targets.placements):
        return True
    workload = targets.workload or targets.spec.id
    return workload in running


def bound_msg_id(workload: str, generation: int, member: str) -> str:
    return f"bound-{workload}-{generation}-{member}"


def bindings_msg_id(member: str, items: Sequence[BoundItem]) -> str:
    """Deterministic for the same bindings: a publish retried after a lost ack is kept once."""
    return batch_msg_id(f"bindings-{member}", ((i.workload, i.generation) for i in items))


def released_msg_id(workload: str, generation: int, member: str) -> str:
    return f"released-{workload}-{generation}-{member}"


def agent_failed_msg_id(workload: str, generation: int, member: str) -> str:
    return f"failed-{workload}-{generation}-{member}"


class AgentService:
    name = "agent"

    def __init__(
        self,
        *,
        driver: Driver | None = None,
        capacity_every_s: float = 30.0,
        coalesce_s: float = 0.5,
    ) -> None:
        self._given_driver = driver
        self.capacity_every_s = capacity_every_s
        self.coalesce_s = coalesce_s
        self._ctx: NodeContext | None = None
        self.driver: Driver | None = None
        self._placements: Bucket[PlacementRecord] | None = None
        self._consumer: Consumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # workload → (generation bound, instance)
        self._running: dict[str, tuple[int, Instance]] = {}
        # workload → newest generation acted on; placements older than it are stale
        self._seen: dict[str, int] = {}
        # workload → generation released by a `workload.released`; not started again
        self._released: dict[str, int] = {}
        self._dirty = asyncio.Event()
        self.reconciled = asyncio.Event()
        self.heartbeats = 0
        self.capacity_reports = 0
        self.backups = 0
        # workload → what a restore before its start found (noted once it runs)
        self._restores: dict[str, str] = {}
        # workload → monotonic time its next backup is due
        self._backup_due: dict[str, float] = {}
        # Sites this member's platform reports dark (e.g. a power cut at one datacenter):
        # left out of the heartbeat's `sites_up`, so observers suspect that site alone.
        # Set by the driver's operator hook or by tests.
        self.dark_sites: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self.driver = self._given_driver or make_driver(
            ctx.settings.driver,
            ctx.data_dir / "workloads" / ctx.member,
            sites={s.id: s.capacity for s in ctx.profile.sites},
        )
        self._placements = await bucket(ctx.bus, layout.KV_PLACEMENTS, PlacementRecord)
        self._dirty.set()  # the first capacity report goes out at once
        await self._follow_site_reports(ctx)  # before the first heartbeat goes out
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat:{ctx.member}"),
            asyncio.create_task(self._capacity_loop(), name=f"capacity:{ctx.member}"),
            asyncio.create_task(self._backup_loop(), name=f"backup:{ctx.member}"),
        ]
        # New events only: what was placed before this durable existed comes from the
        # reconcile below; a restarted node resumes its durable where it left off.
        self._consumer = await ctx.bus.consume(
            self._on_event,
            # Batches addressed to this agent or to every agent, not other agents' own;
            # and those of schedulers from before batches were addressed.
            subjects=[WorkloadPlaced.subject_pattern(),
                      PlacementsDispatched.subject_pattern(target=ctx.member),
                      PlacementsDispatched.subject_pattern(target=EVERY_AGENT),
                      WorkloadsPlaced.subject_pattern(),
                      WorkloadReleased.subject_pattern()],
            durable=f"agent-{ctx.member}",
            deliver="new",
            batch=256,
            concurrency=AGENT_CONCURRENCY,  # one lock per workload keeps each in order
            relevant=partial(concerns, ctx.member, self._running),
        )
        self._tasks.append(
            asyncio.create_task(self._reconcile_task(), name=f"reconcile:{ctx.member}")
        )

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        await cancel_tasks(self._tasks)
        if self.driver is not None:
            await self.driver.close()
        self._running.clear()

    def health(self) -> dict[str, Any]:
        return {
            **consumer_health(self._consumer),
            "driver": self.driver.name if self.driver else None,
            "instances": len(self._running),
            "heartbeats": self.heartbeats,
            "backups": self.backups,
        }

    @property
    def ctx(self) -> NodeContext:
        assert self._ctx is not None, "agent not started"
        return self._ctx

    @property
    def instances(self) -> dict[str, Instance]:
        """What runs here now: workload id → instance."""
        return {wl: instance for wl, (_, instance) in self._running.items()}

    def generation_of(self, workload: str) -> int | None:
        running = self._running.get(workload)
        return running[0] if running else None

    # -- heartbeats and capacity -----------------------------------------------------------

    async def _follow_site_reports(self, ctx: NodeContext) -> None:
        """Dark sites from this member's own `member.sites.v1` (`stekker member site-down`):
        the newest one stored, then each new one live."""
        subject = SitesReported.subject(ctx.member)
        found = await ctx.bus.last_event(subject)
        if found is not None and isinstance(found[0], SitesReported):
            self._set_dark(found[0])

        async def on_report(event: Event, env: Envelope) -> None:
            if isinstance(event, SitesReported) and env.member == ctx.member:
                self._set_dark(event)

        await ctx.bus.subscribe(subject, on_report)

    def _set_dark(self, report: SitesReported) -> None:
        own = {s.id for s in self.ctx.profile.sites}
        self.dark_sites = set(report.dark) & own
        log.warning("sites reported dark", sites=sorted(self.dark_sites))

    async def _heartbeat_loop(self) -> None:
        interval = self.ctx.settings.heartbeat_interval_s
        sites = [s.id for s in self.ctx.profile.sites]
        seq = 0
        next_at = time.monotonic()
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                seq += 1
                # Observers hear the beat when it is sent, not when JetStream acks it; an
                # ack slowed by a leader election (just when a member died) must not delay
                # the next beats and make this member look silent. So the ack is awaited
                # beside the loop, a few at most.
                if len(in_flight) < HEARTBEATS_IN_FLIGHT:
                    up = [site for site in sites if site not in self.dark_sites]
                    task = asyncio.create_task(self._beat(seq, interval, up))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                next_at = max(next_at + interval, time.monotonic())
                await asyncio.sleep(next_at - time.monotonic())
        finally:
            for task in in_flight:
                task.cancel()

    async def _beat(self, seq: int, interval: float, sites: list[str]) -> None:
        try:
            await self.ctx.bus.publish(
                Heartbeat(seq=seq, interval_s=interval, sites_up=sites),
                timeout=max(interval, 1.0),
            )
            self.heartbeats += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("heartbeat not published", error=str(exc))

    def _capacity_changed(self) -> None:
        self._dirty.set()

    async def _capacity_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.capacity_every_s)
            self._dirty.clear()
            report = CapacityReported(
                sites=site_usage(
                    self.ctx.profile.sites,
                    ((i.site, i.spec.resources) for _, i in self._running.values()),
                )
            )
            try:
                await self.ctx.bus.publish(report)
                self.capacity_reports += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("capacity not reported", error=str(exc))
            # Changes during this pause set the flag once: a burst becomes one report.
            await asyncio.sleep(self.coalesce_s)

    # -- backups ---------------------------------------------------------------------------

    async def _backup_loop(self) -> None:
        while True:
            await asyncio.sleep(backup.MIN_INTERVAL_S / 2)
            now = time.monotonic()
            for workload, (generation, instance) in list(self._running.items()):
                spec = instance.spec
                if not spec.stateful:
                    continue
                # The first backup one interval after the start: the data is fresh then.
                due = self._backup_due.setdefault(
                    workload, now + backup.interval_s(spec.rpo_seconds))
                if now < due:
                    continue
                self._backup_due[workload] = now + backup.interval_s(spec.rpo_seconds)
                try:
                    await backup.back_up(self.ctx.bus, self._driver(), spec,
                                         member=self.ctx.member, generation=generation,
                                         now=dt.datetime.now(dt.UTC))
                    self.backups += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the next interval tries again
                    log.warning("backup failed", workload=workload, error=str(exc))
            for workload in set(self._backup_due) - set(self._running):
                del self._backup_due[workload]

    # -- placements -----------------------------------------------------------------------

    async def _on_event(self, event: Event, env: Envelope) -> None:
        if isinstance(event, WorkloadPlaced):
            await self.apply(event.spec, event.generation, event.assignments,
                             from_event=True)
        elif isinstance(event, (PlacementsDispatched, WorkloadsPlaced)):
            await self.apply_many(event.placements)
        elif isinstance(event, WorkloadReleased) and event.member == self.ctx.member:
            me = self.ctx.member
            stopped = await self.release(event.workload, event.generation, cause=event.cause)
            # Confirm with our own `workload.released`. Our confirmations come back to us
            # too, but then nothing runs any more and nothing is published: no loop.
            if stopped is not None or env.member != me:
                generation = stopped or event.generation
                await self.ctx.bus.publish(
                    WorkloadReleased(workload=event.workload, member=me,
                                     generation=generation, cause=event.cause or "released"),
                    msg_id=released_msg_id(event.workload, generation, me),
                )

    async def _reconcile_task(self) -> None:
        # Until it succeeds: a node restarting while the cluster elects leaders must
        # still start what is assigned to it.
        attempt = 0
        while True:
            try:
                await self.reconcile()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                delay = min(0.2 * 2**attempt, 5.0)
                log.warning("reconcile failed; trying again", error=str(exc), delay=delay)
                await asyncio.sleep(delay)
        self.reconciled.set()

    async def reconcile(self) -> int:
        """Start what `fed_placements` assigns here and does not run; returns how many."""
        assert self._placements is not None
        started = 0
        errors: list[str] = []
        for entry in await self._placements.items():
            record = entry.value
            if record.state in IDLE_STATES:
                continue
            if not any(a.member == self.ctx.member for a in record.assignments):
                continue
            if entry.key in self._running:
                continue
            try:
                await self.apply(record.spec, record.generation, record.assignments)
                started += int(entry.key in self._running)
            except Exception as exc:
                log.error("reconcile of one workload failed", workload=entry.key,
                          error=str(exc))
                errors.append(entry.key)
        log.info("reconciled", member=self.ctx.member, started=started)
        if errors:
            # What did start stays; the next attempt confirms it and retries the rest.
            raise RetryableError(f"reconcile incomplete: {', '.join(errors)}")
        return started

    async def apply(
        self, spec: WorkloadSpec, generation: int, assignments: Sequence[Assignment],
        *, from_event: bool = False,
    ) -> None:
        """Bring what runs here in line with a placement of `spec` at `generation`
        (`from_event`: as its signed placed event says, not as read back from KV), and
        say so with a `workload.bound.v1` when it runs here."""
        me = self.ctx.member
        async with self._locks[spec.id]:
            bound = await self._bind(spec, generation, assignments, from_event=from_event)
            if bound is not None:
                await self.ctx.bus.publish(
                    WorkloadBound(workload=bound.workload, site=bound.site,
                                  generation=bound.generation, driver=self._driver().name,
                                  detail=bound.detail),
                    msg_id=bound_msg_id(spec.id, generation, me),
                )

    async def apply_many(self, items: Sequence[PlacedItem]) -> None:
        """`apply` for every placement of a `workload.dispatched.v1` (or of an older
        `workload.placements.v1`), as its signed event says, a few at once (one lock per
        workload keeps each in order); what runs here is said in one
        `workload.bindings.v1`. A failed item fails the whole message
        (redelivered: what runs already is confirmed again, idempotently), but only after
        the others' bindings are out."""
        gate = asyncio.Semaphore(AGENT_CONCURRENCY)

        async def one(item: PlacedItem) -> BoundItem | None:
            async with gate, self._locks[item.spec.id]:
                return await self._bind(item.spec, item.generation, item.assignments,
                                        from_event=True, quiet=True, record=item)

        outcomes = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
        bound = [o for o in outcomes if isinstance(o, BoundItem)]
        if bound:
            await self.ctx.bus.publish(
                WorkloadsBound(driver=self._driver().name, bindings=bound),
                msg_id=bindings_msg_id(self.ctx.member, bound),
            )
            log.info("bound a batch", replicas=len(bound), placements=len(items))
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _bind(
        self, spec: WorkloadSpec, generation: int, assignments: Sequence[Assignment],
        *, from_event: bool, quiet: bool = False, record: PlacedItem | None = None,
    ) -> BoundItem | None:
        """The work of `apply` under the workload's lock: start, restart, rebind, confirm
        or stop; the replica's note in `fed_placements`. Returns what to say bound, or
        None when nothing runs here for this placement. `quiet`: no log line per workload
        (a batch logs once). `record`: a batch's item, which may say what the record is
        (`services.scheduler.records.rebuilt`), so the note need not read it first."""
        me = self.ctx.member
        if generation <= self._released.get(spec.id, 0):
            log.info("ignoring a released placement", workload=spec.id,
                     generation=generation)
            return None
        running = self._running.get(spec.id)
        local = Local(running[0], running[1].site) if running else None
        step = plan(me=me, generation=generation, assignments=assignments, local=local,
                    newest_seen=self._seen.get(spec.id, 0))
        if step.action == "ignore":
            if local is not None or step.why != "not assigned here":
                log.debug("placement ignored", workload=spec.id, why=step.why)
            return None
        self._seen[spec.id] = max(self._seen.get(spec.id, 0), generation)
        if step.action == "stop":
            await self._stop_local(spec.id)
            await self.ctx.bus.publish(
                WorkloadReleased(workload=spec.id, member=me, generation=generation,
                                 cause="moved"),
                msg_id=released_msg_id(spec.id, generation, me),
            )
            log.info("released a replica that moved away", workload=spec.id,
                     generation=generation)
            return None
        assert step.site is not None
        if step.action == "restart":
            await self._stop_local(spec.id)
        if step.action in ("start", "restart"):
            instance = await self._start(spec, generation, step.site)
            if instance is None:
                return None
        else:  # rebind / confirm: it runs already, on this site
            assert running is not None
            instance = running[1]
        self._running[spec.id] = (generation, instance)
        restored = self._restores.pop(spec.id, "")
        await self._note(spec.id, generation, "running", published=from_event,
                         detail=restored,
                         known=rebuilt(record) if step.action == "start" and record else None)
        if step.action != "confirm" and not quiet:
            log.info("bound", workload=spec.id, generation=generation, site=step.site,
                     action=step.action)
        return BoundItem(workload=spec.id, site=step.site, generation=generation,
                         detail=", ".join(p for p in (_detail(instance), restored) if p))

    async def _start(self, spec: WorkloadSpec, generation: int, site: str) -> Instance | None:
        """Start via the driver; a failure is reported as `workload.failed`, not raised."""
        if site not in {s.id for s in self.ctx.profile.sites}:
            await self._fail(spec.id, generation, f"site {site!r} is not a site of "
                             f"{self.ctx.member}")
            return None
        if spec.stateful and generation > 1:
            await self._restore(spec)
        try:
            instance = await self._driver().start(spec.id, spec, site)
        except DriverError as exc:
            await self._fail(spec.id, generation, f"{self.ctx.member}/{site}: {exc}")
            return None
        except Exception as exc:  # a driver bug must not take the agent down
            log.exception("driver failed", workload=spec.id)
            await self._fail(spec.id, generation,
                             f"{self.ctx.member}/{site}: driver error: {exc}")
            return None
        self._capacity_changed()
        return instance

    async def _restore(self, spec: WorkloadSpec) -> None:
        """A stateful workload moved here (failover, rebalance) without its data: bring
        the newest good backup in before it starts. A takeover imports the source's own
        export before the cut-over, so the data is here already and nothing is restored.
        """
        deadline = time.monotonic() + RESTORE_BOUND_S
        while True:
            try:
                if await self._driver().has_data(spec.id, spec):
                    return
                restored = await backup.restore_newest(self.ctx.bus, self._driver(), spec)
                break
            except Exception as exc:
                # The store not answering yet (JetStream electing the leaders a dead
                # server held) passes: starting now would start without data that
                # exists. Past the bound, or on anything else, start anyway: refusing
                # would keep it down for good.
                if passing_js_error(exc) and time.monotonic() < deadline:
                    await asyncio.sleep(RESTORE_RETRY_S)
                    continue
                restored = backup.Restored(None, [f"restore failed: {exc}"])
                break
        detail = restored.detail(dt.datetime.now(dt.UTC), spec.rpo_seconds)
        self._restores[spec.id] = detail
        if restored.backup is None:
            log.warning("stateful workload starts without data", workload=spec.id,
                        detail=detail)
        else:
            log.info("restored a backup", workload=spec.id, detail=detail)

    async def _fail(self, workload: str, generation: int, reason: str) -> None:
        log.warning("cannot run workload", workload=workload, reason=reason)
        await self._note(workload, generation, "failed", detail=reason)
        await self.ctx.bus.publish(
            WorkloadFailed(workload=workload, reason=reason),
            msg_id=agent_failed_msg_id(workload, generation, self.ctx.member),
        )

    async def release(
        self, workload: str, generation: int = 0, *, cause: str = ""
    ) -> int | None:
        """Stop this member's replica of `workload` (a `workload.released` naming us);
        returns the generation stopped, or None when nothing ran.

        `generation` 0 means whatever runs; an older generation than the running one is
        stale and ignored."""
        async with self._locks[workload]:
            running = self._running.get(workload)
            if running is not None and generation and generation < running[0]:
                log.info("ignoring a stale release", workload=workload, generation=generation)
                return None
            stopped_generation = running[0] if running else generation
            self._released[workload] = max(
                self._released.get(workload, 0), generation or stopped_generation
            )
            if running is None:
                return None
            await self._stop_local(workload)
            await self._note(workload, stopped_generation, "released", detail=cause)
            log.info("released", workload=workload, generation=stopped_generation, cause=cause)
            return stopped_generation

    async def _stop_local(self, workload: str) -> None:
        running = self._running.pop(workload, None)
        if running is None:
            return
        try:
            await self._driver().stop(running[1])
        except Exception as exc:
            log.error("driver could not stop", workload=workload, error=str(exc))
        self._capacity_changed()

    async def _note(
        self, workload: str, generation: int, state: ReplicaState, detail: str = "",
        *, published: bool = False, known: tuple[PlacementRecord, int] | None = None,
    ) -> None:
        """Record this replica's state in `fed_placements/<workload>`, if it exists.
        `known`: the record and its revision as the scheduler created it; written at that
        revision without a read, unless someone wrote it since (then read, as always)."""
        assert self._placements is not None
        now = dt.datetime.now(dt.UTC)
        member = self.ctx.member

        def change(record: PlacementRecord | None) -> PlacementRecord | None:
            return with_replica_state(record, member=member, generation=generation,
                                      state=state, now=now, detail=detail,
                                      published=published)

        if known is not None:
            new = change(known[0])
            if new is None:
                return
            with contextlib.suppress(CasConflict):
                await self._placements.update(workload, new, known[1])
                return
        await self._placements.modify(workload, change)

    def _driver(self) -> Driver:
        assert self.driver is not None, "agent not started"
        return self.driver


def _detail(instance: Instance) -> str:
    parts = []
    if instance.pid is not None:
        parts.append(f"pid {instance.pid}")
    if instance.port is not None:
        parts.append(f"http://127.0.0.1:{instance.port}/")
    if instance.data_dir is not None:
        parts.append(f"data {instance.data_dir}")
    return ", ".join(parts)
