"""Benchmark: a takeover drill of a member hosting 100, 200 and 500 stateful workloads
with 1 MiB of data each (`sim` driver). Prints one JSON document.

Each size runs in a fresh in-process federation of the three demo members on one real
nats-server with a temporary store. The workloads are written to `fed_placements` on
dommel and started by its agent (each gets 1 MiB of deterministic data); then amstel is
asked for a drill of dommel and the clock runs from the request until the saga record
says it finished. Every step of the drill runs: plan (with the successors' capacity
reserved in the ledgers), quorum approval, per workload the export on dommel into the
object store with a sha256, the fetch and digest check on the successor, the import into
a shadow copy, its start and health check, its stop; report; the reservations given
back (`holds_left`: the saga's holds still in the ledgers a moment after, 0 expected).

Target (issue 4): 200 workloads in at most 30 s. `STEKKER_BENCH_SIZES=100,200` to choose.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from contracts.resources import Resources  # noqa: E402
from contracts.state import PlacementRecord, ReplicaStatus, SiteLedger  # noqa: E402
from contracts.workload import Assignment, WorkloadSpec  # noqa: E402
from mesh import layout  # noqa: E402
from mesh.observability import setup  # noqa: E402
from mesh.server import NatsCluster  # noqa: E402
from mesh.state import bucket  # noqa: E402
from services.agent.drivers.sim import SimDriver  # noqa: E402
from services.scheduler.ledger import takeover_attempt  # noqa: E402
from support import federation, wait_until  # noqa: E402
from support_takeover import DRILLING, FINISHED, request_drill, saga_in  # noqa: E402
from support_workloads import agent_of, members_known, placements  # noqa: E402

SIZES = [int(s) for s in os.environ.get("STEKKER_BENCH_SIZES", "100,200,500").split(",")]
DATA_BYTES = 1024 * 1024
TARGET_S = {200: 30.0}


def spec(i: int) -> WorkloadSpec:
    return WorkloadSpec(id=f"bench-{i:04d}", tenant="bench", stateful=True,
                        rpo_seconds=3600, rto_seconds=300,
                        resources=Resources(vcpu=0.1, memory_gib=0.1, storage_gib=1))


async def one_size(n: int, tmp: Path) -> dict[str, object]:
    cluster = NatsCluster.single(tmp / "nats", sync_always=False)
    cluster.start()
    try:
        async with federation(cluster.urls, tmp / "fed", services=DRILLING) as fed:
            bus = await fed.bus("amstel")
            await wait_until(lambda: members_known(bus), what="member profiles")
            store = await placements(bus)
            now = dt.datetime.now(dt.UTC)
            for i in range(n):
                s = spec(i)
                await store.put(s.id, PlacementRecord(
                    spec=s, state="running", generation=1, published_generation=1,
                    assignments=[Assignment(member="dommel", site="ehv1")],
                    replicas=[ReplicaStatus(member="dommel", site="ehv1", state="running",
                                            since=now)],
                    submitted_at=now, updated_at=now))
            await agent_of(fed, "dommel").reconcile()
            t0 = time.monotonic()
            saga = await request_drill(bus, "dommel")
            record = await saga_in(bus, saga, FINISHED, timeout=600)
            seconds = time.monotonic() - t0
            report = record.report or {}
            ledgers = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)

            async def holds_left() -> int:
                return sum(1 for e in await ledgers.items() for h in e.value.holds.values()
                           if h.attempt == takeover_attempt(saga))

            async def none_left() -> bool:
                return await holds_left() == 0

            with contextlib.suppress(AssertionError):  # then holds_left says how many
                await wait_until(none_left, timeout=10, what="reservations given back")
            left = await holds_left()
            rows = report.get("workloads") or []
            ok = sum(1 for r in rows if r.get("status") == "ok")  # type: ignore[union-attr]
            moved = sum(int(r.get("bytes") or 0) for r in rows)  # type: ignore[union-attr]
            return {"workloads": n, "passed": bool(report.get("passed")), "ok": ok,
                    "data_mib": round(moved / 2**20, 1), "seconds": round(seconds, 2),
                    "holds_left": left,
                    "mib_per_s": round(moved / 2**20 / seconds, 1)}
    finally:
        cluster.stop()


def main() -> None:
    setup("bench", level="warning")
    SimDriver.DATA_BYTES = DATA_BYTES
    runs = []
    for n in SIZES:
        with tempfile.TemporaryDirectory(prefix="stekker-bench-takeover-") as tmp:
            runs.append(asyncio.run(one_size(n, Path(tmp))))
    by_size = {r["workloads"]: r for r in runs}
    print(json.dumps({
        "benchmark": "takeover-drill",
        "what": "drill of dommel hosting N stateful sim workloads with 1 MiB of data each; "
                "3 in-process members on one nats-server",
        "data_bytes_per_workload": DATA_BYTES,
        "runs": runs,
        "targets_s": {str(k): v for k, v in TARGET_S.items()},
        "target_met": {str(k): by_size[k]["seconds"] <= v  # type: ignore[operator]
                       for k, v in TARGET_S.items() if k in by_size},
    }, indent=2))


if __name__ == "__main__":
    main()
