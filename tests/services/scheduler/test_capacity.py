"""Capacity accounting on a real nats-server: tiny sites, two schedulers racing on the
same burst of submissions, the reservation ledger exact; failover moves bookings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from contracts.failover import Evidence, MemberDown
from contracts.registry import MemberProfile
from contracts.resources import ZERO, Resources
from contracts.state import PlacementRecord, SiteLedger
from contracts.workload import WorkloadSubmitted
from mesh import layout
from mesh.runtime import NodeSettings
from mesh.server import NatsCluster
from mesh.state import Entry, bucket
from services.iam.genesis import found_local_federation
from services.scheduler.service import SchedulerService
from support import MEMBERS, Federation, demo_profiles, wait_until
from support_workloads import demo_spec, members_known, placements

# Each site may book 4 vcpu (2 physical x 2.0 overcommit) and 8 GiB: two workloads.
SITE = Resources(vcpu=2, memory_gib=8, storage_gib=100)
OVERCOMMIT = {"vcpu": 2.0}
ASK = Resources(vcpu=2, memory_gib=4, storage_gib=10)
PER_SITE = 2
SERVICES = ["iam", "registry", "scheduler"]


def tiny(profile: MemberProfile) -> MemberProfile:
    sites = [msgspec.structs.replace(s, capacity=SITE, overcommit=OVERCOMMIT)
             for s in profile.sites]
    return msgspec.structs.replace(profile, sites=sites)


@contextlib.asynccontextmanager
async def tiny_federation(urls: list[str], data_dir: Path) -> AsyncIterator[Federation]:
    profiles = {p.id: tiny(p) for p in demo_profiles()}
    found_local_federation(data_dir, "stekker-test", list(profiles.values()))
    fed = Federation(urls=urls, data_dir=data_dir, profiles=profiles, settings=NodeSettings())
    try:
        for member in MEMBERS:
            await fed.start_node(member, SERVICES)
        yield fed
    finally:
        await fed.close()


def small(n: int):
    base = demo_spec("rivm-luchtkwaliteit-dashboard")
    return msgspec.structs.replace(base, id=f"small-{n:02d}", replicas=1, resources=ASK)


def limits(fed: Federation) -> dict[tuple[str, str], Resources]:
    return {(m, s.id): s.schedulable() for m, p in fed.profiles.items() for s in p.sites}


def total(amounts) -> Resources:
    out = ZERO
    for amount in amounts:
        out = out + amount
    return out


async def ledgers_of(bus) -> dict[tuple[str, str], SiteLedger]:
    led = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)
    return {(e.value.member, e.value.site): e.value for e in await led.items()}


def booked_by_placements(records: dict[str, PlacementRecord]) -> dict[tuple[str, str], dict]:
    """(member, site) → {workload: resources} as the active placement records say."""
    out: dict[tuple[str, str], dict] = {}
    for key, record in records.items():
        if record.state in ("unplaceable", "released"):
            continue
        for a in record.assignments:
            out.setdefault((a.member, a.site), {})[key] = record.spec.resources
    return out


def assert_exact(ledgers: dict[tuple[str, str], SiteLedger],
                 records: dict[str, PlacementRecord]) -> None:
    expected = booked_by_placements(records)
    for where in set(ledgers) | set(expected):
        ledger = ledgers.get(where)
        holds = {k: h.amount for k, h in ledger.holds.items()} if ledger else {}
        assert holds == expected.get(where, {}), where
        reserved = ledger.reserved if ledger else ZERO
        assert reserved == total(expected.get(where, {}).values()), where


async def test_racing_schedulers_never_overcommit_a_site(
    nats_server: NatsCluster, tmp_path: Path
):
    async with tiny_federation(nats_server.urls, tmp_path / "fed") as fed:
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="member profiles")
        caps = limits(fed)
        room = PER_SITE * len(caps)  # 7 sites x 2 = 14
        assert all(ASK.fits_in(c) and not (ASK + ASK + ASK).fits_in(c) for c in caps.values())
        # Every reservation written, as the watcher sees it: none may ever be over.
        seen: list[SiteLedger] = []

        async def note(entry: Entry[SiteLedger] | None, key: str) -> None:
            if entry is not None:
                seen.append(entry.value)

        led = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)
        watch = await led.watch(note)
        # A second scheduler with its OWN durable gets every submission too: a race.
        rival = SchedulerService(durable="scheduler-rival",
                                 failover_durable="scheduler-rival-failover")
        await rival.start(fed.nodes["dommel"].ctx)
        try:
            specs = [small(n) for n in range(room + 6)]
            for spec in specs:
                await bus.publish(WorkloadSubmitted(spec=spec))
            kv = await placements(bus)

            async def settled() -> dict[str, PlacementRecord] | None:
                records = {e.key: e.value for e in await kv.items()}
                done = len(records) == len(specs) and all(
                    r.state in ("placed", "unplaceable") for r in records.values())
                return records if done else None

            records = await wait_until(settled, timeout=30, what="every submission decided")
        finally:
            await rival.stop()
            watch.cancel()

        placed = {k: r for k, r in records.items() if r.state == "placed"}
        assert len(placed) == room  # every site full, none over
        assert all(r.generation == 1 and len(r.history) == 1 for r in records.values())
        for key, record in records.items():
            if key not in placed:
                assert record.state == "unplaceable" and record.assignments == []
        ledgers = await ledgers_of(bus)
        assert_exact(ledgers, records)
        for where, ledger in ledgers.items():
            assert ledger.reserved.fits_in(caps[where])
            assert len(ledger.holds) == PER_SITE
        assert seen, "the watcher saw the bookings"
        for ledger in seen:
            assert ledger.reserved.fits_in(caps[(ledger.member, ledger.site)])


async def test_failover_moves_the_booking_only_once_replaced(
    nats_server: NatsCluster, tmp_path: Path
):
    async with tiny_federation(nats_server.urls, tmp_path / "fed") as fed:
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="member profiles")
        caps = limits(fed)
        # Fill all but a little: dommel's 3 sites hold what the others cannot all take.
        specs = [small(n) for n in range(PER_SITE * len(caps) - 2)]
        for spec in specs:
            await bus.publish(WorkloadSubmitted(spec=spec))
        kv = await placements(bus)

        async def at(wanted: int, keys: set[str] | None = None):
            records = {e.key: e.value for e in await kv.items()}
            keys = keys if keys is not None else {s.id for s in specs}
            done = len(records) >= len(specs) and all(
                records[k].generation >= wanted and records[k].state != "pending"
                for k in keys)
            return records if done else None

        before = await wait_until(lambda: at(1), timeout=30, what="placed")
        assert all(r.state == "placed" for r in before.values())
        assert_exact(await ledgers_of(bus), before)
        hit = {k for k, r in before.items() if any(a.member == "dommel" for a in r.assignments)}
        # Two free places in all; those outside dommel are where its workloads can go
        # (which sites stay free depends on how schedulers split the burst).
        taken = booked_by_placements(before)
        room_elsewhere = sum(PER_SITE - len(taken.get(w, {})) for w in caps if w[0] != "dommel")
        assert len(hit) > room_elsewhere >= 0

        await bus.publish(MemberDown(member="dommel", epoch=1, quorum=2, evidence=[
            Evidence(observer="amstel", msg_id="s2", silence_s=5.0),
            Evidence(observer="zuidas", msg_id="s3", silence_s=5.0),
        ]))
        after = await wait_until(lambda: at(2, hit), timeout=30, what="failover decided")
        moved = {k for k in hit if after[k].assignments}
        stuck = hit - moved
        assert len(moved) == room_elsewhere
        assert all(after[k].state == "unplaceable" for k in stuck)
        ledgers = await ledgers_of(bus)
        for key in moved:
            (a,) = after[key].assignments
            assert a.member != "dommel"
            assert key in ledgers[(a.member, a.site)].holds  # the new site is booked
            assert all(key not in led.holds for (m, _), led in ledgers.items() if m == "dommel")
        for key in stuck:  # not re-placed: its booking on the down member stays
            (old,) = before[key].assignments
            assert key in ledgers[(old.member, old.site)].holds
        for where, ledger in ledgers.items():
            assert ledger.reserved.fits_in(caps[where])
            assert ledger.reserved == total(h.amount for h in ledger.holds.values())
        # Every site but dommel's holds exactly what the placements book there.
        others = {w: led for w, led in ledgers.items() if w[0] != "dommel"}
        expected = {w: b for w, b in booked_by_placements(after).items() if w[0] != "dommel"}
        assert {w: {k: h.amount for k, h in led.holds.items()} for w, led in others.items()
                if led.holds} == expected
