"""Where services check bearer tokens: one call at each request path that needs a role.

Only when the node runs with `require_tokens` (NodeSettings, `stekker node
--require-tokens`). A refusal is reported like any refused message, as a
`security.violation.v1` with the `token_...` reason, and the request is dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from mesh.envelope import Envelope
from mesh.errors import Rejected
from mesh.observability import logger
from mesh.runtime import NodeContext
from services.iam.tokens import authorize

log = logger("services.iam.enforcement")


async def refused_by_token(ctx: NodeContext, env: Envelope, roles: Collection[str]) -> bool:
    """True (and reported) when the request in `env` lacks a token allowing it."""
    if not ctx.settings.require_tokens:
        return False
    # The token must have been valid when the bus took the request, not when a (possibly
    # redelivering) consumer gets round to it.
    now = env.received or dt.datetime.now(dt.UTC)
    try:
        authorize(env.headers, ctx.trust, publisher=env.member, roles=roles, now=now)
    except Rejected as rejected:
        log.warning("request refused: token", reason=rejected.reason, subject=env.subject)
        await ctx.bus.report_violation(rejected, env.subject, env.headers)
        return True
    return False
