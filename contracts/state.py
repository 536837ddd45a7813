"""Records kept in the KV buckets of DESIGN §5. Structs only; the bus stores their JSON."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from contracts.failover import Evidence
from contracts.registry import MemberProfile, SiteCapacity
from contracts.resources import Resources
from contracts.takeover import PlanItem
from contracts.workload import Assignment, DecisionRecord, WorkloadSpec

PlacementState = Literal["pending", "placed", "running", "degraded", "unplaceable", "released"]
ReplicaState = Literal["assigned", "running", "failed", "released"]


class MemberRecord(msgspec.Struct, kw_only=True):
    """`fed_members/<member>`: the newest verified announcement."""

    profile: MemberProfile
    announced_at: dt.datetime
    msg_id: str


class CapacityRecord(msgspec.Struct, kw_only=True):
    """`fed_capacity/<member>`: the newest capacity report."""

    member: str
    sites: list[SiteCapacity]
    reported_at: dt.datetime


class ReplicaStatus(msgspec.Struct, kw_only=True):
    member: str
    site: str
    state: ReplicaState = "assigned"
    since: dt.datetime | None = None
    detail: str = ""


class FailoverMove(msgspec.Struct, kw_only=True):
    """The last failover re-placement of a workload, for its achieved RTO: from the
    declaration (`declared_at`) to its new replicas running (their `since`)."""

    lost: str  # the member declared down
    site: str = ""  # the site declared down, when only one site of `lost` went dark
    declared_at: dt.datetime
    placed_at: dt.datetime
    rto_target_s: int
    to: list[str] = []  # the members given the lost replicas


class PlacementRecord(msgspec.Struct, kw_only=True):
    """`fed_placements/<workload>`: created once by CAS; every change at a known revision."""

    spec: WorkloadSpec
    state: PlacementState
    generation: int = 0
    assignments: list[Assignment] = []
    replicas: list[ReplicaStatus] = []
    decision: DecisionRecord | None = None
    submitted_by: str = ""
    submitted_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    # Set once the placed event for this generation is on FED (the publish after the CAS).
    published_generation: int = 0
    history: list[str] = []
    # Set by a failover re-placement (kept until the next change of the placement).
    failover: FailoverMove | None = None


class DownDecision(msgspec.Struct, kw_only=True):
    """`fed_decisions/down.<member>`: the one declaration per epoch, won by CAS."""

    member: str
    state: Literal["down", "recovered"]
    epoch: int
    declared_by: str
    declared_at: dt.datetime
    observers: list[str] = []
    replaced: bool = False
    # Set when the member heartbeats steadily again (state "recovered").
    recovered_by: str = ""
    recovered_at: dt.datetime | None = None
    # What the declaration's `member.down.v1` carries, so it can be re-published after a
    # crash between the CAS and the publish (same msg id: JetStream keeps one).
    quorum: int = 0
    evidence: list[Evidence] = []
    # Set on `fed_decisions/down.<member>.<site>`: one site of the member, not all of it.
    site: str = ""


class EscalationDecision(msgspec.Struct, kw_only=True):
    """`fed_decisions/escalation.<member>.<epoch>`: a down member's stateful workloads
    passed their RTO; the member that created this record (CAS) requested the takeover."""

    member: str
    epoch: int
    saga: str
    requested_by: str
    at: dt.datetime
    overdue: list[str] = []


class SagaRecord(msgspec.Struct, kw_only=True):
    """`fed_sagas/<saga>`: a takeover's progress, step by step, resumable."""

    saga: str
    member: str
    coordinator: str
    reason: str
    drill: bool
    state: Literal["planning", "approving", "running", "completed", "failed"] = "planning"
    plan_hash: str = ""
    # member -> msg id of its counted approval (the bus verified its signature).
    approvals: dict[str, str] = {}
    steps: list[dict[str, object]] = []
    report: dict[str, object] | None = None
    started_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    # The plan whose hash the approvers signed, and the approvals it needs.
    plan: list[PlanItem] = []
    quorum: int = 0
    # The coordinator holds the saga while `lease_until` is ahead; a member that finds it
    # expired takes the saga over by CAS and resumes it from its last recorded step.
    lease_until: dt.datetime | None = None
    # Members whose own operators asked for this (real) takeover; a member may approve
    # a real takeover only with such consent (or the target's own declaration, or the
    # target declared down for a calamity): never on one member's word.
    consents: list[str] = []


class SagaProgress(msgspec.Struct, kw_only=True):
    """`fed_sagas/<saga>.<workload>`: one workload's steps in a takeover saga (export or
    restore, shadow start, cut-over, verify, release), each outcome recorded once by
    CAS on this small record, so a step costs the same in a saga of ten workloads as in
    one of a thousand. The saga record keeps the plan, the approvals and the phase."""

    saga: str
    workload: str
    steps: list[dict[str, object]] = []


class Hold(msgspec.Struct, kw_only=True):
    """One workload's reservation at a site: what it books, for which placement
    generation, taken by which commit attempt (so a losing attempt frees only its own)."""

    amount: Resources
    generation: int
    attempt: str
    since: dt.datetime
    # The workload's tenant, so the ledgers alone say where each tenant's workloads are
    # (affinity rules) without reading every placement.
    tenant: str = ""


class SiteLedger(msgspec.Struct, kw_only=True):
    """`fed_reservations/<member>.<site>`: capacity reserved at one site, by workload.

    Every commit that books the site CAS-updates this record at the revision it read and
    is refused when `reserved` would exceed the site's schedulable capacity."""

    member: str
    site: str
    reserved: Resources = Resources()
    holds: dict[str, Hold] = {}
