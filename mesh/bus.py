"""The federation bus: signed publishing, verified consuming, KV and object state.

This is the only module (with the rest of `mesh/`) that speaks NATS. Services get a
`Bus` and see decoded, verified events; a message that fails verification never reaches
them: it is acked away and reported as a `security.violation.v1` (invariant 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from opentelemetry import trace
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from contracts.base import Event
from contracts.security import SecurityViolation
from mesh import layout
from mesh.compat import NatsServerTooOld, parse_version, require_nats_server
from mesh.envelope import H_MEMBER, H_MSG_ID, H_SIG, H_TYPE, Envelope, open_message, seal
from mesh.errors import ConfigError, NotConnected, Rejected, RetryableError, TerminalError
from mesh.keys import Identity
from mesh.observability import extract, inject, logger, tracer
from mesh.replay import SeenMessages
from mesh.trust import TrustStore

Handler = Callable[[Event, Envelope], Awaitable[None]]
# A batch handler gets every verified message of one fetch and answers, per message and
# in the same order, None (done: ack) or the exception that message failed with.
BatchHandler = Callable[[list[tuple[Event, Envelope]]], Awaitable[list[Exception | None]]]
# Sees a message's subject and raw body before its signature is checked; False means this
# consumer has nothing to do with it, so it is acked unverified and never acted on.
Relevance = Callable[[str, bytes], bool]
R = TypeVar("R")
log = logger("mesh.bus")

# JetStream API errors that pass while a cluster elects leaders or a peer comes back:
# no suitable peers for placement (10005), cluster not available (10008), stream offline.
_PASSING_JS_CODES = frozenset({10005, 10008, 10118})
JS_TIMEOUT_S = 2.0


def passing_js_error(exc: BaseException) -> bool:
    """True for JetStream errors that pass by themselves (timeouts, leader elections)."""
    # NoStreamResponseError: a publish nobody stored (no stream leader at that moment).
    if isinstance(exc, (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                        nats.js.errors.NoStreamResponseError,
                        nats.js.errors.ServiceUnavailableError, nats.js.errors.ServerError)):
        return True
    # Not every APIError subclass sets err_code (KeyNotFoundError does not).
    return (isinstance(exc, nats.js.errors.APIError)
            and getattr(exc, "err_code", None) in _PASSING_JS_CODES)


@dataclass
class Consumer:
    """A running consume loop; `stop()` ends it."""

    name: str
    task: asyncio.Task[None]
    handled: int = 0
    rejected: int = 0
    errors: int = 0
    skipped: int = 0  # not relevant to this consumer: acked unverified, never acted on
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def stats(self) -> dict[str, int]:
        return {"handled": self.handled, "rejected": self.rejected, "errors": self.errors,
                "skipped": self.skipped}

    async def stop(self) -> None:
        self.stopping.set()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


async def retry_passing(
    op: Callable[[], Awaitable[R]], *, bound_s: float = 30.0, max_wait_s: float = 1.0
) -> R:
    """Run `op`, again while JetStream answers 'no responders', timeouts or other errors
    that pass while a cluster elects its leaders; give up after `bound_s`.

    The first attempt runs on its own: it almost always succeeds, and setting up the
    retrying machinery for every publish and KV write cost an eighth of a publisher's
    CPU.
    """
    started = time.monotonic()
    try:
        return await op()
    except Exception as exc:
        if not passing_js_error(exc):
            raise
    await asyncio.sleep(0.05)  # as tenacity would have waited before its second attempt
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(max(0.0, bound_s - (time.monotonic() - started))),
        wait=wait_exponential(multiplier=0.05, max=max_wait_s),
        retry=retry_if_exception(passing_js_error),
        reraise=True,
    ):
        with attempt:
            return await op()
    raise AssertionError("unreachable")  # pragma: no cover - it returns or raises


@dataclass(frozen=True)
class StoredMessage:
    """One message as the stream holds it, unverified: for readers that verify it
    themselves against another trust than the roster in force (`stekker audit verify`)."""

    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes
    stored: dt.datetime


def consumer_health(consumer: Consumer | None) -> dict[str, Any]:
    """The part of a service's `health()` that its main consumer answers for."""
    if consumer is None:
        return {"state": "starting", "handled": 0, "rejected": 0, "errors": 0}
    return {"state": "running", **consumer.stats()}


# How often `read_stream` asks again when a fetch finds its consumer without a leader.
READ_UNAVAILABLE_RETRIES = 10


class Bus:
    def __init__(
        self,
        nc: NATS,
        *,
        identity: Identity | None,
        trust: TrustStore,
        service: str = "",
    ) -> None:
        self.nc = nc
        # A short API timeout, retried: a request that went to a stream whose leader just
        # died is asked again soon after the new leader is elected, not after 5 s.
        self.js: JetStreamContext = nc.jetstream(timeout=JS_TIMEOUT_S)
        self.identity = identity
        self.trust = trust
        self.service = service
        self._kv: dict[str, KeyValue] = {}
        self._consumers: list[Consumer] = []
        self._subs: list[Any] = []
        # Shared by every consumer of this connection (DESIGN §4: replay protection).
        self.seen = SeenMessages()

    # -- connection -------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        servers: Sequence[str],
        *,
        identity: Identity | None = None,
        trust: TrustStore | None = None,
        service: str = "",
        name: str = "stekker",
        connect_timeout_s: float = 20.0,
        reconnect: bool = True,
        user: str | None = None,
        password: str | None = None,
        nkey_file: Path | None = None,
    ) -> Bus:
        """Connect with retries (tenacity); raises NotConnected after the bound.

        `nkey_file`: a user's nkey seed from `stekker deploy nats-config` (the server's
        nonce is signed with it); `user`/`password` for servers configured by hand; none
        of them connects without credentials (the open servers of a plain `stekker up`).
        """
        if nkey_file is not None and not os.path.isfile(nkey_file):  # noqa: ASYNC240 - one stat
            raise ConfigError(f"NATS nkey seed {nkey_file}: no such file")

        errors: list[str] = []

        async def _error_cb(exc: Exception) -> None:
            errors.append(str(exc) or type(exc).__name__)
            log.debug("nats error", error=errors[-1])

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(connect_timeout_s),
                wait=wait_exponential(multiplier=0.1, max=2.0),
                retry=retry_if_exception_type((OSError, nats.errors.Error, TimeoutError)),
                reraise=True,
            ):
                with attempt:
                    # nats-py's own reconnect loop also governs the first connect and never
                    # gives up with unlimited attempts: bound each attempt ourselves.
                    nc = await asyncio.wait_for(
                        nats.connect(
                            servers=list(servers),
                            name=name,
                            connect_timeout=2,
                            allow_reconnect=reconnect,
                            max_reconnect_attempts=-1 if reconnect else 0,
                            reconnect_time_wait=0.5,
                            error_cb=_error_cb,
                            user=user,
                            password=password,
                            nkeys_seed=str(nkey_file) if nkey_file else None,
                        ),
                        timeout=min(5.0, connect_timeout_s),
                    )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            why = errors[-1] if errors else (str(exc) or type(exc).__name__)
            raise NotConnected(f"cannot reach NATS at {', '.join(servers)}: {why}") from None
        try:
            where = nc.connected_url.netloc if nc.connected_url else ", ".join(servers)
            require_nats_server(parse_version(str(nc.connected_server_version)),
                                f"the NATS server at {where}")
        except NatsServerTooOld:
            await nc.close()
            raise
        return cls(nc, identity=identity, trust=trust or TrustStore(), service=service)

    async def close(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        self._consumers.clear()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        # Everything published was acked by JetStream already: a plain close loses nothing,
        # where a drain would wait on the pull subscriptions' pending fetches.
        with contextlib.suppress(Exception):
            await self.nc.close()

    @property
    def member(self) -> str:
        if self.identity is None:
            raise TerminalError("this connection has no member identity to sign with")
        return self.identity.member

    # -- state layout -----------------------------------------------------------------

    async def provision(self, replicas: int) -> None:
        """Create the streams, buckets and object store of DESIGN §5 if absent."""
        replicas = max(1, min(3, replicas))
        for spec in layout.STREAMS:
            config = StreamConfig(
                name=spec.name,
                description=spec.description,
                subjects=spec.subjects,
                storage=StorageType.FILE,
                num_replicas=replicas,
                max_age=spec.max_age_s,
                max_msgs_per_subject=spec.max_msgs_per_subject,
                deny_delete=spec.append_only,
                deny_purge=spec.append_only,
                duplicate_window=spec.duplicate_window_s,
                allow_direct=True,
            )
            await self._retry_js(functools.partial(self._ensure_stream, config))
        for bucket in layout.BUCKETS:
            kv_config = KeyValueConfig(
                bucket=bucket.name,
                description=bucket.description,
                history=bucket.history,
                replicas=replicas,
                storage=StorageType.FILE,
                # Every replica may answer direct gets: `Bucket.get_many` reads from
                # followers while a dead server's leaderships are being elected anew.
                direct=True,
            )
            await self._retry_js(functools.partial(self._ensure_bucket, kv_config))
        obj_config = ObjectStoreConfig(
            bucket=layout.OBJ_DATA, replicas=replicas, storage=StorageType.FILE
        )
        await self._retry_js(lambda: self._ensure_objects(obj_config))

    async def _ensure_bucket(self, config: KeyValueConfig) -> None:
        # An existing bucket is left as it is, whatever replicas it was made with.
        try:
            await self.js.key_value(config.bucket)
        except nats.js.errors.BucketNotFoundError:
            await self.js.create_key_value(config=config)

    async def _ensure_objects(self, config: ObjectStoreConfig) -> None:
        try:
            await self.js.object_store(config.bucket or "")
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
            await self.js.create_object_store(config.bucket or layout.OBJ_DATA, config=config)

    async def _ensure_stream(self, config: StreamConfig) -> None:
        try:
            await self.js.stream_info(config.name or "")
        except nats.js.errors.NotFoundError:
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError as refused:
                # Created by another process at the same moment; if not, the refusal
                # stands (e.g. peers not current yet: passing, so retried).
                try:
                    await self.js.stream_info(config.name or "")
                except nats.js.errors.NotFoundError:
                    raise refused from None

    async def _retry_js(self, op: Callable[[], Awaitable[Any]], bound_s: float = 30.0) -> Any:
        return await retry_passing(op, bound_s=bound_s)

    async def kv(self, bucket: str) -> KeyValue:
        if bucket not in self._kv:
            kv = await self._retry_js(lambda: self.js.key_value(bucket))
            # One key is read through the leader, never a follower that may not have the
            # write just acknowledged: every read-CAS-retry loop relies on reading its own
            # writes. Only `Bucket.get_many` asks the followers, where stale is safe.
            kv._direct = False
            self._kv[bucket] = kv
        return self._kv[bucket]

    async def objects(self) -> ObjectStore:
        store: ObjectStore = await self._retry_js(lambda: self.js.object_store(layout.OBJ_DATA))
        return store

    # -- publishing -------------------------------------------------------------------

    async def publish(
        self, event: Event, *, msg_id: str | None = None, timeout: float = 10.0,
        extra_headers: Mapping[str, str] | None = None,
    ) -> int:
        """Sign and publish to JetStream; returns the stream sequence. Retries briefly.

        `extra_headers` ride along unsigned (e.g. a bearer's `Fed-Token`, itself signed);
        they cannot replace the envelope's own headers.
        """
        if self.identity is None:
            raise TerminalError("cannot publish without a member identity")
        type_name = type(event).type_name()
        subject = type(event).subject(self.identity.member, event.target())
        body = msgspec.json.encode(event)
        headers = {**(extra_headers or {}),
                   **seal(self.identity, subject, type_name, body, msg_id=msg_id)}
        # A producer span per message; its context rides in `traceparent`, so the consumer's
        # span (and whatever that publishes in turn) joins the same trace.
        with tracer().start_as_current_span(
            f"publish {type_name}", kind=trace.SpanKind.PRODUCER
        ) as span:
            span.set_attribute("messaging.destination", subject)
            span.set_attribute("messaging.message.id", headers["Nats-Msg-Id"])
            inject(headers)
            ack = await self._retry_js(
                lambda: self.js.publish(subject, body, headers=headers, timeout=timeout),
                bound_s=timeout * 2,
            )
        return int(ack.seq)

    # -- consuming --------------------------------------------------------------------

    async def consume(
        self,
        handler: Handler,
        *,
        subjects: Sequence[str],
        durable: str | None,
        stream: str = layout.FED,
        deliver: str = "all",
        window_s: float | None = None,
        max_deliver: int = -1,
        ack_wait_s: float = 30.0,
        batch: int = 64,
        concurrency: int = 1,
        relevant: Relevance | None = None,
        batch_handler: BatchHandler | None = None,
    ) -> Consumer:
        """A pull consumer on `stream` filtered to `subjects`.

        A shared `durable` name gives queue semantics across processes (one scheduler in
        the federation handles each submission); `durable=None` is an ephemeral reader.
        `window_s` is the replay window between Fed-Time and the time the stream stored the
        message; None keeps the default of the envelope module. `max_deliver` is unlimited
        by default: a decision the federation must take (a placement, a failover) is never
        dropped because the cluster was electing leaders for a while; refused and
        terminally failed messages are termed explicitly instead.

        Throughput: `concurrency` > 1 handles up to that many messages of one fetch at
        once (the handler must then be safe to run concurrently, e.g. lock per key);
        `relevant` lets a consumer skip, unverified, what it would ignore anyway (the
        signature check is most of the cost of a message); `batch_handler` replaces
        `handler` and gets each fetch's verified messages together (the scheduler decides
        a batch against one snapshot and commits it in few writes).
        """
        config = ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.NEW if deliver == "new" else DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
            filter_subjects=list(subjects) if len(subjects) > 1 else None,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            inactive_threshold=None if durable else 60.0,
            max_ack_pending=1024,
        )
        info = await self._retry_js(lambda: self.js.add_consumer(stream, config))
        psub = await self.js.pull_subscribe_bind(
            durable=info.name, stream=stream, pending_msgs_limit=4096
        )
        name = durable or info.name
        consumer = Consumer(name=name, task=asyncio.current_task())  # type: ignore[arg-type]
        consumer.task = asyncio.create_task(
            self._pull_loop(consumer, psub, handler, batch, window_s,
                            concurrency=concurrency, relevant=relevant,
                            batch_handler=batch_handler),
            name=f"consume:{name}",
        )
        self._consumers.append(consumer)
        return consumer

    async def _pull_loop(
        self, consumer: Consumer, psub: Any, handler: Handler, batch: int,
        window_s: float | None, *, concurrency: int = 1, relevant: Relevance | None = None,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(msg: Msg) -> None:
            async with gate:
                await self._dispatch(consumer, msg, handler, window_s)

        while not consumer.stopping.is_set():
            try:
                msgs = await psub.fetch(batch=batch, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection trouble: wait and go on
                log.warning("fetch failed", consumer=consumer.name, error=str(exc))
                await asyncio.sleep(0.5)
                continue
            try:
                if relevant is not None:
                    msgs = await self._skip_irrelevant(consumer, msgs, relevant)
                if batch_handler is not None:
                    await self._dispatch_batch(consumer, msgs, batch_handler, window_s)
                elif concurrency > 1 and len(msgs) > 1:
                    await asyncio.gather(*(one(msg) for msg in msgs))
                else:
                    for msg in msgs:
                        await self._dispatch(consumer, msg, handler, window_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the loop: what is unsettled
                # comes again after the ack wait
                consumer.errors += 1
                log.exception("dispatch failed", consumer=consumer.name)

    async def _skip_irrelevant(
        self, consumer: Consumer, msgs: list[Msg], relevant: Relevance
    ) -> list[Msg]:
        keep = []
        for msg in msgs:
            try:
                wanted = relevant(msg.subject, msg.data)
            except Exception:  # unreadable: let verification refuse and report it
                wanted = True
            if wanted:
                keep.append(msg)
            else:
                consumer.skipped += 1
                await _settle(msg.ack())
        return keep

    def _admit(self, msg: Msg, window_s: float | None) -> tuple[Event, Envelope]:
        """Verify one delivered message; raises Rejected (a forgery, a replay, ...)."""
        stored = msg.metadata.timestamp if msg.metadata else None
        received = stored or dt.datetime.now(dt.UTC)
        seq = msg.metadata.sequence.stream if msg.metadata else None
        event, envelope = self.verify(msg.subject, msg.headers, msg.data, received,
                                      seq, window_s)
        stream = msg.metadata.stream if msg.metadata else ""
        if self.seen.is_replay(envelope.headers[H_SIG], f"{stream}:{seq}", time.monotonic()):
            raise Rejected("replayed", f"{envelope.msg_id} was stored before at another "
                           "position")
        return event, envelope

    async def _refuse(self, consumer: Consumer, msg: Msg, rejected: Rejected) -> None:
        consumer.rejected += 1
        await self.report_violation(rejected, msg.subject, msg.headers or {})
        await _settle(msg.term())

    async def _dispatch_batch(
        self, consumer: Consumer, msgs: list[Msg], handler: BatchHandler,
        window_s: float | None,
    ) -> None:
        admitted: list[tuple[Msg, Event, Envelope]] = []
        for msg in msgs:
            try:
                event, envelope = self._admit(msg, window_s)
            except Rejected as rejected:
                await self._refuse(consumer, msg, rejected)
                continue
            admitted.append((msg, event, envelope))
        if not admitted:
            return
        # One span for the batch, linked to each message's producer span.
        links = [trace.Link(trace.get_current_span(extract(env.headers)).get_span_context())
                 for _, _, env in admitted]
        with tracer().start_as_current_span(
            f"consume batch {consumer.name}", kind=trace.SpanKind.CONSUMER, links=links
        ) as span:
            span.set_attribute("stekker.consumer", consumer.name)
            span.set_attribute("messaging.batch.message_count", len(admitted))
            try:
                outcomes = await handler([(event, env) for _, event, env in admitted])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the whole batch failed the same way
                outcomes = [exc] * len(admitted)
        for (msg, _, _), outcome in zip(admitted, outcomes, strict=True):
            if outcome is None:
                consumer.handled += 1
                await _settle(msg.ack())
            else:
                consumer.errors += 1
                await self._settle_failure(consumer, msg, outcome)

    async def _dispatch(
        self, consumer: Consumer, msg: Msg, handler: Handler, window_s: float | None
    ) -> None:
        try:
            event, envelope = self._admit(msg, window_s)
        except Rejected as rejected:
            await self._refuse(consumer, msg, rejected)
            return
        span_name = f"consume {envelope.type_name}"
        with tracer().start_as_current_span(
            span_name, context=extract(envelope.headers), kind=trace.SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.destination", msg.subject)
            span.set_attribute("stekker.consumer", consumer.name)
            try:
                await handler(event, envelope)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                consumer.errors += 1
                await self._settle_failure(consumer, msg, exc)
                return
        consumer.handled += 1
        await _settle(msg.ack())

    async def _settle_failure(self, consumer: Consumer, msg: Msg, exc: Exception) -> None:
        """Retryable (ours, or JetStream passing by, like a leader election): nak with a
        growing delay. Terminal: term. Anything else is a bug: log it whole, nak."""
        if isinstance(exc, RetryableError) or passing_js_error(exc):
            delivered = msg.metadata.num_delivered if msg.metadata else 1
            delay = min(2.0 ** (delivered or 1) * 0.1, 5.0)
            log.info("retrying later", consumer=consumer.name, error=str(exc) or repr(exc),
                     delay=delay)
            await _settle(msg.nak(delay=delay))
        elif isinstance(exc, TerminalError):
            log.warning("refused", consumer=consumer.name, subject=msg.subject, error=str(exc))
            await _settle(msg.term())
        else:
            log.error("handler failed", consumer=consumer.name, subject=msg.subject,
                      exc_info=exc)
            await _settle(msg.nak(delay=1.0))

    def verify(
        self,
        subject: str,
        headers: dict[str, str] | None,
        body: bytes,
        received: dt.datetime,
        seq: int | None = None,
        window_s: float | None = None,
    ) -> tuple[Event, Envelope]:
        kwargs: dict[str, Any] = {}
        if window_s is not None:
            kwargs["window_s"] = window_s if window_s > 0 else None
        return open_message(subject, headers, body, self.trust, received=received,
                            stream_seq=seq, **kwargs)

    async def last_event(
        self, subject: str, *, stream: str = layout.FED
    ) -> tuple[Event, Envelope] | None:
        """The newest stored message on `subject`, verified; None if none or refused.

        Verification skips the replay window: an old message read back is not a replay.
        """
        try:
            raw = await self.js.get_last_msg(stream, subject)
        except (nats.js.errors.NotFoundError, nats.errors.TimeoutError):
            return None
        received = raw.time if isinstance(raw.time, dt.datetime) else dt.datetime.now(dt.UTC)
        try:
            return self.verify(raw.subject or subject, dict(raw.headers or {}), raw.data or b"",
                               received, raw.seq, window_s=0)
        except Rejected:
            return None

    async def read_stream(
        self, stream: str = layout.FED, *, start_seq: int = 1, batch: int = 256
    ) -> AsyncIterator[StoredMessage]:
        """Every message of `stream` from `start_seq` up to the last one stored when the
        read began, in order, unverified. An ephemeral consumer without acks: reading
        changes nothing in the stream and leaves no consumer behind."""
        info = await self._retry_js(lambda: self.js.stream_info(stream))
        last = int(info.state.last_seq or 0)
        if last < max(1, start_seq):
            return
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_seq),
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        )
        created = await self._retry_js(lambda: self.js.add_consumer(stream, config))
        psub = await self.js.pull_subscribe_bind(durable=created.name, stream=stream,
                                                 pending_msgs_limit=batch * 4)
        try:
            seq = 0
            unavailable = 0
            while seq < last:
                try:
                    msgs = await psub.fetch(batch=batch, timeout=2.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    # Nothing more came: the rest were deleted by retention (not in FED).
                    break
                except nats.js.errors.ServiceUnavailableError:
                    # 503: the new consumer's replicas have no leader yet (seen on a
                    # loaded 3-server cluster right after its creation). Ask again, bounded.
                    unavailable += 1
                    if unavailable > READ_UNAVAILABLE_RETRIES:
                        raise
                    await asyncio.sleep(0.1 * unavailable)
                    continue
                for msg in msgs:
                    meta = msg.metadata
                    seq = meta.sequence.stream
                    if seq > last:
                        break
                    yield StoredMessage(seq=seq, subject=msg.subject,
                                        headers=dict(msg.headers or {}), data=msg.data,
                                        stored=meta.timestamp or dt.datetime.now(dt.UTC))
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(stream, created.name)

    async def subscribe(self, subject: str, handler: Handler) -> None:
        """A core (non-durable) subscription: every process sees every message live.

        For fast signals every node must see, like heartbeats. Verified like the rest.
        """

        async def _on_msg(msg: Msg) -> None:
            try:
                event, envelope = self.verify(
                    msg.subject, msg.headers, msg.data, dt.datetime.now(dt.UTC)
                )
            except Rejected as rejected:
                await self.report_violation(rejected, msg.subject, msg.headers or {})
                return
            try:
                await handler(event, envelope)
            except Exception:
                log.exception("handler failed", subject=msg.subject)

        self._subs.append(await self.nc.subscribe(subject, cb=_on_msg))

    async def report_violation(
        self, rejected: Rejected, subject: str, headers: dict[str, str]
    ) -> None:
        """Record a refused message as a signed `security.violation.v1` (invariant 6)."""
        log.warning("rejected message", reason=rejected.reason, subject=subject,
                    detail=rejected.detail, claimed_member=headers.get(H_MEMBER))
        if self.identity is None or not self.trust.is_member(self.identity.member):
            return
        offending = headers.get(H_MSG_ID)
        violation = SecurityViolation(
            reason=rejected.reason,
            detail=rejected.detail[:500],
            offending_subject=subject[:250],
            claimed_member=headers.get(H_MEMBER),
            claimed_type=headers.get(H_TYPE),
            msg_id=offending,
            service=self.service,
        )
        # One report per offending message and reporter, even if several consumers saw it.
        msg_id = f"violation-{self.identity.member}-{offending}" if offending else None
        try:
            await self.publish(violation, msg_id=msg_id)
        except Exception as exc:
            log.error("could not report violation", error=str(exc))


async def _settle(ack: Awaitable[Any]) -> None:
    """Acks can fail when the connection drops; the message is then redelivered."""
    with contextlib.suppress(Exception):
        await ack
