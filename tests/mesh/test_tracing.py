"""Trace context travels in message headers from one service to the next."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts.iam import RosterBody, RosterMember
from contracts.workload import WorkloadReleased
from mesh.bus import Bus
from mesh.keys import Identity
from mesh.server import NatsCluster
from mesh.trust import TrustStore, sign_roster
from support import wait_until


@pytest.fixture
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    return exporter


async def test_consumer_span_continues_the_publishers_trace(
    nats_server: NatsCluster, spans: InMemorySpanExporter
) -> None:
    ids = {m: Identity.generate(m) for m in ("amstel", "dommel")}
    body = RosterBody(federation="t", version=1, issued_at=dt.datetime.now(dt.UTC), threshold=1,
                      members=[RosterMember(id=i.member, name=i.member, public_key=i.public_b64,
                                            key_id=i.key_id, roles=["founder"])
                               for i in ids.values()])
    trust = TrustStore(sign_roster(body, ids.values()))
    a = await Bus.connect(nats_server.urls, identity=ids["amstel"], trust=trust)
    b = await Bus.connect(nats_server.urls, identity=ids["dommel"], trust=trust)
    try:
        await a.provision(1)
        relayed = asyncio.Event()

        async def first_hop(event: object, env: object) -> None:
            # Service B reacts by publishing: the next hop must stay in the same trace.
            if isinstance(event, WorkloadReleased) and event.cause == "start":
                await b.publish(WorkloadReleased(workload="w", member="amstel", cause="relay"))
            else:
                relayed.set()

        await b.consume(first_hop, subjects=[WorkloadReleased.subject_pattern()], durable="t1")
        with trace.get_tracer("test").start_as_current_span("cli submit") as root:
            await a.publish(WorkloadReleased(workload="w", member="dommel", cause="start"))
        await wait_until(relayed.is_set, what="relayed message consumed")
        trace_id = root.get_span_context().trace_id
        names = [s.name for s in spans.get_finished_spans()
                 if s.context.trace_id == trace_id]
        assert names.count("publish workload.released.v1") == 2
        assert names.count("consume workload.released.v1") >= 1
        assert "cli submit" in names
    finally:
        await a.close()
        await b.close()
