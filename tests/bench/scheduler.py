"""Benchmark: the pure placement pipeline (no bus). Prints one JSON document.

10,000 workloads with a mix of requirements are decided one after another against a
federation of N members x 5 sites, for N = 50, 200, 1,000; each decision's capacity is
booked before the next (as the shell's commit would), and one `FeasibilityCache` is
kept across decisions, as the scheduler service may. Medians of a few rounds, since
these machines are shared and noisy. Then the memory run: at 1,000 members, 52,000
workloads (over 100,000 placements) decided and held, spec and record, as a scheduler
process holds its placements; `peak_rss_mib` is this process's peak RSS after it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from contracts.registry import SOV_OBJECTIVES, Certification, MemberProfile, Site, Stack
from contracts.resources import Resources
from contracts.workload import Requirements, Spread, WorkloadSpec
from services.scheduler.feasibility import FeasibilityCache
from services.scheduler.pipeline import decide
from services.scheduler.snapshot import MemberView, Snapshot, booked

TODAY = dt.date(2026, 6, 1)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
WORKLOADS = int(os.environ.get("BENCH_WORKLOADS", "10000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# The memory run: workloads decided and held (spec and record) at 1,000 members.
HELD = int(os.environ.get("BENCH_HELD_WORKLOADS", "52000"))
COUNTRIES = ["NL", "NL", "NL", "DE", "BE", "FR", "NO"]
HYPERVISORS = ["KVM", "Xen", "bhyve", "Hyper-V", "ESXi"]


def federation(n: int, rng: random.Random) -> Snapshot:
    members = {}
    for i in range(n):
        floor = rng.choice([1, 2, 2, 3, 3, 4])
        profile = MemberProfile(
            id=f"m{i:04d}", name=f"m{i}", legal_seat="NL",
            sov={o: rng.randint(floor, 4) for o in SOV_OBJECTIVES},
            non_eu_law_exposure=["US CLOUD Act"] if rng.random() < 0.15 else [],
            eu_resident_staff=rng.random() < 0.9,
            certifications=[Certification(name=c, expires=dt.date(2028, 1, 1))
                            for c in ["BIO2", "ISO27001", "ISO27017"] if rng.random() < 0.7],
            cleared_classifications=["openbaar", "bbn1", "bbn2", "bbn3"][: rng.randint(1, 4)],
            stack=Stack(hypervisor=rng.choice(HYPERVISORS), storage=rng.choice(["Ceph", "ZFS"])),
            sites=[Site(id=f"s{j}", country=rng.choice(COUNTRIES), region=f"r{rng.randint(0, 11)}",
                        grid_region=f"g{rng.randint(0, 5)}",
                        capacity=Resources(vcpu=4096, memory_gib=16384, storage_gib=500_000),
                        overcommit={"vcpu": 2.0})
                   for j in range(5)],
        )
        members[profile.id] = MemberView(profile=profile, status="active")
    return Snapshot(members=members, today=TODAY)


def workloads(rng: random.Random, count: int = WORKLOADS) -> list[WorkloadSpec]:
    specs = []
    for i in range(count):
        kind = rng.random()
        reqs = Requirements()
        if kind < 0.40:  # open data anywhere in the EU
            reqs = Requirements(jurisdictions=["EU"])
        elif kind < 0.70:  # bbn1/bbn2 in NL with certificates
            reqs = Requirements(min_seal=2, classification=rng.choice(["bbn1", "bbn2"]),
                                jurisdictions=["NL"], certifications=["BIO2"],
                                strategy=rng.choice(["balance", "binpack"]))
        elif kind < 0.85:  # sovereign: no non-EU law, EU staff, SOV-2 high, residency
            reqs = Requirements(min_sov={"SOV-2": 3}, no_non_eu_law=True,
                                eu_resident_staff=True, residency=["NL", "DE"],
                                jurisdictions=["EEA"])
        elif kind < 0.95:  # spread across regions
            reqs = Requirements(spread=Spread(across="regions", min_domains=2, max_skew=1))
        else:  # diversity of hypervisors
            reqs = Requirements(diversity=["hypervisor"], classification="bbn1")
        specs.append(WorkloadSpec(
            id=f"w{i:05d}", tenant=f"t{i % 40}", replicas=rng.choice([1, 2, 2, 3]),
            resources=Resources(vcpu=rng.choice([1, 2, 4]), memory_gib=rng.choice([2, 4, 8]),
                                storage_gib=rng.choice([10, 50])),
            requirements=reqs,
        ))
    return specs


def run(n: int) -> dict[str, float]:
    rates, infeasible = [], 0
    for round_ in range(ROUNDS):
        rng = random.Random(round_)
        snap, specs, cache = federation(n, rng), workloads(rng), FeasibilityCache()
        start = time.perf_counter()
        infeasible = 0
        for spec in specs:
            record = decide(spec, snap, decided_by="bench", now=NOW, cache=cache)
            infeasible += not record.feasible
            snap = booked(snap, spec.resources, record.chosen)
        rates.append(len(specs) / (time.perf_counter() - start))
    return {"decisions_per_s": round(statistics.median(rates), 1),
            "infeasible": infeasible}


def held(n: int, count: int) -> dict[str, float]:
    """Decide `count` workloads at `n` members and keep every spec and record, as a
    scheduler process holds its placements; report the placements and peak RSS."""
    rng = random.Random(99)
    snap, specs, cache = federation(n, rng), workloads(rng, count), FeasibilityCache()
    kept = []
    start = time.perf_counter()
    for spec in specs:
        record = decide(spec, snap, decided_by="bench", now=NOW, cache=cache)
        kept.append((spec, record))
        snap = booked(snap, spec.resources, record.chosen)
    elapsed = time.perf_counter() - start
    return {"members": n, "workloads": count,
            "placements": sum(len(r.chosen) for _, r in kept),
            "decisions_per_s": round(count / elapsed, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [50, 200, 1000]
    results = {str(n): run(n) for n in sizes}
    rate = {n: results[str(n)]["decisions_per_s"] for n in sizes}
    doc = {
        "benchmark": "scheduler.pure_pipeline",
        "workloads": WORKLOADS, "sites_per_member": 5, "rounds": ROUNDS,
        "members": results,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if 50 in rate and 200 in rate:
        doc["time_growth_200_over_50"] = round(rate[50] / rate[200], 2)  # 4.0 = linear
    if 200 in rate and 1000 in rate:
        doc["time_growth_1000_over_200"] = round(rate[200] / rate[1000], 2)  # 5.0 = linear
    if HELD:
        doc["held"] = held(1000, HELD)
        doc["peak_rss_mib"] = doc["held"]["peak_rss_mib"]
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
