"""Helpers for the SOC and conformance tests: reading the SOC stream back."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from mesh.bus import Bus
from mesh.soc_feed import tail


async def soc_events(bus: Bus, **kwargs: Any) -> list[dict[str, Any]]:
    """Every CloudEvent stored on SOC now (tail without --follow)."""
    return [ce async for ce in tail(bus, follow=False, **kwargs)]


async def soc_event(bus: Bus, ce_id: str) -> dict[str, Any] | None:
    found = [ce for ce in await soc_events(bus) if ce.get("id") == ce_id]
    return found[0] if found else None


@pytest.fixture
def logs_to_stderr() -> Iterator[None]:
    """CliRunner swaps sys.stdout for the whole process while a command runs, and
    unconfigured structlog prints to the sys.stdout of the moment: the in-process nodes'
    logs would land in the command's output. Send them to stderr for the test."""
    old = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))
    try:
        yield
    finally:
        structlog.configure(**old)
