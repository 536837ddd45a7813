"""The iam service: puts the genesis roster in force and keeps the trust store current.

Every roster version is checked against the whole chain (`services.iam.chain`) before it
is put in force; a version that does not follow from its predecessor is refused and the
last version that holds stays in force.
"""

from __future__ import annotations

import asyncio
from typing import Any

from contracts.base import Event
from contracts.iam import Roster, RosterChangeEndorsed, RosterPublished
from mesh.envelope import Envelope
from mesh.errors import CasConflict, ConfigError, Rejected, RetryableError
from mesh.observability import logger
from mesh.runtime import NodeContext
from mesh.state import Bucket, Entry
from services.iam.changes import Tally
from services.iam.genesis import GENESIS_FILE, read_genesis
from services.iam.store import (
    CURRENT,
    load_roster,
    load_verified_chain,
    read_chain,
    roster_bucket,
    version_key,
)

log = logger("services.iam")

__all__ = ["CURRENT", "IamService", "load_roster"]


class IamService:
    name = "iam"

    def __init__(self) -> None:
        self._watch: asyncio.Task[None] | None = None
        self._ctx: NodeContext | None = None
        self.refused: list[str] = []
        self.tally = Tally()

    async def start(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        roster_kv = await roster_bucket(ctx.bus)
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
        # Every member tallies every endorsement (per-member durable): whoever sees the
        # threshold first writes the next version, create-only, so it happens once.
        await ctx.bus.consume(self._on_endorsed, subjects=[RosterChangeEndorsed.subject_pattern()],
                              durable=f"iam-{ctx.member}")

    async def _install_genesis(self, ctx: NodeContext, roster_kv: Bucket[Roster]) -> Roster:
        genesis = read_genesis(ctx.data_dir / GENESIS_FILE)
        try:
            # v1 first: the chain is the truth, `current` only points into it.
            await roster_kv.create(version_key(1), genesis)
        except CasConflict:
            # Another founder's node was first; theirs is in force (and must verify).
            current = await load_roster(ctx.bus)
            assert current is not None
            return current
        try:
            await roster_kv.create(CURRENT, genesis)
        except CasConflict:
            pass
        ctx.trust.install(genesis)
        # Same msg id from every founder: JetStream keeps one genesis event.
        await ctx.bus.publish(RosterPublished(roster=genesis), msg_id="roster-v1")
        log.info("genesis roster in force", members=[m.id for m in genesis.body.members])
        return genesis

    async def _on_roster(self, entry: Entry[Roster] | None, key: str) -> None:
        if entry is None or self._ctx is None:
            return
        if entry.value.body.version <= self._ctx.trust.version:
            return
        await self.refresh()

    async def refresh(self) -> int:
        """Re-read and re-verify the chain; put its newest valid version in force."""
        assert self._ctx is not None
        try:
            good = await load_verified_chain(self._ctx.bus)
        except Rejected as exc:
            log.error("refusing roster chain", error=str(exc))
            return self._ctx.trust.version
        stored = await read_chain(self._ctx.bus)
        if len(stored) > len(good):
            bad = stored[len(good)].body.version
            self.refused.append(f"v{bad}")
            log.error("refusing roster version that does not follow its predecessor",
                      version=bad)
        if good and good[-1].body.version > self._ctx.trust.version:
            self._ctx.trust.install(good[-1])
            log.info("roster in force", version=good[-1].body.version,
                     members=self._ctx.trust.member_ids())
        return self._ctx.trust.version

    async def _on_endorsed(self, event: Event, envelope: Envelope) -> None:
        assert self._ctx is not None and isinstance(event, RosterChangeEndorsed)
        trust = self._ctx.trust
        if event.base_version < trust.version:
            return  # a change to a version that is history
        if event.base_version > trust.version:
            await self.refresh()
            if event.base_version > trust.version:
                raise RetryableError(f"endorsement for v{event.base_version + 1} ahead of us")
        if event.signature.member != envelope.member:
            return  # a member endorses for itself only
        self.tally.add(event.body, event.signature)
        prev = trust.roster
        assert prev is not None
        nxt = self.tally.ready(prev)
        if nxt is not None:
            await self._put_in_force(nxt)

    async def _put_in_force(self, nxt: Roster) -> None:
        assert self._ctx is not None
        roster_kv = await roster_bucket(self._ctx.bus)
        version = nxt.body.version
        try:
            await roster_kv.create(version_key(version), nxt)
        except CasConflict:
            pass  # another member saw the threshold first; its version is checked below
        else:
            await roster_kv.put(CURRENT, nxt)
            await self._ctx.bus.publish(RosterPublished(roster=nxt), msg_id=f"roster-v{version}")
            log.info("roster version assembled", version=version)
        await self.refresh()
        self.tally.forget_below(self._ctx.trust.version)

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()

    def health(self) -> dict[str, Any]:
        version = self._ctx.trust.version if self._ctx else 0
        roster = self._ctx.trust.roster if self._ctx else None
        return {"state": "running" if version else "starting", "roster_version": version,
                "refused_versions": list(self.refused),
                "pending_endorsements": self.tally.pending(roster) if roster else {}}
