"""Typed KV buckets: msgspec records in, msgspec records out, CAS errors as our own.

Services use these instead of nats-py's KeyValue, so that `mesh/` stays the only package
that imports `nats`, and a lost compare-and-set is a `CasConflict` (retryable).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from mesh.bus import retry_passing
from mesh.direct import MAX_BATCH, direct_batch, header
from mesh.errors import CasConflict, TerminalError
from mesh.observability import logger

T = TypeVar("T")
R = TypeVar("R")
log = logger("mesh.state")
# Reads are retried while JetStream passes through a leader election (a member's server
# just died): they are safe to repeat. Writes are not retried here: a write whose reply
# was lost may have happened, and only the caller knows how to check.
READ_BOUND_S = 20.0
# Keys per batched direct get (nats-server answers at most MAX_BATCH per request).
GET_MANY_CHUNK = MAX_BATCH // 2


async def _read(op: Callable[[], Awaitable[R]]) -> R:
    return await retry_passing(op, bound_s=READ_BOUND_S, max_wait_s=0.5)


@dataclass(frozen=True)
class Entry(Generic[T]):
    key: str
    value: T
    revision: int


class Bucket(Generic[T]):
    def __init__(self, kv: KeyValue, record: type[T]) -> None:
        self.kv = kv
        self.record = record
        self._decoder = msgspec.json.Decoder(record)

    @property
    def name(self) -> str:
        return str(self.kv._name)

    def _decode(self, key: str, raw: bytes | None) -> T:
        try:
            return self._decoder.decode(raw or b"")
        except msgspec.DecodeError as exc:
            raise TerminalError(f"{self.name}/{key}: unreadable record: {exc}") from None

    async def get(self, key: str) -> Entry[T] | None:
        return await _read(lambda: self._get(key))

    async def _get(self, key: str) -> Entry[T] | None:
        try:
            entry = await self.kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        return Entry(key, self._decode(key, entry.value), entry.revision)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry[T]]:
        """The live entries of `keys` (absent ones left out), read by batched direct gets
        (`multi_last`): one request per 512 keys, answered by any replica of the bucket,
        so it neither waits for a leader nor creates a consumer."""
        out: dict[str, Entry[T]] = {}
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), GET_MANY_CHUNK):
            part = wanted[start:start + GET_MANY_CHUNK]
            out.update(await _read(functools.partial(self._get_part, part)))
        return out

    async def _get_part(self, keys: list[str]) -> dict[str, Entry[T]]:
        try:
            return await self._get_batch(keys)
        except nats.errors.NoRespondersError:
            # No replica answers direct gets: a bucket made before they were allowed
            # (mesh.bus.provision), or no server at all. Key by key through the leader.
            found = await asyncio.gather(*(self._get(key) for key in keys))
            return {e.key: e for e in found if e is not None}

    async def _get_batch(self, keys: list[str]) -> dict[str, Entry[T]]:
        prefix = f"$KV.{self.name}."
        out: dict[str, Entry[T]] = {}
        for msg in await direct_batch(self.kv._js, self.kv._stream, {
                "multi_last": [prefix + k for k in keys], "batch": len(keys)}):
            key = header(msg, "Nats-Subject")[len(prefix):]
            if header(msg, "KV-Operation") in ("DEL", "PURGE") or not msg.data:
                continue
            out[key] = Entry(key, self._decode(key, msg.data),
                             int(header(msg, "Nats-Sequence") or 0))
        return out

    async def create(self, key: str, value: T, *, encoded: bytes | None = None) -> int:
        """Create-only: raises CasConflict when the key exists already. `encoded`: the
        value's JSON when the caller has it already."""
        try:
            return int(await self.kv.create(key, encoded or msgspec.json.encode(value)))
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError,
                nats.js.errors.KeyNotFoundError):
            # KeyNotFoundError: nats-py's create, refused because the key exists, reads it
            # to tell a deleted key from a live one; on a cluster that read can come
            # before the rival's write is visible. Either way the key was taken.
            raise CasConflict(f"{self.name}/{key} exists") from None

    async def update(self, key: str, value: T, revision: int) -> int:
        """Write only if the key is still at `revision`; raises CasConflict otherwise."""
        try:
            return int(await self.kv.update(key, msgspec.json.encode(value), last=revision))
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
            raise CasConflict(f"{self.name}/{key} changed since revision {revision}") from None

    async def put(self, key: str, value: T) -> int:
        return int(await self.kv.put(key, msgspec.json.encode(value)))

    async def delete(self, key: str) -> None:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            await self.kv.delete(key)

    async def keys(self, keys: str = ">") -> list[str]:
        return [entry.key for entry in await self.items(keys)]

    async def _stored_keys(self, keys: str = ">") -> set[str]:
        """Every key matching `keys` the bucket's stream holds a message for (live or
        deleted)."""
        prefix = f"$KV.{self.name}."
        info = await self.kv._js.stream_info(self.kv._stream,
                                             subjects_filter=f"{prefix}{keys}")
        return {subject[len(prefix):] for subject in (info.state.subjects or {})}

    async def items(self, keys: str = ">") -> list[Entry[T]]:
        """Every live entry whose key matches `keys`, a NATS subject filter over the keys
        (`*` one token, `>` the rest): `"*"` reads only keys without a dot, `"s1.*"` the
        keys under `s1.`."""
        return await _read(lambda: self._items(keys))

    async def _items(self, keys: str = ">") -> list[Entry[T]]:
        """Every live entry, read through a watcher (one round trip for all keys).

        nats-py's watcher sometimes signals the end of the initial values too early on a
        cluster (about 1 read in 100 came back empty), so the keys it missed, as the
        stream itself lists them, are read one by one.
        """
        expected = await self._stored_keys(keys)
        seen: dict[str, Entry[T] | None] = {}
        watcher = await self.kv.watch(keys)
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial values (or so it says)
                    break
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    seen[entry.key] = None
                elif entry.revision is not None:
                    seen[entry.key] = Entry(entry.key, self._decode(entry.key, entry.value),
                                            entry.revision)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
        for key in expected - seen.keys():
            seen[key] = await self._get(key)
        return sorted((e for e in seen.values() if e is not None), key=lambda e: e.key)

    async def modify(
        self, key: str, change: Callable[[T | None], T | None], *, attempts: int = 20
    ) -> Entry[T] | None:
        """Read, change, write at the read revision; retry when someone else wrote first.

        `change` gets the current value (None if absent) and returns the new one, or None
        to leave the key as it is.
        """
        for _ in range(attempts):
            current = await self.get(key)
            new = change(current.value if current else None)
            if new is None:
                return current
            try:
                if current is None:
                    revision = await self.create(key, new)
                else:
                    revision = await self.update(key, new, current.revision)
            except CasConflict:
                await asyncio.sleep(0)
                continue
            return Entry(key, new, revision)
        raise CasConflict(f"{self.name}/{key}: too many concurrent writers")

    async def watch(
        self, callback: Callable[[Entry[T] | None, str], Awaitable[None]],
        *, on_ready: Callable[[], None] | None = None, keys: str = ">",
        wanted: Callable[[str, int], bool] | None = None,
    ) -> asyncio.Task[None]:
        """Call back on every entry (the initial values, then changes) until cancelled.

        The callback gets (entry, key); entry is None when the key was deleted.
        `on_ready` is called once the watcher says the initial values are through (on a
        cluster it may say so early: later entries still arrive, see `_items`). `keys`
        filters the keys as in `items`. `wanted(key, revision)` False skips an entry
        before its value is decoded (one the caller holds already, e.g. its own write).
        """
        watcher = await self.kv.watch(keys)

        async def _run() -> None:
            try:
                async for entry in watcher:
                    if entry is None:
                        if on_ready is not None:
                            on_ready()
                        continue
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        await callback(None, entry.key)
                        continue
                    if wanted is not None and not wanted(entry.key, entry.revision or 0):
                        continue
                    try:
                        value = self._decode(entry.key, entry.value)
                    except TerminalError as exc:
                        log.warning("skipping unreadable record", error=str(exc))
                        continue
                    await callback(Entry(entry.key, value, entry.revision or 0), entry.key)
            except (asyncio.CancelledError, nats.errors.ConnectionClosedError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()

        return asyncio.create_task(_run(), name=f"watch:{self.name}")


async def bucket(bus: Any, name: str, record: type[T]) -> Bucket[T]:
    return Bucket(await bus.kv(name), record)
