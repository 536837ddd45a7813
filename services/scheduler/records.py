"""A new placement's record, and what lets an agent note its replica without reading it.

Pure. `first_record` is the `fed_placements` record a commit creates for a decision. A
batch announces each new record's revision and digest with its item
(`workload.dispatched.v1`), so an agent rebuilds it from the item (`rebuilt`), checks
the digest, and writes its replica's state at that revision: one read of the record
less per workload. Anything else (a digest that differs, a record written since) and
the agent reads the record as before.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import msgspec

from contracts.state import PlacementRecord, ReplicaStatus
from contracts.workload import DecisionRecord, PlacedItem, WorkloadSpec
from services.scheduler.replace import state_after

_encoder = msgspec.json.Encoder()


def first_record(
    spec: WorkloadSpec, decision: DecisionRecord, *, generation: int, submitted_by: str,
    submitted_at: dt.datetime | None, now: dt.datetime, history: list[str],
) -> PlacementRecord:
    state = state_after(decision)
    where = ", ".join(f"{a.member}/{a.site}" for a in decision.chosen)
    line = (
        f"gen {generation}: unplaceable: {decision.summary}" if state == "unplaceable"
        else f"gen {generation}: {state} on {where}"
    )
    return PlacementRecord(
        spec=spec,
        state=state,
        generation=generation,
        assignments=list(decision.chosen),
        replicas=[
            ReplicaStatus(member=a.member, site=a.site, state="assigned", since=now)
            for a in decision.chosen
        ],
        decision=decision,
        submitted_by=submitted_by,
        submitted_at=submitted_at,
        updated_at=now,
        history=[*history, line],
    )


def record_digest(record: PlacementRecord) -> str:
    """sha256 of the record's JSON as the bucket stores it."""
    return digest_of(_encoder.encode(record))


def digest_of(stored: bytes) -> str:
    return hashlib.sha256(stored).hexdigest()


def encoded(record: PlacementRecord) -> bytes:
    """The record's JSON, as the bucket stores it."""
    return _encoder.encode(record)


def rebuilt(item: PlacedItem) -> tuple[PlacementRecord, int] | None:
    """The record `item`'s commit created and its revision, when the item says which
    (`record_revision`, `record_sha256`) and `first_record` gives exactly those bytes
    again; None otherwise (the caller reads the record)."""
    if not item.record_revision or not item.record_sha256:
        return None
    record = first_record(item.spec, item.decision, generation=item.generation,
                          submitted_by=item.submitted_by, submitted_at=item.submitted_at,
                          now=item.decision.decided_at, history=[])
    if record.assignments != item.assignments or record_digest(record) != item.record_sha256:
        return None
    return record, item.record_revision
