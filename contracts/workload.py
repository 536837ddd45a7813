"""The workload spec (the plug) and the events of its life: submitted → placed → bound."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, ClassVar, Literal

import msgspec

from contracts.base import MEMBER_ID, Event, MemberId, SealLevel, WorkloadId
from contracts.registry import Classification, StackComponent
from contracts.resources import Resources

Criticality = Literal["critical", "high", "normal", "low"]
# Why a placement decision was taken.
Cause = Literal["submitted", "failover", "takeover", "rebalance", "recovery"]
CRITICALITY_ORDER: tuple[str, ...] = ("critical", "high", "normal", "low")

# A jurisdiction is an ISO country code or the word EU.
Jurisdiction = Annotated[str, msgspec.Meta(pattern=r"^([A-Z]{2}|EU|EEA)$")]
Positive = Annotated[int, msgspec.Meta(ge=1)]


SpreadDomain = Literal["members", "sites", "regions", "grid_regions"]
Strategy = Literal["balance", "binpack"]


class Spread(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Replicas spread over failure domains. A hard rule: the scheduler never places
    replicas that break it. `min_domains`: distinct domains the replicas must cover;
    `max_skew`: most minus fewest replicas over the domains used."""

    across: SpreadDomain = "members"
    min_domains: Positive = 1
    max_skew: Annotated[int, msgspec.Meta(ge=0)] = 1


class Preferences(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Soft wishes: they add to a candidate's score, never override a hard rule."""

    members: list[MemberId] = []
    regions: list[str] = []


class Requirements(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    # Every field has a default, so files and messages written before a field existed
    # still load (DESIGN §4).
    min_seal: SealLevel = 0
    # Minimum SEAL per objective, e.g. {"SOV-2": 4}; on top of `min_seal`.
    min_sov: dict[str, SealLevel] = {}
    # Where replicas may RUN: the site's country (ISO codes, EU, EEA).
    jurisdictions: list[Jurisdiction] = msgspec.field(default_factory=lambda: ["EU"])
    # Where the workload's DATA may REST; empty = wherever it may run. A replica keeps its
    # data at its site, so in placement both narrow the site's country; residency is kept
    # apart because it also binds data moved in a takeover, and reads as its own reason.
    residency: list[Jurisdiction] = []
    classification: Classification = "openbaar"
    certifications: list[str] = []
    # Only members (and parents) subject to no non-EU law.
    no_non_eu_law: bool = False
    # Only members whose privileged staff are EU/EEA residents working from Europe.
    eu_resident_staff: bool = False
    spread: Spread | None = None
    # Stack components whose values must differ between every two replicas.
    diversity: list[StackComponent] = []
    # Workload ids of the same tenant: share a member with each / never share a member.
    affinity: list[WorkloadId] = []
    anti_affinity: list[WorkloadId] = []
    preferences: Preferences = Preferences()
    # balance: keep headroom everywhere (default); binpack: fill the fullest site first.
    strategy: Strategy = "balance"


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


# A decision is stored three times per placement (its record, the record's update by
# the agent, the signed batch in FED), and most of it is verdicts: they leave out the
# fields at their defaults (`omit_defaults`: a class's verdict names no member or site),
# about 5 % less of a decision to write, replicate and read. Readers fill the defaults in.
class Verdict(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What one filter said of one member (and site, when the filter is per site)."""

    member: str
    passed: bool
    site: str | None = None
    # Named reasons: see services.scheduler.filters.REASONS (seal_too_low,
    # jurisdiction_not_allowed, insufficient_capacity, non_eu_law_exposure, ...).
    reason: str | None = None
    detail: str = ""


class VerdictClass(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Member-level verdicts shared by every member of an equivalence class: members
    whose filtered attributes are equal get the same verdicts (`member` left empty)."""

    members: list[str] = []
    verdicts: list[Verdict] = []


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
    # Hard placement rules that kept the decision from placing every replica:
    # spread_unsatisfiable, diversity_unsatisfiable, search_budget_exhausted.
    unsatisfied: list[str] = []
    # How many feasible members were scored when only a sample was (0: all of them).
    sampled: int = 0
    # Member-level verdicts per equivalence class, one entry per class, covering every
    # member; `verdicts` then holds only the per-member rest (affinity, sites, capacity).
    # Records written before this field carry every verdict in `verdicts`.
    classes: list[VerdictClass] = []


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


class PlacedItem(msgspec.Struct, kw_only=True, frozen=True):
    """One committed placement inside a `workload.placements.v1`: what a
    `workload.placed.v1` says of one workload, without an envelope of its own."""

    spec: WorkloadSpec
    assignments: list[Assignment]
    generation: int = 1
    decision: DecisionRecord
    # The `fed_placements` record this commit created: who submitted the workload and
    # when (the submission's signer and Fed-Time), the record's revision and the sha256
    # of its JSON. An agent rebuilds the record from the item and, when the digest
    # matches, notes its replica at that revision without reading it first. Empty: read.
    submitted_by: str = ""
    submitted_at: dt.datetime | None = None
    record_revision: int = 0
    record_sha256: str = ""


class WorkloadsPlaced(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "workload"
    EVENT: ClassVar[str] = "placements"
    SUMMARY: ClassVar[str] = (
        "A scheduler commits a batch of placements (each once, by compare-and-set), "
        "signed once for all of them, for every agent to read. Schedulers now send "
        "`workload.dispatched.v1` instead; agents and audits still read this one."
    )

    # Each item as a `workload.placed.v1` would carry it; a workload at most once.
    placements: list[PlacedItem]


# The addressee of a batch of placements that is not for one member's agent alone.
EVERY_AGENT = "_all"
# A member id, or EVERY_AGENT (which no member id can be: ids start with a letter).
Addressee = Annotated[str, msgspec.Meta(pattern=f"^({MEMBER_ID}|{EVERY_AGENT})$")]


class PlacementsDispatched(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "workload"
    EVENT: ClassVar[str] = "dispatched"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = (
        "A scheduler commits a batch of placements (each once, by compare-and-set), "
        "signed once for all of them, addressed to the one agent they concern or to "
        "every agent."
    )

    # Each item as a `workload.placed.v1` would carry it; a workload at most once, and
    # in one batch only.
    placements: list[PlacedItem]
    # The subject's target. A member: every item is that member's alone (a first
    # placement, all replicas there), so only its agent receives and decodes the batch.
    # EVERY_AGENT: anything else, e.g. a move, whose earlier generation may run
    # elsewhere and must stop there.
    to: Addressee

    def target(self) -> str:
        return self.to


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


class BoundItem(msgspec.Struct, kw_only=True, frozen=True):
    """One replica inside a `workload.bindings.v1`: what a `workload.bound.v1` says."""

    workload: WorkloadId
    site: str
    generation: int
    detail: str = ""


class WorkloadsBound(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "workload"
    EVENT: ClassVar[str] = "bindings"
    SUMMARY: ClassVar[str] = (
        "A member's agent runs its replicas of a batch of placed workloads (its answer to "
        "a workload.dispatched.v1 or workload.placements.v1), signed once for all of them."
    )

    driver: str
    bindings: list[BoundItem]


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
