"""A takeover drill on a real nats-server with three in-process members (invariant 4):
plan, quorum approval, shadow starts on the successors, report; the source untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.security import SecurityViolation
from contracts.takeover import (
    TakeoverApproved,
    TakeoverCompleted,
    TakeoverProposed,
    TakeoverRequested,
    TakeoverStep,
)
from mesh.runtime import NodeSettings
from mesh.server import NatsCluster
from services.agent.drivers.sim import SimDriver
from services.takeover.plan import plan_hash
from services.takeover.service import TakeoverService, shadow_instance_id
from support import federation, wait_until
from support_takeover import (
    DRILLING,
    FINISHED,
    place_demo,
    publish_forged,
    record_events,
    request_drill,
    saga_in,
    takeover_of,
)
from support_workloads import agent_of, members_known, placements

TAKEOVER = ["fed.v1.takeover.>", "fed.v1.security.>"]
# One by one, so placement is deterministic: rivm-meetdata lands on dommel (the most room
# in an empty federation); the dashboard goes where the balance scorer sends it.
DEMO = ["rivm-meetdata", "rivm-luchtkwaliteit-dashboard", "rvig-brp-kern"]


async def test_drill_of_dommel_passes_and_leaves_the_source_untouched(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=DRILLING) as fed:
        bus = await fed.bus("amstel")
        before = {}
        for name in DEMO:
            before = await place_demo(bus, [name])
        on_dommel = sorted(n for n, r in before.items()
                           if "dommel" in {a.member for a in r.assignments})
        assert "rivm-meetdata" in on_dommel
        assert {a.member for a in before["rvig-brp-kern"].assignments} == {"amstel"}
        events = await record_events(bus, TAKEOVER)

        saga = await request_drill(bus, "dommel")
        record = await saga_in(bus, saga, FINISHED)

        assert record.state == "completed", record.report
        assert record.coordinator == "amstel" and record.member == "dommel"
        assert sorted(record.approvals) == ["amstel", "zuidas"]
        assert record.quorum == 2
        plan = {i.workload: i for i in record.plan}
        assert sorted(plan) == on_dommel  # rvig-brp-kern is not on dommel
        assert all(i.successor not in (None, "dommel") for i in plan.values())
        assert record.plan_hash == plan_hash(record.plan)

        report = record.report
        assert report is not None and report["passed"] is True
        assert report["coordinator"] == "amstel" and report["approved"] is True
        assert sorted(a["member"] for a in report["approvals"]) == ["amstel", "zuidas"]  # type: ignore
        rows = {w["workload"]: w for w in report["workloads"]}  # type: ignore[union-attr]
        assert {w["status"] for w in rows.values()} == {"ok"}
        assert all(isinstance(w["time_to_running_ms"], float) for w in rows.values())

        # On the bus: one proposal by the coordinator, approvals by amstel and zuidas
        # (never the target), each shadow result signed by its successor, completion.
        await wait_until(lambda: events.of(TakeoverCompleted, saga), what="completed event")
        proposals = events.of(TakeoverProposed, saga)
        # Proposed again (the same plan) only while approvals are missing.
        assert {env.member for _, env in proposals} == {"amstel"}
        assert {event.plan_hash for event, _ in proposals} == {record.plan_hash}
        assert sorted(env.member for _, env in events.of(TakeoverApproved, saga)) == [
            "amstel", "zuidas"]
        results = [(e, env) for e, env in events.of(TakeoverStep, saga)
                   if e.step == "shadow_start" and e.status != "started"]  # type: ignore
        assert sorted((e.workload, e.status, env.member) for e, env in results) == sorted(  # type: ignore
            (w, "ok", plan[w].successor) for w in on_dommel)
        done = events.of(TakeoverCompleted, saga)[0][0]
        assert done.passed and done.workloads == len(on_dommel)  # type: ignore[attr-defined]
        assert not events.of(SecurityViolation)
        steps_seen = len(events.of(TakeoverStep, saga)) + 1  # + the repeated "started"

        # Drill mode: the real placements did not move, dommel still runs its replicas,
        # and no shadow is left running on a successor.
        store = await placements(bus)
        for name in on_dommel:
            after = await store.get(name)
            assert after is not None and after.value.generation == 1
            assert after.value.assignments == before[name].assignments
            assert after.value.state == "running"
        assert set(on_dommel) <= set(agent_of(fed, "dommel").instances)
        for member in ("amstel", "zuidas"):
            driver = takeover_of(fed, member)._driver
            assert driver is None or (isinstance(driver, SimDriver) and not driver.instances)
            assert not any(i.startswith("shadow-") for i in agent_of(fed, member).instances)

        # A request and a step sent again for a finished saga change nothing.
        handled = {m: takeover_of(fed, m).health()["handled"] for m in fed.nodes}
        await bus.publish(TakeoverRequested(saga=saga, member="dommel"), msg_id=f"again-{saga}")
        await bus.publish(TakeoverStep(saga=saga, member="dommel", step="shadow_start",
                                       status="started", workload="rivm-meetdata",
                                       actor=plan["rivm-meetdata"].successor))
        await wait_until(lambda: all(takeover_of(fed, m).health()["handled"] >= handled[m] + 2
                                     for m in fed.nodes), what="repeats handled")
        again = await saga_in(bus, saga, FINISHED)
        assert again.steps == record.steps and again.report == record.report
        assert len(events.of(TakeoverStep, saga)) == steps_seen


async def test_a_proposal_lost_on_its_way_is_made_again(
    nats_server: NatsCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery can be lost (an ack or a pull request on a consumer leader that just
    stepped down): zuidas drops the first proposal it gets, as if it never came. The
    coordinator proposes again while approvals are missing, and the drill completes."""
    async with federation(nats_server.urls, tmp_path / "fed", services=DRILLING) as fed:
        bus = await fed.bus("amstel")
        await place_demo(bus, ["rivm-meetdata"])
        zuidas = takeover_of(fed, "zuidas")
        real, dropped = zuidas._on_proposed, []

        async def lossy(event: TakeoverProposed, env) -> None:  # type: ignore[no-untyped-def]
            if not dropped:
                dropped.append(env.msg_id)
                return
            await real(event, env)

        monkeypatch.setattr(zuidas, "_on_proposed", lossy)
        events = await record_events(bus, TAKEOVER)
        saga = await request_drill(bus, "dommel")
        record = await saga_in(bus, saga, FINISHED, timeout=30)
        assert record.state == "completed", record.report
        assert sorted(record.approvals) == ["amstel", "zuidas"]
        assert dropped == [f"propose-{saga}"]
        proposals = [env.msg_id for _, env in events.of(TakeoverProposed, saga)]
        assert proposals[0] == f"propose-{saga}" and len(proposals) >= 2


async def test_forged_and_bad_approvals_do_not_count(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    # zuidas runs no takeover service: amstel's own approval alone is below the quorum.
    async with federation(nats_server.urls, tmp_path / "fed", services=["iam", "registry",
                          "takeover"], members=("amstel", "dommel")) as fed:
        await fed.start_node("zuidas", ["iam", "registry"])
        amstel = await fed.bus("amstel")
        await wait_until(lambda: members_known(amstel), what="member profiles")
        events = await record_events(amstel, TAKEOVER)
        saga = await request_drill(amstel, "dommel")
        record = await saga_in(amstel, saga, ["approving"])
        await wait_until(lambda: events.of(TakeoverApproved, saga), what="amstel's approval")

        # zuidas's name, an outsider's key: the bus refuses it before any service sees it.
        forged = await publish_forged(
            amstel, TakeoverApproved(saga=saga, member="dommel", plan_hash=record.plan_hash),
            claimed="zuidas", target="dommel")
        # Signed by roster members, but the target itself, and a wrong plan hash.
        own = await (await fed.bus("dommel")).publish(
            TakeoverApproved(saga=saga, member="dommel", plan_hash=record.plan_hash),
            msg_id=f"approve-{saga}-dommel")
        zuidas = await fed.bus("zuidas")
        await zuidas.publish(TakeoverApproved(saga=saga, member="dommel", plan_hash="0" * 64),
                             msg_id=f"wrong-{saga}-zuidas")
        assert own > 0

        await wait_until(lambda: events.violations(forged), what="forgery reported")
        assert events.violations(forged)[0].reason == "unknown_key"
        bad_ids = {f"approve-{saga}-dommel", f"wrong-{saga}-zuidas"}

        def bad_approvals() -> list[SecurityViolation]:
            found = [e for e, _ in events.of(SecurityViolation)
                     if e.reason == "bad_approval" and e.msg_id in bad_ids]  # type: ignore
            return found if len(found) == len(bad_ids) else []

        bad = await wait_until(bad_approvals, what="bad approvals reported")
        assert {v.claimed_member for v in bad} == {"dommel", "zuidas"}
        current = await saga_in(amstel, saga, ["approving"])
        assert list(current.approvals) == ["amstel"]

        # A genuine approval from zuidas completes the quorum; the plan is empty.
        await zuidas.publish(TakeoverApproved(saga=saga, member="dommel",
                                              plan_hash=record.plan_hash))
        done = await saga_in(amstel, saga, FINISHED)
        assert done.state == "completed" and sorted(done.approvals) == ["amstel", "zuidas"]
        assert done.report is not None
        refused = {r["member"]: r["reason"] for r in done.report["refused_approvals"]}  # type: ignore
        assert set(refused) == {"dommel", "zuidas"}
        assert "target" in refused["dommel"] and "hash" in refused["zuidas"]


async def test_without_a_quorum_the_drill_fails_in_time(
    nats_server: NatsCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TakeoverService, "APPROVAL_TIMEOUT_S", 1.0)
    async with federation(nats_server.urls, tmp_path / "fed", services=["iam", "registry",
                          "takeover"], members=("amstel", "dommel")) as fed:
        await fed.start_node("zuidas", ["iam", "registry"])
        amstel = await fed.bus("amstel")
        saga = await request_drill(amstel, "dommel")
        record = await saga_in(amstel, saga, FINISHED)
        assert record.state == "failed" and record.report is not None
        assert record.report["approved"] is False and record.report["passed"] is False
        assert record.report["failures"] == [
            "approval: quorum not reached within 1 s: 1/2 approvals (amstel)"]
        # A member cannot coordinate a drill of itself: refused at once, with the reason.
        own = await request_drill(amstel, "amstel")
        refused = await saga_in(amstel, own, FINISHED)
        assert refused.state == "failed"
        assert "cannot coordinate its own takeover" in str(refused.report["failures"])  # type: ignore


def test_shadow_ids_differ_for_sagas_of_the_same_minute() -> None:
    a = "01938f2e-8a7b-7c3d-9e1f-0a1b2c3d4e5f"
    b = "01938f2e-8a7c-7000-8000-ffffeeeeddd0"
    assert shadow_instance_id(a, "w") != shadow_instance_id(b, "w")
    assert shadow_instance_id(a, "w") == "shadow-2c3d4e5f-w"


async def test_shadow_start_with_the_process_driver(nats_server: NatsCluster, tmp_path: Path):
    """A real process: the successor runs a shadow copy in its own drill folder, checks its
    HTTP health, stops it; the real replica on dommel keeps running."""
    data_dir = tmp_path / "fed"
    async with federation(nats_server.urls, data_dir, services=DRILLING,
                          settings=NodeSettings(driver="process")) as fed:
        bus = await fed.bus("amstel")
        await place_demo(bus, ["rivm-meetdata"])
        saga = await request_drill(bus, "dommel")
        record = await saga_in(bus, saga, FINISHED)
        assert record.state == "completed", record.report
        (item,) = record.plan
        assert item.workload == "rivm-meetdata" and item.successor is not None
        row = record.report["workloads"][0]  # type: ignore[index]
        assert row["status"] == "ok" and "process driver" in row["detail"]
        # The shadow ran on the data exported by dommel (digest checked), which is then
        # removed from the successor: a drill leaves no copy of the data behind.
        assert row["stateful"] and row["origin"] == "source" and row["digest"]
        assert "sha256 verified" in row["detail"]
        shadow = data_dir / "drills" / item.successor / shadow_instance_id(saga, item.workload)
        assert (shadow / "out.log").is_file() and not (shadow / "data").exists()
        driver = takeover_of(fed, item.successor)._driver
        assert driver is not None and not driver.instances  # type: ignore[attr-defined]
        real = agent_of(fed, "dommel")
        assert await real.driver.healthy(real.instances["rivm-meetdata"])  # type: ignore[union-attr]
