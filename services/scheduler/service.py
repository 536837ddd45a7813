"""The scheduler's async shell: read a snapshot, `decide`, commit by CAS, publish.

Two durable consumers, both shared by every member's scheduler (queue semantics: one
scheduler in the federation handles each message, another takes over if it dies):

- `scheduler` on `workload.submitted`: places a new workload once. The KV key
  `fed_placements/<id>` is created by compare-and-set, so even two schedulers that both
  got the submission place it once; only the CAS winner publishes.
- `scheduler-failover` on `member.down`: re-places every placement with a replica on the
  down member, critical first, rate-limited, keeping the surviving replicas; and on
  `member.recovered`: gives placements short of replicas (degraded, unplaceable) the
  missing ones where they now fit, without moving any replica that runs.

Publishing happens after the CAS, so a crash in between leaves a record whose
`published_generation` lags its `generation`; the redelivered message (or the same
submission sent again) publishes the missing event. Msg ids are deterministic
(`placed-<id>-<gen>`, `failed-<id>-<gen>`), so JetStream keeps one of each. A batch of
new placements is announced together (`announce_many`: `workload.dispatched.v1`, one
signature for many; its msg id derived from the items); the one-by-one repair of a
redelivery announces with `workload.placed.v1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from contracts.base import Event
from contracts.failover import MemberDown, MemberRecovered
from contracts.state import DownDecision, PlacementRecord, SiteLedger
from contracts.workload import (
    Assignment,
    PlacedItem,
    PlacementsDispatched,
    WorkloadFailed,
    WorkloadPlaced,
    WorkloadSpec,
    WorkloadSubmitted,
)
from mesh import layout
from mesh.bus import Consumer, passing_js_error
from mesh.envelope import Envelope, batch_msg_id
from mesh.errors import CasConflict, Rejected, RetryableError
from mesh.observability import logger
from mesh.runtime import NodeContext
from mesh.state import Bucket, Entry, bucket
from services.failover.decisions import down_key, target_key
from services.iam.enforcement import refused_by_token
from services.iam.tokens import SUBMIT_ROLES
from services.scheduler.batching import ITEM_OVER_RECORD_BYTES, addressed_chunks
from services.scheduler.booking import (
    Booking,
    NotBooked,
    added_sites,
    book,
    book_many,
    dropped_sites,
    stale_holds,
    unbook,
    unbook_many,
)
from services.scheduler.feasibility import FeasibilityCache
from services.scheduler.janitor import SWEEP_EVERY_S, sweep
from services.scheduler.live import LiveState, live_state
from services.scheduler.pipeline import decide
from services.scheduler.reader import FederationState, read_state
from services.scheduler.records import digest_of, encoded, first_record, record_digest
from services.scheduler.replace import (
    TokenBucket,
    failover_order,
    healed_record,
    hit_by,
    moved_by_a_rival,
    quorum_problem,
    replaced_record,
    short_of_replicas,
    split_share,
    survivors,
    sweep_order,
)
from services.scheduler.snapshot import Placed, Snapshot, booked

log = logger("services.scheduler")

SUBMIT_DURABLE = "scheduler"
FAILOVER_DURABLE = "scheduler-failover"
CAS_ATTEMPTS = 20
# Submissions decided together against one snapshot and committed in one group write per
# site; JetStream delivers up to this many per fetch.
SUBMIT_BATCH = 256
# A down member's placements re-placed per chunk: decided together, booked together.
FAILOVER_BATCH = 128
# The prompt (live) copy of a declaration retries this often while JetStream elects
# leaders, for at most this long; then the durable copy's redeliveries take over.
PROMPT_RETRY_S = 0.1
PROMPT_FAILOVER_BOUND_S = 60.0
# How long the durable copy of a declaration waits for a prompt copy still running.
PROMPT_WAIT_S = 20.0
OWN_ATTEMPTS_KEPT = 4096


@dataclass(frozen=True)
class Submission:
    spec: WorkloadSpec
    submitted_by: str
    submitted_at: dt.datetime | None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("live failover failed; the durable copy will retry",
                    error=str(task.exception()))


def placed_msg_id(workload: str, generation: int) -> str:
    return f"placed-{workload}-{generation}"


def failed_msg_id(workload: str, generation: int) -> str:
    return f"failed-{workload}-{generation}"


async def announce(
    bus: Any, placements: Bucket[PlacementRecord], key: str, record: PlacementRecord,
    *, revision: int | None = None, note: bool = True,
) -> None:
    """Publish the event of `record`'s generation, then note that it is published.

    Shared by every writer of `fed_placements` (the scheduler, `workload rebalance`), so
    each commit is announced the same way: after the CAS, with a deterministic msg id.
    `revision`: the record's revision as just written; the note then needs no read unless
    someone (an agent) wrote in between. `note=False` leaves the note of a placed record
    to the agents that act on the event (they hold the proof it was published); until
    then a repeated submission announces it again, which JetStream and agents absorb.
    """
    generation = record.generation
    if record.state == "unplaceable" or not record.assignments:
        summary = record.decision.summary if record.decision else "no member may host it"
        await bus.publish(
            WorkloadFailed(workload=key, reason=summary, decision=record.decision),
            msg_id=failed_msg_id(key, generation),
        )
    else:
        assert record.decision is not None
        await bus.publish(
            WorkloadPlaced(spec=record.spec, assignments=list(record.assignments),
                           generation=generation, decision=record.decision),
            msg_id=placed_msg_id(key, generation),
        )
        if not note:
            return

    def mark(current: PlacementRecord | None) -> PlacementRecord | None:
        if current is None or current.generation != generation:
            return None  # gone, or a newer generation publishes for itself
        if current.published_generation >= generation:
            return None
        current.published_generation = generation
        return current

    if revision is not None:
        marked = mark(msgspec.structs.replace(record))
        if marked is not None:
            with contextlib.suppress(CasConflict):
                await placements.update(key, marked, revision)
                return
    await placements.modify(key, mark)


def placements_msg_id(items: Sequence[PlacedItem]) -> str:
    return batch_msg_id("placements", ((i.spec.id, i.generation) for i in items))


async def announce_many(
    bus: Any, placements: Bucket[PlacementRecord],
    committed: Sequence[tuple[str, PlacementRecord, int]],
    *, digests: Mapping[str, str] | None = None, sizes: Mapping[str, int] | None = None,
) -> list[Exception | None]:
    """`announce` for many records just committed, (key, record, revision) each: the
    placed ones in as few `workload.dispatched.v1` as their size allows (their notes
    left to the agents, as `announce(note=False)`), a lone one as `workload.placed.v1`;
    the unplaceable ones each as `workload.failed.v1`, noted. Returns per record None
    (announced) or the error its announcement failed with (a redelivered submission
    announces a committed record again, one by one: `place`).

    For every path that commits many placements at once (new ones; failover and
    recovery moves could use it too). `digests`: the sha256 of each record's JSON as
    written, when the caller has it (else computed here); `sizes`: the length of that
    JSON (so the items need not be encoded to be measured for their batches)."""
    results: list[Exception | None] = [None] * len(committed)
    items: list[PlacedItem] = []
    position: dict[str, int] = {}
    singles: list[int] = []
    for i, (key, record, revision) in enumerate(committed):
        if record.state == "unplaceable" or not record.assignments or record.decision is None:
            singles.append(i)
            continue
        position[key] = i
        items.append(PlacedItem(
            spec=record.spec, assignments=list(record.assignments),
            generation=record.generation, decision=record.decision,
            submitted_by=record.submitted_by, submitted_at=record.submitted_at,
            record_revision=revision,
            record_sha256=(digests or {}).get(key) or record_digest(record)))

    async def one(index: int) -> None:
        key, record, revision = committed[index]
        await announce(bus, placements, key, record, revision=revision,
                       note=record.state == "unplaceable" or not record.assignments)

    async def chunk(to: str, part: list[PlacedItem]) -> None:
        if len(part) == 1:
            await one(position[part[0].spec.id])
        else:
            await bus.publish(PlacementsDispatched(placements=part, to=to),
                              msg_id=placements_msg_id(part))

    known = sizes or {}
    addressed = addressed_chunks(items, sizes=[
        known[i.spec.id] + ITEM_OVER_RECORD_BYTES if i.spec.id in known else None
        for i in items])
    parts = [part for _, part in addressed]
    outcomes = await asyncio.gather(*(chunk(to, p) for to, p in addressed),
                                    *(one(i) for i in singles), return_exceptions=True)
    for part, outcome in zip(parts, outcomes, strict=False):
        if isinstance(outcome, Exception):
            for item in part:
                results[position[item.spec.id]] = outcome
    for i, outcome in zip(singles, outcomes[len(parts):], strict=True):
        if isinstance(outcome, Exception):
            results[i] = outcome
    return results


class SchedulerService:
    name = "scheduler"

    def __init__(
        self,
        *,
        durable: str = SUBMIT_DURABLE,
        failover_durable: str = FAILOVER_DURABLE,
        replace_rate_per_s: float | None = None,
        sweep_every_s: float = SWEEP_EVERY_S,
    ) -> None:
        self.durable = durable
        self.failover_durable = failover_durable
        self._replace_rate_per_s = replace_rate_per_s
        self._limiter = TokenBucket(rate=replace_rate_per_s or 500.0)
        self._ctx: NodeContext | None = None
        self._placements: Bucket[PlacementRecord] | None = None
        self._ledgers: Bucket[SiteLedger] | None = None
        self.submissions: Consumer | None = None
        self.failovers: Consumer | None = None
        self.placed = 0
        self.replaced = 0
        self._live_failovers: dict[str, asyncio.Task[None]] = {}
        # This scheduler's recent failover booking attempts (an ordered set): holds they
        # left behind are its own, not a rival's move in flight (replace.moved_by_a_rival).
        self._own_attempts: dict[str, None] = {}
        self._live: LiveState | None = None
        self._cache = FeasibilityCache()
        # (member, site) → newest epoch heard recovered ("" site: the whole member)
        self._recovered: dict[tuple[str, str], int] = {}
        self.sweep_every_s = sweep_every_s
        self._sweeper: asyncio.Task[None] | None = None
        self.orphans_freed = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        # failover hook: the disruption budget is a node setting (`--replace-rate`)
        self._limiter = TokenBucket(
            rate=self._replace_rate_per_s or ctx.settings.replace_rate_per_s)
        self._placements = await bucket(ctx.bus, layout.KV_PLACEMENTS, PlacementRecord)
        self._ledgers = await bucket(ctx.bus, layout.KV_RESERVATIONS, SiteLedger)
        self._live = await live_state(ctx.bus)
        self.submissions = await ctx.bus.consume(
            self._on_submitted, subjects=[WorkloadSubmitted.subject_pattern()],
            durable=self.durable, batch=SUBMIT_BATCH,
            batch_handler=self._on_submitted_batch,
        )
        self.failovers = await ctx.bus.consume(
            self._on_member, subjects=[MemberDown.subject_pattern(),
                                       MemberRecovered.subject_pattern()],
            durable=self.failover_durable,
        )
        # The durable consumer guarantees every declaration is acted on, but when the dead
        # member's server led that consumer, its new leader is elected first (seconds).
        # The live copy lets every scheduler start at once; CAS keeps each move single.
        await ctx.bus.subscribe(MemberDown.subject_pattern(), self._on_down_live)
        # Every scheduler hears recoveries too, so none acts on a declaration they overtook.
        await ctx.bus.subscribe(MemberRecovered.subject_pattern(), self._on_recovered_live)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="scheduler:janitor")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every_s)
            try:
                self.orphans_freed += await sweep(self.ctx.bus)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next sweep tries again
                log.warning("orphan sweep failed", error=str(exc))

    async def stop(self) -> None:
        for task in self._live_failovers.values():
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for consumer in (self.submissions, self.failovers):
            if consumer is not None:
                await consumer.stop()
        if self._live is not None:
            await self._live.stop()

    def health(self) -> dict[str, Any]:
        c = self.submissions
        return {
            "state": "running" if c else "starting",
            "handled": c.handled if c else 0,
            "placed": self.placed,
            "replaced": self.replaced,
            "orphans_freed": self.orphans_freed,
        }

    @property
    def ctx(self) -> NodeContext:
        assert self._ctx is not None, "scheduler not started"
        return self._ctx

    @property
    def live(self) -> LiveState:
        assert self._live is not None, "scheduler not started"
        return self._live

    @property
    def placements(self) -> Bucket[PlacementRecord]:
        assert self._placements is not None, "scheduler not started"
        return self._placements

    @property
    def ledgers(self) -> Bucket[SiteLedger]:
        assert self._ledgers is not None, "scheduler not started"
        return self._ledgers

    # -- submissions ----------------------------------------------------------------------

    async def _on_submitted(self, event: Event, env: Envelope) -> None:
        if isinstance(event, WorkloadSubmitted):
            if await refused_by_token(self.ctx, env, SUBMIT_ROLES):
                return
            await self.place(event.spec, submitted_by=env.member, submitted_at=env.time)

    async def _on_submitted_batch(
        self, items: list[tuple[Event, Envelope]]
    ) -> list[Exception | None]:
        outcomes: list[Exception | None] = [None] * len(items)
        batch: list[tuple[int, Submission]] = []
        for i, (event, env) in enumerate(items):
            if not isinstance(event, WorkloadSubmitted):
                continue
            try:
                if await refused_by_token(self.ctx, env, SUBMIT_ROLES):
                    continue
            except Exception as exc:
                outcomes[i] = exc
                continue
            batch.append((i, Submission(event.spec, env.member, env.time)))
        results = await self.place_many([sub for _, sub in batch])
        for (i, _), result in zip(batch, results, strict=True):
            outcomes[i] = result
        return outcomes

    async def place_many(self, items: Sequence[Submission]) -> list[Exception | None]:
        """Place a batch of new workloads: decide each on the live view, the batch's
        earlier choices counted; book all sites in one write each; create every placement
        by CAS; announce. Returns per item None (done) or the error to retry it with.

        Whatever is not plainly new (a second submission of the same id, a workload
        released and submitted again, a placement created by a rival) goes through
        `place`, one by one, which knows those cases."""
        results: list[Exception | None] = [None] * len(items)
        first: dict[str, int] = {}
        single: list[int] = []
        for i, item in enumerate(items):
            if item.spec.id in first:
                single.append(i)
            else:
                first[item.spec.id] = i
        todo = list(first.values())
        for attempt in range(CAS_ATTEMPTS):
            if not todo:
                break
            todo, lost = await self._place_round(items, todo, results)
            single.extend(lost)
            if todo:
                await asyncio.sleep(0.005 * (attempt + 1))
        for i in todo:
            results[i] = RetryableError(f"{items[i].spec.id}: capacity kept changing; "
                                        "will decide again")
        for i in sorted(single):
            try:
                await self.place(items[i].spec, submitted_by=items[i].submitted_by,
                                 submitted_at=items[i].submitted_at)
            except Exception as exc:
                results[i] = exc
        return results

    async def _place_round(
        self, items: Sequence[Submission], todo: list[int], results: list[Exception | None],
    ) -> tuple[list[int], list[int]]:
        """One round of `place_many`; returns (to decide again, to place one by one)."""
        now = dt.datetime.now(dt.UTC)
        snapshot = self.live.snapshot(now.date())
        if not snapshot.members:
            # No profile announced yet: deciding now would refuse them for good.
            for i in todo:
                results[i] = RetryableError("no member profiles known yet")
            return [], []
        # A workload some ledger holds already is being committed by a rival right now
        # (or was, before a crash): `place` decides it with its own holds left out.
        ids = {items[i].spec.id for i in todo}
        held: set[str] = set()
        for entry in self.live.state.ledgers.values():
            held |= ids & entry.value.holds.keys()
        lost = [i for i in todo if items[i].spec.id in held]
        todo = [i for i in todo if items[i].spec.id not in held]
        placed = dict(snapshot.placed)
        records: dict[int, PlacementRecord] = {}
        for i in todo:
            spec = items[i].spec
            decision = decide(spec, snapshot, decided_by=self.ctx.member, now=now,
                              cache=self._cache)
            record = first_record(spec, decision, generation=1,
                                   submitted_by=items[i].submitted_by,
                                   submitted_at=items[i].submitted_at, now=now, history=[])
            records[i] = record
            if record.assignments:
                # The next decisions of this batch see this one's capacity and replicas.
                snapshot = booked(snapshot, spec.resources, record.assignments)
                placed[spec.id] = Placed(tenant=spec.tenant,
                                         members=frozenset(a.member for a in record.assignments))
                object.__setattr__(snapshot, "placed", placed)
        attempt, refused = await book_many(self.ledgers, self.live.state, [
            Booking(items[i].spec.id, items[i].spec.resources, r.assignments, r.generation,
                    tenant=items[i].spec.tenant)
            for i, r in records.items() if r.assignments
        ])
        again = [i for i in todo if items[i].spec.id in refused]
        go = [i for i in todo if items[i].spec.id not in refused]
        bodies = {i: encoded(records[i]) for i in go}  # once: written, then digested
        written = await asyncio.gather(
            *(self.placements.create(items[i].spec.id, records[i], encoded=bodies[i])
              for i in go),
            return_exceptions=True)
        free: dict[tuple[str, str], list[str]] = defaultdict(list)
        created: list[tuple[int, int]] = []
        for i, outcome in zip(go, written, strict=True):
            if isinstance(outcome, CasConflict):
                lost.append(i)  # it exists: a rival's, or a released one submitted again
                for a in records[i].assignments:
                    free[(a.member, a.site)].append(items[i].spec.id)
            elif isinstance(outcome, Exception):
                # The write may or may not have happened; the redelivery finds out, and
                # a hold it left behind is an orphan the janitor frees.
                results[i] = outcome
            elif isinstance(outcome, int):
                created.append((i, outcome))
        if free:
            await unbook_many(self.ledgers, self.live.state, dict(free), attempt=attempt)
        announced = await announce_many(
            self.ctx.bus, self.placements,
            [(items[i].spec.id, records[i], revision) for i, revision in created],
            digests={items[i].spec.id: digest_of(bodies[i]) for i, _ in created},
            sizes={items[i].spec.id: len(bodies[i]) for i, _ in created})
        for (i, _), failure in zip(created, announced, strict=True):
            if isinstance(failure, Exception):
                results[i] = failure  # redelivered: the committed record is announced then
        self.placed += len(created)
        if created:
            log.info("placed a batch", placed=len(created), again=len(again),
                     one_by_one=len(lost))
        return again, lost

    async def place(
        self, spec: WorkloadSpec, *, submitted_by: str, submitted_at: dt.datetime | None,
    ) -> None:
        """Place a submitted workload once; publish the result if this call committed it.

        Each attempt decides on a fresh view, books the chosen sites in the reservation
        ledger, and only then creates the placement by CAS (see `booking`)."""
        for attempt in range(CAS_ATTEMPTS):
            existing = await self.placements.get(spec.id)
            if existing is not None and existing.value.state != "released":
                record = existing.value
                if record.published_generation < record.generation:
                    # Committed, but the publish never happened (a crash in between).
                    log.info("publishing a committed placement", workload=spec.id,
                             generation=record.generation)
                    await self._announce(spec.id, record)
                else:
                    log.info("already placed; ignoring the repeated submission",
                             workload=spec.id)
                return
            now = dt.datetime.now(dt.UTC)
            state = await read_state(self.ctx.bus)
            snapshot = state.snapshot(now.date(), deciding=spec.id)
            if not snapshot.members:
                # No profile announced yet: deciding now would refuse it for good.
                raise RetryableError("no member profiles known yet")
            decision = decide(spec, snapshot, decided_by=self.ctx.member, now=now)
            previous = existing.value if existing else None
            record = first_record(
                spec, decision,
                generation=previous.generation + 1 if previous else 1,
                submitted_by=submitted_by, submitted_at=submitted_at, now=now,
                history=previous.history if previous else [],
            )
            try:
                held = await book(self.ledgers, state, workload=spec.id,
                                  amount=spec.resources, sites=record.assignments,
                                  generation=record.generation, tenant=spec.tenant)
            except NotBooked as exc:
                log.info("capacity changed meanwhile; deciding again", workload=spec.id,
                         reason=str(exc))
                await asyncio.sleep(0.005 * (attempt + 1))
                continue
            try:
                if existing is None:
                    await self.placements.create(spec.id, record)
                else:
                    await self.placements.update(spec.id, record, existing.revision)
            except CasConflict:
                await unbook(self.ledgers, state, workload=spec.id,
                             sites=record.assignments, attempt=held)
                log.info("another scheduler placed it first", workload=spec.id)
                return
            if previous is not None:  # a released workload submitted again
                await unbook(self.ledgers, state, workload=spec.id,
                             sites=stale_holds(state, spec.id, record.assignments))
            self.placed += 1
            log.info("placed", workload=spec.id, state=record.state, summary=decision.summary)
            await self._announce(spec.id, record)
            return
        raise RetryableError(f"{spec.id}: capacity kept changing; will decide again")

    async def _announce(
        self, key: str, record: PlacementRecord, *, revision: int | None = None,
        note: bool = True,
    ) -> None:
        await announce(self.ctx.bus, self.placements, key, record, revision=revision,
                       note=note)

    # -- failover -------------------------------------------------------------------------

    async def _on_member(self, event: Event, env: Envelope) -> None:
        if isinstance(event, MemberDown):
            # The durable copy: let the prompt one (live view) finish first, so the scan
            # reads what it did instead of re-deciding every move only to lose each CAS.
            target = target_key(event.member, event.site)
            prompt = self._live_failovers.get(target)
            if prompt is not None and not prompt.done():
                await asyncio.wait([prompt], timeout=PROMPT_WAIT_S)
            await self._on_down(event, env)
        elif isinstance(event, MemberRecovered):
            self._note_recovered(event)
            await self.heal(event.member)

    async def _on_recovered_live(self, event: Event, env: Envelope) -> None:
        if isinstance(event, MemberRecovered):
            self._note_recovered(event)

    def _note_recovered(self, event: MemberRecovered) -> None:
        target = (event.member, event.site)
        self._recovered[target] = max(self._recovered.get(target, 0), event.epoch)

    def _stale(self, member: str, site: str, epoch: int) -> bool:
        """Whether the declaration of `member` (`site`) at `epoch` was overtaken by its
        recovery: heard here, or as the decision record says. A declaration redelivered
        after the recovery (a nak under load puts it behind) must not move the healed
        workloads away again, and a failover still running stops."""
        if epoch and self._recovered.get((member, site), 0) >= epoch:
            return True
        decision = self.live.decision(down_key(member, site))
        return (decision is not None and bool(epoch) and decision.epoch >= epoch
                and decision.state == "recovered")

    async def _on_down_live(self, event: Event, env: Envelope) -> None:
        if not isinstance(event, MemberDown):
            return
        target = target_key(event.member, event.site)
        running = self._live_failovers.get(target)
        if running is not None and not running.done():
            return  # already under way here; the durable copy finishes whatever is left
        task = asyncio.create_task(self._on_down_promptly(event, env),
                                   name=f"failover:{target}")
        self._live_failovers[target] = task
        task.add_done_callback(_log_failure)

    async def _on_down_promptly(self, event: MemberDown, env: Envelope) -> None:
        """The live copy of a declaration: fail over from the live view, and while
        JetStream elects new leaders for the groups the dead member's server led (4 to 9 s,
        mesh/leaders.py), try again every moment rather than wait for the durable copy's
        redelivery. Every attempt is a no-op for what an earlier one moved."""
        deadline = time.monotonic() + PROMPT_FAILOVER_BOUND_S
        while True:
            try:
                await self._on_down(event, env, thorough=False)
                return
            except Exception as exc:
                if not (passing_js_error(exc) or isinstance(exc, RetryableError)) \
                        or time.monotonic() >= deadline:
                    raise
                log.info("failover waits for JetStream", member=event.member,
                         error=str(exc) or type(exc).__name__)
                await asyncio.sleep(PROMPT_RETRY_S)

    async def _on_down(self, event: MemberDown, env: Envelope, *, thorough: bool = True,
                       ) -> None:
        # failover hook: the one quorum rule of services.failover.quorum (min. 2 observers)
        problem = quorum_problem(member=event.member, trust=self.ctx.trust,
                                 observers=[e.observer for e in event.evidence])
        if problem is not None:
            await self.ctx.bus.report_violation(
                Rejected("quorum_missing", problem), env.subject, env.headers
            )
            return
        # failover hook: the live view learns of the declaration now, not when its
        # watcher (perhaps on the dead server) catches up: no new placement goes there.
        await self.live.refresh_decision(down_key(event.member, event.site))
        if self._stale(event.member, event.site, event.epoch):
            log.info("declaration overtaken by the member's recovery; nothing to move",
                     member=event.member, site=event.site or None, epoch=event.epoch)
            return
        await self.fail_over(event.member, epoch=event.epoch, declared_at=env.time,
                             site=event.site, thorough=thorough)

    async def fail_over(
        self, member: str, *, epoch: int = 0, declared_at: dt.datetime | None = None,
        site: str = "", thorough: bool = True,
    ) -> int:
        """Re-place every placement with a replica on `member` (only on its `site`, when
        one site was declared down); returns how many moved.

        Idempotent: a placement already re-placed has no replica there any more, so a
        redelivered declaration only finishes what an earlier attempt left undone.
        `thorough`: find them by reading every placement (the durable copy of the
        declaration); otherwise from the live view (the prompt copy), see `_hit_state`.
        """
        async def reread() -> FederationState:
            if thorough:
                return await read_state(self.ctx.bus)
            return await self._hit_state(member, site)

        state = await reread()
        keys = failover_order(
            (key, entry.value) for key, entry in state.placements.items()
            if hit_by(entry.value, member, site)
        )
        log.info("failing over", member=member, site=site or None, workloads=len(keys))
        # failover hook: own share first, then the others' backwards (replace.split_share)
        own, rest = split_share(keys, me=self.ctx.member, peers=[
            m for m in self.ctx.trust.member_ids() if m != member])
        moved = 0
        for part, queue in enumerate((own, sweep_order(rest))):
            if part and queue:
                state = await reread()  # drop what the owners did meanwhile
            for start in range(0, len(queue), FAILOVER_BATCH):
                if self._stale(member, site, epoch):
                    log.info("member recovered; failover stops", member=member,
                             site=site or None, moved=moved)
                    return moved
                chunk = [k for k in queue[start:start + FAILOVER_BATCH]
                         if (e := state.placements.get(k)) is not None
                         and hit_by(e.value, member, site)]
                # The disruption budget: one token per move, waited for before the chunk.
                delay = 0.0
                for _ in chunk:
                    delay = self._limiter.reserve(time.monotonic())
                if delay > 0:
                    await asyncio.sleep(delay)
                moved += await self._replace_many(
                    state, chunk, member, declared_at, site,
                    # The live view knows every tenant's workloads (affinity, spread);
                    # the hit placements alone would not.
                    snapshot_now=None if thorough else self.live.snapshot)
        self.replaced += moved
        await self._mark_replaced(member, epoch, site)
        return moved

    async def _hit_state(self, member: str, site: str) -> FederationState:
        """The live view, with the placements of the workloads that hold capacity on
        `member` (its `site`) read one by one. The ledgers are the capacity truth: every
        replica is booked before its placement is written and stays booked until it is
        re-placed, so their holds name every workload the failover must move. Reading
        by key is a batched direct get, which any replica of the bucket answers: no
        scan, no consumer, nothing that waits for a leader the dead server held."""
        live = self.live.state
        wanted = sorted({
            workload for entry in list(live.ledgers.values())
            if entry.value.member == member and (not site or entry.value.site == site)
            for workload in entry.value.holds})
        found = await self.placements.get_many(wanted)
        self.live.snapshot(dt.datetime.now(dt.UTC).date())  # profiles and statuses current
        return FederationState(
            profiles=live.profiles, statuses=live.statuses,
            member_revisions=live.member_revisions, revisions=live.revisions,
            placements=found, ledgers=live.ledgers)

    async def _replace_many(
        self, state: FederationState, keys: list[str], member: str,
        declared_at: dt.datetime | None, site: str = "",
        snapshot_now: Callable[[dt.date], Snapshot] | None = None,
    ) -> int:
        """Re-place a chunk of `member`'s workloads as `place_many` places a batch: each
        decided on one snapshot with the chunk's earlier moves booked into it, the new
        sites booked in one write per site, the placements written at the revisions read,
        the lost sites freed in one write per site; what lost a race (a site filled, a
        rival moved it, an agent noted a replica) is re-read and decided again."""
        moved = 0
        todo = list(keys)
        for attempt in range(CAS_ATTEMPTS):
            if not todo:
                return moved
            now = dt.datetime.now(dt.UTC)
            snapshot = (snapshot_now or state.snapshot)(now.date())
            moves: dict[str, tuple[Entry[PlacementRecord], PlacementRecord, list[Assignment]]]
            moves = {}
            rivals: list[str] = []
            for key in todo:
                entry = state.placements.get(key)
                if entry is None or not hit_by(entry.value, member, site):
                    continue  # gone, or moved meanwhile
                record = entry.value
                if moved_by_a_rival((e.value for e in state.ledgers.values()), key,
                                    record.generation, lost=member, site=site,
                                    own=self._own_attempts):
                    rivals.append(key)  # read again once the rival's commit is through
                    continue
                decision = decide(
                    record.spec, snapshot, decided_by=self.ctx.member, now=now,
                    cause="failover", cache=self._cache,
                    # A dark site is out of the snapshot already (reader.read_state); the
                    # member's other sites stay eligible.
                    exclude=frozenset() if site else frozenset({member}),
                    keep=survivors(record, member, site),
                )
                # failover hook: the record keeps the declaration time for the achieved RTO
                new = replaced_record(record, decision, lost=member, now=now,
                                      declared_at=declared_at, site=site)
                added = added_sites(record.assignments, new.assignments)
                if added:
                    snapshot = booked(snapshot, record.spec.resources, added)
                moves[key] = (entry, new, added)
            held, refused = await book_many(self.ledgers, state, [
                Booking(key, new.spec.resources, added, new.generation,
                        tenant=new.spec.tenant)
                for key, (_, new, added) in moves.items() if added])
            self._own_attempts[held] = None
            while len(self._own_attempts) > OWN_ATTEMPTS_KEPT:
                del self._own_attempts[next(iter(self._own_attempts))]
            go = [key for key in moves if key not in refused]
            written = await asyncio.gather(
                *(self.placements.update(key, moves[key][1], moves[key][0].revision)
                  for key in go), return_exceptions=True)
            again = [key for key in moves if key in refused] + rivals
            lost: dict[tuple[str, str], list[str]] = defaultdict(list)
            dropped: dict[tuple[str, str], list[str]] = defaultdict(list)
            done: list[str] = []
            failure: Exception | None = None
            for key, outcome in zip(go, written, strict=True):
                entry, new, added = moves[key]
                if isinstance(outcome, int):
                    state.placements[key] = Entry(key, new, outcome)
                    done.append(key)
                    if added:
                        # Only now, re-placed, does the lost replica's reservation go; a
                        # replica that found no new home keeps its booking until it does.
                        for a in dropped_sites(entry.value.assignments, new.assignments):
                            dropped[(a.member, a.site)].append(key)
                    continue
                for a in added:
                    lost[(a.member, a.site)].append(key)
                if isinstance(outcome, CasConflict):
                    again.append(key)
                elif isinstance(outcome, Exception):
                    failure = failure or outcome
            if lost:
                await unbook_many(self.ledgers, state, dict(lost), attempt=held)
            if dropped:
                await unbook_many(self.ledgers, state, dict(dropped))
            # One signed `workload.dispatched.v1` per few dozen moves: the successors'
            # agents start them from a handful of messages, not one per workload.
            announced = await announce_many(self.ctx.bus, self.placements, [
                (key, moves[key][1], state.placements[key].revision) for key in done])
            failure = failure or next((e for e in announced if e is not None), None)
            moved += len(done)
            if done:
                log.info("re-placed a chunk", member=member, site=site or None,
                         moved=len(done), again=len(again))
            if failure is not None:
                raise failure  # the durable copy of the declaration finishes the rest
            if again:
                for key in again:
                    await self._refresh(state, key)
                await asyncio.sleep(0.005 * (attempt + 1))
            todo = again
        raise RetryableError(f"failover of {member}: {len(todo)} placements kept changing")

    # -- recovery -------------------------------------------------------------------------

    async def heal(self, recovered: str) -> int:
        """Add missing replicas to placements short of them now that `recovered` is back;
        returns how many placements grew. Idempotent: a healed placement is no longer
        short, so a redelivered recovery changes nothing."""
        state = await read_state(self.ctx.bus)
        keys = failover_order(
            (key, entry.value) for key, entry in state.placements.items()
            if short_of_replicas(entry.value)
        )
        healed = 0
        for key in keys:
            delay = self._limiter.reserve(time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)
            if await self._heal_one(state, key, recovered):
                healed += 1
        log.info("healed after recovery", member=recovered, placements=healed)
        return healed

    async def _heal_one(self, state: FederationState, key: str, recovered: str) -> bool:
        for _ in range(CAS_ATTEMPTS):
            entry = state.placements.get(key)
            if entry is None or not short_of_replicas(entry.value):
                return False
            record = entry.value
            now = dt.datetime.now(dt.UTC)
            decision = decide(
                record.spec, state.snapshot(now.date(), deciding=key),
                decided_by=self.ctx.member, now=now, cause="recovery",
                keep=list(record.assignments),
            )
            new = healed_record(record, decision, recovered=recovered, now=now)
            if new is None:
                return False
            if not await self._commit_next(
                state, entry, new, added_sites(record.assignments, new.assignments)
            ):
                continue
            # Bookings left on a down member by replicas that found no home then go now.
            await unbook(self.ledgers, state, workload=key,
                         sites=stale_holds(state, key, new.assignments))
            log.info("healed", workload=key, generation=new.generation, line=new.history[-1])
            await self._announce(key, new)
            return True
        raise RetryableError(f"fed_placements/{key}: too many concurrent writers")

    async def _commit_next(
        self, state: FederationState, entry: Entry[PlacementRecord], new: PlacementRecord,
        added: list[Assignment],
    ) -> bool:
        """Book the sites `new` adds, then write it at the revision read. False when a site
        filled up, a rival moved this workload or an agent noted a replica's status: what
        this attempt booked is freed and the placement re-read into `state`."""
        key = entry.key
        try:
            held = await book(self.ledgers, state, workload=key,
                              amount=new.spec.resources, sites=added,
                              generation=new.generation, tenant=new.spec.tenant)
        except NotBooked:
            await self._refresh(state, key)
            return False
        try:
            revision = await self.placements.update(key, new, entry.revision)
        except CasConflict:
            await unbook(self.ledgers, state, workload=key, sites=added, attempt=held)
            await self._refresh(state, key)
            return False
        state.placements[key] = Entry(key, new, revision)
        return True

    async def _refresh(self, state: FederationState, key: str) -> bool:
        """Re-read one placement into `state` after a refused booking; False if gone."""
        await asyncio.sleep(0.005)
        fresh = await self.placements.get(key)
        if fresh is None:
            state.placements.pop(key, None)
            return False
        state.placements[key] = fresh
        return True

    async def _mark_replaced(self, member: str, epoch: int, site: str = "") -> None:
        """Note on the down declaration that its workloads were re-placed (if there is one)."""
        decisions = await bucket(self.ctx.bus, layout.KV_DECISIONS, DownDecision)

        def change(current: DownDecision | None) -> DownDecision | None:
            if current is None or current.replaced or current.state != "down":
                return None
            if epoch and current.epoch != epoch:
                return None
            current.replaced = True
            return current

        try:
            await decisions.modify(f"down.{member}.{site}" if site else f"down.{member}",
                                   change)
        except Exception as exc:  # a bookkeeping flag; the moves themselves are done
            log.warning("could not mark the down declaration", member=member, error=str(exc))
