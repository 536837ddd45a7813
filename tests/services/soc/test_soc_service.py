"""The soc service in a three-member federation on a real nats-server.

(Named test_soc_service.py, not test_service.py: without __init__.py files pytest cannot
hold two test modules of the same name, and other services have a test_service.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from contracts.security import SecurityViolation
from contracts.workload import WorkloadFailed
from mesh import layout
from mesh.envelope import new_msg_id
from mesh.forge import publish_forged
from mesh.server import NatsCluster
from mesh.soc_feed import tail
from services.soc.cloudevents import check
from services.soc.service import SocService
from support import Federation, federation, wait_until
from support_soc import soc_event, soc_events

SERVICES = ["iam", "registry", "soc", "agent", "scheduler"]


def soc_services(fed: Federation) -> list[SocService]:
    return [s for node in fed.nodes.values() for s in node.started if isinstance(s, SocService)]


async def test_each_event_once_as_a_cloudevent(nats_server: NatsCluster, tmp_path: Path) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=SERVICES) as fed:
        assert len(soc_services(fed)) == 3
        bus = await fed.bus("amstel")
        msg_id = new_msg_id()
        seq = await bus.publish(WorkloadFailed(workload="wl-soc", reason="no capacity"),
                                msg_id=msg_id)
        ce = await wait_until(lambda: soc_event(bus, msg_id), what="the CloudEvent")
        check(ce)
        assert ce["type"] == "eu.stekker.workload.failed.v1"
        assert ce["source"] == "stekker://member/amstel"
        assert ce["severity"] == "medium"
        assert ce["subject"] == "wl-soc"
        assert ce["stekkerseq"] == seq
        assert ce["data"] == {"workload": "wl-soc", "reason": "no capacity", "decision": None}
        # On the severity's subject, so a SOC can filter on it.
        medium = await soc_events(bus, severities=["medium"])
        assert msg_id in [c["id"] for c in medium]
        assert msg_id not in [c["id"] for c in await soc_events(bus, severities=["info"])]

        async def counts() -> tuple[int, int, int] | None:
            fed_n = (await bus.js.stream_info(layout.FED)).state.messages
            soc_n = (await bus.js.stream_info(layout.SOC)).state.messages
            converted = sum(sum(s.by_severity.values()) for s in soc_services(fed))
            return (fed_n, soc_n, converted) if fed_n == soc_n == converted else None

        # Three soc services, one shared consumer: every FED event converted exactly once.
        await wait_until(counts, what="FED, SOC and conversions to agree")
        ids = [c["id"] for c in await soc_events(bus)]
        assert len(ids) == len(set(ids))
        assert ids.count(msg_id) == 1


async def test_forged_message_becomes_a_high_violation(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed",
                          services=["iam", "registry", "soc"]) as fed:
        bus = await fed.bus("amstel")
        forged_id = await publish_forged(
            bus, WorkloadFailed(workload="wl-forged", reason="x"), claimed_member="dommel"
        )

        async def violation_ce() -> dict[str, Any] | None:
            for ce in await soc_events(bus, severities=["high"]):
                if ce["data"].get("msg_id") == forged_id:
                    return ce
            return None

        ce = await wait_until(violation_ce, what="a violation CloudEvent")
        check(ce)
        assert ce["type"] == "eu.stekker.security.violation.v1"
        assert ce["severity"] == "high"
        assert ce["subject"] == "dommel"  # the member the forger claimed to be
        assert ce["data"]["reason"] == "unknown_key"
        assert ce["data"]["claimed_type"] == WorkloadFailed.type_name()
        # The reporter's signed violation is what SOC shows; the forgery itself never is.
        assert ce["source"] in {f"stekker://member/{m}" for m in fed.nodes}
        assert await soc_event(bus, forged_id) is None
        found = await bus.last_event(SecurityViolation.subject(ce["source"].rsplit("/")[-1]))
        assert found is not None and found[1].msg_id == ce["id"]


async def test_tail_last_and_follow(nats_server: NatsCluster, tmp_path: Path) -> None:
    async with federation(nats_server.urls, tmp_path / "fed",
                          services=["iam", "registry", "soc"]) as fed:
        bus = await fed.bus("zuidas")
        first = new_msg_id()
        await bus.publish(WorkloadFailed(workload="wl-1", reason="r"), msg_id=first)
        await wait_until(lambda: soc_event(bus, first), what="first CloudEvent")
        everything = await soc_events(bus)
        assert [c["id"] for c in await soc_events(bus, last=2)] == \
            [c["id"] for c in everything[-2:]]
        assert [c["id"] for c in await soc_events(bus, severities=["medium", "high"],
                                                  last=1)] == [first]
        assert await soc_events(bus, last=0) == []

        got: list[dict[str, Any]] = []

        async def follow() -> None:
            async for ce in tail(bus, follow=True, severities=["medium"],
                                 fetch_timeout_s=0.2):
                got.append(ce)

        task = asyncio.create_task(follow())
        try:
            await wait_until(lambda: [c["id"] for c in got] == [first], what="the backlog")
            second = new_msg_id()
            await bus.publish(WorkloadFailed(workload="wl-2", reason="r"), msg_id=second)
            await wait_until(lambda: [c["id"] for c in got] == [first, second],
                             what="a new event while following")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
