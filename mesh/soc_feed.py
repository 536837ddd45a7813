"""The SOC feed on JetStream: publishing CloudEvents and reading them back.

CloudEvents on the `SOC` stream are plain structured JSON, not signed envelopes: their
authenticity rests on the signed FED event whose message id they carry as their `id`
(and whose FED sequence they carry as `stekkerseq`). A SOC that must be sure re-reads
that FED message and verifies it against the roster (`Bus.last_event` / `Bus.verify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.catalog import SOC_SUBJECTS, soc_subject
from mesh import layout
from mesh.bus import Bus
from mesh.envelope import H_MSG_ID
from mesh.errors import NotConnected
from mesh.observability import logger

log = logger("mesh.soc_feed")
CONTENT_TYPE = "application/cloudevents+json"
UNAVAILABLE_RETRIES = 50
UNAVAILABLE_WAIT_S = 0.1


async def publish_cloudevent(bus: Bus, subject: str, body: bytes, msg_id: str) -> int:
    """Publish one structured CloudEvent to SOC; returns its stream sequence.

    `msg_id` (`soc-<FED msg id>`) lets JetStream drop a second copy of the same
    conversion, e.g. when a soc service died after publishing but before acking FED.
    """
    if not subject.startswith("soc."):
        raise ValueError(f"{subject} is not a SOC subject")
    headers = {H_MSG_ID: msg_id, "Content-Type": CONTENT_TYPE}
    ack = await bus._retry_js(  # the bus's retry policy for JetStream leader elections
        lambda: bus.js.publish(subject, body, headers=headers, timeout=10.0), bound_s=20.0
    )
    return int(ack.seq)


def _subjects(severities: Sequence[str] | None) -> list[str]:
    if not severities:
        return list(SOC_SUBJECTS)
    return [soc_subject(level, "*") for level in severities]


async def tail(
    bus: Bus,
    *,
    follow: bool = False,
    severities: Sequence[str] | None = None,
    last: int | None = None,
    fetch_timeout_s: float = 1.0,
) -> AsyncIterator[dict[str, Any]]:
    """CloudEvents on SOC, oldest first, as JSON objects.

    `severities`: the subject levels to read (None: all); the caller turns a minimum
    into the list, since the scale belongs to the soc service. `last`: only the newest N
    of what is stored. `follow`: after the stored ones, wait for new ones until the
    caller stops iterating (Ctrl-C). Uses an ephemeral, unacknowledged pull consumer
    that the server forgets soon after we leave.
    """
    subjects = _subjects(severities)
    deliver: dict[str, Any] = {"deliver_policy": DeliverPolicy.ALL}
    if last is not None and not severities:
        # Without a filter the newest N are exactly the stream's last N sequences.
        info = await bus._retry_js(lambda: bus.js.stream_info(layout.SOC))
        start = max(1, info.state.first_seq, info.state.last_seq - max(last, 0) + 1)
        deliver = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start}
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        filter_subjects=subjects if len(subjects) > 1 else None,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        inactive_threshold=30.0,
        mem_storage=True,
        **deliver,
    )
    info = await bus._retry_js(lambda: bus.js.add_consumer(layout.SOC, config))
    psub = await bus.js.pull_subscribe_bind(durable=info.name, stream=layout.SOC)
    # With a severity filter the newest N are only known at the end of the backlog.
    backlog: deque[dict[str, Any]] | None = None
    if last is not None and severities:
        backlog = deque(maxlen=max(last, 0))
    caught_up = info.num_pending == 0
    unavailable = 0
    try:
        while True:
            if caught_up:
                if backlog is not None:
                    while backlog:
                        yield backlog.popleft()
                    backlog = None
                if not follow:
                    return
            try:
                msgs = await psub.fetch(batch=256, timeout=fetch_timeout_s)
            except (nats.errors.TimeoutError, TimeoutError):
                # Nothing came: whatever was pending has been read.
                caught_up = True
                continue
            except nats.js.errors.ServiceUnavailableError:
                # The consumer was just made and its stream's cluster is still settling
                # (503 to the pull request): ask again, for a while.
                unavailable += 1
                if unavailable > UNAVAILABLE_RETRIES:
                    raise NotConnected("the SOC stream does not answer (503); try again "
                                       "in a moment") from None
                await asyncio.sleep(UNAVAILABLE_WAIT_S)
                continue
            unavailable = 0
            for msg in msgs:
                if msg.metadata is not None and msg.metadata.num_pending == 0:
                    caught_up = True
                event = _decode(msg.data, msg.subject)
                if event is None:
                    continue
                if backlog is not None:
                    backlog.append(event)
                else:
                    yield event
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
        with contextlib.suppress(Exception):
            await bus.js.delete_consumer(layout.SOC, info.name)


def _decode(body: bytes, subject: str) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        log.warning("skipping a non-JSON message on SOC", subject=subject)
        return None
    if not isinstance(value, dict):
        log.warning("skipping a non-object message on SOC", subject=subject)
        return None
    return value
