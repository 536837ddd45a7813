"""Site-level failure: one site of a member goes dark while the member still beats.

Only that site is declared down (`member.down.v1` with `site`, one CAS winner on
`fed_decisions/down.<member>.<site>`), only its replicas move, the member's other sites
keep theirs and stay eligible, and the site comes back as recovered without anything
moving back.
"""

from __future__ import annotations

from pathlib import Path

from contracts.failover import MemberDown, MemberRecovered, SitesReported
from contracts.resources import Resources
from contracts.state import DownDecision, PlacementRecord
from contracts.workload import Preferences, Requirements, WorkloadSpec, WorkloadSubmitted
from mesh import layout
from mesh.runtime import NodeSettings
from mesh.server import NatsCluster
from mesh.state import bucket
from support import federation, wait_until
from support_failover import Log, hears_everyone
from support_workloads import PLACING, agent_of, members_known, placements

SETTINGS = NodeSettings(heartbeat_interval_s=0.2, suspicion_timeout_s=0.8,
                        recovery_steady_s=0.4, flap_guard_s=0.0)


def spec(id: str, region: str) -> WorkloadSpec:
    # A soft wish for one dommel site's region: it lands there, and may move anywhere.
    return WorkloadSpec(id=id, tenant="t", resources=Resources(vcpu=1, memory_gib=1),
                        requirements=Requirements(preferences=Preferences(
                            members=["dommel"], regions=[region])))


def sites(record: PlacementRecord) -> set[tuple[str, str]]:
    return {(a.member, a.site) for a in record.assignments}


def running(record: PlacementRecord | None) -> bool:
    return record is not None and record.state == "running"


async def test_a_dark_site_moves_only_its_own_replicas(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=[*PLACING, "failover"],
                          settings=SETTINGS) as fed:
        bus = await fed.bus("amstel")
        log = await Log().start(bus, MemberDown, MemberRecovered)
        await wait_until(lambda: members_known(bus), what="member profiles")
        await wait_until(lambda: hears_everyone(fed), what="everyone hears everyone")
        records = await placements(bus)
        stay, move = spec("stays-in-eindhoven", "Noord-Brabant"), spec(
            "leaves-aachen", "Nordrhein-Westfalen")
        for s in (stay, move):
            await bus.publish(WorkloadSubmitted(spec=s))

        async def both_running() -> dict[str, PlacementRecord] | None:
            got = {s.id: await records.get(s.id) for s in (stay, move)}
            if all(e is not None and running(e.value) for e in got.values()):
                return {k: e.value for k, e in got.items() if e is not None}
            return None

        before = await wait_until(both_running, what="both placed and running")
        assert sites(before[stay.id]) == {("dommel", "ehv1")}
        assert sites(before[move.id]) == {("dommel", "aac1")}

        # dommel's operator reports aac1 dark (`stekker member site-down dommel aac1`):
        # dommel keeps beating, without aac1.
        dommel = await fed.bus("dommel")
        await dommel.publish(SitesReported(dark=["aac1"]))
        await wait_until(lambda: agent_of(fed, "dommel").dark_sites == {"aac1"},
                         what="dommel's agent follows its report")

        async def moved() -> PlacementRecord | None:
            entry = await records.get(move.id)
            ok = entry is not None and entry.value.generation == 2 and running(entry.value)
            return entry.value if ok and entry is not None else None

        after = await wait_until(moved, timeout=30, what="aac1's replica moved and running")
        assert ("dommel", "aac1") not in sites(after)
        assert after.failover is not None and after.failover.site == "aac1"
        assert after.history[-1].startswith("gen 2: failover from dommel/aac1 → ")
        [(event, env)] = log.of(MemberDown)
        assert (event.member, event.site, env.msg_id) == ("dommel", "aac1", "down-dommel.aac1-1")
        assert sorted(e.observer for e in event.evidence) == ["amstel", "zuidas"]
        kept = await records.get(stay.id)
        assert kept is not None and kept.value.generation == 1  # ehv1 was never touched
        decisions = await bucket(bus, layout.KV_DECISIONS, DownDecision)
        entry = await decisions.get("down.dommel.aac1")
        assert entry is not None and entry.value.site == "aac1"
        assert entry.value.declared_by == env.member
        assert await decisions.get("down.dommel") is None  # the member is not down

        await dommel.publish(SitesReported(dark=[]))
        await wait_until(lambda: log.of(MemberRecovered, member="dommel", site="aac1"),
                         timeout=30, what="aac1 recovered")
        back = await records.get(move.id)
        assert back is not None and back.value.generation == 2  # no automatic flap-back
        assert len(log.of(MemberDown)) == 1
