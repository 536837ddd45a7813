"""Leader steering and follower reads on a real three-server JetStream cluster."""

from __future__ import annotations

import msgspec

from mesh.bus import Bus, retry_passing
from mesh.leaders import groups, pull_leaders
from mesh.server import NatsCluster
from mesh.state import bucket
from support import wait_until


async def _leaders(bus: Bus) -> dict[str, str]:
    return {g.name: g.leader for g in await retry_passing(lambda: groups(bus))}


async def test_the_steward_pulls_every_leader_to_its_server(nats_cluster: NatsCluster):
    bus = await Bus.connect(nats_cluster.urls)
    try:
        await bus.provision(3)
        await bus.js.add_consumer("FED", durable_name="probe", ack_policy="explicit",
                                  num_replicas=3)
        before = await _leaders(bus)
        assert "FED" in before and "FED/probe" in before
        assert len(before) >= 9  # FED, its consumer, the buckets, the object store

        async def all_on_zuidas() -> bool:
            await retry_passing(lambda: pull_leaders(bus, "zuidas"))
            return set((await _leaders(bus)).values()) == {"zuidas"}

        await wait_until(all_on_zuidas, timeout=30, what="every group led by zuidas")
        again = await retry_passing(lambda: pull_leaders(bus, "zuidas"))
        assert again.moved == [] and again.failed == {} and again.held == len(before)
    finally:
        await bus.close()


async def test_keys_are_read_from_followers_while_the_leader_is_gone(
    nats_cluster: NatsCluster,
):
    """`Bucket.get_many` asks any replica: with the bucket's leader's server killed, the
    survivors answer (before and after they elect a new leader) with every live key."""
    bus = await Bus.connect(nats_cluster.urls)
    try:
        await bus.provision(3)
        kv = await bucket(bus, "fed_placements", msgspec.Raw)
        for i in range(700):  # more than one batch of 512
            await kv.put(f"w{i:03d}", msgspec.Raw(b'{"n":%d}' % i))
        await kv.delete("w005")
        leader = (await bus.js.stream_info("KV_fed_placements")).cluster.leader
        assert leader in ("amstel", "dommel", "zuidas")
    finally:
        await bus.close()
    nats_cluster.stop_one(leader, kill=True)
    survivors = nats_cluster.running_urls
    bus = await Bus.connect(survivors)
    try:
        kv = await bucket(bus, "fed_placements", msgspec.Raw)
        got = await kv.get_many([f"w{i:03d}" for i in range(710)])
        assert len(got) == 699 and "w005" not in got and "w700" not in got
        assert bytes(got["w321"].value) == b'{"n":321}'
        assert got["w321"].revision == 322
    finally:
        await bus.close()
