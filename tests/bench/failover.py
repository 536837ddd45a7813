"""Benchmark: kill -9 a member of a `stekker up` federation; how long until its workloads
run elsewhere. Prints one JSON document.

Every round starts `stekker up` (three members, each its own NATS server and node process,
default settings: heartbeat 1 s, suspicion after 3 s, replace rate 500/s) in a fresh
folder, waits until the workloads run, kills `dommel`'s node and NATS server with SIGKILL
(`stekker member stop dommel --kill`) and measures, reading the surviving servers:
- detection: kill → the quorum's declaration (`fed_decisions/down.dommel` declared_at);
- re-placed: kill → every workload that had a replica on dommel placed elsewhere (KV);
- bound: kill → ... and its new replicas bound (running) by their agents.

Two scenarios:
- `demo` (STEKKER_BENCH_ROUNDS rounds, default 3): the demo workloads of deploy/demo;
  medians, since these machines are shared and noisy;
- `scale` (one round of STEKKER_BENCH_WORKLOADS, default 1000; 0 skips it): that many
  small `sim` workloads, submitted through the scheduler with a preference for dommel so
  dommel hosts them, then dommel killed. Also the achieved RTO per workload (the
  declaration → its new replica running) as recorded in its placement.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from contracts.resources import Resources  # noqa: E402
from contracts.state import DownDecision, MemberRecord, PlacementRecord  # noqa: E402
from contracts.workload import (  # noqa: E402
    Preferences,
    Requirements,
    WorkloadSpec,
    WorkloadSubmitted,
)
from mesh import layout  # noqa: E402
from mesh.bus import Bus, retry_passing  # noqa: E402
from mesh.keys import load_identity  # noqa: E402
from mesh.leaders import groups  # noqa: E402
from mesh.localfed import LocalFederation  # noqa: E402
from mesh.state import Bucket, bucket  # noqa: E402
from services.scheduler.replace import achieved_rto_s  # noqa: E402

ROUNDS = int(os.environ.get("STEKKER_BENCH_ROUNDS", "3"))
WORKLOADS = int(os.environ.get("STEKKER_BENCH_WORKLOADS", "1000"))
# STEKKER_BENCH_VICTIM: the member killed. The default, dommel, is not the steward (the
# first member in roster order, amstel, keeps the JetStream leaders: mesh/leaders.py);
# STEKKER_BENCH_VICTIM=amstel measures the steward's death, which waits for elections.
VICTIM = os.environ.get("STEKKER_BENCH_VICTIM", "dommel")
STEWARD = "amstel"
STEWARD_SETTLE_S = 30.0
# STEKKER_BENCH_KEEP_LOGS=DIR copies each round's node and nats-server logs there (to
# read the timeline of a failover: declaration, leader elections, moves, bindings).
KEEP_LOGS = os.environ.get("STEKKER_BENCH_KEEP_LOGS", "")
BOUND_S = 60.0
# Submitting goes at the scheduler's pace (see docs/placement.md): allow for it.
SUBMIT_BOUND_S = 1800.0


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


def settled(record: PlacementRecord) -> bool:
    """Running elsewhere, or known to have nowhere to go."""
    return running(record) or record.state == "unplaceable"


async def _async(value):  # type: ignore[no-untyped-def]
    return value


@contextlib.asynccontextmanager
async def federation(data_dir: Path, *up_args: str) -> AsyncIterator[tuple[Bus, Any]]:
    """`stekker up` in `data_dir`; yields a bus (signing as amstel) and the placements."""
    up_log = (data_dir.parent / "up.log").open("wb")  # closed in the finally below
    up = await asyncio.create_subprocess_exec(
        *stekker(data_dir, "up", "--no-live", *up_args), cwd=ROOT,
        stdout=up_log, stderr=asyncio.subprocess.STDOUT,
    )
    bus = None
    try:
        fed = LocalFederation(data_dir)
        urls = await poll(lambda: _async(len(fed.urls()) == 3 and fed.urls()))
        identity = await poll(lambda: _async(load_identity(data_dir / "keys", "amstel")))
        # The clock reads through a surviving server: a client of the victim's would be
        # blind for its reconnect after the kill and measure its own outage.
        watch = [u for u in urls if u != fed.member(VICTIM).url]
        bus = await Bus.connect(watch, identity=identity, service="bench")
        # The buckets exist once `up` has provisioned the cluster.
        placements = await poll(lambda: bucket(bus, layout.KV_PLACEMENTS, PlacementRecord))
        yield bus, placements
    finally:
        if bus is not None:
            await bus.close()
        up.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(up.wait(), timeout=BOUND_S)
        except TimeoutError:
            # Leave nothing running: every recorded process, then `up` itself.
            print("  stekker up did not stop on Ctrl-C; killing the federation",
                  file=sys.stderr)
            await asyncio.to_thread(LocalFederation(data_dir).stop_all, kill=True)
            up.kill()
            await up.wait()
        finally:
            up_log.close()
            if KEEP_LOGS and (data_dir / "logs").is_dir():
                kept = Path(KEEP_LOGS) / data_dir.parent.name
                shutil.copytree(data_dir / "logs", kept)
                shutil.copy(data_dir.parent / "up.log", kept / "up.log")


async def led_by_victim(bus: Bus) -> list[str]:
    """The replicated groups (streams, buckets, durable consumers) the victim's server
    leads just before the kill: each waits for an election after it. A federation that
    just started has its leaders anywhere until the steward's passes (every 10 s) pull
    them over; a running one has them all on the steward (amstel). Wait, bounded, for
    that steady state, whoever the victim is: killing the steward is then the worst
    case (every group elects), killing another member the usual one (none does)."""
    deadline = time.monotonic() + STEWARD_SETTLE_S
    while True:
        leaders = {g.name: g.leader for g in await retry_passing(lambda: groups(bus))}
        if set(leaders.values()) == {STEWARD} or time.monotonic() >= deadline:
            return sorted(name for name, leader in leaders.items() if leader == VICTIM)
        await asyncio.sleep(0.5)


async def kill_victim(data_dir: Path) -> tuple[dt.datetime, float]:
    """SIGKILL the victim's node and NATS server, as `stekker member stop VICTIM --kill`
    does, but from here: the clock starts at the kill, not a CLI's start-up before it."""
    fed = LocalFederation(data_dir)
    killed_at, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    await asyncio.to_thread(fed.stop_member, VICTIM, kill=True)
    return killed_at, t0


async def measure_failover(
    bus: Bus, placements: Bucket[PlacementRecord], hit: list[str], killed_at: dt.datetime,
    t0: float, every_s: float,
) -> dict[str, Any]:
    """Wait for the declaration, the re-placement and the binding of every `hit` workload;
    the figures, in seconds after the kill."""
    marks: dict[str, float] = {}
    progress = {"replaced": 0, "bound": 0, "said_at": t0}

    records: dict[str, PlacementRecord] = {}
    open_keys = set(hit)  # not yet settled elsewhere: only these are read again

    async def moved() -> dict[str, PlacementRecord] | None:
        # Batched direct gets, which any surviving replica answers: a scan would need a
        # consumer, whose creation can stall on the dead server (and measure that).
        fresh = await placements.get_many(sorted(open_keys))
        records.update({k: e.value for k, e in fresh.items()})
        away = [records[k] for k in hit
                if k in records and all(a.member != VICTIM for a in records[k].assignments)]
        open_keys.difference_update(k for k in list(open_keys)
                                    if k in records and settled(records[k])
                                    and all(a.member != VICTIM
                                            for a in records[k].assignments))
        progress["replaced"], progress["bound"] = len(away), len(hit) - len(open_keys)
        now = time.monotonic()
        if now - progress["said_at"] >= 5.0:
            progress["said_at"] = now
            print(f"  {now - t0:.0f}s after the kill: {len(away)}/{len(hit)} re-placed, "
                  f"{progress['bound']} bound", file=sys.stderr)
        if len(away) == len(hit) and "replaced_s" not in marks:
            marks["replaced_s"] = now - t0
        return records if not open_keys else None

    try:
        await poll(moved, bound_s=BOUND_S + len(hit), every_s=every_s)
    except TimeoutError:
        return {"workloads_moved": len(hit), "timed_out_s": round(time.monotonic() - t0),
                "replaced": progress["replaced"], "bound": progress["bound"]}
    bound_s = time.monotonic() - t0
    decisions = await bucket(bus, layout.KV_DECISIONS, DownDecision)

    async def declared() -> dt.datetime | None:
        entry = await decisions.get(f"down.{VICTIM}")
        return entry.value.declared_at if entry else None

    down_at = await poll(declared)
    detection_s = (down_at - killed_at).total_seconds()
    rtos = [r for r in (achieved_rto_s(records[k]) for k in hit) if r is not None]
    return {
        "workloads_moved": len(hit),
        # No surviving member may host these (the demo's rvig-brp-kern, when amstel is
        # killed): nothing to bind; the record says unplaceable, as it should.
        "no_successor": sum(1 for k in hit if records[k].state == "unplaceable"),
        "detection_s": round(detection_s, 2),
        "replaced_s": round(marks["replaced_s"], 2),
        "bound_s": round(bound_s, 2),
        "replaced_after_detection_s": round(marks["replaced_s"] - detection_s, 2),
        "bound_after_detection_s": round(bound_s - detection_s, 2),
        "rto_recorded": len(rtos),
        "rto_achieved_s_median": round(statistics.median(rtos), 2) if rtos else None,
        "rto_achieved_s_max": round(max(rtos), 2) if rtos else None,
        "rto_met": sum(1 for k in hit if (records[k].failover is not None and
                                          (achieved_rto_s(records[k]) or 1e9)
                                          <= records[k].spec.rto_seconds)),
    }


async def demo_round(data_dir: Path) -> dict[str, Any]:
    async with federation(data_dir) as (bus, placements):
        async def settled() -> dict[str, PlacementRecord] | None:
            records = {e.key: e.value for e in await placements.items()}
            if len(records) < 8:
                return None
            live = [r for r in records.values() if r.state != "unplaceable"]
            return records if all(running(r) for r in live) else None

        before = await poll(settled)
        hit = [k for k, r in before.items() if any(a.member == VICTIM for a in r.assignments)]
        led = await led_by_victim(bus)
        killed_at, t0 = await kill_victim(data_dir)
        figures = await measure_failover(bus, placements, hit, killed_at, t0, every_s=0.05)
        return {**figures, "victim_led": led}


def scale_spec(i: int) -> WorkloadSpec:
    """Small workloads of mixed criticality and RTO, preferring dommel (a soft wish: the
    failover may and must place them elsewhere)."""
    criticality = "critical" if i % 10 == 0 else "high" if i % 10 < 3 else "normal"
    return WorkloadSpec(
        id=f"bench-{i:04d}", tenant="bench", criticality=criticality,  # type: ignore[arg-type]
        rto_seconds=(30, 60, 300)[i % 3],
        resources=Resources(vcpu=0.05, memory_gib=0.05),
        requirements=Requirements(preferences=Preferences(members=[VICTIM])),
    )


async def scale_round(data_dir: Path, n: int) -> dict[str, Any]:
    async with federation(data_dir, "--no-workloads") as (bus, placements):
        members = await poll(lambda: bucket(bus, layout.KV_MEMBERS, MemberRecord))
        await poll(lambda: _count_keys(members, 3))
        t_submit = time.monotonic()
        specs = [scale_spec(i) for i in range(n)]
        for chunk in range(0, n, 100):
            await asyncio.gather(*(bus.publish(WorkloadSubmitted(spec=s))
                                   for s in specs[chunk:chunk + 100]))

        async def settled() -> dict[str, PlacementRecord] | None:
            records = {e.key: e.value for e in await placements.items()}
            if len(records) < n:
                return None
            return records if all(running(r) for r in records.values()) else None

        before = await poll(settled, bound_s=SUBMIT_BOUND_S, every_s=1.0)
        submit_s = time.monotonic() - t_submit
        hit = sorted(k for k, r in before.items()
                     if any(a.member == VICTIM for a in r.assignments))
        led = await led_by_victim(bus)
        killed_at, t0 = await kill_victim(data_dir)
        figures = await measure_failover(bus, placements, hit, killed_at, t0, every_s=0.1)
        return {"workloads": n, "placed_and_running_s": round(submit_s, 1), **figures,
                "victim_led": led}


async def _count_keys(kv: Any, n: int) -> bool:
    return len(await kv.keys()) >= n


def main() -> None:
    rounds = []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory(prefix="stekker-bench-") as tmp:
            rounds.append(asyncio.run(demo_round(Path(tmp) / "fed")))
    scale = None
    if WORKLOADS > 0:
        with tempfile.TemporaryDirectory(prefix="stekker-bench-") as tmp:
            scale = asyncio.run(scale_round(Path(tmp) / "fed", WORKLOADS))
    out: dict[str, Any] = {
        "benchmark": "failover",
        "what": "kill -9 one member (node + NATS server) of a 3-member `stekker up` federation",
        "victim": VICTIM,
        "settings": {"heartbeat_s": 1.0, "suspicion_timeout_s": 3.0, "replace_rate_per_s": 500},
        "demo": {
            "rounds": rounds,
            "workloads_moved": rounds[0]["workloads_moved"] if rounds else 0,
            "detection_s_median": statistics.median(r["detection_s"] for r in rounds)
            if rounds else None,
            "kill_to_running_elsewhere_s_median": statistics.median(
                r["bound_s"] for r in rounds) if rounds else None,
        },
        "scale": scale,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
