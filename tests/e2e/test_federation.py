"""End to end, as processes: `stekker up`, a member crashes (kill -9 of its node and its
NATS server), the others declare it down once and re-place its workloads, the
federation keeps working on the two servers left, and a takeover drill reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.failover import MemberDown
from contracts.state import PlacementRecord
from mesh import layout
from mesh.bus import Bus
from support import DEMO_WORKLOADS, wait_until
from support_e2e import (
    connect,
    demo_workload_ids,
    json_of,
    placements,
    placements_now,
    running_up,
    stekker,
    wait_up_ready,
)

pytestmark = pytest.mark.e2e

VICTIM = "dommel"
FAILOVER_BOUND_S = 60.0  # typical: under 10 s (make bench); CI machines are loaded


def check_invariants(records: dict[str, PlacementRecord]) -> None:
    """DESIGN §7.1: never more members than replicas, never one member twice."""
    for workload, record in records.items():
        members = [a.member for a in record.assignments]
        assert len(members) == len(set(members)), f"{workload} twice on one member: {members}"
        assert len(members) <= record.spec.replicas, f"{workload} on too many: {members}"


async def down_declarations(bus: Bus, member: str) -> int:
    """How many `member.down.v1` about `member` FED holds (any publisher)."""
    subject = MemberDown.subject("*", member)
    info = await bus.js.stream_info(layout.FED, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


def running(record: PlacementRecord) -> bool:
    return bool(record.replicas) and all(r.state == "running" for r in record.replicas)


async def test_crash_failover_keeps_the_federation_working(tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    with running_up(data_dir) as up:
        await wait_up_ready(up)
        bus = await connect(data_dir)
        try:
            expected = set(demo_workload_ids())

            async def settled() -> dict[str, PlacementRecord] | None:
                got = await placements_now(bus)
                if got is None or not expected <= set(got):
                    return None
                placed = [r for r in got.values() if r.state != "unplaceable"]
                return got if all(running(r) for r in placed) else None

            before = await wait_until(settled, timeout=30, what="demo workloads running")
            check_invariants(before)
            on_victim = {w for w, r in before.items()
                         if any(a.member == VICTIM for a in r.assignments)}
            assert on_victim, "the demo should put work on dommel"

            crash = stekker(data_dir, "member", "stop", VICTIM, "--kill")
            assert crash.returncode == 0, crash.stderr

            async def moved() -> dict[str, PlacementRecord] | None:
                got = await placements_now(bus)
                if got is None:
                    return None
                for workload in on_victim:
                    record = got[workload]
                    if record.generation < 2 or not running(record):
                        return None
                    if any(a.member == VICTIM for a in record.assignments):
                        return None
                return got

            after = await wait_until(moved, timeout=FAILOVER_BOUND_S,
                                     what=f"workloads of {VICTIM} re-placed and running")
            check_invariants(after)
            for workload in on_victim:
                assert VICTIM not in {r.member for r in after[workload].replicas}
            assert await down_declarations(bus, VICTIM) == 1

            # The federation keeps working on the two servers left.
            text = (DEMO_WORKLOADS / "gemeente-utrecht-website.yaml").read_text("utf-8")
            new_id = "na-de-storing"
            spec_file = tmp_path / f"{new_id}.yaml"
            spec_file.write_text(
                text.replace("id: gemeente-utrecht-website", f"id: {new_id}")
                .replace("replicas: 3", "replicas: 2"), encoding="utf-8")
            submitted = json_of(stekker(data_dir, "workload", "submit", str(spec_file),
                                        "--json", "--wait", "20"))
            assert submitted["id"] == new_id

            async def new_one_runs() -> PlacementRecord | None:
                record = ((await placements_now(bus)) or {}).get(new_id)
                return record if record is not None and running(record) else None

            record = await wait_until(new_one_runs, timeout=20, what="new workload running")
            assert VICTIM not in [a.member for a in record.assignments]
            assert len(record.assignments) == 2
            final = await placements(bus)
            check_invariants(final)
            assert await down_declarations(bus, VICTIM) == 1  # still exactly once
        finally:
            await bus.close()

        pytest.importorskip("mesh.cli.drill_cmd")
        from mesh.cli.main import app

        if "drill" not in {group.name for group in app.registered_groups}:
            pytest.skip("`stekker drill` is not registered in mesh/cli/main.py yet")
        drill = stekker(data_dir, "drill", "takeover", "--member", "zuidas",
                        "--timeout", "60")
        assert drill.returncode in (0, 1), f"{drill.stdout}\n{drill.stderr}"
        reports = sorted((data_dir / "reports").glob("drill-zuidas-*.json"))
        assert reports, drill.stdout
        report = json.loads(reports[-1].read_text("utf-8"))
        assert "passed" in report
        assert reports[-1].with_suffix(".md").exists()
        assert up.proc.poll() is None, up.output()  # `up` watched it all, still running
