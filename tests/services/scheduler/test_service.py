"""The scheduler service with registry and agents, on a real nats-server: placement of the
demo workloads, exactly-once placement under repeats and races, failover re-placement."""

from __future__ import annotations

from pathlib import Path

from contracts.failover import Evidence, MemberDown, MemberRecovered
from contracts.security import SecurityViolation
from contracts.state import PlacementRecord
from contracts.workload import WorkloadPlaced, WorkloadSubmitted
from mesh.server import NatsCluster
from services.scheduler.service import SchedulerService
from support import federation, wait_until
from support_workloads import (
    PLACING,
    agent_of,
    count_on_fed,
    demo_spec,
    demo_specs,
    members_known,
    placements,
    schedulers,
    submissions_handled,
)

SETTLED = ("running", "degraded", "unplaceable")


def members(record: PlacementRecord) -> set[str]:
    return {a.member for a in record.assignments}


async def settle_all(bus, count: int) -> dict[str, PlacementRecord]:
    bucket = await placements(bus)

    async def probe() -> dict[str, PlacementRecord] | None:
        records = {e.key: e.value for e in await bucket.items()}
        if len(records) < count or any(r.state not in SETTLED for r in records.values()):
            return None
        return records

    return await wait_until(probe, timeout=20, what="every workload placed and running")


async def test_demo_workloads_are_placed_and_bound(nats_server: NatsCluster, tmp_path: Path):
    async with federation(nats_server.urls, tmp_path / "fed", services=PLACING) as fed:
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="member profiles")
        specs = demo_specs()
        for spec in specs:
            await bus.publish(WorkloadSubmitted(spec=spec))
        records = await settle_all(bus, len(specs))

        for spec in specs:
            record = records[spec.id]
            assert record.generation == 1
            assert record.published_generation == 1
            # Never two replicas on one member; never more than asked.
            assert len(members(record)) == len(record.assignments) <= spec.replicas
        assert records["rvig-brp-kern"].state == "running"
        assert members(records["rvig-brp-kern"]) == {"amstel"}
        assert members(records["duo-studiefinanciering-portaal"]) == {"amstel", "dommel", "zuidas"}
        assert members(records["gemeente-utrecht-website"]) == {"amstel", "dommel", "zuidas"}
        assert members(records["belastingdienst-toeslagen-api"]) == {"amstel", "dommel"}
        assert members(records["kadaster-kaartviewer"]) == {"amstel", "dommel"}
        impossible = records["nctv-dreigingsbeeld"]
        assert impossible.state == "unplaceable" and impossible.assignments == []
        assert impossible.decision is not None
        assert "classification_not_cleared" in impossible.decision.summary

        # Each agent runs exactly the replicas assigned to its member, all "running".
        for member in fed.nodes:
            expected = {k for k, r in records.items() if member in members(r)}
            assert set(agent_of(fed, member).instances) == expected
        for record in records.values():
            assert all(r.state == "running" for r in record.replicas)
            assert {(r.member, r.site) for r in record.replicas} == {
                (a.member, a.site) for a in record.assignments
            }
        assert all(agent_of(fed, m).heartbeats > 0 for m in fed.nodes)


async def test_repeated_and_raced_submissions_place_once(
    nats_server: NatsCluster, tmp_path: Path
):
    async with federation(nats_server.urls, tmp_path / "fed", services=PLACING) as fed:
        bus = await fed.bus("zuidas")
        await wait_until(lambda: members_known(bus), what="member profiles")
        shared = schedulers(fed)
        # A second scheduler with its OWN durable gets every submission too: a race.
        rival = SchedulerService(durable="scheduler-rival",
                                 failover_durable="scheduler-rival-failover")
        await rival.start(fed.nodes["dommel"].ctx)
        try:
            spec = demo_spec("gemeente-utrecht-website")
            before = submissions_handled(shared), submissions_handled([rival])
            # The same submission twice, with two different msg ids.
            await bus.publish(WorkloadSubmitted(spec=spec))
            await bus.publish(WorkloadSubmitted(spec=spec))
            await wait_until(
                lambda: submissions_handled(shared) >= before[0] + 2
                and submissions_handled([rival]) >= before[1] + 2,
                what="both schedulers handled both submissions",
            )
            # Exactly one CAS create won among four attempts.
            assert sum(s.placed for s in [*shared, rival]) == 1
            entry = await (await placements(bus)).get(spec.id)
            assert entry is not None and entry.value.generation == 1
            assert len(entry.value.history) == 1
            placed = WorkloadPlaced.subject_pattern().replace("*.*", f"*.{spec.id}")
            assert await count_on_fed(bus, placed) == 1
            last = await bus.last_event(WorkloadPlaced.subject(entry.value.decision.decided_by,
                                                               spec.id))
            assert last is not None and last[1].msg_id == f"placed-{spec.id}-1"
        finally:
            await rival.stop()


async def submit_demo(bus) -> dict[str, PlacementRecord]:
    """Every demo workload submitted, placed and running (or unplaceable)."""
    await wait_until(lambda: members_known(bus), what="member profiles")
    specs = demo_specs()
    for spec in specs:
        await bus.publish(WorkloadSubmitted(spec=spec))
    return await settle_all(bus, len(specs))


async def test_member_down_replaces_its_workloads(nats_server: NatsCluster, tmp_path: Path):
    async with federation(nats_server.urls, tmp_path / "fed", services=PLACING) as fed:
        bus = await fed.bus("amstel")
        before = await submit_demo(bus)

        # One observer alone is no quorum: refused and reported, nothing moves.
        await bus.publish(MemberDown(member="zuidas", epoch=1, quorum=1, evidence=[
            Evidence(observer="amstel", msg_id="s1", silence_s=5.0)]))
        # A quorum of the others (2 of 2) declares dommel down.
        await bus.publish(MemberDown(member="dommel", epoch=1, quorum=2, evidence=[
            Evidence(observer="amstel", msg_id="s2", silence_s=5.0),
            Evidence(observer="zuidas", msg_id="s3", silence_s=5.0),
        ]))
        hit = {k for k, r in before.items() if "dommel" in members(r)}
        assert "rivm-luchtkwaliteit-dashboard" in hit
        bucket = await placements(bus)

        async def replaced() -> dict[str, PlacementRecord] | None:
            records = {e.key: e.value for e in await bucket.items()}
            done = all(records[k].generation == 2 and records[k].state in SETTLED for k in hit)
            return records if done else None

        after = await wait_until(replaced, timeout=20, what="dommel's workloads re-placed")
        for key, record in after.items():
            if key not in hit:
                assert record.generation == before[key].generation
                continue
            assert "dommel" not in members(record)
            assert len(members(record)) == len(record.assignments)  # none on two members
            survivors = {(a.member, a.site) for a in before[key].assignments
                         if a.member != "dommel"}
            assert survivors <= {(a.member, a.site) for a in record.assignments}
            assert record.history[-1].startswith("gen 2: failover from dommel → ")
            assert record.decision is not None and record.decision.cause == "failover"
        dashboard = after["rivm-luchtkwaliteit-dashboard"]
        assert members(dashboard) == {"amstel", "zuidas"}
        assert dashboard.state == "running"
        (newcomer,) = members(dashboard) - members(before["rivm-luchtkwaliteit-dashboard"])
        assert dashboard.history[-1].startswith(f"gen 2: failover from dommel → {newcomer}")
        duo = after["duo-studiefinanciering-portaal"]
        assert duo.state == "degraded" and members(duo) == {"amstel", "zuidas"}
        kadaster = after["kadaster-kaartviewer"]
        assert kadaster.state == "degraded" and members(kadaster) == {"amstel"}
        # dommel's node still runs here, so its agent sees the moves and lets go.
        await wait_until(lambda: not agent_of(fed, "dommel").instances,
                         what="dommel released its replicas")
        await wait_until(
            lambda: "rivm-luchtkwaliteit-dashboard" in agent_of(fed, newcomer).instances,
            what="the newcomer runs the dashboard",
        )
        # The lone declaration against zuidas was reported and changed nothing.
        violation = await wait_until(
            lambda: bus.last_event("fed.v1.security.violation.*"), what="violation report"
        )
        assert isinstance(violation[0], SecurityViolation)
        assert violation[0].reason == "quorum_missing"
        assert all("zuidas" in members(after[k]) for k, r in before.items()
                   if "zuidas" in members(r))


async def test_the_prompt_failover_finds_every_hit_workload_from_the_live_view(
    nats_server: NatsCluster, tmp_path: Path
):
    """The live copy of a declaration does not scan the placements: the ledgers' holds
    name the workloads on the lost member, read back by batched direct gets. It must move
    exactly what a full scan finds."""
    async with federation(nats_server.urls, tmp_path / "fed", services=PLACING) as fed:
        bus = await fed.bus("amstel")
        before = await submit_demo(bus)
        hit = {k for k, r in before.items() if "dommel" in members(r)}
        assert len(hit) >= 3
        amstel = next(s for s in schedulers(fed) if s.ctx.member == "amstel")
        found = await amstel._hit_state("dommel", "")
        assert {k for k, e in found.placements.items() if "dommel" in members(e.value)} == hit

        moved = await amstel.fail_over("dommel", thorough=False)
        assert moved == len(hit)
        after = {e.key: e.value for e in await (await placements(bus)).items()}
        for key in hit:
            assert "dommel" not in members(after[key])
            assert after[key].generation == before[key].generation + 1
        assert all(after[k].generation == before[k].generation for k in before if k not in hit)
        # Done already: a second prompt copy (or the durable one) moves nothing.
        assert await amstel.fail_over("dommel", thorough=False) == 0
        assert await amstel.fail_over("dommel", thorough=True) == 0


async def test_recovery_fills_missing_replicas_and_moves_nothing_back(
    nats_server: NatsCluster, tmp_path: Path
):
    async with federation(nats_server.urls, tmp_path / "fed", services=PLACING) as fed:
        bus = await fed.bus("amstel")
        before = await submit_demo(bus)
        await bus.publish(MemberDown(member="dommel", epoch=1, quorum=2, evidence=[
            Evidence(observer="amstel", msg_id="s2", silence_s=5.0),
            Evidence(observer="zuidas", msg_id="s3", silence_s=5.0),
        ]))
        hit = {k for k, r in before.items() if "dommel" in members(r)}
        bucket = await placements(bus)

        async def generation(wanted: int, keys: set[str]) -> dict[str, PlacementRecord] | None:
            records = {e.key: e.value for e in await bucket.items()}
            done = all(records[k].generation == wanted and records[k].state in SETTLED
                       for k in keys)
            return records if done else None

        failed_over = await wait_until(lambda: generation(2, hit), timeout=20,
                                       what="dommel's workloads re-placed")
        short = {k for k, r in failed_over.items() if r.state == "degraded"}
        moved = hit - short
        assert {"duo-studiefinanciering-portaal", "kadaster-kaartviewer"} <= short
        assert "rivm-luchtkwaliteit-dashboard" in moved

        await bus.publish(MemberRecovered(member="dommel", epoch=1))
        healed = await wait_until(lambda: generation(3, short), timeout=20,
                                  what="degraded workloads healed")
        for key in short:
            record = healed[key]
            assert "dommel" in members(record)
            assert members(failed_over[key]) <= members(record)  # nothing moved
            assert len(record.assignments) == len(members(record)) <= record.spec.replicas
            assert record.decision is not None and record.decision.cause == "recovery"
            assert record.history[-1].startswith("gen 3: dommel recovered → replica(s) added")
        for key in moved:  # whole again elsewhere: no flap-back
            assert healed[key].generation == 2
            assert "dommel" not in members(healed[key])
        assert healed["nctv-dreigingsbeeld"].state == "unplaceable"


async def test_a_declaration_overtaken_by_the_recovery_moves_nothing_again(
    nats_server: NatsCluster, tmp_path: Path
):
    """Under load a declaration can be redelivered after the member's recovery was
    handled (a nak puts it behind): it must not move the healed workloads away again."""
    async with federation(nats_server.urls, tmp_path / "fed", services=PLACING) as fed:
        bus = await fed.bus("amstel")
        before = await submit_demo(bus)
        evidence = [Evidence(observer="amstel", msg_id="s2", silence_s=5.0),
                    Evidence(observer="zuidas", msg_id="s3", silence_s=5.0)]
        await bus.publish(MemberDown(member="dommel", epoch=1, quorum=2, evidence=evidence))
        hit = {k for k, r in before.items() if "dommel" in members(r)}
        bucket = await placements(bus)

        async def settled_at_least(wanted: int) -> dict[str, PlacementRecord] | None:
            records = {e.key: e.value for e in await bucket.items()}
            done = all(records[k].generation >= wanted and records[k].state in SETTLED
                       for k in hit)
            return records if done else None

        replaced = await wait_until(lambda: settled_at_least(2), timeout=30,
                                    what="re-placed")
        short = {k for k in hit if replaced[k].state == "degraded"}
        assert short  # the demo has workloads no survivor can take a replica of

        async def healed_all() -> dict[str, PlacementRecord] | None:
            records = {e.key: e.value for e in await bucket.items()}
            done = all(records[k].generation == 3 and records[k].state in SETTLED
                       for k in short)
            return records if done else None

        await bus.publish(MemberRecovered(member="dommel", epoch=1))
        healed = await wait_until(healed_all, timeout=30, what="degraded workloads healed")
        handled = sum(s.failovers.handled for s in schedulers(fed) if s.failovers)
        # The same declaration again (as a redelivery would bring it), after the recovery.
        await bus.publish(MemberDown(member="dommel", epoch=1, quorum=2, evidence=evidence),
                          msg_id="down-dommel-1-again")
        await wait_until(lambda: sum(s.failovers.handled for s in schedulers(fed)
                                     if s.failovers) > handled, timeout=30,
                         what="the late declaration handled")
        after = {e.key: e.value for e in await bucket.items()}
        assert {k: after[k].generation for k in hit} == {k: healed[k].generation for k in hit}
        assert any("dommel" in members(after[k]) for k in hit)

