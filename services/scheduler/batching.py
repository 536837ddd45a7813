"""Many commits announced in few signed messages. Pure: no I/O.

A batch of placements committed together (`SchedulerService.place_many`) is announced as
`workload.dispatched.v1` messages rather than one `workload.placed.v1` each: one
signature, one replicated write to FED and one delivery (and ack) per agent for many
workloads. A message stays under `MAX_BATCH_BYTES` (a decision record at 1,000 members
is 70 kB or more, and a NATS message is at most 1 MB), so a batch may take several.

Each message is addressed (`addressee`): the items that concern one member's agent alone
go to that agent only, so the others neither receive nor decode them (with every item in
every message, each agent decoded the whole federation's placements, a tenth of a busy
node's CPU); the rest go to every agent.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from contracts.workload import EVERY_AGENT, PlacedItem

# Well under NATS's default max_payload (1 MB) and the envelope's MAX_BODY_BYTES.
MAX_BATCH_BYTES = 256 * 1024
# Beyond this many items per message, a bad item costs a whole message's redelivery.
MAX_BATCH_ITEMS = 256
_ENVELOPE_BYTES = 64  # `{"placements":[...],"to":"…"}` and the commas between items
# A first placement's record (`records.first_record`) has all an item has, and more
# (state, replicas, history) save the item's revision and digest, which this covers:
# the record's length plus this bounds the item's.
ITEM_OVER_RECORD_BYTES = 128


def chunks_by_size(
    sizes: Sequence[int], *, limit: int = MAX_BATCH_BYTES, max_items: int = MAX_BATCH_ITEMS,
) -> list[range]:
    """Consecutive index ranges whose items (of the given encoded sizes) fit one message
    each; an item larger than `limit` alone gets a range of its own (the caller sends it
    on its own, as a single event)."""
    out: list[range] = []
    start, used = 0, _ENVELOPE_BYTES
    for i, size in enumerate(sizes):
        full = i > start and (used + size + 1 > limit or i - start >= max_items)
        if full:
            out.append(range(start, i))
            start, used = i, _ENVELOPE_BYTES
        used += size + 1
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def placed_chunks(
    items: Sequence[PlacedItem], *, limit: int = MAX_BATCH_BYTES,
    max_items: int = MAX_BATCH_ITEMS, sizes: Sequence[int] | None = None,
) -> list[list[PlacedItem]]:
    """`items` split into messages of at most `limit` bytes and `max_items` items.
    `sizes`: each item's encoded size or more, when the caller knows it (else encoded
    here to be measured)."""
    if sizes is None:
        encoder = msgspec.json.Encoder()
        sizes = [len(encoder.encode(item)) for item in items]
    return [[items[i] for i in part]
            for part in chunks_by_size(sizes, limit=limit, max_items=max_items)]


def addressee(item: PlacedItem) -> str:
    """Who must read `item`: the one member holding every replica of a first placement,
    else every agent (replicas on several members; or a move, whose earlier generation
    may run on a member the new assignments do not name, and must stop there)."""
    members = {a.member for a in item.assignments}
    if item.generation == 1 and item.decision.cause == "submitted" and len(members) == 1:
        return next(iter(members))
    return EVERY_AGENT


def addressed_chunks(
    items: Sequence[PlacedItem], *, limit: int = MAX_BATCH_BYTES,
    max_items: int = MAX_BATCH_ITEMS, sizes: Sequence[int | None] | None = None,
) -> list[tuple[str, list[PlacedItem]]]:
    """`items` grouped by `addressee` (in order of first appearance, each group in the
    order given), then split as `placed_chunks`: (addressee, items) per message.
    `sizes`: per item its encoded size or more where known, None where not."""
    encoder = msgspec.json.Encoder()
    groups: dict[str, tuple[list[PlacedItem], list[int]]] = {}
    for n, item in enumerate(items):
        size = sizes[n] if sizes is not None else None
        group = groups.setdefault(addressee(item), ([], []))
        group[0].append(item)
        group[1].append(size if size is not None else len(encoder.encode(item)))
    return [(to, part) for to, (group, known) in groups.items()
            for part in placed_chunks(group, limit=limit, max_items=max_items, sizes=known)]
