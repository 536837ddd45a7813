"""Fixtures: real nats-server processes on free ports with temporary stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.server import NatsCluster


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsCluster]:
    """One JetStream server, stopped by the test that asked for it."""
    cluster = NatsCluster.single(tmp_path / "nats", sync_always=False)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three clustered JetStream servers (R3 state), one per demo member."""
    cluster = NatsCluster(tmp_path / "nats", ["amstel", "dommel", "zuidas"], sync_always=False)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
