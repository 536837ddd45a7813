"""Partition: one member cut off from the others, on a real three-server NATS cluster.

Each member's node talks to its own server only, as in production. The test isolates
dommel by restarting its server on a new cluster port with no routes: the node keeps
running, hears only itself and can no longer reach JetStream's majority. The minority
(dommel) must declare nobody down; the majority (amstel, zuidas) declares dommel down
exactly once. Healing the partition brings dommel back as recovered, and nothing the
minority said while cut off turns into a declaration later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.failover import MemberDown, MemberRecovered
from contracts.state import DownDecision
from mesh import layout
from mesh.bus import Bus
from mesh.runtime import NodeSettings
from mesh.server import NatsCluster, free_ports
from mesh.state import bucket
from support import MEMBERS, federation, wait_until
from support_failover import SERVICES, Log, failover, hears_everyone

SETTINGS = NodeSettings(heartbeat_interval_s=0.2, suspicion_timeout_s=0.8,
                        recovery_steady_s=0.4, flap_guard_s=0.0, replicas=3)
MAJORITY = ("amstel", "zuidas")
# Generous: the majority elects new JetStream leaders for what dommel's server led.
BOUND_S = 60.0


def cut_off(cluster: NatsCluster, name: str) -> tuple[int | None, list[str]]:
    """Restart `name`'s server where no route reaches it; returns what to restore."""
    server = cluster.servers[name]
    before = (server.spec.cluster_port, list(server.spec.routes))
    server.stop()
    server.spec.cluster_port = free_ports(1)[0]
    server.spec.routes = []
    server.start()  # not "ready": alone it never sees a JetStream meta leader
    return before


def heal(cluster: NatsCluster, name: str, before: tuple[int | None, list[str]]) -> None:
    server = cluster.servers[name]
    server.stop()
    server.spec.cluster_port, server.spec.routes = before
    cluster.start_one(name, timeout=BOUND_S)


async def start_log(bus: Bus) -> Log | None:
    try:
        return await Log().start(bus, MemberDown, MemberRecovered)
    except Exception:  # JetStream still electing leaders on the majority's side
        return None


@pytest.fixture
def own_servers(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three clustered servers that do not advertise each other to clients, so each
    node stays on its own server when that server restarts."""
    cluster = NatsCluster(tmp_path / "nats", list(MEMBERS), sync_always=False)
    for server in cluster.servers.values():
        server.spec.no_advertise = True
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_a_cut_off_member_declares_nobody_and_the_majority_declares_once(
    own_servers: NatsCluster, tmp_path: Path
) -> None:
    nats_cluster = own_servers
    own = {m: [nats_cluster.servers[m].url] for m in MEMBERS}
    async with federation(nats_cluster.urls, tmp_path / "fed", services=SERVICES,
                          settings=SETTINGS, member_urls=own) as fed:
        majority_urls = [url for m in MAJORITY for url in own[m]]
        watcher = await fed.bus(urls=majority_urls)
        decisions = await bucket(watcher, layout.KV_DECISIONS, DownDecision)
        await wait_until(lambda: hears_everyone(fed), timeout=BOUND_S,
                         what="everyone hears everyone")

        before = cut_off(nats_cluster, "dommel")
        try:
            minority = failover(fed, "dommel")
            # Cut off, dommel hears neither of the others (its suspicions cannot even
            # reach FED: its server has no JetStream without the majority).
            await wait_until(
                lambda: all(minority.book.silence(m, time.monotonic())
                            > SETTINGS.suspicion_timeout_s for m in MAJORITY),
                timeout=BOUND_S, what="dommel hears neither of the others")
            # Read FED from the start on the majority's side (an ephemeral consumer made
            # before the cut might live on dommel's server).
            log = await wait_until(lambda: start_log(watcher), timeout=BOUND_S,
                                   what="a FED reader on the majority's side")
            await wait_until(lambda: log.of(MemberDown, member="dommel"), timeout=BOUND_S,
                             what="the majority declares dommel down")
            await wait_until(
                lambda: all("dommel" in failover(fed, m).health()["down"] for m in MAJORITY),
                timeout=BOUND_S, what="both of the majority past the decision")
            # The minority keeps ticking while cut off, and decides nothing.
            ticks = minority.ticks
            await wait_until(lambda: minority.ticks >= ticks + 5, timeout=BOUND_S,
                             what="five more ticks of dommel's failover")
            assert minority.counts["declared"] == 0
            assert minority.health()["down"] == []
        finally:
            heal(nats_cluster, "dommel", before)

        await wait_until(lambda: log.of(MemberRecovered, member="dommel"), timeout=BOUND_S,
                         what="dommel recovered once the partition healed")
        await wait_until(lambda: hears_everyone(fed), timeout=BOUND_S,
                         what="everyone hears everyone again")
        # One declaration, by one CAS winner of the majority; none against the majority.
        downs = log.of(MemberDown)
        assert [(e.member, env.msg_id) for e, env in downs] == [("dommel", "down-dommel-1")]
        event, env = downs[0]
        assert env.member in MAJORITY
        assert sorted(e.observer for e in event.evidence) == sorted(MAJORITY)
        assert sum(failover(fed, m).counts["declared"] for m in MEMBERS) == 1
        entry = await decisions.get("down.dommel")
        assert entry is not None and entry.value.declared_by == env.member
        assert entry.value.epoch == 1
        keys = [k for k in await decisions.keys() if k.startswith("down.")]
        assert keys == ["down.dommel"]
        assert minority.counts["declared"] == 0
