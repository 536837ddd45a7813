"""A takeover survives its coordinator: stopped at each step boundary in turn, another
member takes the saga over when the lease ends and resumes it from the last recorded
step. The saga completes once, nothing is done twice (capacity is reserved once, also
when the coordinator dies between booking and recording its plan), the data arrives
intact."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from contracts.state import SiteLedger
from contracts.workload import WorkloadPlaced
from mesh import layout
from mesh.server import NatsCluster
from mesh.state import bucket
from services.agent.data import sim_blob
from services.agent.drivers.sim import SimDriver
from services.scheduler.ledger import takeover_attempt, total
from services.takeover.service import TakeoverService
from support import federation, wait_until
from support_takeover import (
    DRILLING,
    FINISHED,
    WORKLOAD,
    audit,
    data_on,
    declare_and_join,
    place,
    record_events,
    saga_in,
    sagas,
    takeover_of,
    timeline,
)
from support_workloads import placements


@pytest.mark.parametrize("boundary", ["reserved", "planned", "approved",
                                      f"exported:{WORKLOAD}", f"cut_over:{WORKLOAD}"])
async def test_the_saga_resumes_after_its_coordinator_stops(
    nats_server: NatsCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, boundary: str
) -> None:
    monkeypatch.setattr(TakeoverService, "LEASE_S", 3.0)
    async with federation(nats_server.urls, tmp_path / "fed", services=DRILLING) as fed:
        bus = await fed.bus("zuidas")
        await place(bus)
        events = await record_events(bus, ["fed.v1.workload.placed.>"])
        stopping: list[asyncio.Task[None]] = []

        async def stop_amstel_here(saga: str, step: str) -> None:
            if step == boundary and not stopping:
                # As if the process died here: the node goes, this saga's task with it.
                stopping.append(asyncio.create_task(fed.stop_node("amstel")))
                await asyncio.Event().wait()

        takeover_of(fed, "amstel").boundary_hook = stop_amstel_here
        saga = await declare_and_join(await fed.bus("amstel"), bus, "dommel", "calamity")
        store = await sagas(bus)

        async def taken_over() -> bool:
            entry = await store.get(saga)
            return entry is not None and entry.value.coordinator == "zuidas"

        await wait_until(taken_over, timeout=30, what="zuidas takes the saga over")
        # (On a loaded machine amstel's lease may lapse before it reaches the boundary:
        # then zuidas takes over from a live amstel, which steps back; as good a test.)
        if stopping:
            await stopping[0]
            # amstel comes back (its approval may still be needed), not as coordinator.
            await fed.start_node("amstel", DRILLING)
        record = await saga_in(bus, saga, FINISHED, timeout=60)
        assert record.state == "completed", record.report
        assert record.coordinator == "zuidas"
        resumed = [e for e in record.steps if e.get("step") == "coordinator"]
        assert [e.get("member") for e in resumed] == ["zuidas"]
        # Nothing twice: each outcome recorded once, one cut-over, one placed event.
        steps = await timeline(bus, saga)
        outcomes = Counter((e.get("step"), e.get("workload"), e.get("status"),
                            e.get("attempt", 1)) for e in steps
                           if e.get("status") in ("ok", "failed") and e.get("step") not in
                           ("approve",))
        assert all(n == 1 for n in outcomes.values()), outcomes
        entry = await (await placements(bus)).get(WORKLOAD)
        assert entry is not None and entry.value.generation == 2
        (row,) = record.report["workloads"]  # type: ignore[index]
        assert row["status"] == "ok"
        assert data_on(fed, row["successor"]) == sim_blob(WORKLOAD, SimDriver.DATA_BYTES)
        await wait_until(lambda: events.of(WorkloadPlaced), what="placed event")
        generations = [e.generation for e, _ in events.of(WorkloadPlaced)]  # type: ignore[attr-defined]
        assert generations == [2]
        # Capacity reserved once: the hold booked at the plan (by whichever coordinator,
        # with the saga's attempt id) is the placement's booking at its successor's site,
        # and no ledger holds the workload anywhere else.
        ledgers = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)
        holding = {}
        for ledger in (e.value for e in await ledgers.items()):
            assert ledger.reserved == total(ledger.holds.values()), ledger
            if WORKLOAD in ledger.holds:
                holding[(ledger.member, ledger.site)] = ledger.holds[WORKLOAD]
        (successor_site,) = [(a.member, a.site) for a in entry.value.assignments]
        assert list(holding) == [successor_site]
        assert holding[successor_site].attempt == takeover_attempt(saga)
        assert holding[successor_site].amount == entry.value.spec.resources
        # And the federation's record holds up (`stekker audit verify`).
        report = await audit(bus)
        assert report.ok, report.to_dict()
        assert report.decisions >= 2  # the first placement and the cut-over
