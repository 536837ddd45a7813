"""Batched direct gets: many stored messages in one request, answered by any replica.

A stream with `allow_direct` lets every replica (followers too) answer
`$JS.API.DIRECT.GET.<stream>`; a batch request (`multi_last`, or `next_by_subj` with
`batch`) streams the messages back and ends with a `204 EOB` status. Nothing on this path
waits for the stream's leader or asks the meta leader for a consumer, which is what a
failover needs while the dead member's server leaderships are being elected anew (see
mesh/leaders.py). A follower may be a moment behind: callers use it where stale is safe.
"""

from __future__ import annotations

from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from mesh.bus import JS_TIMEOUT_S

# nats-server answers at most this many messages per batch request.
MAX_BATCH = 1024


class TooManyResults(Exception):
    """More matches than one batch may return (413): ask in smaller parts."""


async def direct_batch(js: Any, stream: str, request: dict[str, Any]) -> list[Msg]:
    """The messages a batch direct get returns, in order; [] when nothing matches.
    Raises NoRespondersError when no replica answers direct gets (the stream does not
    allow them, or no server is there), ServiceUnavailableError for other statuses."""
    nc = js._nc
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    out: list[Msg] = []
    try:
        await nc.publish(f"{js._prefix}.DIRECT.GET.{stream}", msgspec.json.encode(request),
                         reply=inbox)
        while True:
            msg = await sub.next_msg(timeout=JS_TIMEOUT_S)
            status = (msg.headers or {}).get("Status")
            if status in ("204", "404"):  # end of the batch; nothing matched
                return out
            if status == "503":
                raise nats.errors.NoRespondersError
            if status == "413":
                raise TooManyResults(stream)
            if status:
                raise nats.js.errors.ServiceUnavailableError(code=int(status))
            out.append(msg)
    finally:
        try:
            await sub.unsubscribe()
        except nats.errors.Error:
            pass  # the connection is closing: the subscription goes with it


def header(msg: Msg, name: str) -> str:
    return str((msg.headers or {}).get(name, ""))
