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

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.errors import DigestMismatchError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from mesh.direct import MAX_BATCH, TooManyResults, direct_batch, header
from mesh.errors import RetryableError, TerminalError

__all__ = ["BlobInfo", "BlobMissing", "DigestMismatchError", "delete_blob", "get_blob",
           "list_blobs", "put_blob", "sha256_hex"]


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


async def get_blob(bus: Any, name: str, *, followers: bool = False,
                   ) -> tuple[bytes, dict[str, str]]:
    """The blob's bytes and headers; BlobMissing when there is none.

    `followers`: read by direct gets (mesh/direct.py), which any replica answers, so a
    restore right after a member's server died does not wait for the consumer the meta
    leader would have to create. A follower may lack a blob written a moment ago, so
    only a reader that can do with an older one (a backup) asks them. Falls back to the
    object store's own reader when direct gets are off."""
    store = await bus.objects()
    if followers:
        try:
            return await _get_direct(store, name)
        except (nats.errors.NoRespondersError, TooManyResults):
            pass
    try:
        result = await store.get(name)
    except (ObjectNotFoundError, NotFoundError):
        raise BlobMissing(f"no object {name!r} in the data store") from None
    return bytes(result.data or b""), _headers(result.info)


def _meta_subject(store: ObjectStore, name: str) -> str:
    return f"$O.{store._name}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def _info(msg: Msg) -> ObjectInfo:
    try:
        return ObjectInfo.from_response(json.loads(msg.data))
    except Exception as exc:
        raise TerminalError(f"unreadable object meta {header(msg, 'Nats-Subject')}: "
                            f"{exc}") from None


async def _get_direct(store: ObjectStore, name: str) -> tuple[bytes, dict[str, str]]:
    metas = await direct_batch(store._js, store._stream, {
        "multi_last": [_meta_subject(store, name)], "batch": 1})
    info = _info(metas[0]) if metas else None
    if info is None or info.deleted or not info.nuid:
        raise BlobMissing(f"no object {name!r} in the data store")
    want = int(info.chunks or 0)
    chunks: list[bytes] = []
    seq = 0
    while len(chunks) < want:
        got = await direct_batch(store._js, store._stream, {
            "seq": seq, "next_by_subj": f"$O.{store._name}.C.{info.nuid}",
            "batch": min(MAX_BATCH, want - len(chunks))})
        if not got:
            raise BlobMissing(f"object {name!r}: chunks missing from the data store")
        chunks += [m.data for m in got]
        seq = int(header(got[-1], "Nats-Sequence")) + 1
    data = b"".join(chunks)
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    if info.digest and info.digest.split("=", 1)[-1] != digest:
        raise DigestMismatchError
    return data, _headers(info)


async def list_blobs(bus: Any, prefix: str, *, followers: bool = False) -> list[BlobInfo]:
    """Every live blob whose name starts with `prefix`, by name. `followers`: as for
    `get_blob` (direct gets of every object's meta; the store's own watcher when there
    are too many for one batch)."""
    store = await bus.objects()
    infos: list[ObjectInfo] | None = None
    if followers:
        try:
            infos = [_info(m) for m in await direct_batch(store._js, store._stream, {
                "multi_last": [f"$O.{store._name}.M.>"], "batch": MAX_BATCH})]
        except (nats.errors.NoRespondersError, TooManyResults):
            infos = None
    if infos is None:
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
