"""Moving a workload's data for a takeover: export into `fed_data`, fetch and verify.

The source exports to `takeover/<saga>/<workload>/<attempt>` and records the sha256 in
the saga; the successor fetches the blob and checks it against the *recorded* digest
before it imports anything. A backup is used the same way, with the digest its index
recorded when it was taken.
"""

from __future__ import annotations

from typing import Any

from contracts.workload import WorkloadSpec
from mesh.objects import get_blob, put_blob, sha256_hex
from services.agent.drivers.base import Driver
from services.takeover.errors import DigestMismatch


def transfer_name(saga: str, workload: str, attempt: int) -> str:
    return f"takeover/{saga}/{workload}/{attempt}"


async def export_to_store(
    bus: Any, driver: Driver, spec: WorkloadSpec, *, saga: str, attempt: int
) -> tuple[str, str, int]:
    """Export `spec`'s data from `driver` into the store: (object name, sha256, size)."""
    data = await driver.export(spec.id, spec)
    name = transfer_name(saga, spec.id, attempt)
    digest = sha256_hex(data)
    await put_blob(bus, name, data, {"Stekker-Workload": spec.id, "Stekker-Saga": saga,
                                     "Stekker-Sha256": digest})
    return name, digest, len(data)


async def fetch_verified(bus: Any, name: str, digest: str) -> bytes:
    """The blob's bytes, if their sha256 is `digest`; else DigestMismatch."""
    data, _ = await get_blob(bus, name)
    actual = sha256_hex(data)
    if actual != digest:
        raise DigestMismatch(name, digest, actual)
    return data
