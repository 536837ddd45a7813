"""A stateful workload failed over to another member brings its newest backup along, on
a real nats-server: the data the successor starts with is the backup's, byte for byte,
and the replica says how old it was (the achieved RPO)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import pytest

from contracts.failover import Evidence, MemberDown
from contracts.workload import WorkloadSubmitted
from mesh.runtime import NodeSettings
from mesh.server import NatsCluster
from services.agent import backup
from services.agent.backup import backups_of
from support import MEMBERS, federation, wait_until
from support_workloads import agent_of, demo_spec, members_known, placements

SERVICES = ["iam", "registry", "scheduler", "agent"]


@pytest.mark.parametrize("store_answers_late", [False, True])
async def test_a_failed_over_stateful_workload_starts_from_its_newest_backup(
    nats_server: NatsCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    store_answers_late: bool,
) -> None:
    """`store_answers_late`: the first restore attempts time out, as while JetStream
    elects the leaders a dead member's server held; the agent waits for the store
    rather than start the workload without the data it has."""
    if store_answers_late:
        real, failures = backup.restore_newest, [nats.errors.TimeoutError()] * 3

        async def late(*args: Any, **kwargs: Any) -> backup.Restored:
            if failures:
                raise failures.pop()
            return await real(*args, **kwargs)

        monkeypatch.setattr(backup, "restore_newest", late)
    settings = NodeSettings(driver="sim")
    async with federation(nats_server.urls, tmp_path / "fed", services=SERVICES,
                          settings=settings) as fed:
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="member profiles")
        base = demo_spec("rivm-luchtkwaliteit-dashboard")
        spec = msgspec.structs.replace(base, id="stateful-1", replicas=1, stateful=True,
                                       rpo_seconds=2)
        await bus.publish(WorkloadSubmitted(spec=spec))
        kv = await placements(bus)

        async def running_on() -> str | None:
            entry = await kv.get(spec.id)
            if entry is None or entry.value.state != "running":
                return None
            return entry.value.assignments[0].member

        source = await wait_until(running_on, timeout=30, what="running")
        # The workload writes: what the source holds now differs from its first data.
        written = b"state written by the workload " * 1000
        driver = agent_of(fed, source).driver
        assert driver is not None
        await driver.import_(spec.id, spec, written)

        async def backed_up() -> bool:
            newest = await backups_of(bus, spec.id)
            return bool(newest) and newest[0].size == len(written)

        await wait_until(backed_up, timeout=30, what="a backup of the written data")
        await fed.stop_node(source)
        others = [m for m in MEMBERS if m != source]
        await bus.publish(MemberDown(member=source, epoch=1, quorum=2, evidence=[
            Evidence(observer=m, msg_id=f"s-{m}", silence_s=5.0) for m in others]))

        async def moved() -> tuple[str, str] | None:
            entry = await kv.get(spec.id)
            if entry is None or entry.value.generation < 2 or entry.value.state != "running":
                return None
            (replica,) = entry.value.replicas
            return replica.member, replica.detail

        successor, detail = await wait_until(moved, timeout=60, what="running elsewhere")
        assert successor != source
        assert "restored backup of " + source in detail and "achieved RPO" in detail
        new_driver = agent_of(fed, successor).driver
        assert new_driver is not None
        assert await new_driver.export(spec.id, spec) == written
