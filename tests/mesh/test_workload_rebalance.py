"""`stekker workload rebalance`: after a member was declared down and recovered, moving
back is asked for, rate-limited, bounded by --max, and never exceeds a workload's replicas."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from contracts.failover import Evidence, MemberDown, MemberRecovered
from contracts.state import PlacementRecord
from contracts.workload import WorkloadSubmitted
from mesh.server import NatsCluster
from support import wait_until
from support_cli import invoke, logs_to_a_file
from support_workloads import agent_of, demo_specs, placements, threaded_federation

SETTLED = ("running", "degraded", "unplaceable")


# Imported fixture, used by every test here.
pytestmark = pytest.mark.usefixtures(logs_to_a_file.__name__)


def cli(fed_dir: Path, url: str, *args: str):  # type: ignore[no-untyped-def]
    return invoke(url, fed_dir, "--as", "amstel", *args)


def members(record: PlacementRecord) -> set[str]:
    return {a.member for a in record.assignments}


def test_rebalance_moves_back_to_a_recovered_member(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    fed_dir, url = tmp_path / "fed", nats_server.urls[0]
    with threaded_federation(nats_server.urls, fed_dir) as tf:
        assert tf.fed is not None
        bus = tf.call(tf.fed.bus("amstel"))
        bucket = tf.call(placements(bus))

        async def records_at(wanted: dict[str, int]) -> dict[str, PlacementRecord] | None:
            records = {e.key: e.value for e in await bucket.items()}
            done = len(records) >= len(wanted) and all(
                k in records and records[k].generation >= g and records[k].state in SETTLED
                for k, g in wanted.items())
            return records if done else None

        def settle(wanted: dict[str, int], what: str) -> dict[str, PlacementRecord]:
            return tf.call(wait_until(lambda: records_at(wanted), timeout=25, what=what))

        # Two more dashboards, so that more than one workload waits to move back.
        dashboard = next(s for s in demo_specs() if s.id == "rivm-luchtkwaliteit-dashboard")
        specs = [*demo_specs(), *(msgspec.structs.replace(dashboard, id=f"dashboard-{n}")
                                  for n in (2, 3))]
        for spec in specs:
            tf.call(bus.publish(WorkloadSubmitted(spec=spec)))
        before = settle({s.id: 1 for s in specs}, "demo workloads placed")
        hit = {k for k, r in before.items() if "dommel" in members(r)}

        tf.call(bus.publish(MemberDown(member="dommel", epoch=1, quorum=2, evidence=[
            Evidence(observer="amstel", msg_id="s2", silence_s=5.0),
            Evidence(observer="zuidas", msg_id="s3", silence_s=5.0),
        ])))
        failed_over = settle({k: 2 for k in hit}, "dommel's workloads re-placed")
        short = {k for k in hit if failed_over[k].state == "degraded"}
        moved_away = hit - short
        assert moved_away, "some workload found a whole new home"

        tf.call(bus.publish(MemberRecovered(member="dommel", epoch=1)))
        healed = settle({k: 3 for k in short}, "degraded workloads healed")
        assert all("dommel" not in members(healed[k]) for k in moved_away)  # not automatic

        plan = cli(fed_dir, url, "workload", "rebalance", "--member", "dommel", "--dry-run",
                   "--json")
        assert plan.exit_code == 0, plan.output
        planned = json.loads(plan.stdout)
        assert {m["workload"] for m in planned} >= moved_away and len(planned) >= 2, planned
        for m in planned:
            if m["workload"] in moved_away:  # the replica that took dommel's place goes
                took = failed_over[m["workload"]].history[-1].split(" → ")[1].split(" ")[0]
                assert m["from"].startswith(f"{took}/") and m["why"] == "it used to host it"
            else:  # never on dommel, but a decision from scratch would now put it there
                assert m["why"].startswith("a fresh decision picks it")
        assert all(not m["committed"] and m["to"].startswith("dommel/") for m in planned)
        unchanged = tf.call(records_at({}))
        assert unchanged is not None
        assert all(unchanged[k].generation == healed[k].generation for k in healed)

        first = cli(fed_dir, url, "workload", "rebalance", "--member", "dommel", "--max", "1",
                    "--rate", "50", "--json")
        assert first.exit_code == 0, first.output
        (move,) = json.loads(first.stdout)
        key = move["workload"]
        assert move["committed"] and move["to"].startswith("dommel/")
        assert move["generation"] == healed[key].generation + 1

        rest = cli(fed_dir, url, "workload", "rebalance", "--member", "dommel", "--rate", "50",
                   "--json")
        assert rest.exit_code == 0, rest.output
        moved = {key} | {m["workload"] for m in json.loads(rest.stdout)}
        assert moved_away <= moved <= {m["workload"] for m in planned}

        after = settle({k: healed[k].generation + 1 for k in moved}, "moves settled")
        for record in after.values():
            assert len(record.assignments) == len(members(record)) <= record.spec.replicas
        for k in moved:
            assert "dommel" in members(after[k])
            assert after[k].decision is not None and after[k].decision.cause == "rebalance"
            assert "rebalance" in after[k].history[-1] and " → dommel" in after[k].history[-1]
            tf.call(wait_until(lambda k=k: k in agent_of(tf.fed, "dommel").instances,
                               what=f"dommel runs {k} again"))
        for k in moved:
            for member in members(healed[k]) - members(after[k]):
                tf.call(wait_until(lambda k=k, m=member: k not in agent_of(tf.fed, m).instances,
                                   what=f"{member} let go of {k}"))

        again = cli(fed_dir, url, "workload", "rebalance", "--member", "dommel")
        assert again.exit_code == 0 and "nothing to move" in again.stdout

        audited = cli(fed_dir, url, "audit", "verify", "--json")
        assert audited.exit_code == 0, audited.stdout
