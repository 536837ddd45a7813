"""A forged event changes no state and shows up on SOC as a violation (invariant 6)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from contracts.state import PlacementRecord
from contracts.workload import (
    Assignment,
    DecisionRecord,
    WorkloadPlaced,
    WorkloadSubmitted,
)
from mesh import layout
from mesh.forge import publish_forged
from mesh.server import NatsCluster
from mesh.state import bucket
from support import federation, wait_until
from support_soc import soc_events
from support_workloads import agent_of, demo_spec, members_known


async def test_forged_submission_and_placement_change_nothing(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    services = ["iam", "registry", "scheduler", "agent", "soc"]
    async with federation(nats_server.urls, tmp_path / "fed", services=services) as fed:
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="member profiles")
        spec = demo_spec("gemeente-utrecht-website")
        decision = DecisionRecord(workload=spec.id, decided_by="amstel",
                                  decided_at=dt.datetime.now(dt.UTC), summary="forged")
        forged = [
            await publish_forged(bus, WorkloadSubmitted(spec=spec), claimed_member="amstel"),
            await publish_forged(
                bus,
                WorkloadPlaced(spec=spec, assignments=[Assignment(member="dommel", site="ehv1")],
                               decision=decision),
                claimed_member="zuidas",
            ),
        ]

        async def violations() -> dict[str, dict[str, object]] | None:
            found = {ce["data"]["msg_id"]: ce for ce in await soc_events(bus)
                     if ce["type"] == "eu.stekker.security.violation.v1"
                     and ce["data"].get("msg_id") in forged}
            return found if set(found) == set(forged) else None

        seen = await wait_until(violations, what="both forgeries reported on SOC")
        assert {ce["severity"] for ce in seen.values()} == {"high"}
        assert {ce["data"]["reason"] for ce in seen.values()} == {"unknown_key"}

        # An honest submission after the forgeries is handled normally …
        await bus.publish(WorkloadSubmitted(spec=demo_spec("rvig-brp-kern")))
        placements = await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)
        await wait_until(lambda: placements.get("rvig-brp-kern"), what="honest placement")
        # … while the forged ones left no trace in the state: no record, nothing running.
        # The agent the forged placement names refused it; the others skipped it unread,
        # as they skip every placement that asks nothing of them.
        await wait_until(lambda: agent_of(fed, "dommel")._consumer.rejected >= 1,
                         what="the named agent refused it")
        await wait_until(lambda: all(agent_of(fed, m)._consumer.skipped >= 1
                                     for m in ("amstel", "zuidas")),
                         what="the other agents skipped it")
        assert await placements.get(spec.id) is None
        assert all(spec.id not in agent_of(fed, m).instances for m in fed.nodes)

