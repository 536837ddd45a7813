"""The drivers: sim's capacity model, and the process driver on a real child process."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from contracts.resources import Resources
from contracts.workload import RunSpec, WorkloadSpec
from mesh.specfile import load_workload
from services.agent.drivers.base import DriverError
from services.agent.drivers.factory import make_driver
from services.agent.drivers.process import ProcessDriver, http_ok
from services.agent.drivers.sim import SimDriver
from support import DEMO_WORKLOADS

SMALL = Resources(vcpu=2, memory_gib=4, storage_gib=10)


def spec(id: str = "w1", resources: Resources = SMALL, run: RunSpec | None = None) -> WorkloadSpec:
    return WorkloadSpec(id=id, tenant="t", resources=resources, run=run)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_sim_starts_instantly_and_models_capacity() -> None:
    driver = SimDriver({"s1": Resources(vcpu=3, memory_gib=8, storage_gib=100)})
    first = await driver.start("w1", spec("w1"), "s1")
    assert await driver.healthy(first)
    with pytest.raises(DriverError, match="vcpu"):
        await driver.start("w2", spec("w2"), "s1")
    with pytest.raises(DriverError, match="no site"):
        await driver.start("w3", spec("w3"), "elsewhere")
    await driver.stop(first)
    await driver.stop(first)  # idempotent
    assert not await driver.healthy(first)
    assert await driver.healthy(await driver.start("w2", spec("w2"), "s1"))
    await driver.close()
    assert driver.instances == {}


async def test_process_driver_runs_the_demo_http_server(tmp_path: Path) -> None:
    meetdata = load_workload(DEMO_WORKLOADS / "rivm-meetdata.yaml")
    driver = make_driver("process", tmp_path)
    assert isinstance(driver, ProcessDriver)
    try:
        instance = await driver.start(meetdata.id, meetdata, "ams1")
        assert instance.pid and instance.port and instance.data_dir
        assert instance.data_dir == tmp_path / meetdata.id / "data"
        assert await driver.healthy(instance)
        (instance.data_dir / "meting.csv").write_text("pm10;21\n")
        assert await http_ok(instance.port, "/meting.csv")
        assert (tmp_path / meetdata.id / "out.log").exists()
        pid = instance.pid
    finally:
        await driver.close()
    assert gone(pid)
    assert not await driver.healthy(instance)
    # The data stays, so a move can be checked after the instance stopped.
    assert (instance.data_dir / "meting.csv").read_text() == "pm10;21\n"


async def test_process_driver_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    driver = ProcessDriver(tmp_path, start_timeout_s=5)
    with pytest.raises(DriverError, match="no `run` section"):
        await driver.start("w1", spec("w1"), "s1")
    crashing = RunSpec(command=["{python}", "-c", "import sys; print('boom'); sys.exit(3)"])
    with pytest.raises(DriverError, match=r"exited with code 3.*boom"):
        await driver.start("w2", spec("w2", run=crashing), "s1")
    with pytest.raises(DriverError, match="cannot start"):
        await driver.start("w3", spec("w3", run=RunSpec(command=["/no/such/binary"])), "s1")
    assert driver.instances == {}


async def test_process_driver_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = RunSpec(command=[
        "{python}", "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
    ])
    driver = ProcessDriver(tmp_path, stop_timeout_s=0.3)
    instance = await driver.start("w1", spec("w1", run=stubborn), "s1")
    assert instance.pid and await driver.healthy(instance)
    await driver.stop(instance)
    assert gone(instance.pid)
    await driver.close()
