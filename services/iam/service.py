"""The iam service: puts the genesis roster in force and keeps the trust store current."""

from __future__ import annotations

import asyncio
from typing import Any

from contracts.iam import Roster, RosterPublished
from mesh import layout
from mesh.errors import CasConflict, ConfigError, Rejected
from mesh.observability import logger
from mesh.runtime import NodeContext
from mesh.state import Bucket, Entry, bucket
from mesh.trust import verify_genesis
from services.iam.genesis import GENESIS_FILE, read_genesis

log = logger("services.iam")
CURRENT = "current"


async def load_roster(bus: Any) -> Roster | None:
    """The roster in force, verified; None when the federation has none yet."""
    roster_kv: Bucket[Roster] = await bucket(bus, layout.KV_ROSTER, Roster)
    entry = await roster_kv.get(CURRENT)
    if entry is None:
        return None
    if entry.value.body.version == 1:
        verify_genesis(entry.value)
    return entry.value


class IamService:
    name = "iam"

    def __init__(self) -> None:
        self._watch: asyncio.Task[None] | None = None
        self._ctx: NodeContext | None = None

    async def start(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        roster_kv: Bucket[Roster] = await bucket(ctx.bus, layout.KV_ROSTER, Roster)
        roster = await load_roster(ctx.bus)
        if roster is None:
            roster = await self._install_genesis(ctx, roster_kv)
        ctx.trust.install(roster)
        if ctx.trust.key(ctx.member, ctx.identity.key_id) is None:
            raise ConfigError(
                f"member {ctx.member} with key {ctx.identity.key_id} is not an active member "
                f"of the roster in force (version {roster.body.version})"
            )
        self._watch = await roster_kv.watch(self._on_roster)

    async def _install_genesis(self, ctx: NodeContext, roster_kv: Bucket[Roster]) -> Roster:
        genesis = read_genesis(ctx.data_dir / GENESIS_FILE)
        try:
            await roster_kv.create(CURRENT, genesis)
            await roster_kv.create("v1", genesis)
        except CasConflict:
            # Another founder's node was first; theirs is in force (and must verify).
            current = await load_roster(ctx.bus)
            assert current is not None
            return current
        ctx.trust.install(genesis)
        # Same msg id from every founder: JetStream keeps one genesis event.
        await ctx.bus.publish(RosterPublished(roster=genesis), msg_id="roster-v1")
        log.info("genesis roster in force", members=[m.id for m in genesis.body.members])
        return genesis

    async def _on_roster(self, entry: Entry[Roster] | None, key: str) -> None:
        if entry is None or key != CURRENT or self._ctx is None:
            return
        roster = entry.value
        if roster.body.version <= self._ctx.trust.version:
            return
        try:
            # Versions after genesis are checked against their predecessor (issue 5).
            if roster.body.version == 1:
                verify_genesis(roster)
        except Rejected as exc:
            log.error("refusing roster", version=roster.body.version, error=str(exc))
            return
        self._ctx.trust.install(roster)

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()

    def health(self) -> dict[str, Any]:
        version = self._ctx.trust.version if self._ctx else 0
        return {"state": "running" if version else "starting", "roster_version": version}
