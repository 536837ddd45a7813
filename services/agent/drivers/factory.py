"""Choosing a driver by name (`NodeSettings.driver`, `stekker node --driver`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from contracts.resources import Resources
from mesh.errors import ConfigError
from services.agent.drivers.base import Driver
from services.agent.drivers.process import ProcessDriver
from services.agent.drivers.sim import SimDriver

DRIVERS = ("sim", "process")


def make_driver(
    name: str, root: Path, *, sites: Mapping[str, Resources] | None = None
) -> Driver:
    """`sim` (capacity model over `sites`, if given) or `process` (children under `root`)."""
    if name == "sim":
        return SimDriver(sites)
    if name == "process":
        return ProcessDriver(root)
    raise ConfigError(f"unknown driver {name!r}; known: {', '.join(DRIVERS)}")
