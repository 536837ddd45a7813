"""Forged messages, for conformance testing only.

`stekker conformance` proves that a member's node refuses what it must refuse
(invariant 6): it publishes a message that claims to come from a roster member, on that
member's subject and with its `Fed-Member` header, but signed with a fresh key that is
in no roster. Nothing else in Stekker should ever call this. It needs raw NATS (the Bus
only publishes what its own identity signs), hence it lives in `mesh/`.
"""

from __future__ import annotations

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.base import Event
from mesh.bus import Bus
from mesh.envelope import H_MSG_ID, seal
from mesh.keys import Identity


async def publish_forged(bus: Bus, event: Event, claimed_member: str) -> str:
    """Publish `event` as if `claimed_member` sent it, signed by a throwaway key.

    Returns the forged message's id, so the caller can look for the
    `security.violation.v1` that reports it.
    """
    impostor = Identity(claimed_member, Ed25519PrivateKey.generate())
    subject = type(event).subject(claimed_member, event.target())
    body = msgspec.json.encode(event)
    headers = seal(impostor, subject, type(event).type_name(), body)
    await bus._retry_js(  # the bus's retry policy for JetStream leader elections
        lambda: bus.js.publish(subject, body, headers=headers, timeout=10.0), bound_s=20.0
    )
    return headers[H_MSG_ID]
