"""`stekker up --secure` keeps the servers' NATS accounts in step with the roster in force.

The accounts are written from `genesis.json` before the servers start. Once a roster
change takes effect (a member suspended, removed, admitted, a key rotated), `up`
regenerates them from the verified chain and reloads every server (SIGHUP: nats-server
re-reads its config and its includes, and closes the connections whose user is gone),
so a suspended member's nodes are off the bus at once, not at the next `up`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import nats.errors

from mesh.bus import Bus
from mesh.errors import MeshError
from mesh.localfed import AUTH_DIR, LocalFederation
from mesh.observability import logger

log = logger("mesh.accounts")
FOLLOW_EVERY_S = 2.0


class AccountsFollower:
    """Regenerates the accounts when the version in force differs from the one written."""

    def __init__(self, fed: LocalFederation, written_version: int) -> None:
        self.fed = fed
        self.version = written_version

    async def step(self, bus: Bus) -> list[str] | None:
        """One look at the roster in force; the users written, when it changed."""
        from services.iam.nats_files import write_nats_auth  # services build on mesh
        from services.iam.service import load_roster

        roster = await load_roster(bus)  # the whole chain, verified
        if roster is None or roster.body.version == self.version:
            return None
        written = write_nats_auth(self.fed.data_dir / AUTH_DIR, roster)
        self.fed.reload_servers()
        self.version = roster.body.version
        return [user.name for user in written.auth.users]

    async def follow(self, bus: Bus, say: Callable[[str], None]) -> None:
        """`step` every few seconds until cancelled; a bus hiccup only delays it."""
        while True:
            users: list[str] | None = None
            with contextlib.suppress(nats.errors.Error, TimeoutError, MeshError, OSError):
                users = await self.step(bus)
            if users is not None:
                say(f"roster v{self.version} in force: NATS accounts rewritten in "
                    f"{self.fed.data_dir / AUTH_DIR} ({', '.join(users)}), servers reloaded")
            await asyncio.sleep(FOLLOW_EVERY_S)
