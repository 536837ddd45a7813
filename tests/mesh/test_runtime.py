"""A node is a real process: it starts its services, answers health, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import nats
import psutil

from mesh.server import NatsCluster
from services.iam.genesis import found_local_federation
from support import DEMO_MEMBERS, ROOT, demo_profiles, wait_until


async def test_node_process_health_and_graceful_stop(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    data_dir = tmp_path / "fed"
    found_local_federation(data_dir, "t", demo_profiles())
    argv = [sys.executable, "-m", "mesh.cli.main", "--data-dir", str(data_dir),
            "--nats", nats_server.urls[0], "node", "--member", "amstel",
            "--config", str(DEMO_MEMBERS / "amstel.toml"), "--services", "iam,registry"]
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    nc = await nats.connect(nats_server.urls[0])
    try:
        async def health() -> dict[str, object] | None:
            try:
                reply = await nc.request("stekker.v1.health.amstel", b"", timeout=0.5)
            except Exception:
                return None
            return msgspec.json.decode(reply.data)  # type: ignore[no-any-return]

        state = await wait_until(health, timeout=30, what="node health reply")
        assert state["member"] == "amstel"
        assert state["roster_version"] == 1
        assert set(state["services"]) == {"iam", "registry"}  # type: ignore[arg-type]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == "zombie"
    finally:
        await nc.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_node_without_nats_fails_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    found_local_federation(data_dir, "t", demo_profiles())
    result = subprocess.run(
        [sys.executable, "-m", "mesh.cli.main", "--data-dir", str(data_dir),
         "--nats", "nats://127.0.0.1:1", "node", "--member", "amstel",
         "--config", str(DEMO_MEMBERS / "amstel.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**__import__("os").environ, "STEKKER_CONNECT_TIMEOUT": "2"},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot reach NATS" in result.stderr
