"""Test helpers for failover: heartbeats signed by each member's key, and forgeries.

Used while (or where) the agent service is not there to publish the heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterable
from typing import Any

import msgspec

from contracts.base import Event
from contracts.iam import RosterBody, RosterMember
from contracts.registry import Heartbeat
from mesh.bus import Bus
from mesh.envelope import Envelope, seal
from mesh.keys import Identity
from mesh.trust import TrustStore, sign_roster
from services.failover.service import FailoverService
from support import Federation

ROSTER_TIME = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def trust_of(*members: str, suspended: Iterable[str] = ()) -> TrustStore:
    """A trust store with a signed roster of `members` (those in `suspended` suspended)."""
    ids = [Identity.generate(m) for m in members]
    body = RosterBody(
        federation="t", version=1, issued_at=ROSTER_TIME, threshold=1,
        members=[RosterMember(id=i.member, name=i.member, public_key=i.public_b64,
                              key_id=i.key_id, roles=["founder"],
                              state="suspended" if i.member in set(suspended) else "active")
                 for i in ids],
    )
    return TrustStore(sign_roster(body, ids))


class HeartbeatPump:
    """Publishes a `health.heartbeat.v1` for each member every interval, like its agent
    would; `pause`/`resume` a member to make it fall silent and come back."""

    def __init__(self, fed: Federation, interval_s: float) -> None:
        self.fed = fed
        self.interval_s = interval_s
        self.paused: set[str] = set()
        self.sent: dict[str, int] = {}
        self._buses: dict[str, Bus] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self, members: Iterable[str]) -> HeartbeatPump:
        for member in members:
            self._buses[member] = await self.fed.bus(member)
        self._task = asyncio.create_task(self._run())
        return self

    def pause(self, *members: str) -> None:
        self.paused.update(members)

    def resume(self, *members: str) -> None:
        self.paused.difference_update(members)

    async def _run(self) -> None:
        while True:
            for member, bus in self._buses.items():
                if member in self.paused:
                    continue
                seq = self.sent.get(member, 0) + 1
                with contextlib.suppress(Exception):
                    await bus.publish(Heartbeat(seq=seq, interval_s=self.interval_s), timeout=2)
                    self.sent[member] = seq
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def publish_forged(bus: Bus, event: Event, *, claimed: str, target: str | None) -> str:
    """Publish `event` as if from `claimed`, signed by a key no roster knows. Returns the
    forged message's msg id."""
    outsider = Identity(claimed, Identity.generate("outsider").private)
    subject = type(event).subject(claimed, target)
    body = msgspec.json.encode(event)
    headers = seal(outsider, subject, type(event).type_name(), body,
                   now=dt.datetime.now(dt.UTC))
    await bus.js.publish(subject, body, headers=headers)
    return headers["Nats-Msg-Id"]


SERVICES = ["iam", "registry", "agent", "failover"]


class Log:
    """Every event of some types on FED, read by an ephemeral consumer from the start."""

    def __init__(self) -> None:
        self.events: list[tuple[Event, Envelope]] = []

    async def start(self, bus: Bus, *types: type[Event]) -> Log:
        async def collect(event: Event, env: Envelope) -> None:
            self.events.append((event, env))

        await bus.consume(collect, subjects=[t.subject_pattern() for t in types], durable=None)
        return self

    def of(self, cls: type[Event], **fields: Any) -> list[tuple[Any, Envelope]]:
        return [(e, env) for e, env in self.events if isinstance(e, cls)
                and all(getattr(e, k) == v for k, v in fields.items())]


def failover(fed: Federation, member: str) -> FailoverService:
    for service in fed.nodes[member].started:
        if isinstance(service, FailoverService):
            return service
    raise AssertionError(f"{member} runs no failover service")


def hears_everyone(fed: Federation) -> bool:
    return all(
        failover(fed, m).book.beats(other) >= 2
        for m in fed.nodes for other in fed.nodes if other != m
    )
