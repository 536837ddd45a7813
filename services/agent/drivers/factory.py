"""Choosing a driver by name (`NodeSettings.driver`, `stekker node --driver`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from contracts.resources import Resources
from mesh.errors import ConfigError
from services.agent.drivers.auto import AutoDriver
from services.agent.drivers.base import Driver
from services.agent.drivers.process import ProcessDriver
from services.agent.drivers.sim import SimDriver

DRIVERS = ("sim", "process", "auto")


def make_driver(
    name: str, root: Path, *, sites: Mapping[str, Resources] | None = None
) -> Driver:
    """`sim` (capacity model over `sites`, if given), `process` (children under `root`),
    or `auto` (process for workloads with a `run` command, sim for the rest)."""
    if name == "sim":
        return SimDriver(sites, root=root)
    if name == "process":
        return ProcessDriver(root)
    if name == "auto":
        return AutoDriver(ProcessDriver(root), SimDriver(sites, root=root))
    raise ConfigError(f"unknown driver {name!r}; known: {', '.join(DRIVERS)}")
