"""The conformance checks: each a small async function against the running federation.

A check returns a detail of what it saw when the member passes, or raises `CheckFailed`
with the reason. Every wait is bounded by the probe's timeout. The checks sign as the
acting member (the bus's identity), never as the member under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from contracts.base import Event
from contracts.registry import Heartbeat, MemberAnnounced, MemberProfile
from contracts.security import SecurityViolation
from contracts.workload import WorkloadBound, WorkloadFailed, WorkloadReleased
from mesh.bus import Bus, Consumer
from mesh.envelope import Envelope
from mesh.forge import publish_forged
from services.conformance import announcement, heartbeat, placement
from services.conformance.result import CheckFailed

# How long a forged placement must stay unbound: a healthy agent binds a real one within
# a fraction of this.
FORGED_WINDOW_S = 3.0

Seen = tuple[Event, Envelope]


@dataclass
class Probe:
    """What every check gets: a signing bus (acting member), the member under test."""

    bus: Bus
    member: str
    timeout_s: float = 10.0


@dataclass
class Watch:
    """FED events on some subjects from the moment it opens, collected as they come."""

    seen: list[Seen] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _consumer: Consumer | None = None

    @classmethod
    async def open(cls, bus: Bus, subjects: Sequence[str]) -> Watch:
        watch = cls()
        watch._consumer = await bus.consume(watch._on, subjects=subjects, durable=None,
                                            deliver="new")
        return watch

    async def _on(self, event: Event, env: Envelope) -> None:
        self.seen.append((event, env))
        self._changed.set()

    async def first(self, match: Callable[[Event, Envelope], bool], timeout_s: float
                    ) -> Seen | None:
        """The first event that matches, waiting up to `timeout_s`; None if none came."""
        deadline = time.monotonic() + timeout_s
        while True:
            for item in self.seen:
                if match(*item):
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


async def _announced(probe: Probe) -> tuple[MemberProfile, Envelope]:
    found = await probe.bus.last_event(MemberAnnounced.subject(probe.member))
    if found is None:
        raise CheckFailed(f"no registry.announced of {probe.member} on FED that verifies "
                          "against the roster in force")
    event, env = found
    assert isinstance(event, MemberAnnounced)
    return event.profile, env


async def check_announcement(probe: Probe) -> str:
    """(a) The newest announcement verifies (last_event verifies) and is valid."""
    profile, env = await _announced(probe)
    problems = announcement.announcement_problems(profile, probe.member)
    if problems:
        raise CheckFailed("; ".join(problems))
    levels = " ".join(f"{k}={v}" for k, v in sorted(profile.sov.items()))
    return (f"{profile.name!r}, {len(profile.sites)} site(s), {levels}; "
            f"announced {env.time.isoformat(timespec='seconds')}")


async def check_heartbeat(probe: Probe) -> str:
    """(b) Heartbeats arrive at least every 1.5 x their declared interval."""
    arrivals: list[float] = []
    intervals: list[float] = []
    got_one = asyncio.Event()
    listening = True

    async def on_heartbeat(event: Event, env: Envelope) -> None:
        if listening and isinstance(event, Heartbeat) and env.member == probe.member:
            arrivals.append(time.monotonic())
            intervals.append(event.interval_s)
            got_one.set()

    # A live core subscription: heartbeats are live signals, and arrival times measured
    # here are not blurred by batched fetching. The bus keeps the subscription until it
    # closes; `listening` ends our interest.
    await probe.bus.subscribe(Heartbeat.subject(probe.member), on_heartbeat)
    try:
        try:
            await asyncio.wait_for(got_one.wait(), probe.timeout_s)
        except TimeoutError:
            raise CheckFailed(f"no heartbeat from {probe.member} within "
                              f"{probe.timeout_s:g}s") from None
        interval = intervals[0]
        await asyncio.sleep(heartbeat.observation_window(interval, probe.timeout_s))
        end = time.monotonic()
    finally:
        listening = False
    ok, why = heartbeat.heartbeat_gaps(list(arrivals), max(intervals), end)
    if not ok:
        raise CheckFailed(why)
    return why


def _from_member(probe: Probe, workload: str) -> Callable[[Event, Envelope], bool]:
    def match(event: Event, env: Envelope) -> bool:
        return env.member == probe.member and getattr(event, "workload", None) == workload
    return match


async def check_binds_placement(probe: Probe) -> str:
    """(c) A signed placement on the member is bound; a release stops it again."""
    profile, _ = await _announced(probe)
    if not profile.sites:
        raise CheckFailed("the announcement lists no site to place on")
    site = profile.sites[0].id
    workload = placement.new_workload_id()
    subjects = [cls.subject(probe.member, workload)
                for cls in (WorkloadBound, WorkloadFailed, WorkloadReleased)]
    watch = await Watch.open(probe.bus, subjects)
    released = False
    try:
        placed = placement.placement_for(workload, member=probe.member, site=site,
                                         decided_by=probe.bus.member,
                                         now=dt.datetime.now(dt.UTC))
        start = time.monotonic()
        await probe.bus.publish(placed)
        mine = _from_member(probe, workload)
        answer = await watch.first(
            lambda e, env: mine(e, env) and isinstance(e, WorkloadBound | WorkloadFailed),
            probe.timeout_s,
        )
        if answer is None:
            raise CheckFailed(f"{probe.member} did not bind {workload} on {site} within "
                              f"{probe.timeout_s:g}s")
        event = answer[0]
        if isinstance(event, WorkloadFailed):
            raise CheckFailed(f"{probe.member} failed {workload}: {event.reason}")
        assert isinstance(event, WorkloadBound)
        if event.generation != 1 or event.site != site:
            raise CheckFailed(f"{probe.member} bound {workload} as generation "
                              f"{event.generation} on {event.site}, expected 1 on {site}")
        bound_s = time.monotonic() - start

        start = time.monotonic()
        await probe.bus.publish(placement.release_for(workload, member=probe.member))
        released = True
        stopped = await watch.first(
            lambda e, env: mine(e, env) and isinstance(e, WorkloadReleased)
            and e.member == probe.member,
            probe.timeout_s,
        )
        if stopped is None:
            raise CheckFailed(f"{probe.member} bound {workload} but did not confirm its "
                              f"release within {probe.timeout_s:g}s")
        return (f"{workload} bound on {site} by driver {event.driver} in {bound_s:.2f}s, "
                f"release confirmed in {time.monotonic() - start:.2f}s")
    finally:
        if not released:
            # Whatever happened, leave nothing running: an agent that comes up later and
            # replays FED must see the release after the placement.
            with contextlib.suppress(Exception):
                await probe.bus.publish(placement.release_for(workload, member=probe.member))
        await watch.close()


async def check_ignores_forged(probe: Probe) -> str:
    """(d) A placement with a forged signature is not bound, and is reported."""
    found = await probe.bus.last_event(MemberAnnounced.subject(probe.member))
    site = "unknown"
    if found is not None and isinstance(found[0], MemberAnnounced) and found[0].profile.sites:
        site = found[0].profile.sites[0].id
    workload = placement.new_workload_id()
    # Only the member's answer and the violation reports: a watch on the placement
    # subject itself would make this bus reject (and report) the forgery too.
    watch = await Watch.open(probe.bus, [WorkloadBound.subject(probe.member, workload),
                                         SecurityViolation.subject_pattern()])
    try:
        forged = placement.placement_for(workload, member=probe.member, site=site,
                                         decided_by=probe.bus.member,
                                         now=dt.datetime.now(dt.UTC))
        msg_id = await publish_forged(probe.bus, forged, claimed_member=probe.bus.member)
        window = min(probe.timeout_s, FORGED_WINDOW_S)
        bound = await watch.first(_from_member(probe, workload), window)
        if bound is not None:
            raise CheckFailed(f"{probe.member} bound the forged placement {workload} "
                              f"(msg {msg_id})")

        def about_it(event: Event, env: Envelope) -> bool:
            return isinstance(event, SecurityViolation) and event.msg_id == msg_id

        if await watch.first(about_it, max(probe.timeout_s - window, 0.5)) is None:
            raise CheckFailed(f"no security.violation.v1 about forged msg {msg_id} on FED")
        reports = [(e, env) for e, env in watch.seen if about_it(e, env)]
        reporters = sorted({env.member for _, env in reports})
        reasons = sorted({e.reason for e, _ in reports if isinstance(e, SecurityViolation)})
        by_member = "including" if probe.member in reporters else "not including"
        return (f"not bound within {window:g}s; violation ({', '.join(reasons)}) reported "
                f"by {', '.join(reporters)} ({by_member} {probe.member})")
    finally:
        await watch.close()
