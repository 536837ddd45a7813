"""The test placements the suite publishes: tiny, public, clearly named. Pure.

They are events only: nothing writes them to `fed_placements`, so no scheduler,
failover or takeover ever sees them as workloads of the federation.
"""

from __future__ import annotations

import datetime as dt
import uuid

from contracts.resources import Resources
from contracts.workload import (
    Assignment,
    DecisionRecord,
    Requirements,
    RunSpec,
    WorkloadPlaced,
    WorkloadReleased,
    WorkloadSpec,
)

PREFIX = "conformance-"
TENANT = "stekker-conformance"
TINY = Resources(vcpu=0.1, memory_gib=0.1, storage_gib=0.0)
RELEASE_CAUSE = "conformance"
# For agents that run real processes (the `process` driver): a static HTTP server over
# the replica's data folder, the same harmless program the demo uses. Others ignore it.
RUN = RunSpec(
    command=["{python}", "-m", "http.server", "{port}", "--bind", "127.0.0.1",
             "--directory", "{data_dir}"],
    health_path="/",
)


def new_workload_id() -> str:
    return f"{PREFIX}{uuid.uuid4().hex[:8]}"


def placement_for(
    workload: str, *, member: str, site: str, decided_by: str, now: dt.datetime
) -> WorkloadPlaced:
    """Generation 1 of `workload` on `member`'s `site`, with a minimal decision record."""
    spec = WorkloadSpec(
        id=workload,
        tenant=TENANT,
        criticality="low",
        resources=TINY,
        requirements=Requirements(classification="openbaar"),
        run=RUN,
        description="stekker conformance test workload; safe to stop",
    )
    chosen = [Assignment(member=member, site=site)]
    decision = DecisionRecord(
        workload=workload,
        cause="submitted",
        decided_by=decided_by,
        decided_at=now,
        chosen=chosen,
        summary="conformance test placement",
    )
    return WorkloadPlaced(spec=spec, assignments=chosen, generation=1, decision=decision)


def release_for(workload: str, *, member: str) -> WorkloadReleased:
    return WorkloadReleased(workload=workload, member=member, generation=1,
                            cause=RELEASE_CAUSE)
