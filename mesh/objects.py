"""Blobs in the `fed_data` object store: workload data moved in takeovers, and backups.

Only `mesh` talks to NATS, so the takeover service and the agent put and get data here.
Each blob carries string headers (workload, generation, time, sha256) that index it: a
backup is found again by listing names under a prefix and reading their headers, with
no second store that could disagree with the blobs.

The object store checks its own chunk digest; the sha256 a takeover records is ours and
is checked by the reader against the saga record, so a blob replaced under the same name
(a corrupted or tampered transfer) is caught even though the store sees nothing wrong.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from nats.js.api import ObjectMeta
from nats.js.errors import NotFoundError, ObjectNotFoundError

from mesh.errors import RetryableError


class BlobMissing(RetryableError):
    """No blob of that name (not written yet, or pruned): another source may have it."""


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    headers: dict[str, str] = field(default_factory=dict)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _headers(raw: Any) -> dict[str, str]:
    headers = getattr(raw, "headers", None) or {}
    # nats-py keeps header values as lists when read back from the server.
    return {str(k): str(v[0] if isinstance(v, list) and v else v) for k, v in headers.items()}


async def put_blob(bus: Any, name: str, data: bytes, headers: dict[str, str]) -> BlobInfo:
    """Store `data` under `name` (replacing any blob of that name)."""
    store = await bus.objects()
    info = await store.put(name, data, meta=ObjectMeta(name=name, headers=dict(headers)))
    return BlobInfo(name=name, size=int(info.size or 0), headers=dict(headers))


async def get_blob(bus: Any, name: str) -> tuple[bytes, dict[str, str]]:
    """The blob's bytes and headers; BlobMissing when there is none."""
    store = await bus.objects()
    try:
        result = await store.get(name)
    except (ObjectNotFoundError, NotFoundError):
        raise BlobMissing(f"no object {name!r} in the data store") from None
    return bytes(result.data or b""), _headers(result.info)


async def list_blobs(bus: Any, prefix: str) -> list[BlobInfo]:
    """Every live blob whose name starts with `prefix`, by name."""
    store = await bus.objects()
    try:
        infos = await store.list(ignore_deletes=True)
    except (ObjectNotFoundError, NotFoundError):
        return []  # an empty store answers "not found"
    found = [BlobInfo(name=i.name, size=int(i.size or 0), headers=_headers(i))
             for i in infos if i.name and i.name.startswith(prefix) and not i.deleted]
    return sorted(found, key=lambda b: b.name)


async def delete_blob(bus: Any, name: str) -> None:
    """Delete a blob; idempotent."""
    store = await bus.objects()
    try:
        await store.delete(name)
    except (ObjectNotFoundError, NotFoundError):
        return
