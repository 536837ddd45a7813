"""A takeover's capacity reservations (pure parts): which holds a saga books, which are
its own when it plans again, which are strays, and what the janitor leaves alone."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from contracts.resources import Resources
from contracts.state import Hold, PlacementRecord, ReplicaStatus, SagaRecord, SiteLedger
from contracts.takeover import PlanItem
from contracts.workload import Assignment, WorkloadSpec
from mesh import layout
from mesh.bus import Bus
from mesh.server import NatsCluster
from mesh.state import Entry, bucket
from services.scheduler.janitor import _Where, orphans, saga_holds, sweep
from services.scheduler.ledger import takeover_attempt, total
from services.scheduler.reader import FederationState
from services.takeover import saga as S
from services.takeover.reservations import bookings, strays, unused, without_own_holds
from services.takeover.service import TakeoverService
from support import federation, wait_until
from support_takeover import DRILLING, FINISHED, request_drill, saga_in, takeover_of
from support_workloads import members_known, placements

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
LONG_AGO = NOW - dt.timedelta(minutes=30)
SAGA = "s1"
MINE = takeover_attempt(SAGA)


def hold(vcpu: float, attempt: str, since: dt.datetime = NOW) -> Hold:
    return Hold(amount=Resources(vcpu=vcpu), generation=2, attempt=attempt, since=since)


def ledger(member: str, site: str, **holds: Hold) -> SiteLedger:
    return SiteLedger(member=member, site=site, reserved=total(holds.values()), holds=holds)


def state_of(*ledgers: SiteLedger) -> FederationState:
    return FederationState(profiles={}, statuses={}, member_revisions={}, revisions={},
                           ledgers={f"{x.member}.{x.site}": Entry(f"{x.member}.{x.site}", x, 7)
                                    for x in ledgers})


def item(workload: str, successor: str | None, site: str | None) -> PlanItem:
    return PlanItem(workload=workload, source="dommel", successor=successor, site=site)


def test_planning_again_a_saga_does_not_count_its_own_holds() -> None:
    state = state_of(ledger("amstel", "ams1", a=hold(2, MINE), x=hold(3, "placement")),
                     ledger("zuidas", "rtm1", b=hold(1, MINE)))
    own_left_out = without_own_holds(state, MINE)
    ams = own_left_out.ledgers["amstel.ams1"]
    assert set(ams.value.holds) == {"x"} and ams.value.reserved == Resources(vcpu=3)
    assert ams.revision == 7  # still the revision read: a booking CASes against it
    assert own_left_out.ledgers["zuidas.rtm1"].value.reserved == Resources()
    # The state itself is untouched: booking against it finds the holds (a repeat).
    assert set(state.ledgers["amstel.ams1"].value.holds) == {"a", "x"}
    assert without_own_holds(state, "another").ledgers == state.ledgers


def test_holds_the_recorded_plan_does_not_name_are_strays() -> None:
    state = state_of(ledger("amstel", "ams1", a=hold(2, MINE), b=hold(1, MINE),
                            x=hold(3, "placement")),
                     ledger("zuidas", "rtm1", c=hold(1, MINE)))
    plan = [item("a", "amstel", "ams1"), item("b", "zuidas", "rtm1"), item("c", None, None)]
    # b moved to zuidas in the new plan; c has no successor any more; x is not ours.
    assert strays(state, MINE, plan) == {("amstel", "ams1"): ["b"], ("zuidas", "rtm1"): ["c"]}
    assert strays(state, MINE, [*plan[:1], item("b", "amstel", "ams1"),
                                item("c", "zuidas", "rtm1")]) == {}
    mine = [item("a", "amstel", "ams1"), item("b", "amstel", "ams1")]
    assert unused(mine, plan) == [mine[1]]


def test_a_booking_per_successor_for_the_generation_its_cut_over_writes() -> None:
    spec = WorkloadSpec(id="a", tenant="t", resources=Resources(vcpu=2, memory_gib=4))
    record = PlacementRecord(spec=spec, state="running", generation=3,
                             assignments=[Assignment(member="dommel", site="ehv1")])
    (booking,) = bookings([item("a", "amstel", "ams1"), item("b", None, None)], {"a": record})
    assert booking.workload == "a" and booking.generation == 4 and booking.tenant == "t"
    assert booking.amount == spec.resources
    assert [(s.member, s.site) for s in booking.sites] == [("amstel", "ams1")]


def saga(state: str, plan: list[PlanItem]) -> SagaRecord:
    return SagaRecord(saga=SAGA, member="dommel", coordinator="amstel", reason="drill",
                      drill=True, state=state, plan=plan)  # type: ignore[arg-type]


def test_the_janitor_leaves_a_live_sagas_reservations_alone() -> None:
    plan = [item("a", "amstel", "ams1")]
    ams = ledger("amstel", "ams1", a=hold(2, MINE, LONG_AGO), b=hold(1, MINE, LONG_AGO),
                 ghost=hold(1, "crashed", LONG_AGO))
    placements = {"a": _Where(state="running", assignments=[Assignment(member="dommel",
                                                                        site="ehv1")])}
    # Running: its plan's hold stays; a hold of its attempt the plan does not name goes.
    running = saga_holds([saga("running", plan)])
    assert orphans([ams], placements, NOW, sagas=running) == {
        ("amstel", "ams1"): [("b", MINE), ("ghost", "crashed")]}
    # Planning: every hold of its attempt is still its own.
    planning = saga_holds([saga("planning", [])])
    assert orphans([ams], placements, NOW, sagas=planning) == {
        ("amstel", "ams1"): [("ghost", "crashed")]}
    # Ended (its coordinator could not give them back): orphans like any other.
    ended = saga_holds([saga("failed", plan)])
    assert ended == {}
    assert orphans([ams], placements, NOW, sagas=ended) == {
        ("amstel", "ams1"): [("a", MINE), ("b", MINE), ("ghost", "crashed")]}
    # Cut over: the placement assigns the site, the hold is its booking.
    moved = {"a": _Where(state="placed", assignments=[Assignment(member="amstel",
                                                                  site="ams1")])}
    assert ("a", MINE) not in orphans([ams], moved, NOW, sagas=ended)[("amstel", "ams1")]


# -- on a real nats-server -----------------------------------------------------------------

SMALL = Resources(vcpu=1, memory_gib=1, storage_gib=1)


async def put_on_dommel(bus: Bus, n: int) -> list[str]:
    """n stateless workloads running on dommel, written as a scheduler would have."""
    store = await placements(bus)
    now = dt.datetime.now(dt.UTC)
    names = []
    for i in range(n):
        spec = WorkloadSpec(id=f"res-{i}", tenant="t", resources=SMALL)
        await store.put(spec.id, PlacementRecord(
            spec=spec, state="running", generation=1, published_generation=1,
            assignments=[Assignment(member="dommel", site="ehv1")],
            replicas=[ReplicaStatus(member="dommel", site="ehv1", state="running", since=now)],
            submitted_at=now, updated_at=now))
        names.append(spec.id)
    return names


async def ledgers_of(bus: Bus) -> dict[str, SiteLedger]:
    kv = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)
    return {e.key: e.value for e in await kv.items()}


def holds_of(ledgers: dict[str, SiteLedger], attempt: str
             ) -> dict[str, list[tuple[str, str, Resources]]]:
    """workload → every (member, site, amount) `attempt` holds for it."""
    out: dict[str, list[tuple[str, str, Resources]]] = {}
    for x in ledgers.values():
        assert x.reserved == total(x.holds.values()), x  # a ledger's total is its holds
        for workload, h in x.holds.items():
            if h.attempt == attempt:
                out.setdefault(workload, []).append((x.member, x.site, h.amount))
    return out


async def test_a_drill_reserves_at_the_plan_and_gives_every_hold_back(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=DRILLING) as fed:
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="member profiles")
        names = await put_on_dommel(bus, 3)
        before = {k: x.reserved for k, x in (await ledgers_of(bus)).items()}
        gate, at_gate = asyncio.Event(), asyncio.Event()

        async def wait_after_approval(saga: str, step: str) -> None:
            if step == "approved":
                at_gate.set()
                await gate.wait()

        takeover_of(fed, "amstel").boundary_hook = wait_after_approval
        saga = await request_drill(bus, "dommel")
        await wait_until(at_gate.is_set, timeout=20, what="the drill approved")
        record = await saga_in(bus, saga, ["running"])
        assert sorted(i.workload for i in record.plan) == names
        assert all(i.successor in ("amstel", "zuidas") for i in record.plan)
        # Every successor's site holds its workload once, booked by the saga's attempt.
        attempt = takeover_attempt(saga)
        assert holds_of(await ledgers_of(bus), attempt) == {
            i.workload: [(i.successor, i.site, SMALL)] for i in record.plan}
        planned = S.find_step(record, S.PLAN, statuses=("ok",))
        assert planned is not None and "capacity reserved for 3 successor(s)" in str(
            planned["detail"])
        # The janitor leaves a live saga's holds alone, however old they look.
        assert await sweep(bus, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) == 0
        assert len(holds_of(await ledgers_of(bus), attempt)) == 3

        gate.set()
        done = await saga_in(bus, saga, FINISHED, timeout=30)
        assert done.state == "completed", done.report

        async def given_back() -> bool:
            return not holds_of(await ledgers_of(bus), attempt)

        await wait_until(given_back, what="the drill's holds given back")
        after = await ledgers_of(bus)
        assert {k: x.reserved for k, x in after.items()} == {
            k: before.get(k, Resources()) for k in after}


async def test_a_drill_refused_its_quorum_gives_its_reservations_back(
    nats_server: NatsCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TakeoverService, "APPROVAL_TIMEOUT_S", 1.0)
    async with federation(nats_server.urls, tmp_path / "fed", services=DRILLING,
                          members=("amstel", "dommel")) as fed:
        await fed.start_node("zuidas", ["iam", "registry"])  # never approves
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="member profiles")
        await put_on_dommel(bus, 2)
        saga = await request_drill(bus, "dommel")
        record = await saga_in(bus, saga, FINISHED)
        assert record.state == "failed" and record.report is not None
        assert record.report["approved"] is False
        planned = S.find_step(record, S.PLAN, statuses=("ok",))
        assert planned is not None and "capacity reserved for 2" in str(planned["detail"])
        attempt = takeover_attempt(saga)

        async def given_back() -> bool:
            return not holds_of(await ledgers_of(bus), attempt)

        await wait_until(given_back, what="the refused saga's holds given back")
