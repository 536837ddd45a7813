"""`stekker soc tail` against an in-process federation with soc services."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from contracts.workload import WorkloadFailed
from mesh.envelope import new_msg_id
from mesh.server import NatsCluster
from services.soc.cloudevents import check
from support import ROOT, federation, wait_until
from support_cli import stekker
from support_soc import logs_to_stderr, soc_event

# Imported fixture, used by every test here.
pytestmark = pytest.mark.usefixtures(logs_to_stderr.__name__)


async def test_tail_prints_what_is_there(nats_server: NatsCluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    async with federation(nats_server.urls, data_dir, services=["iam", "registry", "soc"]) as fed:
        bus = await fed.bus("amstel")
        msg_id = new_msg_id()
        await bus.publish(WorkloadFailed(workload="wl-cli", reason="no site"), msg_id=msg_id)
        await wait_until(lambda: soc_event(bus, msg_id), what="the CloudEvent")

        code, out, err = await stekker(nats_server.urls, data_dir, "soc", "tail", "--json")
        assert code == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        for ce in events:
            check(ce)
        assert msg_id in [ce["id"] for ce in events]
        assert {ce["type"] for ce in events} >= {"eu.stekker.registry.announced.v1",
                                                 "eu.stekker.workload.failed.v1"}

        code, out, err = await stekker(nats_server.urls, data_dir, "soc", "tail", "--json",
                                       "--severity", "medium")
        assert code == 0, err
        assert [json.loads(line)["id"] for line in out.splitlines()] == [msg_id]

        code, out, err = await stekker(nats_server.urls, data_dir, "soc", "tail", "--json",
                                       "--last", "1")
        assert code == 0, err
        assert len(out.splitlines()) == 1

        code, out, err = await stekker(nats_server.urls, data_dir, "soc", "tail",
                                       "--severity", "low")
        assert code == 0, err
        lines = out.splitlines()
        assert len(lines) == 1
        assert "medium" in lines[0] and "workload.failed.v1" in lines[0]
        assert "amstel" in lines[0] and "wl-cli" in lines[0] and "no site" in lines[0]

        code, out, err = await stekker(nats_server.urls, data_dir, "soc", "tail",
                                       "--severity", "urgent")
        assert code != 0
        assert err.strip().startswith("stekker: --severity must be one of")


async def test_follow_stops_cleanly_on_ctrl_c(nats_server: NatsCluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    async with federation(nats_server.urls, data_dir, services=["iam", "registry", "soc"]) as fed:
        bus = await fed.bus("dommel")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mesh.cli.main", "--nats", ",".join(nats_server.urls),
            "--data-dir", str(data_dir), "soc", "tail", "--follow", "--json",
            "--severity", "medium",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            msg_id = new_msg_id()
            await bus.publish(WorkloadFailed(workload="wl-follow", reason="r"), msg_id=msg_id)
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
            assert json.loads(line)["id"] == msg_id
            proc.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(proc.wait(), timeout=10)
            err = (await proc.stderr.read()).decode()
            assert code == 0, err
            assert "Traceback" not in err
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
