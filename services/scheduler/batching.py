"""Many commits announced in few signed messages. Pure: no I/O.

A batch of placements committed together (`SchedulerService.place_many`) is announced as
`workload.placements.v1` messages rather than one `workload.placed.v1` each: one
signature, one replicated write to FED and one delivery (and ack) per agent for many
workloads. A message stays under `MAX_BATCH_BYTES` (a decision record at 1,000 members
is 70 kB or more, and a NATS message is at most 1 MB), so a batch may take several.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from contracts.workload import PlacedItem

# Well under NATS's default max_payload (1 MB) and the envelope's MAX_BODY_BYTES.
MAX_BATCH_BYTES = 256 * 1024
# Beyond this many items per message, a bad item costs a whole message's redelivery.
MAX_BATCH_ITEMS = 256
_ENVELOPE_BYTES = 64  # `{"placements":[...]}` and the commas between items


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
    max_items: int = MAX_BATCH_ITEMS,
) -> list[list[PlacedItem]]:
    """`items` split into messages of at most `limit` bytes and `max_items` items."""
    encoder = msgspec.json.Encoder()
    sizes = [len(encoder.encode(item)) for item in items]
    return [[items[i] for i in part]
            for part in chunks_by_size(sizes, limit=limit, max_items=max_items)]
