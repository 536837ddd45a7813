"""The `auto` driver: a real process for workloads that carry a `run` command, the
capacity model for the rest.

The demo federation mixes both kinds: a stateful workload whose data a takeover must
visibly move, next to workloads that only exist as a spec. With `auto` the first runs
as a real child process with a data folder, and the others still get placed and bound.
"""

from __future__ import annotations

from contracts.workload import WorkloadSpec
from services.agent.drivers.base import Driver, Instance


class AutoDriver:
    name = "auto"

    def __init__(self, process: Driver, sim: Driver) -> None:
        self.process = process
        self.sim = sim

    def _for(self, spec: WorkloadSpec) -> Driver:
        return self.process if spec.run is not None else self.sim

    async def start(self, instance_id: str, spec: WorkloadSpec, site: str) -> Instance:
        return await self._for(spec).start(instance_id, spec, site)

    async def healthy(self, instance: Instance) -> bool:
        return await self._for(instance.spec).healthy(instance)

    async def stop(self, instance: Instance) -> None:
        await self._for(instance.spec).stop(instance)

    async def export(self, instance_id: str, spec: WorkloadSpec) -> bytes:
        return await self._for(spec).export(instance_id, spec)

    async def import_(self, instance_id: str, spec: WorkloadSpec, data: bytes) -> None:
        await self._for(spec).import_(instance_id, spec, data)

    async def has_data(self, instance_id: str, spec: WorkloadSpec) -> bool:
        return await self._for(spec).has_data(instance_id, spec)

    async def close(self) -> None:
        await self.process.close()
        await self.sim.close()
