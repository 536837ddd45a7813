"""Resource amounts shared by sites, capacity reports and workload specs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec

NonNegative = Annotated[float, msgspec.Meta(ge=0)]


# The resource classes a site declares and a workload requests, in display order.
RESOURCE_NAMES: tuple[str, ...] = ("vcpu", "memory_gib", "storage_gib", "gpu")


class Resources(msgspec.Struct, kw_only=True, frozen=True):
    vcpu: NonNegative = 0.0
    memory_gib: NonNegative = 0.0
    storage_gib: NonNegative = 0.0
    gpu: NonNegative = 0.0  # whole accelerators; a later field, so it defaults to none

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            vcpu=self.vcpu + other.vcpu,
            memory_gib=self.memory_gib + other.memory_gib,
            storage_gib=self.storage_gib + other.storage_gib,
            gpu=self.gpu + other.gpu,
        )

    def minus(self, other: Resources) -> Resources:
        """Subtraction clamped at zero: free capacity is never negative."""
        return Resources(
            vcpu=max(self.vcpu - other.vcpu, 0.0),
            memory_gib=max(self.memory_gib - other.memory_gib, 0.0),
            storage_gib=max(self.storage_gib - other.storage_gib, 0.0),
            gpu=max(self.gpu - other.gpu, 0.0),
        )

    def fits_in(self, free: Resources) -> bool:
        return (
            self.vcpu <= free.vcpu + 1e-9
            and self.memory_gib <= free.memory_gib + 1e-9
            and self.storage_gib <= free.storage_gib + 1e-9
            and self.gpu <= free.gpu + 1e-9
        )

    def shortfall(self, free: Resources) -> list[str]:
        """Names of the resources that do not fit, for a reason text."""
        return [
            name
            for name in RESOURCE_NAMES
            if getattr(self, name) > getattr(free, name) + 1e-9
        ]


    def scaled(self, ratios: Mapping[str, float]) -> Resources:
        """Each amount times its ratio (1.0 when none is given): declared overcommit."""
        return Resources(
            vcpu=self.vcpu * ratios.get("vcpu", 1.0),
            memory_gib=self.memory_gib * ratios.get("memory_gib", 1.0),
            storage_gib=self.storage_gib * ratios.get("storage_gib", 1.0),
            gpu=self.gpu * ratios.get("gpu", 1.0),
        )


ZERO = Resources()
