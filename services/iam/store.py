"""Where the roster chain lives: KV `fed_roster`, key `v<N>` per version, `current` a pointer.

The chain of `v1, v2, ...` is the truth; `current` only saves readers a walk and may lag
by one version when the writer of `v<N+1>` died before moving it.
"""

from __future__ import annotations

from typing import Any

from contracts.iam import Roster
from mesh import layout
from mesh.state import Bucket, bucket
from services.iam.chain import longest_valid_prefix

CURRENT = "current"


def version_key(version: int) -> str:
    return f"v{version}"


async def roster_bucket(bus: Any) -> Bucket[Roster]:
    return await bucket(bus, layout.KV_ROSTER, Roster)


async def read_chain(bus: Any) -> list[Roster]:
    """Versions 1, 2, ... as stored, up to the first missing number."""
    kv = await roster_bucket(bus)
    chain: list[Roster] = []
    while True:
        entry = await kv.get(version_key(len(chain) + 1))
        if entry is None:
            return chain
        chain.append(entry.value)


async def load_verified_chain(bus: Any) -> list[Roster]:
    """The stored versions that hold; raises `Rejected` when even the genesis does not."""
    chain = await read_chain(bus)
    good, broken = longest_valid_prefix(chain)
    if broken is not None and not good:
        raise broken
    return good


async def load_roster(bus: Any) -> Roster | None:
    """The newest roster whose whole chain holds; None when the federation has none yet."""
    good = await load_verified_chain(bus)
    return good[-1] if good else None

