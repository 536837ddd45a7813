"""The agent on a real nats-server: binds signed placements (with or without a KV record),
lets go of replicas that moved, releases on request, reports driver failures, reconciles
after a restart."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from contracts.registry import CapacityReported
from contracts.resources import Resources
from contracts.state import PlacementRecord, ReplicaStatus
from contracts.workload import (
    EVERY_AGENT,
    Assignment,
    DecisionRecord,
    PlacedItem,
    PlacementsDispatched,
    WorkloadBound,
    WorkloadFailed,
    WorkloadPlaced,
    WorkloadReleased,
    WorkloadsBound,
    WorkloadSpec,
    WorkloadsPlaced,
)
from mesh.server import NatsCluster
from services.agent.service import concerns
from services.scheduler.records import first_record, record_digest
from support import federation, wait_until
from support_workloads import agent_of, placements

AGENTS = ["iam", "registry", "agent"]
NOW = dt.datetime.now(dt.UTC)


def spec(id: str, vcpu: float = 2) -> WorkloadSpec:
    return WorkloadSpec(id=id, tenant="conformance",
                        resources=Resources(vcpu=vcpu, memory_gib=4, storage_gib=10))


def item(event: WorkloadPlaced) -> PlacedItem:
    return PlacedItem(spec=event.spec, assignments=event.assignments,
                      generation=event.generation, decision=event.decision)


def placed(wl: WorkloadSpec, generation: int, *where: tuple[str, str]) -> WorkloadPlaced:
    assignments = [Assignment(member=m, site=s, replica=i) for i, (m, s) in enumerate(where)]
    decision = DecisionRecord(workload=wl.id, decided_by="test", decided_at=NOW,
                              chosen=assignments)
    return WorkloadPlaced(spec=wl, assignments=assignments, generation=generation,
                          decision=decision)


async def test_agent_follows_signed_placements_without_a_record(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=AGENTS) as fed:
        bus = await fed.bus("dommel")
        amstel, zuidas = agent_of(fed, "amstel"), agent_of(fed, "zuidas")
        wl = spec("conformance-1")

        # A placement with no record in fed_placements (a conformance test's): bound.
        await bus.publish(placed(wl, 1, ("amstel", "ams1")))
        bound = await wait_until(
            lambda: bus.last_event(WorkloadBound.subject("amstel", wl.id)), what="bound"
        )
        assert isinstance(bound[0], WorkloadBound) and bound[0].generation == 1
        assert bound[0].site == "ams1" and bound[0].driver == "sim"
        assert bound[1].msg_id == f"bound-{wl.id}-1-amstel"
        assert set(amstel.instances) == {wl.id}
        assert await (await placements(bus)).get(wl.id) is None

        # Generation 2 moves it to zuidas: amstel stops and says so, zuidas binds.
        await bus.publish(placed(wl, 2, ("zuidas", "gro1")))
        released = await wait_until(
            lambda: bus.last_event(WorkloadReleased.subject("amstel", wl.id)), what="released"
        )
        assert isinstance(released[0], WorkloadReleased)
        assert (released[0].member, released[0].cause, released[0].generation) == (
            "amstel", "moved", 2)
        assert wl.id not in amstel.instances
        await wait_until(lambda: zuidas.generation_of(wl.id) == 2, what="zuidas runs gen 2")

        # An older placement arriving late changes nothing; a release naming zuidas stops it.
        await bus.publish(placed(wl, 1, ("zuidas", "gro1")))
        await bus.publish(WorkloadReleased(workload=wl.id, member="zuidas", cause="test"))
        await wait_until(lambda: wl.id not in zuidas.instances, what="zuidas released it")
        confirmed = await wait_until(
            lambda: bus.last_event(WorkloadReleased.subject("zuidas", wl.id)),
            what="zuidas confirms the release",
        )
        assert isinstance(confirmed[0], WorkloadReleased)
        assert (confirmed[0].member, confirmed[0].generation, confirmed[0].cause) == (
            "zuidas", 2, "test")
        assert wl.id not in amstel.instances

        # The capacity report counts what runs (here: nothing any more).
        report = await wait_until(
            lambda: bus.last_event(CapacityReported.subject("zuidas")), what="capacity"
        )
        assert isinstance(report[0], CapacityReported)
        assert {s.site for s in report[0].sites} == {s.id for s in fed.profiles["zuidas"].sites}


def test_an_agent_reads_a_batch_when_it_names_it_or_moves_what_runs_here() -> None:
    def body(*items: tuple[str, str]) -> bytes:
        return msgspec.json.encode(WorkloadsPlaced(placements=[
            item(placed(spec(wl), 1, (member, "s1"))) for wl, member in items]))

    assert concerns("amstel", {}, "s", body(("a", "zuidas"), ("b", "amstel")))
    assert not concerns("amstel", {}, "s", body(("a", "zuidas"), ("b", "dommel")))
    # A workload running here placed elsewhere: amstel must stop it.
    assert concerns("amstel", {"a": object()}, "s", body(("a", "zuidas")))
    # A batch addressed to amstel is all amstel's: taken without reading it.
    assert concerns("amstel", {}, PlacementsDispatched.subject("dommel", "amstel"), b"")


async def test_a_batch_addressed_to_one_agent_reaches_no_other(
    nats_server: NatsCluster, tmp_path: Path,
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=AGENTS) as fed:
        bus = await fed.bus("dommel")

        async def consumer(member: str):  # type: ignore[no-untyped-def]
            return await bus.js.consumer_info("FED", f"agent-{member}")

        before = {m: (await consumer(m)).delivered.consumer_seq for m in ("amstel", "zuidas")}
        items = [item(placed(spec(f"own-{n}", vcpu=0.5), 1, ("amstel", "ams1")))
                 for n in range(3)]
        await bus.publish(PlacementsDispatched(placements=items, to="amstel"))
        answer = await wait_until(lambda: bus.last_event(WorkloadsBound.subject("amstel")),
                                  what="amstel's bindings")
        assert {b.workload for b in answer[0].bindings} == {i.spec.id for i in items}
        assert (await consumer("amstel")).delivered.consumer_seq == before["amstel"] + 1
        # The servers filter it out for zuidas: neither delivered nor pending there.
        zuidas = await consumer("zuidas")
        assert (zuidas.delivered.consumer_seq, zuidas.num_pending) == (before["zuidas"], 0)


@pytest.mark.parametrize("addressed", [True, False], ids=["dispatched-to-all", "placements-v1"])
async def test_a_batch_of_placements_is_bound_and_answered_in_one_message(
    nats_server: NatsCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, addressed: bool,
) -> None:
    """A batch for every agent, as a scheduler sends it now (`workload.dispatched.v1`
    to `_all`) or sent it before batches were addressed (`workload.placements.v1`)."""
    async with federation(nats_server.urls, tmp_path / "fed", services=AGENTS) as fed:
        bus = await fed.bus("dommel")
        kv = await placements(bus)
        specs = [spec(f"batch-{n}", vcpu=0.5) for n in range(6)]
        where = [("amstel", "ams1"), ("zuidas", "gro1")]
        # As a scheduler has them: decoded from the bus (where 4 GiB reads as 4.0).
        events = [msgspec.json.decode(msgspec.json.encode(placed(s, 1, where[n % 2])),
                                      type=WorkloadPlaced) for n, s in enumerate(specs)]
        items = [item(e) for e in events]
        # Two have records, as a scheduler creates them; the items say which (revision,
        # digest). batch-0's is as created: noted without a read. batch-1's was written
        # again since: the agent finds out by CAS and reads it.
        for n in (0, 1):
            record = first_record(events[n].spec, events[n].decision, generation=1,
                                  submitted_by="dommel", submitted_at=NOW,
                                  now=events[n].decision.decided_at, history=[])
            revision = await kv.create(specs[n].id, record)
            items[n] = msgspec.structs.replace(
                items[n], submitted_by="dommel", submitted_at=NOW, record_revision=revision,
                record_sha256=record_digest(record))
        written = await kv.get(specs[1].id)
        assert written is not None
        await kv.update(specs[1].id, written.value, written.revision)
        reads: list[str] = []
        for member in ("amstel", "zuidas"):
            bucket = agent_of(fed, member)._placements
            assert bucket is not None
            real = bucket.get

            async def counted(key: str, real=real):  # type: ignore[no-untyped-def]
                reads.append(key)
                return await real(key)

            monkeypatch.setattr(bucket, "get", counted)
        await bus.publish(PlacementsDispatched(placements=items, to=EVERY_AGENT) if addressed
                          else WorkloadsPlaced(placements=items))

        for member in ("amstel", "zuidas"):
            answer = await wait_until(
                lambda m=member: bus.last_event(WorkloadsBound.subject(m)),  # type: ignore[misc]
                what=f"{member}'s bindings")
            bindings = answer[0]
            assert isinstance(bindings, WorkloadsBound) and bindings.driver == "sim"
            mine = {e.spec.id: e.assignments[0].site for e in events
                    if e.assignments[0].member == member}
            assert {b.workload: b.site for b in bindings.bindings} == mine
            assert all(b.generation == 1 for b in bindings.bindings)
            assert set(agent_of(fed, member).instances) == set(mine)
            assert answer[1].msg_id.startswith(f"bindings-{member}-")

        async def noted(key: str) -> bool:
            got = await kv.get(key)
            return (got is not None and got.value.state == "running"
                    and got.value.published_generation == 1)

        for key in (specs[0].id, specs[1].id):
            await wait_until(lambda k=key: noted(k), what=f"{key} says running")
        assert specs[0].id not in reads and specs[1].id in reads
        # Without a record nothing is written, and every other one was read for its note.
        assert await kv.get(specs[2].id) is None
        assert set(reads) == {s.id for s in specs[1:]}


async def test_driver_failure_is_reported_not_fatal(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=AGENTS) as fed:
        bus = await fed.bus("dommel")
        too_big = spec("too-big", vcpu=100_000)
        await bus.publish(placed(too_big, 1, ("amstel", "ams1")))
        failed = await wait_until(
            lambda: bus.last_event(WorkloadFailed.subject("amstel", too_big.id)), what="failed"
        )
        assert isinstance(failed[0], WorkloadFailed)
        assert "amstel/ams1" in failed[0].reason and "vcpu" in failed[0].reason
        # Still working: the next placement is bound.
        ok = spec("fits")
        await bus.publish(placed(ok, 1, ("amstel", "ams1")))
        await wait_until(lambda: ok.id in agent_of(fed, "amstel").instances, what="bound")


async def test_restarted_node_reconciles_from_placements(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=AGENTS,
                          members=["amstel"]) as fed:
        bus = await fed.bus("amstel")
        wl = spec("kept-alive")
        bucket = await placements(bus)
        await bucket.create(wl.id, PlacementRecord(
            spec=wl, state="placed", generation=3, published_generation=3,
            assignments=[Assignment(member="amstel", site="alm1")],
            replicas=[ReplicaStatus(member="amstel", site="alm1")],
        ))
        await fed.stop_node("amstel")
        await fed.start_node("amstel", AGENTS)
        agent = agent_of(fed, "amstel")
        await wait_until(lambda: agent.generation_of(wl.id) == 3, what="restarted replica")
        entry = await wait_until(lambda: bucket.get(wl.id), what="record")

        async def running() -> bool:
            entry = await bucket.get(wl.id)
            return entry is not None and entry.value.state == "running"

        await wait_until(running, what="record says running")
        entry = await bucket.get(wl.id)
        assert entry is not None
        assert [(r.member, r.state) for r in entry.value.replicas] == [("amstel", "running")]


async def test_process_driver_agent_runs_and_stops_real_children(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    import psutil

    from mesh.runtime import NodeSettings
    from services.agent.drivers.process import http_ok
    from support_workloads import demo_spec

    meetdata = demo_spec("rivm-meetdata")
    async with federation(nats_server.urls, tmp_path / "fed", services=AGENTS,
                          members=["amstel"], settings=NodeSettings(driver="process")) as fed:
        bus = await fed.bus("amstel")
        await bus.publish(placed(meetdata, 1, ("amstel", "ams1")))
        agent = agent_of(fed, "amstel")
        instance = await wait_until(lambda: agent.instances.get(meetdata.id), what="started")
        assert instance.data_dir == tmp_path / "fed" / "workloads" / "amstel" / meetdata.id / "data"
        assert instance.port is not None and await http_ok(instance.port, "/")
        bound = await wait_until(
            lambda: bus.last_event(WorkloadBound.subject("amstel", meetdata.id)), what="bound"
        )
        assert isinstance(bound[0], WorkloadBound) and bound[0].driver == "process"
        pid = instance.pid
        assert pid is not None
    # Stopping the node closed the driver, which stopped its children.
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
