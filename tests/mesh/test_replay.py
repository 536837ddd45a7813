"""Replay beyond JetStream's duplicate window: the same signed message stored twice is
refused the second time and reported as a security violation."""

from __future__ import annotations

from pathlib import Path

import msgspec

from contracts.base import Event
from contracts.security import SecurityViolation
from contracts.workload import WorkloadReleased
from mesh.envelope import Envelope, seal
from mesh.replay import SeenMessages
from mesh.server import NatsCluster
from support import federation, wait_until


def test_the_same_signature_elsewhere_is_a_replay() -> None:
    seen = SeenMessages(ttl_s=10, max_entries=3)
    assert not seen.is_replay("sig-a", "FED:1", now=0)
    assert not seen.is_replay("sig-a", "FED:1", now=1)  # a redelivery
    assert seen.is_replay("sig-a", "FED:7", now=2)
    assert not seen.is_replay("sig-a", "FED:9", now=20)  # forgotten after the TTL


def test_memory_stays_bounded() -> None:
    seen = SeenMessages(ttl_s=1000, max_entries=100)
    for i in range(1000):
        seen.is_replay(f"sig-{i}", f"FED:{i}", now=i * 0.01)
    assert len(seen) == 100


async def test_a_resent_old_message_is_refused(nats_server: NatsCluster, tmp_path: Path) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=["iam"]) as fed:
        bus = await fed.bus("amstel")
        # Shrink the FED duplicate window so the re-send gets past JetStream, as it would
        # after two minutes in production.
        info = await bus.js.stream_info("FED")
        info.config.duplicate_window = 0.1
        await bus.js.update_stream(info.config)

        event = WorkloadReleased(workload="wl-1", member="amstel", cause="test")
        subject = WorkloadReleased.subject("amstel", "wl-1")
        body = msgspec.json.encode(event)
        headers = seal(fed.identity("amstel"), subject, WorkloadReleased.type_name(), body)
        await bus.js.publish(subject, body, headers=headers)

        async def resend() -> bool:
            ack = await bus.js.publish(subject, body, headers=headers)
            return not ack.duplicate

        await wait_until(resend, what="a re-send stored past the duplicate window")

        reader = await fed.bus("dommel")
        handled: list[str] = []

        async def on_event(ev: Event, env: Envelope) -> None:
            handled.append(env.msg_id)

        consumer = await reader.consume(on_event, subjects=["fed.v1.workload.released.>"],
                                        durable=None)
        violations: list[SecurityViolation] = []

        async def on_violation(ev: Event, env: Envelope) -> None:
            assert isinstance(ev, SecurityViolation)
            violations.append(ev)

        await bus.consume(on_violation, subjects=["fed.v1.security.violation.>"], durable=None)
        await wait_until(lambda: consumer.rejected == 1 and len(handled) == 1,
                         what="one handled, one refused")
        await wait_until(lambda: any(v.reason == "replayed" for v in violations),
                         what="the violation on the bus")
        assert handled == [headers["Nats-Msg-Id"]]
