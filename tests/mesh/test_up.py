"""`stekker up` and its live view: the pure parts, the gathering on a real server, and
the real thing — `stekker up` with its nats-servers and nodes as processes."""

from __future__ import annotations

import datetime as dt
import io
import signal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from contracts.iam import RosterMember
from contracts.registry import CapacityReported, Heartbeat, SiteCapacity
from contracts.resources import Resources
from contracts.state import (
    CapacityRecord,
    DownDecision,
    PlacementRecord,
    ReplicaStatus,
    SagaRecord,
)
from contracts.workload import Assignment
from mesh import layout
from mesh.cli.members_cmd import member_row
from mesh.errors import ConfigError
from mesh.live import EventFeed, EventRow, Gatherer, LineLog, LocalProcs, build_view, render
from mesh.server import NatsCluster
from mesh.specfile import load_workload
from mesh.state import bucket
from mesh.up import load_profiles, load_workloads, node_argv
from support import DEMO_MEMBERS, DEMO_WORKLOADS, demo_profiles, federation, wait_until
from support_e2e import (
    announced,
    connect,
    demo_workload_ids,
    json_of,
    placements,
    running_up,
    started_pids,
    stekker,
    wait_gone,
    wait_up_ready,
)

NOW = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
PROFILES = {p.id: p for p in demo_profiles()}
SPEC = load_workload(DEMO_WORKLOADS / "gemeente-utrecht-website.yaml")


def _row(member: str, *, age: float | None = 0.5, down: bool = False, frozen: bool = False,
         capacity: CapacityRecord | None = None, announced: bool = True) -> dict[str, Any]:
    """A member as `stekker members --json` shows it (the view reuses that gathering)."""
    roster_member = RosterMember(id=member, name=member, public_key="k", key_id="k")
    decision = DownDecision(member=member, state="down", epoch=1, declared_by="amstel",
                            declared_at=NOW) if down else None
    return member_row(roster_member, profile=PROFILES[member] if announced else None,
                      heartbeat_age_s=age, down=decision, frozen=frozen, capacity=capacity,
                      today=NOW.date())


def _placement(members: list[str], *, generation: int = 1, state: str = "running",
               replica_state: str = "running") -> PlacementRecord:
    return PlacementRecord(
        spec=SPEC,
        state=state,  # type: ignore[arg-type]
        generation=generation,
        assignments=[Assignment(member=m, site=PROFILES[m].sites[0].id, replica=i)
                     for i, m in enumerate(members)],
        replicas=[ReplicaStatus(member=m, site=PROFILES[m].sites[0].id,
                                state=replica_state)  # type: ignore[arg-type]
                  for m in members],
    )


# --- the view, pure ----------------------------------------------------------------------------


def test_build_view_shows_status_local_processes_and_placements() -> None:
    report = CapacityRecord(
        member="amstel", reported_at=NOW,
        sites=[SiteCapacity(site="ams1", total=Resources(vcpu=10, memory_gib=10),
                            used=Resources(vcpu=4, memory_gib=1))],
    )
    view = build_view(
        now=NOW,
        members=[_row("amstel", capacity=report), _row("dommel", down=True),
                 _row("zuidas", frozen=True, age=30), _row("nieuw", age=None, announced=False)],
        placements={SPEC.id: _placement(["amstel", "dommel"])},
        local={"amstel": LocalProcs(node=True, nats=True),
               "dommel": LocalProcs(node=False, nats=False),
               "vreemd": LocalProcs(node=True, nats=False)},
    )
    rows = {m.id: m for m in view.members}
    assert [m.id for m in view.members] == ["amstel", "dommel", "nieuw", "vreemd", "zuidas"]
    assert rows["amstel"].status == "active" and rows["amstel"].local_state == "running"
    assert rows["amstel"].free == Resources(vcpu=6, memory_gib=9)
    assert rows["amstel"].seal == 4 and rows["amstel"].sites == ("ams1", "alm1")
    assert rows["dommel"].status == "down"  # a quorum's word beats a fresh heartbeat
    assert rows["dommel"].local_state == "stopped" and rows["dommel"].free is None
    assert rows["zuidas"].status == "frozen" and rows["zuidas"].local_state == "-"
    assert rows["nieuw"].status == "unannounced" and rows["nieuw"].seal is None
    assert rows["vreemd"].status == "not in roster"
    assert rows["vreemd"].local_state == "nats stopped"
    (workload,) = view.workloads
    assert workload.members == ("amstel", "dommel") and workload.replicas == 3


def test_changes_are_one_line_each_and_render_shows_everything() -> None:
    before = build_view(
        now=NOW, members=[_row(m) for m in PROFILES],
        placements={SPEC.id: _placement(["amstel", "dommel", "zuidas"])},
        local={m: LocalProcs(node=True, nats=True) for m in PROFILES},
    )
    event = EventRow(seq=9, type="member.down.v1", publisher="amstel", target="dommel",
                     time=NOW)
    after = build_view(
        now=NOW, members=[_row(m, down=m == "dommel") for m in PROFILES], events=[event],
        placements={SPEC.id: _placement(["amstel", "zuidas"], generation=2)},
        local={**{m: LocalProcs(node=True, nats=True) for m in PROFILES},
               "dommel": LocalProcs(node=False, nats=False)},
    )
    log = LineLog()
    first = log.step(before, [])
    assert len(first) == 4  # three members, one workload
    lines = log.step(after, [event])
    text = "\n".join(lines)
    assert "member dommel: active -> down" in text
    assert "member dommel: local processes running -> stopped" in text
    assert f"workload {SPEC.id}: running, gen 2, on amstel:running, zuidas:running" in text
    assert "event member.down.v1 by amstel about dommel" in text
    assert log.step(after, []) == []  # nothing changed, nothing said

    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(render(after))
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    for word in ("amstel", "dommel", "down", "stopped", "SEAL-4", SPEC.id, "member.down.v1"):
        assert word in screen


# --- files and argv ----------------------------------------------------------------------------


def test_profiles_workloads_and_node_argv(tmp_path: Path) -> None:
    profiles = load_profiles(DEMO_MEMBERS)
    assert [p.id for _, p in profiles] == ["amstel", "dommel", "zuidas"]
    assert all(path.is_absolute() for path, _ in profiles)
    assert sorted(s.id for _, s in load_workloads(DEMO_WORKLOADS)) == demo_workload_ids()
    with pytest.raises(ConfigError, match="no member profiles"):
        load_profiles(tmp_path)
    with pytest.raises(ConfigError, match="no such folder"):
        load_workloads(tmp_path / "absent")
    twice = tmp_path / "twice"
    twice.mkdir()
    for name in ("a.toml", "b.toml"):
        (twice / name).write_bytes((DEMO_MEMBERS / "amstel.toml").read_bytes())
    with pytest.raises(ConfigError, match="also in"):
        load_profiles(twice)
    argv = node_argv(data_dir=tmp_path, url="nats://127.0.0.1:4222", member="amstel",
                     profile_path=profiles[0][0], driver="sim", replicas=3)
    assert argv[1:3] == ["-m", "mesh.cli.main"]
    assert argv[argv.index("--nats") + 1] == "nats://127.0.0.1:4222"
    assert argv[argv.index("node") + 1:] == [
        "--member", "amstel", "--config", str(profiles[0][0]), "--driver", "sim",
        "--replicas", "3"]
    secure = node_argv(data_dir=tmp_path, url="nats://127.0.0.1:4222", member="amstel",
                       profile_path=profiles[0][0], driver="sim", replicas=3,
                       nkey_file=tmp_path / "nats-auth" / "amstel.nk")
    assert secure[secure.index("--nkey") + 1] == str(tmp_path / "nats-auth" / "amstel.nk")
    assert secure.index("--nkey") < secure.index("node") and secure[-1] == "--require-tokens"


# --- gathering on a real server ----------------------------------------------------------------


async def test_gatherer_reads_buckets_heartbeats_and_events(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed",
                          services=["iam", "registry"]) as fed:
        bus = await fed.bus("amstel")
        feed = EventFeed(bus)
        await feed.start()
        try:
            gatherer = Gatherer(bus, feed=feed)
            await bus.publish(Heartbeat(seq=1, interval_s=1.0))
            await bus.publish(CapacityReported(sites=[]))  # quiet: not in the events
            decisions = await bucket(bus, layout.KV_DECISIONS, DownDecision)
            await decisions.put("down.dommel", DownDecision(
                member="dommel", state="down", epoch=1, declared_by="amstel",
                declared_at=NOW))
            await decisions.put("lease.other", DownDecision(  # other keys are not read
                member="zuidas", state="down", epoch=1, declared_by="amstel",
                declared_at=NOW))
            records = await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)
            await records.put(SPEC.id, _placement(["amstel", "zuidas"]))
            sagas = await bucket(bus, layout.KV_SAGAS, SagaRecord)
            await sagas.put("s1", SagaRecord(saga="s1", member="zuidas", coordinator="amstel",
                                             reason="drill", drill=True, state="running"))

            async def complete() -> object:
                view = await gatherer.gather()
                types = {e.type for e in view.events}
                ok = (len(view.members) == 3 and view.workloads
                      and "registry.announced.v1" in types)
                return view if ok else None

            view = await wait_until(complete, timeout=15, what="a complete view")
            rows = {m.id: m for m in view.members}
            assert rows["amstel"].status == "active"  # its heartbeat is fresh
            assert rows["dommel"].status == "down"
            assert rows["zuidas"].status == "suspected"  # a drill does not freeze, no beat
            assert rows["zuidas"].seal == 2 and rows["zuidas"].sites
            assert all(m.local is None for m in view.members)  # no `up` here
            assert CapacityReported.type_name() not in {e.type for e in view.events}
            assert all(e.verified for e in view.events)
            assert view.workload(SPEC.id) is not None
            assert feed.take_fresh() and feed.take_fresh() == []
        finally:
            await feed.stop()


# --- the real `stekker up` ---------------------------------------------------------------------


def test_member_commands_without_up_say_so_in_one_line(tmp_path: Path) -> None:
    for args in (["member", "stop", "dommel"], ["member", "start", "dommel"], ["status"]):
        result = stekker(tmp_path / "nothing", *args)
        assert result.returncode == 1, result
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "no stekker up" in result.stderr


@pytest.mark.e2e
async def test_up_places_the_demo_refuses_a_second_up_and_stops_clean(tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    with running_up(data_dir) as up:
        await wait_up_ready(up)
        bus = await connect(data_dir)
        try:
            expected = demo_workload_ids()

            async def all_placed() -> bool:
                got = await placements(bus)
                return set(expected) <= set(got) and await announced(bus) == {
                    "amstel", "dommel", "zuidas"}

            await wait_until(all_placed, timeout=30, what="every demo workload placed")
        finally:
            await bus.close()

        second = stekker(data_dir, "up", "--no-live", "--members-dir", str(DEMO_MEMBERS))
        assert second.returncode != 0
        assert "already run" in second.stderr and len(second.stderr.strip().splitlines()) == 1

        unknown = stekker(data_dir, "member", "stop", "nobody")
        assert unknown.returncode == 1 and "unknown member 'nobody'" in unknown.stderr

        rows = json_of(stekker(data_dir, "status", "--json"))
        assert [r["member"] for r in rows] == ["amstel", "dommel", "zuidas"]
        assert all(r["nats_alive"] and r["node_alive"] for r in rows)
        assert all(r["health"] and r["health"]["member"] == r["member"] for r in rows)

        pids = started_pids(data_dir)
        assert len(pids) == 7  # up, three servers, three nodes
        assert up.interrupt() == 0, up.output()
        assert wait_gone(pids) == []
        assert "stopped on SIGINT: 3 nodes and 3 NATS servers" in up.output()
        assert not up.fed.is_running() and up.fed.urls() == []


@pytest.mark.e2e
async def test_member_stop_and_start_from_another_terminal(tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    with running_up(data_dir, "--no-workloads") as up:
        await wait_up_ready(up)
        before = up.fed.member("zuidas")
        stopped = stekker(data_dir, "member", "stop", "zuidas")
        assert stopped.returncode == 0, stopped.stderr
        assert wait_gone([(before.node_pid or 0, before.node_create_time),
                          (before.nats_pid or 0, before.nats_create_time)], timeout=5) == []
        after_stop = up.fed.member("zuidas")
        assert after_stop.node_pid is None and after_stop.nats_pid is None

        started = stekker(data_dir, "member", "start", "zuidas")
        assert started.returncode == 0, started.stderr
        assert "node healthy" in started.stdout
        again = up.fed.member("zuidas")
        assert again.node_alive() and again.nats_alive()
        assert again.client_port == before.client_port  # same ports and store
        assert again.node_argv == before.node_argv

        def back() -> bool:
            return any("member zuidas: local processes" in line and line.endswith("-> running")
                       for line in up.output().splitlines())

        await wait_until(back, timeout=30, what="up saw zuidas come back")
        pids = started_pids(data_dir)
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=60) == 0
        assert wait_gone(pids) == []


def test_up_refuses_bad_profiles_without_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / "members"
    bad.mkdir()
    (bad / "broken.toml").write_text('id = "Broken"\n', encoding="utf-8")
    result = stekker(tmp_path / "fed", "up", "--no-live", "--members-dir", str(bad))
    assert result.returncode == 1
    assert "broken.toml" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "fed" / "up.json").exists()



def test_a_bad_failover_knob_stops_up_before_anything_starts(tmp_path: Path) -> None:
    members = tmp_path / "members"
    members.mkdir()
    for name in ("amstel", "dommel"):
        (members / f"{name}.toml").write_bytes((DEMO_MEMBERS / f"{name}.toml").read_bytes())
    bad = members / "dommel.toml"
    bad.write_text(bad.read_text() + "\n[node.failover]\nheartbeat = 0\n")
    line = len(bad.read_text().splitlines())
    with pytest.raises(ConfigError, match=rf"dommel.toml:{line}: field "
                                          r"node.failover.heartbeat: Expected `float` >= 0.05"):
        load_profiles(members)
