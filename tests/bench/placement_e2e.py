"""Benchmark: workloads per second from submitted to bound, on the bus. One JSON document.

Three members each run one `stekker node` process (iam, registry, scheduler, agent with
the `sim` driver), as they would in production, against a real three-server JetStream
cluster (streams with three replicas, fsync on every write: DESIGN §5). N small
workloads are submitted by 256 concurrent tenants' publishes; the clock stops when the
N-th distinct workload has a `workload.bound` (an agent runs its replica), and every
placement record is then checked to say `running`.

STEKKER_BENCH_WORKLOADS (default 3000) sets N; STEKKER_BENCH_PROFILE (a folder) runs
each node under cProfile; STEKKER_BENCH_KEEP_LOGS (a folder) keeps the nodes' logs.
Issue 3's target is >= 1,000 workloads/s on a 2-core machine; the nodes, the three
nats-servers and this submitter share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from contracts.resources import Resources  # noqa: E402
from contracts.state import MemberRecord, PlacementRecord  # noqa: E402
from contracts.workload import (  # noqa: E402
    WorkloadBound,
    WorkloadsBound,
    WorkloadSpec,
    WorkloadSubmitted,
)
from mesh import layout  # noqa: E402
from mesh.bus import Bus  # noqa: E402
from mesh.keys import load_identity  # noqa: E402
from mesh.runtime import health_subject  # noqa: E402
from mesh.server import NatsCluster  # noqa: E402
from mesh.state import bucket  # noqa: E402
from mesh.trust import TrustStore  # noqa: E402
from services.iam.genesis import found_local_federation  # noqa: E402
from support import DEMO_MEMBERS, MEMBERS, demo_profiles, wait_until  # noqa: E402

WORKLOADS = int(os.environ.get("STEKKER_BENCH_WORKLOADS", "3000"))
# For comparison only: STEKKER_BENCH_DURABLE=0 runs one server, one replica, no fsync per
# write (what the same code does when the store is not what it waits for).
DURABLE = os.environ.get("STEKKER_BENCH_DURABLE", "1") != "0"
REPLICAS = 3 if DURABLE else 1
SUBMITTERS = 256


class _Binding(msgspec.Struct):
    workload: str


class _Bindings(msgspec.Struct):
    bindings: list[_Binding]


_bindings = msgspec.json.Decoder(_Bindings)


def spec(i: int) -> WorkloadSpec:
    return WorkloadSpec(id=f"bench-{i:06d}", tenant="bench",
                        resources=Resources(vcpu=0.01, memory_gib=0.01, storage_gib=0.01))


@contextlib.contextmanager
def nodes(data_dir: Path, urls: list[str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One `stekker node` per member; always stopped (SIGTERM, then SIGKILL)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for member in MEMBERS:
            profile = os.environ.get("STEKKER_BENCH_PROFILE")  # a folder: cProfile per node
            python = ([sys.executable, "-m", "cProfile", "-o", f"{profile}/{member}.prof"]
                      if profile else [sys.executable])
            with open(data_dir / f"{member}.log", "wb") as log:  # the child keeps its copy
                procs.append(subprocess.Popen(
                    [*python, "-m", "mesh.cli.main", "--data-dir", str(data_dir),
                     "--nats", ",".join(urls), "node", "--member", member,
                     "--config", str(DEMO_MEMBERS / f"{member}.toml"), "--driver", "sim",
                     "--replicas", str(REPLICAS),
                     "--services", "iam,registry,scheduler,agent"],
                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        yield procs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def run(
    data_dir: Path, urls: list[str], watched: dict[str, list[psutil.Process]],
) -> dict[str, object]:
    trust = TrustStore()
    bus = await Bus.connect(urls, identity=load_identity(data_dir / "keys", "amstel"),
                            trust=trust, service="bench")
    try:
        await bus.provision(REPLICAS)
        members = await bucket(bus, layout.KV_MEMBERS, MemberRecord)

        async def all_members() -> bool:
            return len(await members.keys()) >= len(MEMBERS)

        # Every half second: each read is a watcher, an ephemeral consumer on the servers.
        await wait_until(all_members, timeout=120, interval=0.5, what="every member's profile")
        # Bound = an agent runs the replica and said so (`workload.bound`, or its item in
        # a `workload.bindings`, the answer to a batch), counted on the raw subject and
        # body: checking signatures here would load this process, not the nodes.
        bound: set[str] = set()
        done = asyncio.Event()
        # When the first 10 %, 20 %, ... of the workloads were bound (seconds after the
        # first submission): the rate between 10 % and 90 % leaves out the pipeline's
        # filling (the first bindings come some 0.3 s after the first submission) and
        # the last stragglers, which weigh more the smaller N is.
        tenths: dict[int, float] = {}

        async def on_bound(msg) -> None:  # type: ignore[no-untyped-def]
            if msg.subject.startswith(WorkloadsBound.subject_pattern()[:-1]):
                bound.update(b.workload for b in _bindings.decode(msg.data).bindings)
            else:
                bound.add(msg.subject.rsplit(".", 1)[-1])
            now = time.monotonic() - start
            for tenth in range(len(bound) * 10 // WORKLOADS + 1):  # a batch may pass two
                tenths.setdefault(tenth, now)
            if len(bound) >= WORKLOADS:
                done.set()

        subs = [await bus.nc.subscribe(WorkloadBound.subject_pattern(), cb=on_bound),
                await bus.nc.subscribe(WorkloadsBound.subject_pattern(), cb=on_bound)]
        gate = asyncio.Semaphore(SUBMITTERS)

        async def submit(i: int) -> None:
            async with gate:
                await bus.publish(WorkloadSubmitted(spec=spec(i)))

        before = cpu_seconds(watched)
        start = time.monotonic()
        await asyncio.gather(*(submit(i) for i in range(WORKLOADS)))
        submitted_s = time.monotonic() - start
        await asyncio.wait_for(done.wait(), timeout=900)
        elapsed = time.monotonic() - start
        # Where the two cores went while the clock ran (CPU seconds, user + system).
        spent = cpu_seconds(watched)
        cpu_s = {k: round(spent[k] - before[k], 1) for k in spent}
        for sub in subs:
            await sub.unsubscribe()
        placements = await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)

        # Every record must say running. The ones that did not yet are read again one by
        # one (reading all N records every half second would load the servers and could
        # exhaust their consumers, a watcher each), then all of them once more at the end.
        waiting = {spec(i).id for i in range(WORKLOADS)}

        async def all_running() -> bool:
            for key in sorted(waiting):
                entry = await placements.get(key)
                if entry is not None and entry.value.state == "running":
                    waiting.discard(key)
            return not waiting

        await wait_until(all_running, timeout=120, interval=0.5, what="records say running")
        records = await placements.items()
        assert len(records) == WORKLOADS and all(e.value.state == "running" for e in records)
        # What JetStream stored and delivered: messages and bytes per stream, and per
        # consumer of FED what it delivered and how much of that was delivered again.
        streams = {}
        for name in ("FED", f"KV_{layout.KV_PLACEMENTS}", f"KV_{layout.KV_RESERVATIONS}"):
            state = (await bus.js.stream_info(name)).state
            streams[name] = {"msgs": state.messages, "mib": round(state.bytes / 2**20, 1)}
        consumers = {}
        for info in await bus.js.consumers_info("FED"):
            if info.delivered is not None and info.delivered.consumer_seq:
                consumers[info.name] = {"delivered": info.delivered.consumer_seq,
                                        "redelivered": info.num_redelivered}
        counts = {}
        for member in MEMBERS:  # what each node says it did (its health answer)
            reply = await bus.nc.request(health_subject(member), b"", timeout=5)
            services = json.loads(reply.data)["services"]
            counts[member] = {"scheduler_placed": services["scheduler"]["placed"],
                              **{f"agent_{k}": v for k, v in services["agent"].items()
                                 if k in ("handled", "skipped", "errors", "instances")}}
    finally:
        await bus.close()
    steady = (0.8 * WORKLOADS / (tenths[9] - tenths[1])
              if 1 in tenths and 9 in tenths and tenths[9] > tenths[1] else None)
    return {"workloads": WORKLOADS, "submit_s": round(submitted_s, 2),
            "submitted_to_bound_s": round(elapsed, 2),
            "workloads_per_s": round(WORKLOADS / elapsed, 1),
            "bound_at_s": {f"{10 * k}%": round(t, 2) for k, t in sorted(tenths.items())
                           if k in (1, 5, 9)},
            "workloads_per_s_10_to_90": round(steady, 1) if steady else None,
            "nodes": counts,
            "streams": streams, "fed_consumers": consumers, "cpu_s": cpu_s}


def cpu_seconds(groups: dict[str, list[psutil.Process]]) -> dict[str, float]:
    out = {}
    for name, procs in groups.items():
        total = 0.0
        for proc in procs:
            times = proc.cpu_times()
            total += times.user + times.system
        out[name] = total
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="stekker-bench-") as tmp:
        root = Path(tmp)
        found_local_federation(root / "fed", "stekker-bench", demo_profiles())
        cluster = (NatsCluster(root / "nats", list(MEMBERS)) if DURABLE
                   else NatsCluster.single(root / "nats", sync_always=False))
        cluster.start()
        try:
            with nodes(root / "fed", cluster.urls) as procs:
                watched = {"nodes": [psutil.Process(p.pid) for p in procs],
                           "nats_servers": [psutil.Process(s.pid) for s in cluster.servers.values()
                                            if s.pid is not None],
                           "submitter": [psutil.Process()]}
                before = cpu_seconds(watched)
                result = asyncio.run(run(root / "fed", cluster.urls, watched))
                after = cpu_seconds(watched)
        finally:
            cluster.stop()
            keep = os.environ.get("STEKKER_BENCH_KEEP_LOGS")  # a folder: the nodes' logs
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                for log in (root / "fed").glob("*.log"):
                    shutil.copy(log, Path(keep) / log.name)
    # ... and from the nodes' start to the end of the checks (the profiles' announcements,
    # the live views' start, the final reads of every record).
    result["cpu_s_whole_run"] = {  # type: ignore[assignment]
        k: round(after[k] - before[k], 1) for k in after}
    print(json.dumps({
        "benchmark": "placement_e2e",
        "what": "submitted -> bound on the bus: 3 member node processes (scheduler + "
                "agent, sim driver), " + ("3-server JetStream cluster, R3, sync_interval "
                                          "always" if DURABLE else "1 server, R1, no fsync "
                                          "per write (comparison only)"),
        **result,
        "target_workloads_per_s": 1000,
    }, indent=2))


if __name__ == "__main__":
    main()
