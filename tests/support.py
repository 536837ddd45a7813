"""Helpers for tests: waiting on conditions, and an in-process federation on real NATS."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from contracts.registry import MemberProfile
from mesh.bus import Bus
from mesh.keys import Identity, load_identity
from mesh.runtime import Node, NodeContext, NodeSettings
from mesh.services import make_services
from mesh.specfile import load_member_profile
from mesh.trust import TrustStore
from services.iam.genesis import found_local_federation

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
DEMO_MEMBERS = ROOT / "deploy" / "demo" / "members"
DEMO_WORKLOADS = ROOT / "deploy" / "demo" / "workloads"
MEMBERS = ("amstel", "dommel", "zuidas")


async def wait_until(
    probe: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")
        await asyncio.sleep(interval)


def demo_profiles() -> list[MemberProfile]:
    return [load_member_profile(DEMO_MEMBERS / f"{m}.toml") for m in MEMBERS]


@dataclass
class Federation:
    """Three demo members' nodes in this process, each with its own NATS connection."""

    urls: list[str]
    data_dir: Path
    profiles: dict[str, MemberProfile]
    settings: NodeSettings
    nodes: dict[str, Node] = field(default_factory=dict)
    extra_buses: list[Bus] = field(default_factory=list)
    # Per member, the nkey seed file it logs in with (servers with generated accounts).
    logins: dict[str, Path] = field(default_factory=dict)
    # Per member, the servers its node connects to (default: `urls`), e.g. its own only.
    member_urls: dict[str, list[str]] = field(default_factory=dict)

    def identity(self, member: str) -> Identity:
        return load_identity(self.data_dir / "keys", member)

    async def start_node(self, member: str, services: Sequence[str] | None = None) -> Node:
        identity = self.identity(member)
        trust = TrustStore()
        bus = await Bus.connect(self.member_urls.get(member, self.urls), identity=identity,
                                trust=trust, service=f"node-{member}",
                                nkey_file=self.logins.get(member))
        await bus.provision(self.settings.replicas)
        ctx = NodeContext(bus=bus, identity=identity, profile=self.profiles[member],
                          data_dir=self.data_dir, settings=self.settings, trust=trust)
        node = Node(ctx, make_services(list(services) if services else None))
        await node.start()
        self.nodes[member] = node
        return node

    async def stop_node(self, member: str) -> None:
        node = self.nodes.pop(member)
        await node.stop()

    async def bus(self, member: str | None = None, urls: list[str] | None = None) -> Bus:
        """A separate connection, signing as `member` (or none), with the roster in force."""
        from services.iam.service import load_roster

        identity = self.identity(member) if member else None
        bus = await Bus.connect(urls or self.urls, identity=identity, service="test",
                                nkey_file=self.logins.get(member) if member else None)
        roster = await wait_until(lambda: load_roster(bus), what="roster")
        bus.trust = TrustStore(roster)
        self.extra_buses.append(bus)
        return bus

    async def close(self) -> None:
        for member in list(self.nodes):
            with contextlib.suppress(Exception):
                await self.stop_node(member)
        for bus in self.extra_buses:
            with contextlib.suppress(Exception):
                await bus.close()


@contextlib.asynccontextmanager
async def federation(
    urls: list[str],
    data_dir: Path,
    *,
    services: Sequence[str] | None = None,
    members: Sequence[str] = MEMBERS,
    settings: NodeSettings | None = None,
    logins: dict[str, Path] | None = None,
    member_urls: dict[str, list[str]] | None = None,
) -> AsyncIterator[Federation]:
    profiles = {p.id: p for p in demo_profiles()}
    found_local_federation(data_dir, "stekker-test", list(profiles.values()))
    fed = Federation(urls=urls, data_dir=data_dir, profiles=profiles,
                     settings=settings or NodeSettings(), logins=dict(logins or {}),
                     member_urls=member_urls or {})
    try:
        for member in members:
            await fed.start_node(member, services)
        yield fed
    finally:
        await fed.close()
