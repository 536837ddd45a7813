"""The workload spec (the plug) and the events of its life: submitted → placed → bound."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, ClassVar, Literal

import msgspec

from contracts.base import Event, MemberId, SealLevel, WorkloadId
from contracts.registry import Classification
from contracts.resources import Resources

Criticality = Literal["critical", "high", "normal", "low"]
# Why a placement decision was taken.
Cause = Literal["submitted", "failover", "takeover", "rebalance", "recovery"]
CRITICALITY_ORDER: tuple[str, ...] = ("critical", "high", "normal", "low")

# A jurisdiction is an ISO country code or the word EU.
Jurisdiction = Annotated[str, msgspec.Meta(pattern=r"^([A-Z]{2}|EU|EEA)$")]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class Requirements(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    min_seal: SealLevel = 0
    jurisdictions: list[Jurisdiction] = msgspec.field(default_factory=lambda: ["EU"])
    classification: Classification = "openbaar"
    certifications: list[str] = []


class RunSpec(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How the `process` driver runs the workload. `{data_dir}` and `{port}` are filled in."""

    command: list[str]
    # The process serves HTTP on {port} and answers GET `health_path` with 200 when healthy.
    health_path: str | None = None


class WorkloadSpec(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    # forbid_unknown_fields here guards human-written files against typos; on the bus the
    # spec is always nested in an event, and a new field will get a default (DESIGN §4).
    id: WorkloadId
    tenant: str
    criticality: Criticality = "normal"
    replicas: Positive = 1
    resources: Resources
    requirements: Requirements = Requirements()
    stateful: bool = False
    rto_seconds: Positive = 300
    rpo_seconds: Annotated[int, msgspec.Meta(ge=0)] = 3600
    run: RunSpec | None = None
    description: str = ""


class Assignment(msgspec.Struct, kw_only=True, frozen=True):
    member: MemberId
    site: str
    replica: int = 0


class Verdict(msgspec.Struct, kw_only=True, frozen=True):
    """What one filter said of one member (and site, when the filter is per site)."""

    member: str
    passed: bool
    site: str | None = None
    # Named reasons: seal_too_low, jurisdiction_not_allowed, classification_not_cleared,
    # certification_missing, insufficient_capacity, member_excluded, member_not_active.
    reason: str | None = None
    detail: str = ""


class DecisionRecord(msgspec.Struct, kw_only=True, frozen=True):
    """Everything needed to recompute a placement: inputs, verdicts, scores and the choice."""

    workload: WorkloadId
    cause: Cause = "submitted"
    decided_by: str
    decided_at: dt.datetime
    # Revisions of the KV entries the decision read, so the snapshot can be found again.
    inputs: dict[str, int] = {}
    excluded: list[str] = []
    verdicts: list[Verdict] = []
    scores: dict[str, float] = {}
    chosen: list[Assignment] = []
    feasible: bool = True
    # Fewer replicas than asked could be placed (the rest had no feasible member).
    degraded: bool = False
    summary: str = ""


class WorkloadSubmitted(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "workload"
    EVENT: ClassVar[str] = "submitted"
    SUMMARY: ClassVar[str] = "A tenant submits a workload through a member."

    spec: WorkloadSpec


class WorkloadPlaced(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "workload"
    EVENT: ClassVar[str] = "placed"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A scheduler commits a placement (once, by compare-and-set)."

    spec: WorkloadSpec
    assignments: list[Assignment]
    # Grows by one on every re-placement, so agents can tell old placements from new.
    generation: int = 1
    decision: DecisionRecord

    def target(self) -> str:
        return self.spec.id


class WorkloadBound(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "workload"
    EVENT: ClassVar[str] = "bound"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A member's agent runs its replica of a placed workload."

    workload: WorkloadId
    site: str
    generation: int
    driver: str
    detail: str = ""

    def target(self) -> str:
        return self.workload


class WorkloadFailed(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "workload"
    EVENT: ClassVar[str] = "failed"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A workload cannot be placed or started; the reasons say why."

    workload: WorkloadId
    reason: str
    decision: DecisionRecord | None = None

    def target(self) -> str:
        return self.workload


class WorkloadReleased(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "workload"
    EVENT: ClassVar[str] = "released"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A member stops its replica (moved away, withdrawn or test)."

    workload: WorkloadId
    # The member whose replica must stop; the publisher may be another (a scheduler).
    member: MemberId
    generation: int = 0
    cause: str = ""

    def target(self) -> str:
        return self.workload
