"""Benchmark: peak memory (RSS) of a scheduler process on the bus at 1,000 members and
100,000 placements. One JSON document.

A real nats-server holds a federation of 1,000 members (the 3 demo members and 997
generated ones, all in the genesis roster, every profile in `fed_members`), about
100,000 placements in `fed_placements` (decided by the pure pipeline, records as the
scheduler writes them but without their decision records, see `population`) and their
bookings in `fed_reservations`.
Then one `stekker node --services iam,scheduler` starts, builds its live view, and
places STEKKER_BENCH_NEW (default 2,000) more workloads; its peak RSS (VmHWM) is read
from /proc when they are placed. Target (issue 3): <= 500 MB.

The server runs without fsync on every write: this measures the scheduler's memory, not
the store's durability, and loading 100,000 records should not take minutes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from contracts.state import Hold, MemberRecord, PlacementRecord, SiteLedger  # noqa: E402
from contracts.workload import WorkloadSubmitted  # noqa: E402
from mesh import layout  # noqa: E402
from mesh.bus import Bus, retry_passing  # noqa: E402
from mesh.keys import load_identity  # noqa: E402
from mesh.server import NatsCluster  # noqa: E402
from mesh.state import bucket  # noqa: E402
from mesh.trust import TrustStore  # noqa: E402
from services.iam.genesis import found_local_federation  # noqa: E402
from services.scheduler.feasibility import FeasibilityCache  # noqa: E402
from services.scheduler.ledger import ledger_key, total  # noqa: E402
from services.scheduler.pipeline import decide  # noqa: E402
from services.scheduler.service import first_record  # noqa: E402
from services.scheduler.snapshot import MemberView, Snapshot, booked  # noqa: E402
from support import DEMO_MEMBERS, demo_profiles, wait_until  # noqa: E402

MEMBERS = int(os.environ.get("STEKKER_BENCH_MEMBERS", "1000"))
HELD = int(os.environ.get("STEKKER_BENCH_HELD_WORKLOADS", "52000"))  # ~100,000 placements
NEW = int(os.environ.get("STEKKER_BENCH_NEW", "2000"))
NOW = dt.datetime.now(dt.UTC)


def _pure_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_scheduler",
                                                  Path(__file__).with_name("scheduler.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def population():  # type: ignore[no-untyped-def]
    """The members (demo + generated) and HELD workloads decided on them."""
    pure = _pure_bench()
    rng = random.Random(7)
    generated = pure.federation(MEMBERS - 3, rng)
    profiles = [*demo_profiles(), *(v.profile for v in generated.members.values())]
    snap = Snapshot(members={p.id: MemberView(profile=p, status="active") for p in profiles},
                    today=NOW.date())
    cache = FeasibilityCache()
    records = []
    for spec in pure.workloads(rng, HELD):
        decision = decide(spec, snap, decided_by="amstel", now=NOW, cache=cache)
        record = first_record(spec, decision, generation=1, submitted_by="amstel",
                              submitted_at=NOW, now=NOW, history=[])
        # Stored without its decision record (tens of kB at 1,000 members): the
        # scheduler never reads placements back, so their size is the store's concern,
        # not its memory's, and gigabytes of KV would make this benchmark about the disk.
        records.append(msgspec.structs.replace(record, decision=None))
        snap = booked(snap, spec.resources, record.assignments)
    return profiles, records, pure.workloads(random.Random(8), NEW)


async def load(bus: Bus, profiles, records) -> int:  # type: ignore[no-untyped-def]
    members = await bucket(bus, layout.KV_MEMBERS, MemberRecord)
    placements = await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)
    ledgers = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)
    gate = asyncio.Semaphore(128)

    async def put(kv, key, value) -> None:  # type: ignore[no-untyped-def]
        async with gate:  # a put is idempotent: retried through a busy server's timeouts
            await retry_passing(lambda: kv.put(key, value), bound_s=120)

    await asyncio.gather(*(put(members, p.id, MemberRecord(profile=p, announced_at=NOW,
                                                             msg_id=f"bench-{p.id}"))
                           for p in profiles))
    holds: dict[tuple[str, str], dict[str, Hold]] = defaultdict(dict)
    for r in records:
        for a in r.assignments:
            holds[(a.member, a.site)][r.spec.id] = Hold(
                amount=r.spec.resources, generation=1, attempt="bench", since=NOW,
                tenant=r.spec.tenant)
    await asyncio.gather(*(put(placements, r.spec.id, r) for r in records))
    await asyncio.gather(*(put(ledgers, ledger_key(m, s), SiteLedger(
        member=m, site=s, reserved=total(h.values()), holds=h))
        for (m, s), h in holds.items()))
    return sum(len(r.assignments) for r in records)


def start_node(root: Path, url: str) -> subprocess.Popen[bytes]:
    with open(root / "node.log", "wb") as log:  # the child keeps its copy
        return subprocess.Popen(
            [sys.executable, "-m", "mesh.cli.main", "--data-dir", str(root / "fed"),
             "--nats", url, "node", "--member", "amstel",
             "--config", str(DEMO_MEMBERS / "amstel.toml"), "--services", "iam,scheduler"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


async def run(root: Path, url: str, profiles, records, new) -> dict[str, object]:  # type: ignore[no-untyped-def]
    data_dir = root / "fed"
    bus = await Bus.connect([url], identity=load_identity(data_dir / "keys", "amstel"),
                            trust=TrustStore(), service="bench")
    try:
        await bus.provision(1)
        start = time.monotonic()
        placed = await load(bus, profiles, records)
        load_s = time.monotonic() - start
        node = start_node(root, url)
        try:
            placements = await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)
            gate = asyncio.Semaphore(256)

            async def submit(spec) -> None:  # type: ignore[no-untyped-def]
                async with gate:
                    await bus.publish(WorkloadSubmitted(
                        spec=msgspec.structs.replace(spec, id=f"new-{spec.id}")))

            started = time.monotonic()
            await asyncio.gather(*(submit(s) for s in new))
            last = f"new-{new[-1].id}"
            await wait_until(lambda: placements.get(last), timeout=600, interval=0.5,
                             what="the new workloads placed")
            await wait_until(lambda: _all(placements, [f"new-{s.id}" for s in new]),
                             timeout=600, interval=1.0, what="every new workload placed")
            decide_s = time.monotonic() - started
            rss = vm_hwm_mib(node.pid)
        finally:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
    finally:
        await bus.close()
    return {"members": len(profiles), "placements": placed, "workloads_held": len(records),
            "load_s": round(load_s, 1), "new_workloads": len(new),
            "new_placed_s": round(decide_s, 1), "peak_rss_mib": round(rss, 1)}


async def _all(placements, keys) -> bool:  # type: ignore[no-untyped-def]
    for key in keys:
        if await placements.get(key) is None:
            return False
    return True


def main() -> None:
    profiles, records, new = population()
    with tempfile.TemporaryDirectory(prefix="stekker-bench-") as tmp:
        root = Path(tmp)
        found_local_federation(root / "fed", "stekker-bench", profiles)
        server = NatsCluster.single(root / "nats", sync_always=False)
        server.start()
        try:
            result = asyncio.run(run(root, server.urls[0], profiles, records, new))
        finally:
            server.stop()
    print(json.dumps({
        "benchmark": "scheduler_rss",
        "what": "peak RSS of one scheduler node process (live view of the bus) at "
                f"{MEMBERS} members and ~{2 * HELD} placements, after placing "
                f"{NEW} more",
        **result,
        "target_peak_rss_mib": 500,
    }, indent=2))


if __name__ == "__main__":
    main()
