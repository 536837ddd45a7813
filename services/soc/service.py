"""The soc service: every verified FED event, once, as a CloudEvent on the SOC stream.

All members' soc services share one durable consumer (`soc`), so each FED event is
converted once in the federation, by whichever member takes it; the SOC message id
`soc-<FED msg id>` makes a second conversion after a crash a duplicate JetStream drops.
The SOC subject's last segment is the converting member (`soc.v1.<severity>.<publisher>`,
as the contract says), so the NATS configuration can keep each member to its own SOC
subjects; the CloudEvent's `source` names the member the event is from.
Refused FED messages never reach this handler: the Bus reports them as
`security.violation.v1` on FED, and those arrive here as high-severity CloudEvents.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from contracts.base import Event
from contracts.catalog import FED_SUBJECTS, soc_subject
from contracts.failover import MemberSuspected
from contracts.state import SagaRecord
from mesh import layout
from mesh.bus import Consumer, consumer_health
from mesh.envelope import Envelope
from mesh.errors import RetryableError, TerminalError
from mesh.observability import logger
from mesh.runtime import NodeContext
from mesh.soc_feed import publish_cloudevent
from mesh.state import Bucket, bucket
from services.soc.cloudevents import InvalidCloudEvent, build, encode
from services.soc.severity import severity_of

log = logger("services.soc")
DURABLE = "soc"
_MAX_SAGAS_REMEMBERED = 1024


class SocService:
    name = "soc"

    def __init__(self) -> None:
        self._ctx: NodeContext | None = None
        self._consumer: Consumer | None = None
        self._sagas: Bucket[SagaRecord] | None = None
        # saga id -> drill, from takeover events that say so; approvals and steps do not.
        self._drills: dict[str, bool] = {}
        self.by_severity: Counter[str] = Counter()

    async def start(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self._sagas = await bucket(ctx.bus, layout.KV_SAGAS, SagaRecord)
        self._consumer = await ctx.bus.consume(
            self._handle, subjects=FED_SUBJECTS, durable=DURABLE
        )

    async def _handle(self, event: Event, env: Envelope) -> None:
        assert self._ctx is not None
        drill = await self._drill(event) if env.type_name.startswith("takeover.") else None
        withdrawn = isinstance(event, MemberSuspected) and not event.suspected
        severity = severity_of(env.type_name, drill=drill, withdrawn=withdrawn)
        try:
            body = encode(build(event, env, severity=severity))
        except InvalidCloudEvent as exc:
            # Cannot happen for a verified event unless our formats and the SDK disagree;
            # retrying would not help.
            raise TerminalError(f"cannot express {env.msg_id} as a CloudEvent: {exc}") from exc
        try:
            await publish_cloudevent(
                self._ctx.bus, soc_subject(severity, self._ctx.member), body,
                f"soc-{env.msg_id}",
            )
        except Exception as exc:
            raise RetryableError(f"SOC publish failed: {exc}") from exc
        self.by_severity[severity] += 1

    async def _drill(self, event: Event) -> bool | None:
        """Whether a takeover event belongs to a drill; None when nobody can tell."""
        saga = getattr(event, "saga", None)
        drill = getattr(event, "drill", None)
        if isinstance(drill, bool):
            if saga and len(self._drills) < _MAX_SAGAS_REMEMBERED:
                self._drills[saga] = drill
            return drill
        if not saga:
            return None
        if saga in self._drills:
            return self._drills[saga]
        if self._sagas is None:
            return None
        try:
            entry = await self._sagas.get(saga)
        except TerminalError:  # an unreadable record: fall back to "unknown" (high)
            return None
        return entry.value.drill if entry else None

    async def stop(self) -> None:
        if self._consumer:
            await self._consumer.stop()

    def health(self) -> dict[str, Any]:
        base = consumer_health(self._consumer)
        return {**base, "converted": base["handled"], "by_severity": dict(self.by_severity)}
