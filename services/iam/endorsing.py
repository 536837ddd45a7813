"""Filing admission requests and endorsing roster changes on the bus (the CLI's side).

A proposal lives in KV `fed_decisions/roster-proposal.<member>` so that every endorser
signs the same body; each endorser recomputes it from the verified roster in force and
signs only when it matches (`changes.check_proposal`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from contracts.iam import (
    AdmissionRequested,
    KeyRotation,
    RosterChange,
    RosterChangeEndorsed,
    RosterProposal,
)
from mesh import layout
from mesh.errors import CasConflict, TerminalError
from mesh.state import bucket
from services.iam.changes import (
    check_admission_request,
    check_proposal,
    endorse,
    next_body,
    proposal,
)
from services.iam.store import load_roster

ADMISSION_PREFIX = "admission."
ROTATION_PREFIX = "rotation."
PROPOSAL_PREFIX = "roster-proposal."


async def file_admission(bus: Any, request: AdmissionRequested) -> None:
    """A member files a candidate's (self-signed) request: on the bus and in KV."""
    roster = await load_roster(bus)
    if roster is None:
        raise TerminalError("the federation has no roster yet")
    check_admission_request(roster.body.federation, request)
    await bus.publish(request)
    requests = await bucket(bus, layout.KV_DECISIONS, AdmissionRequested)
    await requests.put(ADMISSION_PREFIX + request.candidate, request)


async def file_rotation(bus: Any, rotation: KeyRotation) -> None:
    """The rotating member files its rotation (signed by old and new key) in KV, where
    endorsers read it; it must replace the member's key in the roster in force."""
    roster = await load_roster(bus)
    if roster is None:
        raise TerminalError("the federation has no roster yet")
    # Builds the next body, which checks the rotation against the roster in force.
    next_body(roster, "rotate", rotation.member, rotation.retired_at, rotation=rotation)
    requests = await bucket(bus, layout.KV_DECISIONS, KeyRotation)
    await requests.put(ROTATION_PREFIX + rotation.member, rotation)


async def _rotation_of(bus: Any, member: str) -> KeyRotation:
    requests = await bucket(bus, layout.KV_DECISIONS, KeyRotation)
    entry = await requests.get(ROTATION_PREFIX + member)
    if entry is None:
        raise TerminalError(f"no key rotation of {member} filed; it runs "
                            "`stekker member rotate-key` first")
    return entry.value


async def endorse_change(bus: Any, change: RosterChange, member: str,
                         now: dt.datetime | None = None) -> RosterChangeEndorsed:
    """Sign the proposed next roster for `change` of `member` and publish the endorsement."""
    prev = await load_roster(bus)
    if prev is None:
        raise TerminalError("the federation has no roster yet")
    candidate: AdmissionRequested | None = None
    if change == "admit":
        requests = await bucket(bus, layout.KV_DECISIONS, AdmissionRequested)
        entry = await requests.get(ADMISSION_PREFIX + member)
        if entry is None:
            raise TerminalError(f"no admission request of {member}; file one first")
        candidate = entry.value
        check_admission_request(prev.body.federation, candidate)
    rotation = await _rotation_of(bus, member) if change == "rotate" else None
    proposals = await bucket(bus, layout.KV_DECISIONS, RosterProposal)
    key = PROPOSAL_PREFIX + member
    chosen: RosterProposal | None = None
    for _ in range(3):
        stored = await proposals.get(key)
        if (stored is not None and stored.value.change == change
                and check_proposal(prev, stored.value, candidate, rotation)):
            chosen = stored.value
            break
        fresh = proposal(prev, change, member, now or dt.datetime.now(dt.UTC), candidate,
                         rotation)
        try:
            if stored is None:
                await proposals.create(key, fresh)
            else:
                await proposals.update(key, fresh, stored.revision)
        except CasConflict:
            continue  # someone proposed at the same moment: look at theirs
        chosen = fresh
        break
    if chosen is None:
        raise CasConflict(f"could not settle a proposal for {change} {member}")
    event = RosterChangeEndorsed(change=change, member=member, base_version=prev.body.version,
                                 body=chosen.body, body_sha256=chosen.body_sha256,
                                 signature=endorse(bus.identity, chosen.body))
    await bus.publish(event)
    return event
