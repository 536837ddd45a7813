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

This module holds the lifecycle, the dispatch, the coordinator's main line and the
approver; a workload's move is in `moves`, the actors in `actors`, leases and escalation
in `leases`, all over `base` (shared state and helpers).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from functools import partial
from typing import Any

import msgspec

from contracts.base import Event
from contracts.state import PlacementRecord, SagaProgress, SagaRecord
from contracts.takeover import (
    PlanItem,
    TakeoverApproved,
    TakeoverCompleted,
    TakeoverProposed,
    TakeoverRequested,
    TakeoverStep,
)
from mesh import layout
from mesh.bus import consumer_health
from mesh.envelope import Envelope
from mesh.errors import RetryableError
from mesh.runtime import NodeContext
from mesh.state import bucket
from services.iam.enforcement import refused_by_token
from services.iam.tokens import TAKEOVER_ROLES
from services.takeover import saga as S
from services.takeover.actors import ActorRole
from services.takeover.approval import Approval, check_proposal, refusal, tally
from services.takeover.base import (
    age_s,
    durable_name,
    log,
    now_utc,
    shadow_instance_id,
    step_msg_id,
)
from services.takeover.errors import Superseded
from services.takeover.leases import LeaseRole
from services.takeover.moves import MoveRole
from services.takeover.plan import plan_hash
from services.takeover.policy import approval_problem
from services.takeover.report import build_report
from services.takeover.reservations import plan_and_reserve, release_holds, unused

SUBJECTS = ["fed.v1.takeover.>"]

__all__ = ["SUBJECTS", "TakeoverService", "durable_name", "shadow_instance_id",
           "step_msg_id"]


class TakeoverService(LeaseRole, MoveRole, ActorRole):
    name = "takeover"

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._sagas = await bucket(ctx.bus, layout.KV_SAGAS, SagaRecord)
        self._progress = await bucket(ctx.bus, layout.KV_SAGAS, SagaProgress)
        self._placements = await bucket(ctx.bus, layout.KV_PLACEMENTS, PlacementRecord)
        # Resume the unfinished sagas this member coordinates (its node restarted).
        for entry in await self._sagas.items(layout.SAGA_KEYS):
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
        now = now_utc()
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
                await self._finish(saga, S.step_entry("coordinator", "failed", at=now_utc(),
                                                      detail=f"coordinator error: {exc}"))

    async def _plan(self, record: SagaRecord) -> SagaRecord | None:
        """Plan, with each successor's capacity reserved (`reservations`), then record
        the plan. Killed in between, the member that resumes plans and books again with
        the saga's own attempt id: nothing is reserved twice."""
        now = now_utc()
        plan, reserved = await plan_and_reserve(self.ctx.bus, record.member, record.saga,
                                                decided_by=self.ctx.member, now=now)
        await self._boundary(record.saga, "reserved")
        self._still_mine(record.saga)
        digest = plan_hash(plan)
        quorum = self.ctx.trust.quorum_against(record.member)
        updated = await self._modify(
            record.saga, lambda cur: S.with_plan(cur, plan, digest, quorum, now,
                                                 reserved=reserved)
        )
        if updated is None:
            # Another member recorded a plan first (it took the saga over): give back
            # what this try booked and that plan does not use.
            current = await self._mine(record.saga)
            if current is not None:
                await release_holds(self.ctx.bus, record.saga, unused(plan, current.plan))
            return current
        planned = S.find_step(updated, S.PLAN, statuses=("ok",))
        if planned is not None:
            await self._publish_step(updated, planned)
        return updated

    async def _propose(self, record: SagaRecord, round_: int = 0) -> None:
        proposal = TakeoverProposed(
            saga=record.saga, member=record.member,
            reason=record.reason,  # type: ignore[arg-type]
            drill=record.drill, plan=record.plan, plan_hash=record.plan_hash,
            quorum=record.quorum,
        )
        suffix = f"-{round_}" if round_ else ""
        await self.ctx.bus.publish(proposal, msg_id=f"propose-{record.saga}{suffix}")

    async def _ask_again(self, record: SagaRecord, round_: int) -> None:
        """While approvals are missing: read each missing approver's newest stored
        approval from FED (a delivery lost while a consumer's leader moved must not keep
        the saga waiting), then propose again (a proposal lost the same way), under a new
        msg id so that it is stored and delivered anew. Approvers answer a repeat with the
        same approval (same msg id: stored once)."""
        missing = [m for m in self.ctx.trust.member_ids()
                   if m != record.member and m not in record.approvals]
        for member in missing:
            found = await self.ctx.bus.last_event(
                TakeoverApproved.subject(member, record.member))
            if found is not None and isinstance(found[0], TakeoverApproved) \
                    and found[0].saga == record.saga:
                await self._on_approved(found[0], found[1])
        await self._propose(record, round_)

    async def _await_quorum(self, record: SagaRecord) -> SagaRecord | None:
        await self._propose(record)
        saga = record.saga
        asked, round_ = time.monotonic(), 0
        while True:
            signal = self._signal(saga)
            current = await self._mine(saga)
            if current is None or current.state != "approving":
                return current
            if time.monotonic() - asked >= self.ASK_AGAIN_S:
                asked, round_ = time.monotonic(), round_ + 1
                await self._ask_again(current, round_)
                current = await self._mine(saga)
                if current is None or current.state != "approving":
                    return current
            count = tally(
                [Approval(member=m, plan_hash=current.plan_hash) for m in current.approvals],
                plan_hash=current.plan_hash, target=current.member,
                active=set(self.ctx.trust.member_ids()), quorum=current.quorum,
            )
            now = now_utc()
            if count.reached:
                updated = await self._modify(
                    saga, partial(S.with_quorum, approvers=list(count.approvers), now=now)
                )
                if updated is not None:
                    reached = S.find_step(updated, S.APPROVAL, statuses=("ok",))
                    if reached is not None:
                        await self._publish_step(updated, reached)
                return updated or await self._mine(saga)
            waited = age_s(S.find_step(current, S.PLAN, statuses=("ok",)), now)
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
        entry = S.step_entry(S.FREEZE, "ok", at=now_utc(),
                             detail=f"{record.member} receives no new placements")
        updated = await self._modify(record.saga, partial(S.with_step, entry=entry,
                                                          now=now_utc()))
        if updated is not None:
            await self._publish_step(updated, entry)

    # -- acquisition: suspension -------------------------------------------------------

    async def _suspend(self, saga: str) -> None:
        """Ask the approvers to endorse the target's suspension; wait until the roster
        in force shows it suspended (issue 5's threshold mechanics)."""
        record = await self._mine(saga)
        if record is None or S.find_step(record, S.SUSPEND) is not None:
            return
        started = S.find_step(record, S.SUSPEND, statuses=("started",))
        if started is None:
            started = S.step_entry(S.SUSPEND, "started", at=now_utc(),
                                   detail=f"approvers endorse the suspension of "
                                          f"{record.member}")
            entry = started
            await self._modify(saga, lambda cur: S.with_step(cur, entry, now_utc()))
        await self._publish_step(record, started)
        # (Suspended already, e.g. by a coordinator before us: nothing to wait for.)
        while record.member in self.ctx.trust.member_ids():
            if age_s(started, now_utc()) > self.SUSPEND_TIMEOUT_S:
                await self._record_and_publish(saga, S.step_entry(
                    S.SUSPEND, "failed", at=now_utc(),
                    detail=f"{record.member} not suspended within "
                           f"{self.SUSPEND_TIMEOUT_S:g} s"))
                return
            await asyncio.sleep(0.2)  # the roster arrives through the IAM service
        await self._record_and_publish(saga, S.step_entry(
            S.SUSPEND, "ok", at=now_utc(),
            detail=f"{record.member} suspended in roster version "
                   f"{self.ctx.trust.version}; its signatures count no more"))

    # -- the end -----------------------------------------------------------------------

    async def _finish(self, saga: str, failed_step: dict[str, object] | None = None) -> None:
        """End the saga: record the report (state completed or failed), publish it, and
        give back the capacity reserved for successors that did not take their
        workload over (every one, in a drill)."""
        now = now_utc()
        progress = await self._all_progress(saga)

        def end(current: SagaRecord) -> SagaRecord | None:
            if current.state in S.FINISHED:
                return None
            if failed_step is not None:
                current = S.with_step(current, failed_step, now) or current
            report = build_report(current, finished_at=now, progress=progress)
            return S.with_end(current, passed=bool(report["passed"]), report=report, now=now)

        record = await self._modify(saga, end)
        if record is None:
            return
        cut = {p.workload for p in progress
               if S.find_step(p, S.CUTOVER, workload=p.workload, statuses=("ok",))}
        leftover = [i for i in record.plan if i.workload not in cut and i.successor]
        if not record.drill:
            # A placement that moved although its cut-over's outcome went unrecorded
            # keeps the hold: it is that placement's booking now.
            leftover = [i for i in leftover if not await self._moved_to(i)]
        await release_holds(self.ctx.bus, saga, leftover)
        if failed_step is not None:
            await self._publish_step(record, failed_step)
        await self._publish_completed(record)

    async def _moved_to(self, item: PlanItem) -> bool:
        entry = await self.placements.get(item.workload)
        return entry is not None and any(a.member == item.successor and a.site == item.site
                                         for a in entry.value.assignments)

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
        now = now_utc()
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

