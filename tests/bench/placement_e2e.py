"""Benchmark: workloads per second from submitted to bound, on the bus. One JSON document.

Three members' nodes (iam, registry, scheduler, agent with the `sim` driver) run in this
process against a real three-server JetStream cluster (the same fsync setting as
production); N small workloads are submitted as fast as the bus takes them, and the
clock stops when every placement record says `running`. Issue 3's target is ≥ 1,000
workloads/s; this is the baseline to improve on.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from contracts.resources import Resources  # noqa: E402
from contracts.state import MemberRecord, PlacementRecord  # noqa: E402
from contracts.workload import WorkloadSpec, WorkloadSubmitted  # noqa: E402
from mesh import layout  # noqa: E402
from mesh.runtime import NodeSettings  # noqa: E402
from mesh.server import NatsCluster  # noqa: E402
from mesh.state import bucket  # noqa: E402
from support import MEMBERS, federation, wait_until  # noqa: E402

WORKLOADS = int(os.environ.get("STEKKER_BENCH_WORKLOADS", "300"))


def spec(i: int) -> WorkloadSpec:
    return WorkloadSpec(id=f"bench-{i:06d}", tenant="bench",
                        resources=Resources(vcpu=0.1, memory_gib=0.1, storage_gib=0.1))


async def run(root: Path, urls: list[str]) -> dict[str, float | int]:
    services = ["iam", "registry", "scheduler", "agent"]
    async with federation(urls, root / "fed", services=services,
                          settings=NodeSettings(driver="sim", replicas=3)) as fed:
        bus = await fed.bus("amstel")
        members = await bucket(bus, layout.KV_MEMBERS, MemberRecord)
        await wait_until(lambda: _count(members, len(MEMBERS)), timeout=60, what="members")
        placements = await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)
        start = time.monotonic()
        for i in range(WORKLOADS):
            await bus.publish(WorkloadSubmitted(spec=spec(i)))
        submitted_s = time.monotonic() - start

        async def all_running() -> bool:
            records = await placements.items()
            return len(records) == WORKLOADS and all(e.value.state == "running"
                                                     for e in records)

        await wait_until(all_running, timeout=900, interval=0.5, what="all bound")
        elapsed = time.monotonic() - start
    return {"workloads": WORKLOADS, "submit_s": round(submitted_s, 2),
            "submitted_to_bound_s": round(elapsed, 2),
            "workloads_per_s": round(WORKLOADS / elapsed, 1)}


async def _count(kv, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await kv.keys()) >= n


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="stekker-bench-") as tmp:
        cluster = NatsCluster(Path(tmp) / "nats", list(MEMBERS))
        cluster.start()
        try:
            result = asyncio.run(run(Path(tmp), cluster.urls))
        finally:
            cluster.stop()
    print(json.dumps({
        "benchmark": "placement_e2e",
        "what": "submitted → bound on the bus: 3 members' scheduler + agent (sim), "
                "3-server JetStream cluster, sync_interval always",
        **result,
        "target_workloads_per_s": 1000,
    }, indent=2))


if __name__ == "__main__":
    main()
