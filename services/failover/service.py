"""The failover service: watches heartbeats, states suspicions, declares down by quorum.

Every member runs it. It hears every member's heartbeats live (core subscription), and a
ticker turns silence into a signed `member.suspected.v1` (one per silence episode,
withdrawn with `suspected=False` after a fresh beat). Its own durable consumer
(`failover-<member>`) reads every observer's suspicions back from FED; when the standing
suspicions of a target reach the quorum of the roster, it tries to declare the target
down by CAS on `fed_decisions/down.<target>`. Only the CAS winner publishes
`member.down.v1`. A down member that heartbeats steadily again, and that a quorum no
longer suspects, is marked recovered the same way. Workloads are never moved back
automatically; re-placing a down member's workloads is the scheduler's job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from contracts.base import Event
from contracts.failover import Evidence, MemberDown, MemberRecovered, MemberSuspected
from contracts.registry import Heartbeat
from contracts.state import DownDecision
from mesh import layout
from mesh.bus import Consumer
from mesh.envelope import Envelope
from mesh.errors import CasConflict, Rejected, RetryableError
from mesh.leaders import pull_leaders
from mesh.observability import logger
from mesh.runtime import NodeContext
from mesh.state import Bucket, bucket
from services.failover import quorum
from services.failover.decisions import (
    confirms,
    down_event,
    down_key,
    down_msg_id,
    next_down,
    next_recovered,
    recovered_event,
    recovered_msg_id,
    split_target,
    target_key,
)
from services.failover.detector import Action, Detector, Suspect, Withdraw
from services.failover.heartbeats import HeartbeatBook
from services.failover.recovery import Streaks, may_recover, suspicion_timeout
from services.failover.steward import steward
from services.failover.suspicions import Suspicion, SuspicionSet

log = logger("services.failover")

HEARTBEATS = "fed.v1.health.heartbeat.*"
# A suspicion older than this many suspicion timeouts no longer counts towards a quorum.
STALE_FACTOR = 10.0
# A never-heard member is suspected after timeout + this many timeouts from our start.
GRACE_FACTOR = 2.0
# How often the cached down records are re-read from KV (and lost publishes repaired).
RESYNC_S = 5.0
# How many times a `member.down` event whose record is not (yet) readable is retried.
CONFIRM_ATTEMPTS = 3
STATEMENT_TIMEOUT_S = 2.0
# How often the steward checks that it leads every replicated JetStream group.
STEER_S = 10.0
STEER_RETRY_S = 2.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class FailoverService:
    name = "failover"

    def __init__(self) -> None:
        self._ctx: NodeContext | None = None
        self._decisions: Bucket[DownDecision] | None = None
        self._consumer: Consumer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._steerer: asyncio.Task[None] | None = None
        self.steward: str | None = None
        self.leaders_pulled = 0
        self._lock = asyncio.Lock()
        self._stopped = False
        self._down: dict[str, DownDecision] = {}  # cache of fed_decisions/down.<member>
        self._published: set[tuple[str, str, int]] = set()  # (kind, member, epoch) on FED
        self._confirm_tries: dict[str, int] = {}
        self._last_resync = 0.0
        self._cut_off = False  # a statement of ours failed to reach FED
        self.ticks = 0
        self.counts: dict[str, int] = {
            "heartbeats": 0, "suspicions": 0, "withdrawals": 0, "declared": 0,
            "recovered": 0, "lost": 0, "refused": 0,
        }

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, ctx: NodeContext) -> None:
        interval = ctx.settings.heartbeat_interval_s
        self.timeout_s = ctx.settings.suspicion_timeout_s
        self.stale_s = STALE_FACTOR * self.timeout_s
        now = time.monotonic()
        self.book = HeartbeatBook(now, startup_grace_s=GRACE_FACTOR * self.timeout_s)
        # Renew a standing suspicion well before it goes stale.
        self.detector = Detector(timeout_s=self.timeout_s, renew_s=self.stale_s / 2)
        self.settings = ctx.settings
        self.streaks = Streaks(max_gap_s=self.timeout_s,
                               min_beats=ctx.settings.recovery_beats,
                               min_span_s=ctx.settings.recovery_steady_s)
        # Sites: each member's heartbeats list the sites that are up; a site missing
        # from them while the member beats goes silent on its own (`member/site` keys).
        self.site_book = HeartbeatBook(now, startup_grace_s=GRACE_FACTOR * self.timeout_s)
        self.site_detector = Detector(timeout_s=self.timeout_s, renew_s=self.stale_s / 2)
        self.site_streaks = Streaks(max_gap_s=self.timeout_s,
                                    min_beats=ctx.settings.recovery_beats,
                                    min_span_s=ctx.settings.recovery_steady_s)
        self.sites_of: dict[str, set[str]] = {}
        self.suspicions = SuspicionSet()
        self._ctx = ctx  # health() reads the pieces above from here on
        self._decisions = await bucket(ctx.bus, layout.KV_DECISIONS, DownDecision)
        # No seeding from the HEALTH stream's last heartbeats: after a whole federation
        # restarts, every stored beat is old and every peer would look dead at once. A
        # member dead before we started is suspected after the start-up grace instead.
        await self._resync()
        await ctx.bus.subscribe(HEARTBEATS, self._on_heartbeat)
        self._consumer = await ctx.bus.consume(
            self._on_event,
            subjects=[MemberSuspected.subject_pattern(), MemberDown.subject_pattern(),
                      MemberRecovered.subject_pattern()],
            durable=f"failover-{ctx.member}",
        )
        period = min(0.5, interval / 2)
        self._ticker = asyncio.create_task(self._tick_loop(period), name="failover-ticker")
        if ctx.settings.steer_leaders:
            self._steerer = asyncio.create_task(self._steer_loop(), name="failover-steward")

    async def stop(self) -> None:
        self._stopped = True
        for task in (self._ticker, self._steerer):
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._consumer is not None:
            await self._consumer.stop()

    def health(self) -> dict[str, Any]:
        if self._ctx is None:
            return {"state": "starting"}
        now = _utcnow()
        standing = {
            target: [s.observer for s in self._standing(target, now)]
            for target in self.suspicions.targets()
        }
        standing = {t: o for t, o in standing.items() if o}
        down = sorted(m for m, r in self._down.items() if r.state == "down")
        return {
            "state": "stopped" if self._stopped else "running",
            "suspecting": self.detector.suspected,
            "suspected": standing,
            "down": down,
            "steward": self.steward,
            "leaders_pulled": self.leaders_pulled,
            "ticks": self.ticks,
            "counts": {
                **self.counts,
                "suspected": len(standing),
                "down": len(down),
                "rejected": self._consumer.rejected if self._consumer else 0,
            },
        }

    # -- inputs ---------------------------------------------------------------------------

    async def _on_heartbeat(self, event: Event, env: Envelope) -> None:
        if self._stopped or not isinstance(event, Heartbeat):
            return
        now = time.monotonic()
        self.book.heard(env.member, now)
        self.streaks.beat(env.member, now)
        self.sites_of.setdefault(env.member, set()).update(event.sites_up)
        for site in event.sites_up:
            self.site_book.heard(target_key(env.member, site), now)
            self.site_streaks.beat(target_key(env.member, site), now)
        self.counts["heartbeats"] += 1

    async def _on_event(self, event: Event, env: Envelope) -> None:
        if isinstance(event, MemberSuspected):
            await self._on_suspected(event, env)
        elif isinstance(event, MemberDown):
            await self._on_down(event, env)
        elif isinstance(event, MemberRecovered):
            await self._refresh(target_key(event.member, event.site))

    async def _on_suspected(self, event: MemberSuspected, env: Envelope) -> None:
        assert self._ctx is not None
        trust = self._ctx.trust
        if env.member == event.member or not trust.is_member(event.member):
            # A member's word about itself, or about a stranger, never counts.
            self.counts["refused"] += 1
            log.info("ignoring suspicion", observer=env.member, target=event.member)
            return
        if (_utcnow() - env.time).total_seconds() > self.stale_s:
            return  # replayed history: it can no longer count
        target = target_key(event.member, event.site)
        self.suspicions.record(Suspicion(
            target=target, observer=env.member, msg_id=env.msg_id,
            silence_s=event.silence_s, at=env.time, suspected=event.suspected,
        ))
        if event.member != self._ctx.member:
            await self._evaluate(target)

    async def _on_down(self, event: MemberDown, env: Envelope) -> None:
        """Check a declaration against invariant 4 and the KV record; refuse and report a
        declaration no quorum backs (a member trying to declare another down alone)."""
        assert self._ctx is not None and self._decisions is not None
        if (_utcnow() - env.time).total_seconds() > self.stale_s:
            return  # history, checked when it was new; the record is read on resync
        trust = self._ctx.trust
        problem = quorum.evidence_problem(
            member=event.member, observers=[e.observer for e in event.evidence],
            active=trust.member_ids(), needed=quorum.needed_against(trust, event.member),
        )
        if problem is None:
            key = down_key(event.member, event.site)
            entry = await self._decisions.get(key)
            verdict = confirms(entry.value if entry else None, event, env.member)
            if verdict is None:
                tries = self._confirm_tries.get(env.msg_id, 0) + 1
                self._confirm_tries[env.msg_id] = tries
                if tries < CONFIRM_ATTEMPTS:
                    raise RetryableError(f"no record yet for {env.msg_id}")
            self._confirm_tries.pop(env.msg_id, None)
            if not verdict:
                problem = (f"{env.member} declared {event.member} down at epoch "
                           f"{event.epoch}, but fed_decisions/{key} "
                           "does not record that declaration")
            elif entry is not None:
                target = target_key(event.member, event.site)
                self._set_record(target, entry.value)
                if entry.value.epoch == event.epoch:
                    self._published.add(("down", target, event.epoch))
        if problem is not None:
            self.counts["refused"] += 1
            await self._ctx.bus.report_violation(
                Rejected("quorum_missing", problem), env.subject, env.headers
            )

    # -- the ticker -----------------------------------------------------------------------

    async def _tick_loop(self, period: float) -> None:
        while not self._stopped:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus may be away for a moment; keep watching
                log.warning("failover tick failed", error=str(exc))
            self.ticks += 1
            await asyncio.sleep(period)

    async def _tick(self) -> None:
        now = time.monotonic()
        if self._cut_off and not await self._reconnected(now):
            return
        others = self._others()
        watched = [(t, self.detector, self.book) for t in others]
        watched += [(t, self.site_detector, self.site_book) for t in self._sites_to_watch(now)]
        for target, detector, book in watched:
            action = detector.decide(target, book, now, timeout_s=self._timeout_for(target))
            if action is not None:
                try:
                    await self._state(action, now, detector, book)
                except Exception:
                    # Our statement cannot reach FED. If we hear too few others to be on
                    # a quorum's side, we are the one cut off (a minority partition):
                    # until FED answers again, state nothing; then the silences we
                    # measured restart (`_reconnected`). Otherwise it is JetStream
                    # electing a leader (the dead member's server led a stream): keep
                    # the silences and try again next tick, or detection would wait a
                    # whole timeout more.
                    self._cut_off = self._alone(now)
                    raise
        for gone in set(self.detector.suspected) - set(others):
            self.detector.forget(gone)
        for target in [*others, *self._site_targets()]:
            await self._evaluate(target)
        if now - self._last_resync >= RESYNC_S:
            await self._resync()
            self.suspicions.prune(now=_utcnow(), stale_s=self.stale_s)

    def _alone(self, now: float) -> bool:
        assert self._ctx is not None
        heard = sum(1 for m in self._others() if self.book.silence(m, now) < self.timeout_s)
        return not quorum.majority_side(heard_others=heard,
                                        needed=quorum.needed_against(self._ctx.trust,
                                                                     self._ctx.member))

    def _site_targets(self) -> list[str]:
        others = set(self._others())
        return [target_key(m, site) for m in sorted(self.sites_of) if m in others
                for site in sorted(self.sites_of[m])]

    def _sites_to_watch(self, now: float) -> list[str]:
        """The sites whose silence means something now: those of members that beat (a
        silent member is the member-level detector's business) and are not down."""
        out = []
        for target in self._site_targets():
            member, _ = split_target(target)
            record = self._down.get(member)
            if self.book.silence(member, now) >= self.timeout_s or (
                    record is not None and record.state == "down"):
                continue
            out.append(target)
        return out

    async def _reconnected(self, now: float) -> bool:
        """Does FED answer again after this observer was cut off? Then restart every
        member's silence: otherwise, the moment a healed minority can publish again, it
        would state suspicions of members it simply could not hear, and together with
        one hiccup on the majority's side they could make a quorum."""
        assert self._decisions is not None and self._ctx is not None
        try:
            await asyncio.wait_for(self._decisions.get(down_key(self._ctx.member)),
                                   timeout=STATEMENT_TIMEOUT_S)
        except Exception:
            return False
        self._cut_off = False
        self.book.rebase(now)
        self.site_book.rebase(now)
        log.info("reconnected to FED; silences measured while cut off are dropped")
        return True

    async def _state(
        self, action: Action, now: float, detector: Detector, book: HeartbeatBook
    ) -> None:
        """Publish this observer's signed statement about a target (member or site)."""
        assert self._ctx is not None
        target = action.target
        member, site = split_target(target)
        last = book.last_heard(target)
        last_wall = _utcnow() - dt.timedelta(seconds=now - last) if last is not None else None
        statement = MemberSuspected(
            member=member, site=site, silence_s=round(book.silence(target, now), 3),
            last_heartbeat=last_wall, suspected=isinstance(action, Suspect),
        )
        await self._ctx.bus.publish(statement, timeout=STATEMENT_TIMEOUT_S)
        detector.published(action, now)
        if isinstance(action, Withdraw):
            self.counts["withdrawals"] += 1
            log.info("suspicion withdrawn", target=target)
        else:
            self.counts["suspicions"] += 1
            log.info("suspecting", target=target, silence_s=statement.silence_s,
                     renewal=action.renewal)

    # -- the steward (services/failover/steward.py) ----------------------------------------

    async def _steer_loop(self) -> None:
        # The first pass waits for a heartbeat or two: who is silent means nothing before.
        await asyncio.sleep(2 * self.settings.heartbeat_interval_s)
        while not self._stopped:
            pause = STEER_S
            try:
                await self._steer()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # elections under way, the bus away: soon again
                log.info("leader steering skipped", error=str(exc) or type(exc).__name__)
                pause = STEER_RETRY_S
            await asyncio.sleep(pause)

    async def _steer(self) -> None:
        """If this member is the steward, pull every group's leadership to its server
        (named after the member: deploy/nats/README.md)."""
        assert self._ctx is not None
        now = time.monotonic()
        others = self._others()
        self.steward = steward(
            active=[*others, self._ctx.member],
            down=[m for m, r in self._down.items() if r.state == "down" and not r.site],
            silent=[m for m in others if self.book.silence(m, now) >= self.timeout_s],
        )
        if self.steward == self._ctx.member:
            pulled = await pull_leaders(self._ctx.bus, self._ctx.member)
            self.leaders_pulled += len(pulled.moved)

    # -- decisions ------------------------------------------------------------------------

    def _timeout_for(self, target: str) -> float:
        record = self._down.get(target)
        since = None
        if record is not None and record.state == "recovered" and record.recovered_at:
            since = (_utcnow() - record.recovered_at).total_seconds()
        return suspicion_timeout(self.timeout_s, since_recovery_s=since,
                                 guard_s=self.settings.flap_guard_s,
                                 factor=self.settings.flap_timeout_factor)

    def _others(self) -> list[str]:
        assert self._ctx is not None
        return [m for m in self._ctx.trust.member_ids() if m != self._ctx.member]

    def _standing(self, target: str, now: dt.datetime) -> list[Suspicion]:
        assert self._ctx is not None
        record = self._down.get(target)
        since = record.recovered_at if record is not None and record.state == "recovered" \
            else None
        current = self.suspicions.current(target, now=now, stale_s=self.stale_s, since=since)
        return quorum.counting(current, target=target, active=self._ctx.trust.member_ids())

    async def _evaluate(self, target: str) -> None:
        assert self._ctx is not None
        if self._stopped:
            return
        member, site = split_target(target)
        async with self._lock:
            needed = quorum.needed_against(self._ctx.trust, member)
            standing = self._standing(target, _utcnow())
            record = self._down.get(target)
            is_down = record is not None and record.state == "down"
            whole = self._down.get(member)
            if site and whole is not None and whole.state == "down":
                return  # the whole member is down: its sites are moved with it
            streaks = self.site_streaks if site else self.streaks
            if not is_down and quorum.reached(standing, needed):
                await self._declare(target, standing, needed)
            elif may_recover(is_down=is_down, steady=streaks.steady(target,
                             time.monotonic()), standing=len(standing), needed=needed):
                await self._recover(target)

    async def _declare(self, target: str, standing: list[Suspicion], needed: int) -> None:
        assert self._ctx is not None
        evidence = [Evidence(observer=s.observer, msg_id=s.msg_id, silence_s=s.silence_s)
                    for s in standing]
        me, now = self._ctx.member, _utcnow()
        member, site = split_target(target)
        won = await self._transition(target, lambda current: next_down(
            current, member=member, declared_by=me, now=now, evidence=evidence,
            quorum=needed, site=site))
        if won is None:
            self.counts["lost"] += 1
            return
        self.counts["declared"] += 1
        log.warning("member declared down", member=member, site=site or None,
                    epoch=won.epoch, observers=won.observers)
        await self._announce(won)

    async def _recover(self, target: str) -> None:
        assert self._ctx is not None
        me, now = self._ctx.member, _utcnow()
        won = await self._transition(
            target, lambda current: next_recovered(current, recovered_by=me, now=now))
        if won is None:
            self.counts["lost"] += 1
            return
        self.counts["recovered"] += 1
        log.info("member recovered", member=target, epoch=won.epoch)
        await self._announce(won)

    async def _transition(
        self, target: str, change: Callable[[DownDecision | None], DownDecision | None]
    ) -> DownDecision | None:
        """Read, change, CAS at the read revision. The new record if this observer wrote
        it; None if there was nothing to do (someone else won, or it was done already)."""
        assert self._decisions is not None
        key = down_key(*split_target(target))
        for _ in range(5):
            entry = await self._decisions.get(key)
            new = change(entry.value if entry else None)
            if new is None:
                if entry is not None:
                    self._set_record(target, entry.value)
                return None
            try:
                if entry is None:
                    await self._decisions.create(key, new)
                else:
                    await self._decisions.update(key, new, entry.revision)
            except CasConflict:
                # Someone wrote first (another observer, or the scheduler noting that the
                # workloads were re-placed): read again and see what is left to do.
                continue
            self._set_record(target, new)
            return new
        return None

    async def _announce(self, record: DownDecision) -> None:
        """Publish the event of a record this observer wrote. The msg id is deterministic,
        so a repeat (after a crash or a failed publish) is stored once."""
        assert self._ctx is not None
        event: Event
        if record.state == "down":
            kind, event = "down", down_event(record)
            msg_id = down_msg_id(record.member, record.epoch, record.site)
        else:
            kind, event = "recovered", recovered_event(record)
            msg_id = recovered_msg_id(record.member, record.epoch, record.site)
        await self._ctx.bus.publish(event, msg_id=msg_id)
        self._published.add((kind, target_key(record.member, record.site), record.epoch))

    def _set_record(self, target: str, record: DownDecision) -> None:
        old = self._down.get(target)
        newly_down = record.state == "down" and (
            old is None or old.state != "down" or old.epoch != record.epoch)
        if newly_down:
            # Only beats heard after the declaration may bring the member back.
            (self.site_streaks if record.site else self.streaks).reset(target)
        self._down[target] = record

    async def _refresh(self, target: str) -> None:
        assert self._decisions is not None
        entry = await self._decisions.get(down_key(*split_target(target)))
        if entry is not None:
            self._set_record(target, entry.value)

    async def _resync(self) -> None:
        """Re-read the down records; re-publish an event this member won but may not have
        published (it crashed, or the bus was away between the CAS and the publish)."""
        assert self._ctx is not None
        self._last_resync = time.monotonic()
        sites = [t for t in self._down if split_target(t)[1]]
        for target in [*self._ctx.trust.member_ids(active_only=False), *sites]:
            await self._refresh(target)
        me = self._ctx.member
        for record in list(self._down.values()):
            kind = "down" if record.state == "down" else "recovered"
            mine = record.declared_by == me if kind == "down" else record.recovered_by == me
            target = target_key(record.member, record.site)
            if not mine or (kind, target, record.epoch) in self._published:
                continue
            cls = MemberDown if kind == "down" else MemberRecovered
            found = await self._ctx.bus.last_event(cls.subject(me, record.member))
            last = found[0] if found else None
            if isinstance(last, MemberDown | MemberRecovered) and last.site == record.site \
                    and last.epoch >= record.epoch:
                self._published.add((kind, target, record.epoch))
                continue
            log.warning("re-publishing a declaration", kind=kind, member=record.member,
                        epoch=record.epoch)
            await self._announce(record)

