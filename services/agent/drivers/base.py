"""The driver interface: start, check and stop one instance of a workload.

An instance id is the workload id for a real replica, or a distinct id (for example
`shadow-<saga>-<workload>`) for a takeover drill's shadow copy, so a shadow never
touches the real instance or its data.

A stateful workload's data lives in `root/<instance_id>/data/`; `export` and `import_`
move it as bytes, so two drivers over the same root (the agent's, and the takeover
service's in the same member) see the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from contracts.workload import WorkloadSpec
from services.agent.errors import DriverError

__all__ = ["Driver", "DriverError", "Instance"]


@dataclass
class Instance:
    instance_id: str
    spec: WorkloadSpec
    site: str
    data_dir: Path | None = None
    pid: int | None = None
    port: int | None = None
    detail: dict[str, str] = field(default_factory=dict)


class Driver(Protocol):
    name: str

    async def start(self, instance_id: str, spec: WorkloadSpec, site: str) -> Instance:
        """Start an instance; return once it runs (raise DriverError if it cannot)."""
        ...

    async def healthy(self, instance: Instance) -> bool:
        """True while the instance runs and answers its health check, if it has one."""
        ...

    async def stop(self, instance: Instance) -> None:
        """Stop the instance; idempotent. Its data folder is kept."""
        ...

    async def close(self) -> None:
        """Stop every instance this driver started (node shutdown)."""
        ...

    async def export(self, instance_id: str, spec: WorkloadSpec) -> bytes:
        """The instance's data as bytes (`services.agent.data`); it may keep running."""
        ...

    async def import_(self, instance_id: str, spec: WorkloadSpec, data: bytes) -> None:
        """Replace the instance's data with `data` (from `export`) before it starts."""
        ...

    async def has_data(self, instance_id: str, spec: WorkloadSpec) -> bool:
        """Whether the instance has data here already (imported, or left by an earlier
        run): an agent restores a backup only into an instance that has none."""
        ...
