"""Helpers for the takeover drill tests: placing demo workloads, following a saga."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from contracts.base import Event
from contracts.security import SecurityViolation
from contracts.state import PlacementRecord, SagaProgress, SagaRecord
from contracts.takeover import TakeoverRequested
from contracts.workload import WorkloadSubmitted
from mesh import layout
from mesh.bus import Bus
from mesh.envelope import Envelope, new_msg_id, seal
from mesh.keys import Identity
from mesh.state import Bucket, bucket
from services.audit.replay import Auditor
from services.audit.report import AuditReport
from services.takeover.saga import merged_steps
from services.takeover.service import TakeoverService
from support import Federation, wait_until
from support_workloads import demo_spec, members_known, placements, service_of

DRILLING = ["iam", "registry", "scheduler", "agent", "takeover"]
FINISHED = ("completed", "failed")


def takeover_of(fed: Federation, member: str) -> TakeoverService:
    service: TakeoverService = service_of(fed, member, TakeoverService)
    return service


async def sagas(bus: Bus) -> Bucket[SagaRecord]:
    return await bucket(bus, layout.KV_SAGAS, SagaRecord)


async def place_demo(bus: Bus, names: Iterable[str]) -> dict[str, PlacementRecord]:
    """Submit demo workloads and wait until each is placed and every replica runs."""
    await wait_until(lambda: members_known(bus), what="member profiles")
    names = list(names)
    for name in names:
        await bus.publish(WorkloadSubmitted(spec=demo_spec(name)))
    records = await placements(bus)

    async def probe() -> dict[str, PlacementRecord] | None:
        got = {e.key: e.value for e in await records.items()}
        if all(n in got and got[n].state == "running" for n in names):
            return got
        return None

    found: dict[str, PlacementRecord] = await wait_until(
        probe, timeout=20, what="demo workloads placed and running")
    return found


async def request_drill(bus: Bus, target: str) -> str:
    """What `stekker drill takeover` publishes: a request signed by the acting member."""
    saga = new_msg_id()
    await bus.publish(TakeoverRequested(saga=saga, member=target, reason="drill", drill=True),
                      msg_id=f"request-{saga}")
    return saga


async def saga_in(bus: Bus, saga: str, states: Iterable[str], timeout: float = 20) -> SagaRecord:
    store, wanted = await sagas(bus), tuple(states)

    async def probe() -> SagaRecord | None:
        entry = await store.get(saga)
        return entry.value if entry and entry.value.state in wanted else None

    record: SagaRecord = await wait_until(probe, timeout=timeout,
                                          what=f"saga {saga} in {wanted}")
    return record


async def timeline(bus: Bus, saga: str) -> list[dict[str, object]]:
    """Every step of the saga: its record's own and each workload's progress record's."""
    record = (await saga_in(bus, saga, ("planning", "approving", "running", *FINISHED)))
    progress = await bucket(bus, layout.KV_SAGAS, SagaProgress)
    return merged_steps(record, [e.value for e in
                                 await progress.items(layout.progress_keys(saga))])


async def audit(bus: Bus) -> AuditReport:
    """What `stekker audit verify` finds: FED replayed, every signature against the roster
    of its time, every placement decision re-checked."""
    auditor = Auditor()
    async for message in bus.read_stream(layout.FED, start_seq=1):
        auditor.feed(message)
    return auditor.finish()


class Recorder:
    """Every event an ephemeral consumer sees, with its envelope."""

    def __init__(self) -> None:
        self.seen: list[tuple[Event, Envelope]] = []

    async def __call__(self, event: Event, env: Envelope) -> None:
        self.seen.append((event, env))

    def of(self, kind: type[Event], saga: str | None = None) -> list[tuple[Event, Envelope]]:
        return [(e, env) for e, env in self.seen
                if isinstance(e, kind) and (saga is None or getattr(e, "saga", None) == saga)]

    def violations(self, msg_id: str) -> list[SecurityViolation]:
        return [e for e, _ in self.seen
                if isinstance(e, SecurityViolation) and e.msg_id == msg_id]


async def record_events(bus: Bus, subjects: list[str]) -> Recorder:
    recorder = Recorder()
    await bus.consume(recorder, subjects=subjects, durable=None, deliver="new")
    return recorder


async def publish_forged(bus: Bus, event: Event, claimed: str, target: str) -> str:
    """Publish `event` as `claimed` but signed with a key outside the roster."""
    outsider = Identity(claimed, Identity.generate("mallory").private)
    subject = type(event).subject(claimed, target)
    body = msgspec.json.encode(event)
    headers = seal(outsider, subject, type(event).type_name(), body)
    await bus.js.publish(subject, body, headers=headers)
    return headers["Nats-Msg-Id"]


# -- real takeovers --------------------------------------------------------------------

WORKLOAD = "rivm-meetdata"  # stateful; lands on dommel in an empty federation


async def place(
    bus: Bus, *, rpo_seconds: int | None = None, rto_seconds: int | None = None
) -> None:
    await wait_until(lambda: members_known(bus), what="member profiles")
    spec = demo_spec(WORKLOAD)
    if rpo_seconds is not None:
        spec = msgspec.structs.replace(spec, rpo_seconds=rpo_seconds)
    if rto_seconds is not None:
        spec = msgspec.structs.replace(spec, rto_seconds=rto_seconds)
    await bus.publish(WorkloadSubmitted(spec=spec))
    records = await placements(bus)

    async def running_on_dommel() -> bool:
        entry = await records.get(WORKLOAD)
        return entry is not None and entry.value.state == "running" and \
            [a.member for a in entry.value.assignments] == ["dommel"]

    await wait_until(running_on_dommel, timeout=20, what=f"{WORKLOAD} running on dommel")


async def declare(bus: Bus, target: str, reason: str, saga: str | None = None) -> str:
    """What `stekker takeover declare` publishes."""
    saga = saga or new_msg_id()
    await bus.publish(TakeoverRequested(saga=saga, member=target, reason=reason,  # type: ignore[arg-type]
                                        drill=False),
                      msg_id=f"request-{saga}-{bus.member}")
    return saga


def data_on(fed: Federation, member: str) -> bytes:
    return (fed.data_dir / "workloads" / member / WORKLOAD / "data" / "sim.bin").read_bytes()


async def declare_and_join(first: Bus, second: Bus, target: str, reason: str) -> str:
    """`first`'s operator declares a takeover (its member coordinates it); once the saga
    is recorded, `second`'s operator joins it (its consent)."""
    saga = await declare(first, target, reason)
    await saga_in(first, saga, ["planning", "approving", "running"])
    await declare(second, target, reason, saga=saga)
    return saga

