"""The `sim` driver: a capacity model with instant start, instances kept in memory.

For demos and tests of everything around the platform: an instance is "running" while
it is in the table. When the agent gives it the member's sites, it refuses an instance
that does not fit in what is left of its site, as a real platform would.

A stateful workload gets simulated data: `DATA_BYTES` of deterministic content
(`services.agent.data.sim_blob`), written when it first starts, in
`root/<instance>/data/sim.bin` when the driver has a root (so the member's other
services see it), else in memory. Benchmarks raise `DATA_BYTES` to move megabytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from contracts.resources import ZERO, Resources
from contracts.workload import WorkloadSpec
from services.agent.data import SIM_BLOB, sim_blob
from services.agent.drivers.base import DriverError, Instance


class SimDriver:
    name = "sim"
    # Bytes of simulated data per stateful workload (class-wide, so a benchmark sets it).
    DATA_BYTES = 4096

    def __init__(
        self, sites: Mapping[str, Resources] | None = None, *, root: Path | None = None
    ) -> None:
        # site id → total capacity; None = unlimited (no capacity model).
        self.sites = dict(sites) if sites is not None else None
        self.root = Path(root) if root is not None else None
        self.instances: dict[str, Instance] = {}
        # site id → what its instances use; kept as they come and go (summing every
        # instance per start made thousands of starts quadratic).
        self._used: dict[str, Resources] = {}
        self._blobs: dict[str, bytes] = {}  # instance id → data, without a root

    def _blob_path(self, instance_id: str) -> Path | None:
        return self.root / instance_id / "data" / SIM_BLOB if self.root else None

    def _read(self, instance_id: str) -> bytes | None:
        path = self._blob_path(instance_id)
        if path is None:
            return self._blobs.get(instance_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _write(self, instance_id: str, data: bytes) -> None:
        path = self._blob_path(instance_id)
        if path is None:
            self._blobs[instance_id] = data
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # never a half-written blob for an export to read

    async def export(self, instance_id: str, spec: WorkloadSpec) -> bytes:
        data = await asyncio.to_thread(self._read, instance_id)
        if data is None:
            raise DriverError(f"{instance_id} has no data here")
        return data

    async def import_(self, instance_id: str, spec: WorkloadSpec, data: bytes) -> None:
        await asyncio.to_thread(self._write, instance_id, data)

    async def has_data(self, instance_id: str, spec: WorkloadSpec) -> bool:
        return await asyncio.to_thread(self._read, instance_id) is not None

    def used(self, site: str) -> Resources:
        return self._used.get(site, ZERO)

    def _count(self, instance: Instance, sign: int) -> None:
        used = self.used(instance.site)
        self._used[instance.site] = (used + instance.spec.resources if sign > 0
                                     else used.minus(instance.spec.resources))

    async def start(self, instance_id: str, spec: WorkloadSpec, site: str) -> Instance:
        old = self.instances.pop(instance_id, None)
        if old is not None:
            self._count(old, -1)
        if self.sites is not None:
            if site not in self.sites:
                self._restore(old)
                raise DriverError(f"no site {site!r} here (sites: {', '.join(self.sites)})")
            free = self.sites[site].minus(self.used(site))
            if not spec.resources.fits_in(free):
                self._restore(old)
                short = ", ".join(spec.resources.shortfall(free))
                raise DriverError(f"site {site} has too little free capacity ({short})")
        if spec.stateful and await asyncio.to_thread(self._read, instance_id) is None:
            await asyncio.to_thread(self._write, instance_id, sim_blob(spec.id, self.DATA_BYTES))
        blob = self._blob_path(instance_id)
        instance = Instance(instance_id=instance_id, spec=spec, site=site,
                            data_dir=blob.parent if blob else None)
        self.instances[instance_id] = instance
        self._count(instance, +1)
        return instance

    def _restore(self, old: Instance | None) -> None:
        if old is not None:
            self.instances[old.instance_id] = old
            self._count(old, +1)

    async def healthy(self, instance: Instance) -> bool:
        return self.instances.get(instance.instance_id) is instance

    async def stop(self, instance: Instance) -> None:
        if self.instances.get(instance.instance_id) is instance:
            del self.instances[instance.instance_id]
            self._count(instance, -1)

    async def close(self) -> None:
        self.instances.clear()
        self._used.clear()
