"""Backups of stateful workloads' data to the `fed_data` object store.

A takeover from a member that is gone cannot export from it: it restores the newest
backup instead, and the backup's age is the achieved RPO. So each agent backs up every
stateful workload it runs at an interval derived from the workload's `rpo_seconds`
(half of it: a backup taken just before a failure is at most one interval old, and the
data lost at most that), keeping the newest `KEEP` per workload.

The index is the blobs themselves: `backup/<workload>/<time>` with headers naming the
workload, the member, the placement generation, the time and the sha256. Times in the
name are fixed-width UTC, so names sort oldest to newest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from contracts.workload import WorkloadSpec
from mesh.objects import (
    BlobInfo,
    BlobMissing,
    DigestMismatchError,
    delete_blob,
    get_blob,
    list_blobs,
    put_blob,
    sha256_hex,
)
from services.agent.drivers.base import Driver

KEEP = 3
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 900.0

H_WORKLOAD = "Stekker-Workload"
H_MEMBER = "Stekker-Member"
H_GENERATION = "Stekker-Generation"
H_TIME = "Stekker-Time"
H_SHA256 = "Stekker-Sha256"


def interval_s(rpo_seconds: float) -> float:
    """Half the RPO, within [1 s, 15 min]: a tighter RPO costs more uploads."""
    return min(max(rpo_seconds / 2, MIN_INTERVAL_S), MAX_INTERVAL_S)


def prefix(workload: str) -> str:
    return f"backup/{workload}/"


def name_of(workload: str, at: dt.datetime) -> str:
    return prefix(workload) + at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")


@dataclass(frozen=True)
class Backup:
    name: str
    workload: str
    member: str
    generation: int
    at: dt.datetime
    sha256: str
    size: int

    def age_s(self, now: dt.datetime) -> float:
        return max(0.0, (now - self.at).total_seconds())


def parse(info: BlobInfo) -> Backup | None:
    """A blob's backup index entry; None for a blob without a complete one."""
    h = info.headers
    try:
        return Backup(name=info.name, workload=h[H_WORKLOAD], member=h[H_MEMBER],
                      generation=int(h[H_GENERATION]),
                      at=dt.datetime.fromisoformat(h[H_TIME]), sha256=h[H_SHA256],
                      size=info.size)
    except (KeyError, ValueError):
        return None


def newest_first(infos: list[BlobInfo]) -> list[Backup]:
    backups = [b for b in map(parse, infos) if b is not None]
    return sorted(backups, key=lambda b: (b.at, b.name), reverse=True)


def beyond_keep(backups: list[Backup], keep: int = KEEP) -> list[Backup]:
    """The backups to delete: all but the newest `keep` (given newest first)."""
    return backups[keep:]


async def backups_of(bus: Any, workload: str, *, followers: bool = False) -> list[Backup]:
    """`workload`'s backups in the store, newest first (`followers`: mesh.objects)."""
    return newest_first(await list_blobs(bus, prefix(workload), followers=followers))


async def back_up(
    bus: Any, driver: Driver, spec: WorkloadSpec, *, member: str, generation: int,
    now: dt.datetime, keep: int = KEEP,
) -> Backup:
    """Export `spec`'s data from `driver`, store it as a backup, prune older ones."""
    data = await driver.export(spec.id, spec)
    headers = {H_WORKLOAD: spec.id, H_MEMBER: member, H_GENERATION: str(generation),
               H_TIME: now.astimezone(dt.UTC).isoformat(), H_SHA256: sha256_hex(data)}
    info = await put_blob(bus, name_of(spec.id, now), data, headers)
    made = parse(info)
    assert made is not None
    for old in beyond_keep(await backups_of(bus, spec.id), keep):
        await delete_blob(bus, old.name)
    return made


@dataclass(frozen=True)
class Restored:
    """What a restore found: the backup imported (None: none usable) and why the newer
    ones were passed over (a digest that does not match, an object gone)."""

    backup: Backup | None
    skipped: list[str]

    def detail(self, now: dt.datetime, rpo_target_s: int) -> str:
        if self.backup is None:
            why = f" ({'; '.join(self.skipped)})" if self.skipped else ""
            return f"no backup to restore{why}: started without data"
        age = self.backup.age_s(now)
        return (f"restored backup of {self.backup.member} (generation "
                f"{self.backup.generation}), {age:.1f} s old: achieved RPO {age:.1f} s "
                f"against {rpo_target_s} s")


async def restore_newest(bus: Any, driver: Driver, spec: WorkloadSpec) -> Restored:
    """Import the newest backup of `spec` whose bytes match their recorded sha256.

    Read from any replica of the store (backups are old by nature, so a follower a
    moment behind is fine, and a failover's restore need not wait for the leaders the
    dead member's server held). A backup gone or damaged is passed over for the next;
    anything else (the store not answering yet) is raised: the caller tries again
    rather than start the workload without data that exists."""
    skipped: list[str] = []
    for candidate in await backups_of(bus, spec.id, followers=True):
        try:
            data, _ = await get_blob(bus, candidate.name, followers=True)
        except (BlobMissing, DigestMismatchError) as exc:  # pruned meanwhile, or damaged
            skipped.append(f"{candidate.name}: {exc or type(exc).__name__}")
            continue
        if sha256_hex(data) != candidate.sha256:
            skipped.append(f"{candidate.name}: sha256 does not match")
            continue
        await driver.import_(spec.id, spec, data)
        return Restored(candidate, skipped)
    return Restored(None, skipped)
