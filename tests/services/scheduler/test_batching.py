"""Many placements in few messages: split by size and count, ids that repeat for the
same items, and `announce_many` (a lone placement as `workload.placed.v1`, the rest in
`workload.placements.v1`, the unplaceable each as `workload.failed.v1`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from contracts.resources import Resources
from contracts.state import PlacementRecord
from contracts.workload import (
    EVERY_AGENT,
    Assignment,
    DecisionRecord,
    PlacedItem,
    PlacementsDispatched,
    WorkloadFailed,
    WorkloadPlaced,
    WorkloadSpec,
)
from mesh.envelope import batch_msg_id
from services.scheduler.batching import (
    ITEM_OVER_RECORD_BYTES,
    MAX_BATCH_BYTES,
    addressed_chunks,
    addressee,
    chunks_by_size,
    placed_chunks,
)
from services.scheduler.pipeline import decide
from services.scheduler.records import first_record, rebuilt, record_digest
from services.scheduler.service import announce_many, placements_msg_id
from services.scheduler.snapshot import snapshot_of
from support import demo_profiles
from support_workloads import demo_spec, demo_specs

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def item(n: int, detail: str = "") -> PlacedItem:
    spec = WorkloadSpec(id=f"wl-{n:04d}", tenant="t", resources=Resources(vcpu=1),
                        description=detail)
    chosen = [Assignment(member="amstel", site="ams1")]
    return PlacedItem(spec=spec, assignments=chosen, decision=DecisionRecord(
        workload=spec.id, decided_by="amstel", decided_at=NOW, chosen=chosen))


def test_chunks_keep_order_and_respect_size_and_count() -> None:
    assert chunks_by_size([]) == []
    assert chunks_by_size([10, 10, 10], limit=1000) == [range(0, 3)]
    # 64 bytes of envelope, then size + 1 per item: 400 + 400 fit 1000, a third does not.
    assert chunks_by_size([400, 400, 400], limit=1000) == [range(0, 2), range(2, 3)]
    assert chunks_by_size([10] * 5, limit=1000, max_items=2) == [
        range(0, 2), range(2, 4), range(4, 5)]
    # An item over the limit travels alone (announced as a single event).
    assert chunks_by_size([10, 5000, 10], limit=1000) == [
        range(0, 1), range(1, 2), range(2, 3)]


def test_placed_chunks_fit_one_message_each() -> None:
    items = [item(n, detail="x" * 4000) for n in range(200)]
    parts = placed_chunks(items)
    assert [i for part in parts for i in part] == items
    assert len(parts) > 1
    for part in parts:
        body = msgspec.json.encode(PlacementsDispatched(placements=part, to=EVERY_AGENT))
        assert len(body) <= MAX_BATCH_BYTES


def test_an_items_size_is_bounded_by_its_records() -> None:
    """`announce_many` measures items by the records just written (plus a margin), never
    encoding them again: the bound must hold for every first placement."""
    profiles = {p.id: p for p in demo_profiles()}
    snap = snapshot_of(profiles, today=NOW.date())
    for spec in [*demo_specs(), item(1).spec]:
        decision = decide(spec, snap, decided_by="amstel", now=NOW)
        if not decision.chosen:
            continue
        record = first_record(spec, decision, generation=1, submitted_by="zuidas",
                              submitted_at=NOW, now=NOW, history=[])
        placed = PlacedItem(spec=spec, assignments=decision.chosen, decision=decision,
                            submitted_by="zuidas", submitted_at=NOW,
                            record_revision=2**53, record_sha256=record_digest(record))
        assert len(msgspec.json.encode(placed)) <= (
            len(msgspec.json.encode(record)) + ITEM_OVER_RECORD_BYTES), spec.id


def test_batch_ids_repeat_for_the_same_items_only() -> None:
    a, b = [item(1), item(2)], [item(1), item(3)]
    assert placements_msg_id(a) == placements_msg_id(list(a))
    assert placements_msg_id(a) != placements_msg_id(b)
    assert placements_msg_id(a).startswith("placements-")
    assert batch_msg_id("x", [("w", 1)]) != batch_msg_id("x", [("w", 2)])


class _Bus:
    """Records what would be published; fails the publishes `fail` says."""

    def __init__(self, fail: type[Any] | None = None) -> None:
        self.sent: list[tuple[Any, str | None]] = []
        self.fail = fail

    async def publish(self, event: Any, *, msg_id: str | None = None) -> int:
        if self.fail is not None and isinstance(event, self.fail):
            raise ConnectionError("gone")
        self.sent.append((event, msg_id))
        return len(self.sent)


class _Placements:
    def __init__(self) -> None:
        self.updates: list[str] = []

    async def update(self, key: str, value: PlacementRecord, revision: int) -> int:
        self.updates.append(key)
        return revision + 1


def record(
    n: int, *, placed: bool = True, on: list[Assignment] | None = None, generation: int = 1,
) -> tuple[str, PlacementRecord, int]:
    i = item(n)
    return i.spec.id, PlacementRecord(
        spec=i.spec, state="placed" if placed else "unplaceable", generation=generation,
        assignments=(on or list(i.assignments)) if placed else [], decision=i.decision), 7


def on(*members: str) -> list[Assignment]:
    return [Assignment(member=m, site=f"{m[0]}1", replica=r) for r, m in enumerate(members)]


def test_an_item_is_addressed_to_its_one_member_or_to_every_agent() -> None:
    first = item(1)
    assert addressee(first) == "amstel"
    assert addressee(msgspec.structs.replace(first, assignments=on("dommel", "dommel"))) == (
        "dommel")
    # Replicas on several members, or a move (the old replica must hear of it): everyone.
    assert addressee(msgspec.structs.replace(first, assignments=on("amstel", "dommel"))) == (
        EVERY_AGENT)
    assert addressee(msgspec.structs.replace(first, generation=2)) == EVERY_AGENT
    moved = msgspec.structs.replace(first.decision, cause="failover")
    assert addressee(msgspec.structs.replace(first, decision=moved)) == EVERY_AGENT


def test_addressed_chunks_group_by_addressee_keeping_order() -> None:
    items = [msgspec.structs.replace(item(n), assignments=on(m))
             for n, m in enumerate(["amstel", "dommel", "amstel", "zuidas", "dommel"])]
    items.append(msgspec.structs.replace(item(9), assignments=on("amstel", "zuidas")))
    out = addressed_chunks(items)
    assert [(to, [i.spec.id for i in part]) for to, part in out] == [
        ("amstel", ["wl-0000", "wl-0002"]), ("dommel", ["wl-0001", "wl-0004"]),
        ("zuidas", ["wl-0003"]), (EVERY_AGENT, ["wl-0009"])]
    big = [item(n, detail="x" * 4000) for n in range(200)]
    assert [len(part) for _, part in addressed_chunks(big)] == [
        len(part) for part in placed_chunks(big)]
    # Sizes the caller knows are taken as they are (here: each item counted as 100 kB).
    assert [len(part) for _, part in addressed_chunks(big[:6], sizes=[100_000] * 6)] == [
        2, 2, 2]


async def test_announce_many_batches_placed_and_fails_the_unplaceable_one_by_one() -> None:
    bus, kv = _Bus(), _Placements()
    committed = [record(1), record(2, placed=False), record(3), record(4)]
    results = await announce_many(bus, kv, committed)  # type: ignore[arg-type]
    assert results == [None] * 4
    kinds = sorted(type(e).__name__ for e, _ in bus.sent)
    assert kinds == ["PlacementsDispatched", "WorkloadFailed"]
    batch = next(e for e, _ in bus.sent if isinstance(e, PlacementsDispatched))
    assert [i.spec.id for i in batch.placements] == ["wl-0001", "wl-0003", "wl-0004"]
    assert batch.to == "amstel"  # all of it is amstel's: no other agent receives it
    failed = next((e, m) for e, m in bus.sent if isinstance(e, WorkloadFailed))
    assert failed[1] == "failed-wl-0002-1"
    # A placed record's note is left to the agents; the unplaceable one is noted here.
    assert kv.updates == ["wl-0002"]


async def test_a_lone_placement_is_a_placed_event_and_failures_are_per_record() -> None:
    bus = _Bus()
    results = await announce_many(bus, _Placements(), [record(1)])  # type: ignore[arg-type]
    assert results == [None]
    assert [(type(e), m) for e, m in bus.sent] == [(WorkloadPlaced, "placed-wl-0001-1")]

    failing = _Bus(fail=PlacementsDispatched)
    results = await announce_many(failing, _Placements(),  # type: ignore[arg-type]
                                  [record(1), record(2, placed=False), record(3)])
    assert isinstance(results[0], ConnectionError) and isinstance(results[2], ConnectionError)
    assert results[1] is None


async def test_each_agent_gets_a_batch_of_its_own_and_moves_go_to_every_agent() -> None:
    bus = _Bus()
    committed = [record(1, on=on("amstel")), record(2, on=on("dommel")),
                 record(3, on=on("amstel")), record(4, on=on("dommel")),
                 record(5, on=on("zuidas"), generation=2),
                 record(6, on=on("amstel"), generation=3)]
    assert await announce_many(bus, _Placements(), committed) == [None] * 6  # type: ignore[arg-type]
    batches = {e.to: [i.spec.id for i in e.placements] for e, _ in bus.sent
               if isinstance(e, PlacementsDispatched)}
    assert batches == {"amstel": ["wl-0001", "wl-0003"], "dommel": ["wl-0002", "wl-0004"],
                       EVERY_AGENT: ["wl-0005", "wl-0006"]}
    subjects = sorted(PlacementsDispatched.subject("zuidas", e.target()) for e, _ in bus.sent)
    assert subjects == ["fed.v1.workload.dispatched.zuidas._all",
                        "fed.v1.workload.dispatched.zuidas.amstel",
                        "fed.v1.workload.dispatched.zuidas.dommel"]


async def test_an_item_lets_an_agent_rebuild_the_record_it_created() -> None:
    """What `place_many` creates, `announce_many` describes, and `rebuilt` gives back
    byte for byte; anything else (another record, a wrong digest, no digest) is None."""
    profiles = {p.id: p for p in demo_profiles()}
    spec = demo_spec("kadaster-kaartviewer")
    decision = decide(spec, snapshot_of(profiles, today=NOW.date()), decided_by="amstel",
                      now=NOW)
    created = first_record(spec, decision, generation=1, submitted_by="zuidas",
                           submitted_at=NOW, now=NOW, history=[])
    bus = _Bus()
    beside = record(2, on=list(created.assignments))  # in the same batch as `created`
    await announce_many(bus, _Placements(), [(spec.id, created, 41),  # type: ignore[arg-type]
                                             beside])
    batch = next(e for e, _ in bus.sent if isinstance(e, PlacementsDispatched))
    item = batch.placements[0]
    assert (item.submitted_by, item.submitted_at, item.record_revision) == ("zuidas", NOW, 41)
    # Across the bus: the item as an agent decodes it.
    item = msgspec.json.decode(msgspec.json.encode(item), type=PlacedItem)
    again = rebuilt(item)
    assert again is not None and again[1] == 41
    assert msgspec.json.encode(again[0]) == msgspec.json.encode(created)
    assert record_digest(again[0]) == item.record_sha256

    # The digest of the bytes as written, when the caller has it, is taken as it is.
    told = _Bus()
    await announce_many(told, _Placements(),  # type: ignore[arg-type]
                        [(spec.id, created, 41), beside], digests={spec.id: "f" * 64})
    told_batch = next(e for e, _ in told.sent if isinstance(e, PlacementsDispatched))
    assert told_batch.placements[0].record_sha256 == "f" * 64
    assert told_batch.placements[1].record_sha256 == record_digest(beside[1])

    assert rebuilt(msgspec.structs.replace(item, record_sha256="0" * 64)) is None
    assert rebuilt(msgspec.structs.replace(item, record_revision=0)) is None
    # A record with history (a workload released and submitted again) is not a first one.
    later = first_record(spec, decision, generation=2, submitted_by="zuidas",
                         submitted_at=NOW, now=NOW, history=["gen 1: released"])
    assert rebuilt(msgspec.structs.replace(item, generation=2,
                                           record_sha256=record_digest(later))) is None
