"""The cut-over of one workload: its placement moves from the source to the successor.

Pure. The coordinator writes what `cutover_record` builds by compare-and-set at the
revision it read (a new generation, so every agent acts on it once: the successor's
starts the replica on the data imported beforehand, the source's stops its own), after
booking the successor's site in the capacity ledger. `cut_over_already` makes the step
idempotent: a resumed coordinator that finds the move done only announces it again.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from contracts.state import PlacementRecord, ReplicaStatus
from contracts.takeover import PlanItem
from contracts.workload import Assignment, DecisionRecord


def cut_over_already(record: PlacementRecord, item: PlanItem) -> bool:
    members = {a.member for a in record.assignments}
    return item.successor in members and item.source not in members


def released_record(
    record: PlacementRecord, item: PlanItem, *, saga: str, decided_by: str, now: dt.datetime
) -> PlacementRecord | None:
    """For a workload no other member may host a new replica of: its next generation
    without the source's replica, served (degraded) by the replicas it has elsewhere.
    None when the source holds its only replica: then there is nothing to keep."""
    kept = [a for a in record.assignments if a.member != item.source]
    if not kept or len(kept) == len(record.assignments):
        return None
    summary = f"takeover {saga}: {item.source}'s replica released, none to replace it"
    decision = (msgspec.structs.replace(record.decision, cause="takeover",
                                        decided_by=decided_by, decided_at=now, chosen=kept,
                                        degraded=True, summary=summary)
                if record.decision is not None else
                DecisionRecord(workload=record.spec.id, cause="takeover", decided_by=decided_by,
                               decided_at=now, chosen=kept, degraded=True, summary=summary))
    generation = record.generation + 1
    line = f"gen {generation}: takeover released {item.source}'s replica (saga {saga})"
    return msgspec.structs.replace(
        record, state="degraded", generation=generation, assignments=kept,
        replicas=[r for r in record.replicas if r.member != item.source], decision=decision,
        updated_at=now, history=[*record.history, line])


def cutover_record(
    record: PlacementRecord, item: PlanItem, *, saga: str, decided_by: str, now: dt.datetime
) -> PlacementRecord:
    """`record`'s next generation with the source's replica on the successor's site."""
    assert item.successor is not None and item.site is not None
    leaving = next((a for a in record.assignments if a.member == item.source), None)
    arrive = Assignment(member=item.successor, site=item.site,
                        replica=leaving.replica if leaving else 0)
    assignments = [a for a in record.assignments if a.member != item.source] + [arrive]
    replicas = [r for r in record.replicas if r.member != item.source]
    replicas.append(ReplicaStatus(member=item.successor, site=item.site, state="assigned",
                                  since=now))
    summary = f"takeover {saga}: {item.source} → {item.successor}"
    if record.decision is not None:
        # The approved plan is the decision; the record keeps what was checked before.
        decision = msgspec.structs.replace(
            record.decision, cause="takeover", decided_by=decided_by, decided_at=now,
            chosen=assignments, summary=summary)
    else:
        decision = DecisionRecord(workload=record.spec.id, cause="takeover",
                                  decided_by=decided_by, decided_at=now,
                                  chosen=assignments, summary=summary)
    generation = record.generation + 1
    line = f"gen {generation}: takeover from {item.source} → {item.successor} (saga {saga})"
    return msgspec.structs.replace(
        record, state="placed", generation=generation, assignments=assignments,
        replicas=replicas, decision=decision, updated_at=now,
        history=[*record.history, line])
