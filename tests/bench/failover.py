"""Benchmark: kill -9 a member of the demo federation; how long until its workloads run
elsewhere. Prints one JSON document.

Each round starts `stekker up` (three members, each its own NATS server and node process,
default settings: heartbeat 1 s, suspicion after 3 s) in a fresh folder, waits until the
demo workloads run, kills `dommel`'s node and NATS server with SIGKILL, and measures, by
reading the state from the surviving servers:
- detection: kill → the quorum's `member.down.v1` stored on FED;
- recovery: kill → every workload that had a replica on dommel placed elsewhere and
  running (its new replicas bound by their agents).
Medians over the rounds, since these machines are shared and noisy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from contracts.state import DownDecision, PlacementRecord  # noqa: E402
from mesh import layout  # noqa: E402
from mesh.bus import Bus  # noqa: E402
from mesh.localfed import LocalFederation  # noqa: E402
from mesh.state import bucket  # noqa: E402

ROUNDS = int(os.environ.get("STEKKER_BENCH_ROUNDS", "3"))
VICTIM = "dommel"
BOUND_S = 60.0


def stekker(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mesh.cli.main", "--data-dir", str(data_dir), *args]


async def poll(probe, bound_s: float = BOUND_S, every_s: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        try:
            got = await probe()
        except Exception:  # a server just died, a leader is being elected: ask again
            got = None
        if got:
            return got
        await asyncio.sleep(every_s)
    raise TimeoutError("bound passed")


def running(record: PlacementRecord) -> bool:
    return bool(record.replicas) and all(r.state == "running" for r in record.replicas)


async def one_round(data_dir: Path) -> dict[str, float | int]:
    up = await asyncio.create_subprocess_exec(
        *stekker(data_dir, "up", "--no-live"), cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    bus = None
    try:
        fed = LocalFederation(data_dir)
        urls = await poll(lambda: _async(fed.urls()))
        bus = await Bus.connect(urls, service="bench")
        # The buckets exist once `up` has provisioned the cluster.
        placements = await poll(lambda: bucket(bus, layout.KV_PLACEMENTS, PlacementRecord))

        async def settled() -> dict[str, PlacementRecord] | None:
            records = {e.key: e.value for e in await placements.items()}
            if len(records) < 8:
                return None
            live = [r for r in records.values() if r.state != "unplaceable"]
            return records if all(running(r) for r in live) else None

        before = await poll(settled)
        hit = [k for k, r in before.items() if any(a.member == VICTIM for a in r.assignments)]
        killed_at = dt.datetime.now(dt.UTC)
        t0 = time.monotonic()
        kill = await asyncio.create_subprocess_exec(
            *stekker(data_dir, "member", "stop", VICTIM, "--kill"), cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        if await kill.wait() != 0:
            raise RuntimeError("member stop --kill failed")

        async def moved() -> bool:
            records = {e.key: e.value for e in await placements.items()}
            return all(
                records[k].generation >= 2 and running(records[k])
                and all(a.member != VICTIM for a in records[k].assignments)
                for k in hit
            )

        await poll(moved)
        recovered_s = time.monotonic() - t0

        decisions = await bucket(bus, layout.KV_DECISIONS, DownDecision)

        async def declared() -> dt.datetime | None:
            entry = await decisions.get(f"down.{VICTIM}")
            return entry.value.declared_at if entry else None

        down_at = await poll(declared)
        return {
            "workloads_moved": len(hit),
            "detection_s": round((down_at - killed_at).total_seconds(), 2),
            "recovery_s": round(recovered_s, 2),
        }
    finally:
        if bus is not None:
            await bus.close()
        up.send_signal(signal.SIGINT)
        await asyncio.wait_for(up.wait(), timeout=BOUND_S)


async def _async(value):  # type: ignore[no-untyped-def]
    return value


def main() -> None:
    rounds = []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory(prefix="stekker-bench-") as tmp:
            rounds.append(asyncio.run(one_round(Path(tmp) / "fed")))
    print(json.dumps({
        "benchmark": "failover",
        "what": "kill -9 one member (node + NATS server) of the 3-member demo federation",
        "settings": {"heartbeat_s": 1.0, "suspicion_timeout_s": 3.0},
        "rounds": rounds,
        "workloads_moved": rounds[0]["workloads_moved"],
        "detection_s_median": statistics.median(r["detection_s"] for r in rounds),
        "kill_to_running_elsewhere_s_median": statistics.median(r["recovery_s"] for r in rounds),
    }, indent=2))


if __name__ == "__main__":
    main()
