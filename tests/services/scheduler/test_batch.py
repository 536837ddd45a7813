"""Batched placement on a real nats-server: a burst decided in batches on the live view,
each workload placed once, the ledgers exact, the live view equal to a full read; and the
janitor freeing what a crashed commit left behind."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec

from contracts.resources import Resources
from contracts.state import Hold, PlacementRecord, SiteLedger
from contracts.workload import WorkloadSubmitted
from mesh import layout
from mesh.server import NatsCluster
from mesh.state import bucket
from services.audit.replay import Auditor
from services.scheduler.janitor import sweep
from services.scheduler.ledger import ledger_key, total
from services.scheduler.reader import read_state
from support import federation, wait_until
from support_workloads import demo_spec, members_known, placements, schedulers

BURST = 60
SERVICES = ["iam", "registry", "scheduler"]


def burst_spec(n: int, tenant: str):  # type: ignore[no-untyped-def]
    base = demo_spec("rivm-luchtkwaliteit-dashboard")
    return msgspec.structs.replace(base, id=f"burst-{n:03d}", tenant=tenant, replicas=1,
                                   resources=Resources(vcpu=0.5, memory_gib=1,
                                                       storage_gib=1))


async def test_a_burst_is_placed_once_each_and_the_live_view_matches_a_full_read(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=SERVICES) as fed:
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="member profiles")
        specs = [burst_spec(n, tenant=f"t{n % 3}") for n in range(BURST)]
        for spec in specs:
            await bus.publish(WorkloadSubmitted(spec=spec))
        kv = await placements(bus)

        async def all_placed() -> dict[str, PlacementRecord] | None:
            records = {e.key: e.value for e in await kv.items()}
            ok = len(records) == BURST and all(r.state == "placed" for r in records.values())
            return records if ok else None

        records = await wait_until(all_placed, timeout=60, what="every workload placed")
        # Each decided and committed once: one generation, one line of history.
        assert all(r.generation == 1 and len(r.assignments) == 1 and len(r.history) == 1
                   for r in records.values())

        state = await read_state(bus)
        for entry in state.ledgers.values():
            ledger = entry.value
            assert ledger.reserved == total(ledger.holds.values())
            booked_here = {k for k, r in records.items()
                           if any((a.member, a.site) == (ledger.member, ledger.site)
                                  for a in r.assignments)}
            assert set(ledger.holds) == booked_here
            assert all(ledger.holds[k].tenant == records[k].spec.tenant for k in booked_here)

        # Every scheduler's live view catches up with what a full read says.
        today = dt.datetime.now(dt.UTC).date()
        full = state.snapshot(today)

        def same_view() -> bool:
            for scheduler in schedulers(fed):
                live = scheduler.live.snapshot(today)
                if {m: dict(v.free) for m, v in live.members.items()} != {
                        m: dict(v.free) for m, v in full.members.items()}:
                    return False
                if dict(live.placed) != dict(full.placed):
                    return False
            return True

        await wait_until(same_view, timeout=30, what="live views equal to a full read")

        # Announced in batches (`workload.placements.v1`, or a lone `workload.placed.v1`):
        # replaying FED, every signature holds and each decision is recomputed once.
        auditor = Auditor()
        async for message in bus.read_stream():
            auditor.feed(message)
        report = auditor.finish()
        assert report.signature_failures == [] and report.mismatches == []
        assert report.decisions == BURST


async def test_the_janitor_frees_only_holds_no_placement_accounts_for(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=SERVICES) as fed:
        bus = await fed.bus("amstel")
        await wait_until(lambda: members_known(bus), what="member profiles")
        spec = burst_spec(1, tenant="t")
        await bus.publish(WorkloadSubmitted(spec=spec))
        kv = await placements(bus)
        placed = await wait_until(lambda: kv.get(spec.id), what="placed")
        (site,) = placed.value.assignments
        key = ledger_key(site.member, site.site)
        ledgers = await bucket(bus, layout.KV_RESERVATIONS, SiteLedger)
        # What a scheduler killed between booking and writing leaves: a hold, no record.
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
        ghost = Hold(amount=Resources(vcpu=7), generation=1, attempt="crashed",
                     since=long_ago, tenant="t")

        def add_ghost(current: SiteLedger | None) -> SiteLedger | None:
            assert current is not None
            holds = {**current.holds, "ghost-1": ghost}
            # The real hold is old too: age alone must not make it an orphan.
            holds[spec.id] = msgspec.structs.replace(holds[spec.id], since=long_ago)
            return SiteLedger(member=current.member, site=current.site,
                              reserved=total(holds.values()), holds=holds)

        await ledgers.modify(key, add_ghost)
        assert await sweep(bus) == 1
        after = await ledgers.get(key)
        assert after is not None and set(after.value.holds) == {spec.id}
        assert after.value.reserved == spec.resources
        assert await sweep(bus) == 0  # idempotent
