"""The bus on a real nats-server: provisioning, signed publish, verified consume, CAS."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats.js.errors
import pytest

from contracts.iam import Roster, RosterBody, RosterMember
from contracts.security import SecurityViolation
from contracts.state import DownDecision
from contracts.workload import WorkloadReleased
from mesh import layout
from mesh.bus import Bus, passing_js_error
from mesh.envelope import seal
from mesh.errors import CasConflict, RetryableError
from mesh.keys import Identity
from mesh.server import NatsCluster
from mesh.state import Bucket, bucket
from mesh.trust import TrustStore, sign_roster
from support import wait_until

NOW = dt.datetime.now(dt.UTC)


def _roster(ids: dict[str, Identity]) -> Roster:
    body = RosterBody(
        federation="t", version=1, issued_at=NOW, threshold=2,
        members=[RosterMember(id=i.member, name=i.member, public_key=i.public_b64,
                              key_id=i.key_id, roles=["founder"]) for i in ids.values()],
    )
    return sign_roster(body, ids.values())


@contextlib.asynccontextmanager
async def pair(
    server: NatsCluster, identities: dict[str, Identity]
) -> AsyncIterator[tuple[Bus, Bus]]:
    """amstel's bus (provisioned) and dommel's, trusting a roster of both; closed after."""
    trust = TrustStore(_roster(identities))
    sender = await Bus.connect(server.urls, identity=identities["amstel"], trust=trust)
    receiver = await Bus.connect(server.urls, identity=identities["dommel"], trust=trust,
                                 service="test")
    try:
        await sender.provision(1)
        yield sender, receiver
    finally:
        await sender.close()
        await receiver.close()


@pytest.fixture
def identities() -> dict[str, Identity]:
    return {m: Identity.generate(m) for m in ("amstel", "dommel")}


async def test_provision_is_idempotent_and_append_only(nats_server: NatsCluster) -> None:
    bus = await Bus.connect(nats_server.urls)
    try:
        await bus.provision(1)
        await bus.provision(1)
        info = await bus.js.stream_info(layout.FED)
        assert info.config.deny_delete and info.config.deny_purge
        for name in (b.name for b in layout.BUCKETS):
            await bus.kv(name)
        await bus.objects()
    finally:
        await bus.close()


async def test_signed_event_round_trip_and_forgery_reported(
    nats_server: NatsCluster, identities: dict[str, Identity]
) -> None:
    async with pair(nats_server, identities) as (sender, receiver):
        got: list[tuple[str, str]] = []

        async def handle(event: object, env: object) -> None:
            assert isinstance(event, WorkloadReleased)
            got.append((event.workload, env.member))  # type: ignore[attr-defined]

        consumer = await receiver.consume(
            handle, subjects=[WorkloadReleased.subject_pattern()], durable="t-released"
        )
        await sender.publish(WorkloadReleased(workload="wl-a", member="dommel"))
        # A forgery: amstel's subject and headers, but an outsider's key.
        outsider = Identity("amstel", Identity.generate("x").private)
        forged = WorkloadReleased(workload="wl-b", member="dommel")
        subject = WorkloadReleased.subject("amstel", "wl-b")
        body = msgspec.json.encode(forged)
        await sender.js.publish(subject, body, headers=seal(outsider, subject,
                                                            "workload.released.v1", body))
        await sender.publish(WorkloadReleased(workload="wl-c", member="dommel"))
        await wait_until(lambda: len(got) == 2 and consumer.rejected == 1,
                         what="two good events and one rejection")
        assert got == [("wl-a", "amstel"), ("wl-c", "amstel")]

        violations: list[SecurityViolation] = []

        async def on_violation(event: object, env: object) -> None:
            assert isinstance(event, SecurityViolation)
            violations.append(event)

        await sender.consume(on_violation, subjects=[SecurityViolation.subject_pattern()],
                             durable=None)
        await wait_until(lambda: violations, what="violation report")
        assert violations[0].reason == "unknown_key"
        assert violations[0].claimed_member == "amstel"
        assert violations[0].offending_subject == subject


async def test_duplicate_msg_id_is_stored_once(
    nats_server: NatsCluster, identities: dict[str, Identity]
) -> None:
    bus = await Bus.connect(nats_server.urls, identity=identities["amstel"],
                            trust=TrustStore(_roster(identities)))
    try:
        await bus.provision(1)
        one = await bus.publish(WorkloadReleased(workload="w", member="amstel"), msg_id="same")
        two = await bus.publish(WorkloadReleased(workload="w", member="amstel"), msg_id="same")
        assert one == two
    finally:
        await bus.close()


def down_record() -> DownDecision:
    return DownDecision(member="x", state="down", epoch=1, declared_by="a", declared_at=NOW)


@contextlib.asynccontextmanager
async def decisions_bucket(server: NatsCluster) -> AsyncIterator[Bucket[DownDecision]]:
    """`fed_decisions` on a provisioned server, through a bus closed after."""
    bus = await Bus.connect(server.urls)
    try:
        await bus.provision(1)
        yield await bucket(bus, layout.KV_DECISIONS, DownDecision)
    finally:
        await bus.close()


async def test_kv_compare_and_set(nats_server: NatsCluster) -> None:
    async with decisions_bucket(nats_server) as decisions:
        record = down_record()
        rev = await decisions.create("down.x", record)
        with pytest.raises(CasConflict):
            await decisions.create("down.x", record)
        with pytest.raises(CasConflict):
            await decisions.update("down.x", record, rev + 10)
        await decisions.update("down.x", record, rev)
        items = await decisions.items()
        assert [e.key for e in items] == ["down.x"]


async def test_a_watch_skips_what_its_caller_holds_before_decoding(
    nats_server: NatsCluster,
) -> None:
    async with decisions_bucket(nats_server) as decisions:
        record = down_record()
        held = {"down.x": await decisions.create("down.x", record)}  # our own write
        await decisions.create("down.y", record)
        seen: list[tuple[str, int]] = []
        asked: list[tuple[str, int]] = []

        def wanted(key: str, revision: int) -> bool:
            asked.append((key, revision))
            return revision > held.get(key, 0)

        async def note(entry, key: str) -> None:  # type: ignore[no-untyped-def]
            seen.append((key, entry.revision))

        task = await decisions.watch(note, wanted=wanted)
        try:
            later = await decisions.update("down.x", record, held["down.x"])
            await wait_until(lambda: ("down.x", later) in seen, what="the newer write")
            assert [k for k, _ in seen] == ["down.y", "down.x"]
            assert ("down.x", held["down.x"]) in asked
        finally:
            task.cancel()


async def test_cluster_replicates_state(tmp_path: Path, nats_cluster: NatsCluster,
                                        identities: dict[str, Identity]) -> None:
    bus = await Bus.connect(nats_cluster.urls)
    try:
        await bus.provision(3)
        info = await bus.js.stream_info(layout.FED)
        assert info.config.num_replicas == 3
    finally:
        await bus.close()


async def test_batch_handler_gets_a_fetch_at_once_and_failures_come_back(
    nats_server: NatsCluster, identities: dict[str, Identity]
) -> None:
    async with pair(nats_server, identities) as (sender, receiver):
        for n in range(10):
            await sender.publish(WorkloadReleased(workload=f"wl-{n}", member="dommel"))
        batches: list[list[str]] = []
        failed_once: set[str] = set()

        async def handle_batch(items: list) -> list[Exception | None]:  # type: ignore[type-arg]
            names = [event.workload for event, _ in items]
            batches.append(names)
            out: list[Exception | None] = []
            for name in names:
                if name == "wl-3" and name not in failed_once:
                    failed_once.add(name)
                    out.append(RetryableError("not yet"))
                else:
                    out.append(None)
            return out

        async def unused(event: object, env: object) -> None:
            raise AssertionError("the batch handler takes every message")

        consumer = await receiver.consume(
            unused, subjects=[WorkloadReleased.subject_pattern()], durable="t-batch",
            batch=64, batch_handler=handle_batch)
        await wait_until(lambda: consumer.handled == 10, timeout=30,
                         what="every message handled, the failed one redelivered")
        assert max(len(b) for b in batches) > 1  # a fetch came as one batch
        assert sum(b.count("wl-3") for b in batches) == 2 and consumer.errors == 1


async def test_a_create_refused_while_the_rival_write_is_not_visible_is_a_cas_conflict(
) -> None:
    class RacingKV:
        _name = "fed_reservations"

        async def create(self, key: str, value: bytes) -> int:
            # nats-py: the create was refused (the key has a revision), then its read to
            # tell a deleted key from a live one found nothing yet.
            raise nats.js.errors.KeyNotFoundError()

    racing = Bucket(RacingKV(), DownDecision)  # type: ignore[arg-type]
    with pytest.raises(CasConflict):
        await racing.create("amstel.ams1", down_record())


async def test_a_failure_the_loop_cannot_settle_does_not_end_it(
    nats_server: NatsCluster, identities: dict[str, Identity]
) -> None:
    """A handler's KeyNotFoundError (an APIError without err_code) once broke the settling
    and silently ended a scheduler's consume loop: its fetched submissions waited for the
    ack wait (30 s) and went to another scheduler. Now it is a failure like any other,
    and whatever else goes wrong in a dispatch is logged while the loop goes on."""
    assert not passing_js_error(nats.js.errors.KeyNotFoundError())
    assert passing_js_error(nats.js.errors.APIError(code=503, err_code=10008))
    # A publish no stream answered (no leader yet): retried, as in a cluster that forms.
    assert passing_js_error(nats.js.errors.NoStreamResponseError())
    async with pair(nats_server, identities) as (sender, receiver):
        for n in range(3):
            await sender.publish(WorkloadReleased(workload=f"wl-{n}", member="dommel"))
        calls: list[int] = []

        async def handle_batch(items: list) -> list[Exception | None]:  # type: ignore[type-arg]
            calls.append(len(items))
            if len(calls) == 1:
                return [nats.js.errors.KeyNotFoundError()] * len(items)
            if len(calls) == 2:
                return []  # a bug: too few outcomes
            return [None] * len(items)

        async def unused(event: object, env: object) -> None:
            raise AssertionError("the batch handler takes every message")

        consumer = await receiver.consume(
            unused, subjects=[WorkloadReleased.subject_pattern()], durable="t-broken",
            batch=64, ack_wait_s=2.0, batch_handler=handle_batch)
        await wait_until(lambda: consumer.handled == 3, timeout=30,
                         what="every message handled in the end")
        assert len(calls) >= 3 and consumer.errors >= 4
        assert not consumer.task.done()


async def test_irrelevant_messages_are_skipped_before_verification(
    nats_server: NatsCluster, identities: dict[str, Identity]
) -> None:
    async with pair(nats_server, identities) as (sender, receiver):
        got: list[str] = []

        async def handle(event: object, env: object) -> None:
            assert isinstance(event, WorkloadReleased)
            got.append(event.workload)

        def mine(subject: str, body: bytes) -> bool:
            return msgspec.json.decode(body)["member"] == "dommel"

        consumer = await receiver.consume(
            handle, subjects=[WorkloadReleased.subject_pattern()], durable="t-relevant",
            relevant=mine, concurrency=8)
        # Forged, but about someone else: skipped, never verified, never reported.
        outsider = Identity("amstel", Identity.generate("x").private)
        for workload, member in (("wl-x", "zuidas"), ("wl-y", "dommel")):
            subject = WorkloadReleased.subject("amstel", workload)
            body = msgspec.json.encode(WorkloadReleased(workload=workload, member=member))
            await sender.js.publish(subject, body, headers=seal(
                outsider, subject, "workload.released.v1", body))
        await sender.publish(WorkloadReleased(workload="wl-z", member="dommel"))
        await sender.publish(WorkloadReleased(workload="wl-w", member="amstel"))
        await wait_until(lambda: got == ["wl-z"] and consumer.skipped == 2
                         and consumer.rejected == 1, timeout=30,
                         what="one handled, two skipped, the relevant forgery refused")
