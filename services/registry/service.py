"""The registry service: announces its member and materialises its member's profile.

Each member's registry writes only its own member's keys (`fed_members/<member>`,
`fed_capacity/<member>`), from its own member's signed announcements and capacity
reports in `FED`, through a durable consumer of its own. So the NATS configuration of
`stekker deploy nats-config` can refuse a member's connection any other member's key
there: no member can rewrite another's profile or capacity.
"""

from __future__ import annotations

from typing import Any

from contracts.base import Event
from contracts.registry import CapacityReported, MemberAnnounced
from contracts.state import CapacityRecord, MemberRecord
from mesh import layout
from mesh.bus import Consumer, consumer_health
from mesh.envelope import Envelope
from mesh.errors import Rejected
from mesh.observability import logger
from mesh.runtime import NodeContext
from mesh.state import Bucket, bucket

log = logger("services.registry")


class RegistryService:
    name = "registry"

    def __init__(self) -> None:
        self._consumer: Consumer | None = None
        self._members: Bucket[MemberRecord] | None = None
        self._capacity: Bucket[CapacityRecord] | None = None
        self._ctx: NodeContext | None = None

    async def start(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._members = await bucket(ctx.bus, layout.KV_MEMBERS, MemberRecord)
        self._capacity = await bucket(ctx.bus, layout.KV_CAPACITY, CapacityRecord)
        own = ctx.member
        self._consumer = await ctx.bus.consume(
            self._handle,
            subjects=[MemberAnnounced.subject(own), CapacityReported.subject(own)],
            durable=f"registry-{own}",
        )
        await ctx.bus.publish(MemberAnnounced(profile=ctx.profile))

    async def _handle(self, event: Event, env: Envelope) -> None:
        assert self._members is not None and self._capacity is not None
        if isinstance(event, MemberAnnounced):
            if event.profile.id != env.member:
                # A member may announce itself only.
                rejected = Rejected("subject_mismatch", f"{env.member} announced "
                                    f"a profile for {event.profile.id}")
                if self._ctx:
                    await self._ctx.bus.report_violation(rejected, env.subject, env.headers)
                return
            await self._members.put(
                env.member,
                MemberRecord(profile=event.profile, announced_at=env.time, msg_id=env.msg_id),
            )
            log.info("member announced", member=env.member, sites=len(event.profile.sites))
        elif isinstance(event, CapacityReported):
            await self._capacity.put(
                env.member,
                CapacityRecord(member=env.member, sites=event.sites, reported_at=env.time),
            )

    async def stop(self) -> None:
        if self._consumer:
            await self._consumer.stop()

    def health(self) -> dict[str, Any]:
        return consumer_health(self._consumer)
