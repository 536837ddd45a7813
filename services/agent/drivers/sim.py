"""The `sim` driver: a capacity model with instant start, instances kept in memory.

For demos and tests of everything around the platform: an instance is "running" while
it is in the table. When the agent gives it the member's sites, it refuses an instance
that does not fit in what is left of its site, as a real platform would.
"""

from __future__ import annotations

from collections.abc import Mapping

from contracts.resources import ZERO, Resources
from contracts.workload import WorkloadSpec
from services.agent.drivers.base import DriverError, Instance


class SimDriver:
    name = "sim"

    def __init__(self, sites: Mapping[str, Resources] | None = None) -> None:
        # site id → total capacity; None = unlimited (no capacity model).
        self.sites = dict(sites) if sites is not None else None
        self.instances: dict[str, Instance] = {}
        # site id → what its instances use; kept as they come and go (summing every
        # instance per start made thousands of starts quadratic).
        self._used: dict[str, Resources] = {}

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
        instance = Instance(instance_id=instance_id, spec=spec, site=site)
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
