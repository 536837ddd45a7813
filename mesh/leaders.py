"""Where the JetStream leaders are, and pulling them to one server (the steward's).

Every stream, bucket and replicated consumer of the federation is a RAFT group with one
leader, and every write goes through its leader. When a member's server dies, the groups
it led stop taking writes until their followers elect a new leader, and nats-server waits
4 to 9 s of silence before it even starts that election (fixed in its `raft.go`, not
configurable). Spread evenly, a member's server leads about a third of the groups, so
almost any member's death stalls some group on the failover path (FED, the decisions,
the placements, the ledgers). Kept on one server, only that member's death does: the
failover service of the *steward* (services/failover/steward.py) asks the others to step
down in its favour (`$JS.API.STREAM.LEADER.STEPDOWN`, with a preferred placement).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors

from mesh.bus import Bus
from mesh.observability import logger

log = logger("mesh.leaders")
API_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Group:
    """One replicated RAFT group: a stream (consumer empty) or one of its consumers."""

    stream: str
    consumer: str
    leader: str
    # Servers that replicate it and are current (caught up, not offline), leader included.
    current: frozenset[str]

    @property
    def name(self) -> str:
        return f"{self.stream}/{self.consumer}" if self.consumer else self.stream


@dataclass
class Pulled:
    """What one pass of `pull_leaders` did."""

    moved: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    held: int = 0  # groups already led by the server


def _group(stream: str, consumer: str, cluster: Any) -> Group | None:
    if cluster is None or not cluster.leader or not cluster.replicas:
        return None  # R1, or no leader right now: nothing to hand over
    current = {cluster.leader} | {p.name for p in cluster.replicas
                                  if p.current and not p.offline}
    return Group(stream, consumer, cluster.leader, frozenset(current))


async def _api(bus: Bus, api: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One JetStream API request; its JSON answer, or RuntimeError with the refusal."""
    reply = await bus.nc.request(f"{bus.js._prefix}.{api}", json.dumps(payload).encode(),
                                 timeout=API_TIMEOUT_S)
    answer: dict[str, Any] = json.loads(reply.data or b"{}")
    if "error" in answer:
        raise RuntimeError(answer["error"].get("description", "refused"))
    return answer


async def _names(bus: Bus, api: str, key: str) -> list[str]:
    """A JetStream NAMES listing (paged), answered from the meta leader's assignments."""
    names: list[str] = []
    while True:
        answer = await _api(bus, api, {"offset": len(names)})
        page = answer.get(key) or []
        names += page
        if not page or len(names) >= int(answer.get("total", 0)):
            return names


async def groups(bus: Bus) -> list[Group]:
    """Every replicated stream and durable consumer of the account, with its leader.

    Asked group by group (INFO, answered by each group's leader) rather than by one
    STREAM.LIST, which the meta leader answers only once every server did: with one
    server dead, exactly when a new steward must act, that listing times out. A group
    that does not answer now (no leader yet) is left for the next pass."""
    out: list[Group] = []
    for stream in await _names(bus, "STREAM.NAMES", "streams"):
        try:
            info = await bus.js.stream_info(stream)
            consumers = await _names(bus, f"CONSUMER.NAMES.{stream}", "consumers")
        except (nats.errors.Error, nats.js.errors.Error, RuntimeError):
            continue
        if (group := _group(stream, "", info.cluster)) is not None:
            out.append(group)
        for name in consumers:
            try:
                consumer = await bus.js.consumer_info(stream, name)
            except (nats.errors.Error, nats.js.errors.Error):
                continue
            if (group := _group(stream, name, consumer.cluster)) is not None:
                out.append(group)
    return out


async def _step_down(bus: Bus, group: Group, server: str) -> None:
    api = (f"CONSUMER.LEADER.STEPDOWN.{group.stream}.{group.consumer}" if group.consumer
           else f"STREAM.LEADER.STEPDOWN.{group.stream}")
    await _api(bus, api, {"placement": {"preferred": server}})


async def pull_leaders(bus: Bus, server: str) -> Pulled:
    """Ask every replicated group that `server` replicates, current, but does not lead to
    hand its leadership to `server`. One group at a time: each hand-over pauses that
    group's writes for a moment, and the writers retry (mesh.bus.retry_passing)."""
    pulled = Pulled()
    for group in await groups(bus):
        if group.leader == server:
            pulled.held += 1
            continue
        if server not in group.current:
            continue  # not a replica, or catching up: it could not lead now anyway
        try:
            await _step_down(bus, group, server)
        except (nats.errors.Error, nats.js.errors.Error, RuntimeError, ValueError) as exc:
            pulled.failed[group.name] = str(exc) or type(exc).__name__
            continue
        pulled.moved.append(group.name)
    if pulled.moved or pulled.failed:
        log.info("pulled leaders", server=server, moved=len(pulled.moved),
                 failed=pulled.failed or None, held=pulled.held)
    return pulled
