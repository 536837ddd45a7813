"""Failover on a real nats-server with three in-process members.

Heartbeats come from each member's agent service; stopping a node stops its heartbeats.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from pathlib import Path

from contracts.failover import Evidence, MemberDown, MemberRecovered, MemberSuspected
from contracts.security import SecurityViolation
from contracts.state import DownDecision
from mesh import layout
from mesh.runtime import NodeSettings
from mesh.server import NatsCluster
from mesh.state import bucket
from support import MEMBERS, federation, wait_until
from support_failover import SERVICES, HeartbeatPump, Log, failover, hears_everyone, publish_forged

SETTINGS = NodeSettings(heartbeat_interval_s=0.2, suspicion_timeout_s=0.8,
                        recovery_steady_s=0.4, flap_guard_s=0.0)
async def test_silent_member_is_declared_down_once_and_recovers(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=SERVICES,
                          settings=SETTINGS) as fed:
        watcher = await fed.bus()
        log = await Log().start(watcher, MemberDown, MemberRecovered)
        decisions = await bucket(watcher, layout.KV_DECISIONS, DownDecision)
        await wait_until(lambda: hears_everyone(fed), what="everyone hears everyone")

        await fed.stop_node("zuidas")
        await wait_until(lambda: log.of(MemberDown, member="zuidas"), what="zuidas down")
        # Both survivors are past the decision (one won the CAS, the other stepped back):
        # no second declaration can still be on its way.
        await wait_until(
            lambda: all("zuidas" in failover(fed, m).health()["down"]
                        for m in ("amstel", "dommel")),
            what="both survivors see zuidas down",
        )
        downs = log.of(MemberDown, member="zuidas")
        assert len(downs) == 1
        event, env = downs[0]
        assert env.msg_id == "down-zuidas-1"
        assert event.epoch == 1 and event.quorum == 2
        assert sorted(e.observer for e in event.evidence) == ["amstel", "dommel"]
        entry = await decisions.get("down.zuidas")
        assert entry is not None and entry.value.state == "down"
        assert entry.value.declared_by == env.member and entry.value.epoch == 1
        assert not log.of(MemberDown, member="amstel") and not log.of(MemberDown,
                                                                      member="dommel")

        await fed.start_node("zuidas", SERVICES)
        await wait_until(lambda: log.of(MemberRecovered, member="zuidas"),
                         what="zuidas recovered")
        await wait_until(
            lambda: all("zuidas" not in failover(fed, m).health()["down"]
                        and not failover(fed, m).health()["suspected"] for m in MEMBERS),
            what="nobody sees zuidas down or suspected any more",
        )
        recovered = log.of(MemberRecovered, member="zuidas")
        assert len(recovered) == 1
        assert recovered[0][1].msg_id == "recovered-zuidas-1"
        assert len(log.of(MemberDown)) == 1
        entry = await decisions.get("down.zuidas")
        assert entry is not None and entry.value.state == "recovered"
        assert entry.value.epoch == 1 and entry.value.recovered_by in ("amstel", "dommel")


async def test_a_lone_survivor_declares_nobody_down(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=SERVICES,
                          settings=SETTINGS) as fed:
        watcher = await fed.bus()
        log = await Log().start(watcher, MemberDown, MemberSuspected)
        await wait_until(lambda: hears_everyone(fed), what="everyone hears everyone")
        # Both at once, so neither lives long enough to suspect the other.
        await asyncio.gather(fed.stop_node("dommel"), fed.stop_node("zuidas"))
        amstel = failover(fed, "amstel")

        def suspicions_by_amstel() -> set[str]:
            return {e.member for e, env in log.of(MemberSuspected, suspected=True)
                    if env.member == "amstel"}

        # The survivor states its suspicions and reads them back...
        await wait_until(lambda: suspicions_by_amstel() == {"dommel", "zuidas"},
                         what="amstel's suspicions on FED")
        await wait_until(
            lambda: amstel.health()["suspected"] == {"dommel": ["amstel"],
                                                     "zuidas": ["amstel"]},
            what="amstel counts its own suspicions",
        )
        # ... and evaluates them on a few more ticks: still no quorum.
        ticks = amstel.ticks
        await wait_until(lambda: amstel.ticks >= ticks + 3, what="three more ticks")
        assert log.of(MemberDown) == []
        assert amstel.health()["down"] == []
        decisions = await bucket(watcher, layout.KV_DECISIONS, DownDecision)
        assert [k for k in await decisions.keys() if k.startswith("down.")] == []
        # One statement per silence episode, not one per tick.
        assert Counter(e.member for e, env in log.of(MemberSuspected)
                       if env.member == "amstel") == {"dommel": 1, "zuidas": 1}


async def test_forged_suspicions_and_a_lone_declaration_are_refused(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=SERVICES,
                          settings=SETTINGS) as fed:
        watcher = await fed.bus()
        log = await Log().start(watcher, SecurityViolation, MemberDown)
        await wait_until(lambda: hears_everyone(fed), what="everyone hears everyone")

        # Suspicions of zuidas "from" amstel and dommel, signed by keys no roster knows:
        # counted, they would be a quorum.
        forged = [
            await publish_forged(watcher, MemberSuspected(member="zuidas", silence_s=9.0),
                                 claimed=observer, target="zuidas")
            for observer in ("amstel", "dommel")
        ]

        def reported(msg_id: str, reason: str) -> set[str]:
            return {env.member for e, env in log.of(SecurityViolation, reason=reason)
                    if e.msg_id == msg_id}

        await wait_until(lambda: all(reported(m, "unknown_key") == set(MEMBERS)
                                     for m in forged),
                         what="every failover service reports both forgeries")
        for member in MEMBERS:
            health = failover(fed, member).health()
            assert health["suspected"] == {} and health["down"] == []
            assert health["counts"]["rejected"] >= 2

        # A roster member alone declares zuidas down: signed, but no quorum backs it.
        amstel = await fed.bus("amstel")
        lone = MemberDown(member="zuidas", epoch=1, quorum=1,
                          evidence=[Evidence(observer="amstel", msg_id="x", silence_s=9.0)])
        await amstel.publish(lone, msg_id="lone-down")
        # Evidence that names a quorum, but no CAS-won record in fed_decisions.
        fabricated = MemberDown(member="zuidas", epoch=1, quorum=2, evidence=[
            Evidence(observer="amstel", msg_id="x", silence_s=9.0),
            Evidence(observer="dommel", msg_id="y", silence_s=9.0)])
        await amstel.publish(fabricated, msg_id="fabricated-down")
        await wait_until(lambda: reported("lone-down", "quorum_missing")
                         and reported("fabricated-down", "quorum_missing"),
                         what="both declarations reported")
        decisions = await bucket(watcher, layout.KV_DECISIONS, DownDecision)
        assert await decisions.get("down.zuidas") is None
        for member in MEMBERS:
            assert failover(fed, member).health()["down"] == []


async def test_a_member_that_falls_silent_again_gets_a_new_epoch(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    # No agent here: the heartbeats come from a test task, so a member's node keeps
    # running (its failover too) while it falls silent.
    async with federation(nats_server.urls, tmp_path / "fed",
                          services=["iam", "registry", "failover"], settings=SETTINGS) as fed:
        watcher = await fed.bus()
        log = await Log().start(watcher, MemberDown, MemberRecovered)
        pump = await HeartbeatPump(fed, SETTINGS.heartbeat_interval_s).start(MEMBERS)
        try:
            await wait_until(lambda: hears_everyone(fed), what="everyone hears everyone")
            for epoch in (1, 2):
                pump.pause("dommel")
                await wait_until(lambda e=epoch: log.of(MemberDown, member="dommel", epoch=e),
                                 what=f"dommel down, epoch {epoch}")
                pump.resume("dommel")
                await wait_until(
                    lambda e=epoch: log.of(MemberRecovered, member="dommel", epoch=e),
                    what=f"dommel recovered, epoch {epoch}")
            assert [env.msg_id for _, env in log.events] == [
                "down-dommel-1", "recovered-dommel-1", "down-dommel-2", "recovered-dommel-2"]
            # dommel's own failover kept running and never spoke for itself.
            assert failover(fed, "dommel").counts["declared"] == 0
            assert failover(fed, "dommel").counts["recovered"] == 0
        finally:
            await pump.stop()


async def test_a_declaration_won_but_not_published_is_published_on_restart(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=SERVICES,
                          settings=SETTINGS) as fed:
        watcher = await fed.bus()
        log = await Log().start(watcher, MemberDown, MemberRecovered)
        decisions = await bucket(watcher, layout.KV_DECISIONS, DownDecision)
        await fed.stop_node("amstel")
        # amstel won the CAS and died before publishing: the record is all there is.
        evidence = [Evidence(observer=o, msg_id=f"s-{o}", silence_s=1.0)
                    for o in ("amstel", "dommel")]
        await decisions.create("down.zuidas", DownDecision(
            member="zuidas", state="down", epoch=1, declared_by="amstel",
            declared_at=dt.datetime.now(dt.UTC), observers=["amstel", "dommel"],
            quorum=2, evidence=evidence))
        await fed.start_node("amstel", SERVICES)
        await wait_until(lambda: log.of(MemberDown, member="zuidas"),
                         what="the declaration published")
        [(event, env)] = log.of(MemberDown, member="zuidas")
        assert (env.member, env.msg_id, event.evidence) == ("amstel", "down-zuidas-1",
                                                             evidence)
        # zuidas beats steadily and nobody suspects it: it is recovered, never moved back.
        await wait_until(lambda: log.of(MemberRecovered, member="zuidas"),
                         what="zuidas recovered")
        assert len(log.of(MemberDown, member="zuidas")) == 1
