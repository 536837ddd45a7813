"""A workload's data: export and import by the drivers, blobs and backups in `fed_data`."""

from __future__ import annotations

import datetime as dt
import io
import tarfile
from pathlib import Path

import pytest

from contracts.resources import Resources
from contracts.workload import RunSpec, WorkloadSpec
from mesh.bus import Bus
from mesh.objects import BlobMissing, get_blob, put_blob, sha256_hex
from mesh.server import NatsCluster
from services.agent import backup
from services.agent.data import pack, sim_blob, unpack
from services.agent.drivers.base import DriverError
from services.agent.drivers.process import ProcessDriver
from services.agent.drivers.sim import SimDriver

RUN = RunSpec(command=["{python}", "-c", "import time; time.sleep(60)"])


def stateful(id: str = "db", run: RunSpec | None = None) -> WorkloadSpec:
    return WorkloadSpec(id=id, tenant="t", resources=Resources(vcpu=1, memory_gib=1),
                        stateful=True, rpo_seconds=4, run=run)


def test_pack_is_deterministic_and_unpack_restores_the_folder(tmp_path: Path) -> None:
    source = tmp_path / "a"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "rows.txt").write_bytes(b"1\n2\n")
    (source / "top.bin").write_bytes(bytes(range(256)))
    first = pack(source)
    (source / "top.bin").touch()  # a newer mtime changes nothing
    assert pack(source) == first
    target = tmp_path / "b"
    (target / "stale").mkdir(parents=True)
    unpack(target, first)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "sub", "sub/rows.txt", "top.bin"]
    assert pack(target) == first


def test_unpack_refuses_an_archive_that_escapes_its_folder(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DriverError, match="cannot unpack"):
        unpack(tmp_path / "target", buffer.getvalue())
    assert not (tmp_path / "evil.txt").exists()


async def test_sim_data_is_deterministic_and_moves_between_drivers(tmp_path: Path) -> None:
    source, successor = SimDriver(root=tmp_path / "a"), SimDriver(root=tmp_path / "b")
    await source.start("db", stateful(), "s1")
    data = await source.export("db", stateful())
    assert data == sim_blob("db", SimDriver.DATA_BYTES) != sim_blob("other", 4096)
    await successor.import_("db", stateful(), data)
    await successor.start("db", stateful(), "s1")  # keeps the imported data
    assert await successor.export("db", stateful()) == data
    with pytest.raises(DriverError, match="no data"):
        await SimDriver().export("nothing", stateful("nothing"))


async def test_process_data_folder_moves_byte_for_byte(tmp_path: Path) -> None:
    source, successor = ProcessDriver(tmp_path / "a"), ProcessDriver(tmp_path / "b")
    spec = stateful(run=RUN)
    instance = await source.start("db", spec, "s1")
    try:
        assert instance.data_dir is not None
        (instance.data_dir / "rows.txt").write_text("hello\n")
        data = await source.export("db", spec)
    finally:
        await source.stop(instance)
    await successor.import_("db", spec, data)
    assert (successor.data_dir("db") / "rows.txt").read_text() == "hello\n"
    started = await successor.start("db", spec, "s1")
    try:
        with pytest.raises(DriverError, match="runs"):
            await successor.import_("db", spec, data)
    finally:
        await successor.stop(started)


async def test_backups_keep_the_newest_and_carry_their_index(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    bus = await Bus.connect(nats_server.urls, service="test")
    try:
        await bus.provision(1)
        driver = SimDriver(root=tmp_path)
        spec = stateful()
        await driver.start("db", spec, "s1")
        t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        for i in range(backup.KEEP + 2):
            await backup.back_up(bus, driver, spec, member="dommel", generation=3,
                                 now=t0 + dt.timedelta(seconds=i))
        found = await backup.backups_of(bus, "db")
        assert [b.at for b in found] == [t0 + dt.timedelta(seconds=i)
                                         for i in reversed(range(2, backup.KEEP + 2))]
        newest = found[0]
        data, headers = await get_blob(bus, newest.name)
        assert sha256_hex(data) == newest.sha256 == headers[backup.H_SHA256]
        assert (newest.member, newest.generation, newest.size) == ("dommel", 3, len(data))
        assert newest.age_s(t0 + dt.timedelta(seconds=10)) == 10 - (backup.KEEP + 1)
        # A blob without a complete index is not a backup.
        await put_blob(bus, backup.prefix("db") + "junk", b"x", {})
        assert len(await backup.backups_of(bus, "db")) == backup.KEEP
        with pytest.raises(BlobMissing):
            await get_blob(bus, "backup/none/x")
    finally:
        await bus.close()


def test_backup_interval_is_half_the_rpo_within_bounds() -> None:
    assert backup.interval_s(0) == backup.MIN_INTERVAL_S
    assert backup.interval_s(60) == 30
    assert backup.interval_s(10**6) == backup.MAX_INTERVAL_S
