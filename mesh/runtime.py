"""The service runtime: one member's services in one process, or one service alone.

Every service implements `Service`: `start(ctx)` returns once it is running (its loops
run as tasks), `stop()` ends them, `health()` says how it is. `run_node` starts the bus,
the roster, then the services in order, answers health requests, and stops everything
in reverse order on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from contracts.registry import MemberProfile
from mesh.bus import Bus
from mesh.keys import Identity
from mesh.loop import freeze_gc
from mesh.observability import logger, setup
from mesh.trust import TrustStore

log = logger("mesh.runtime")


@dataclass(frozen=True)
class NodeSettings:
    # Failover (docs/continuity.md): beat every interval; silence this long → suspicion.
    heartbeat_interval_s: float = 1.0
    suspicion_timeout_s: float = 3.0
    # Recovery hysteresis: a down member is back only after this many beats in a row...
    recovery_beats: int = 3
    # ... spread over at least this many seconds (none missed for a suspicion timeout).
    recovery_steady_s: float = 2.0
    # Flap guard: for this long after a member's recovery, observers suspect it only
    # after `flap_timeout_factor` times the suspicion timeout of silence, so a member that
    # flaps around the timeout is not declared down (and its workloads moved) again and
    # again; a member that really dies is still declared, a little later.
    flap_guard_s: float = 60.0
    flap_timeout_factor: float = 3.0
    # Disruption budget of a failover: re-placements per second by each scheduler.
    replace_rate_per_s: float = 500.0
    # The steward (services/failover/steward.py) keeps every JetStream leader on its own
    # server, so that any other member's death stalls no write for an election.
    steer_leaders: bool = True
    driver: str = "sim"
    # How many NATS servers replicate the federation's state (min(3, servers)).
    replicas: int = 1
    # Submissions and takeover requests need a bearer token (`Fed-Token`) of the right
    # role, issued by the publishing member (issue 5). Off by default: the demo and the
    # tests that do not speak about tokens publish without one.
    require_tokens: bool = False


@dataclass
class NodeContext:
    """What every service of a member gets: its bus, identity, profile and settings."""

    bus: Bus
    identity: Identity
    profile: MemberProfile
    data_dir: Path
    settings: NodeSettings
    trust: TrustStore
    started_at: float = field(default_factory=time.time)

    @property
    def member(self) -> str:
        return self.identity.member


class Service(Protocol):
    name: str

    async def start(self, ctx: NodeContext) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


async def cancel_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel a service's background tasks and wait for each to end; empties the list."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    tasks.clear()


def health_subject(member: str) -> str:
    return f"stekker.v1.health.{member}"


class Node:
    def __init__(self, ctx: NodeContext, services: Sequence[Service]) -> None:
        self.ctx = ctx
        self.services = list(services)
        self.started: list[Service] = []

    async def start(self) -> None:
        for service in self.services:
            await service.start(self.ctx)
            self.started.append(service)
            log.info("service started", service=service.name, member=self.ctx.member)
        await self.ctx.bus.nc.subscribe(health_subject(self.ctx.member), cb=self._on_health)

    async def _on_health(self, msg: Any) -> None:
        await msg.respond(msgspec.json.encode(self.health()))

    def health(self) -> dict[str, Any]:
        return {
            "member": self.ctx.member,
            "uptime_s": round(time.time() - self.ctx.started_at, 1),
            "roster_version": self.ctx.trust.version,
            "services": {s.name: s.health() for s in self.started},
        }

    async def stop(self) -> None:
        for service in reversed(self.started):
            try:
                await asyncio.wait_for(service.stop(), timeout=10)
            except Exception as exc:
                log.warning("service stop failed", service=service.name, error=str(exc))
        self.started.clear()
        await self.ctx.bus.close()


async def run_until_signalled(node: Node) -> None:
    """Start the node, wait for SIGTERM/SIGINT, stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
        freeze_gc()  # what the start made lives as long as the node
        log.info("node running", member=node.ctx.member,
                 services=[s.name for s in node.services])
        await stop.wait()
    finally:
        log.info("node stopping", member=node.ctx.member)
        await node.stop()


def configure(service: str) -> None:
    setup(service)
