"""Blobs read from any replica (direct gets) match what the object store's reader gives."""

from __future__ import annotations

import os

import pytest

from mesh.bus import Bus
from mesh.objects import BlobMissing, get_blob, list_blobs, put_blob
from mesh.server import NatsCluster


async def test_follower_reads_match_the_store_reader(nats_server: NatsCluster):
    bus = await Bus.connect(nats_server.urls)
    try:
        await bus.provision(1)
        big = os.urandom(300 * 1024)  # several chunks
        await put_blob(bus, "backup/w1/a", big, {"sha256": "x", "workload": "w1"})
        await put_blob(bus, "backup/w1/b", b"small", {"workload": "w1"})
        await put_blob(bus, "backup/w2/a", b"", {"workload": "w2"})
        for followers in (False, True):
            data, headers = await get_blob(bus, "backup/w1/a", followers=followers)
            assert data == big and headers["workload"] == "w1"
            assert (await get_blob(bus, "backup/w2/a", followers=followers))[0] == b""
            listed = await list_blobs(bus, "backup/w1/", followers=followers)
            assert [b.name for b in listed] == ["backup/w1/a", "backup/w1/b"]
            assert listed[0].size == len(big) and listed[0].headers["sha256"] == "x"
            with pytest.raises(BlobMissing):
                await get_blob(bus, "backup/none", followers=followers)
    finally:
        await bus.close()
