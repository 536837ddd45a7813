"""Resource amounts shared by sites, capacity reports and workload specs."""

from __future__ import annotations

from typing import Annotated

import msgspec

NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class Resources(msgspec.Struct, kw_only=True, frozen=True):
    vcpu: NonNegative = 0.0
    memory_gib: NonNegative = 0.0
    storage_gib: NonNegative = 0.0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            vcpu=self.vcpu + other.vcpu,
            memory_gib=self.memory_gib + other.memory_gib,
            storage_gib=self.storage_gib + other.storage_gib,
        )

    def minus(self, other: Resources) -> Resources:
        """Subtraction clamped at zero: free capacity is never negative."""
        return Resources(
            vcpu=max(self.vcpu - other.vcpu, 0.0),
            memory_gib=max(self.memory_gib - other.memory_gib, 0.0),
            storage_gib=max(self.storage_gib - other.storage_gib, 0.0),
        )

    def fits_in(self, free: Resources) -> bool:
        return (
            self.vcpu <= free.vcpu + 1e-9
            and self.memory_gib <= free.memory_gib + 1e-9
            and self.storage_gib <= free.storage_gib + 1e-9
        )

    def shortfall(self, free: Resources) -> list[str]:
        """Names of the resources that do not fit, for a reason text."""
        return [
            name
            for name in ("vcpu", "memory_gib", "storage_gib")
            if getattr(self, name) > getattr(free, name) + 1e-9
        ]


ZERO = Resources()
