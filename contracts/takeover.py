"""The takeover saga: request, plan, quorum approval, steps, completion (DESIGN §6)."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from contracts.base import Event, MemberId, WorkloadId

TakeoverReason = Literal["drill", "acquisition", "calamity"]
StepStatus = Literal["started", "ok", "failed"]


class TakeoverRequested(Event, kw_only=True):
    """An operator asks its own member to coordinate a takeover (or a drill) of another."""

    DOMAIN: ClassVar[str] = "takeover"
    EVENT: ClassVar[str] = "requested"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "An operator asks its member to coordinate a takeover or drill."

    saga: str
    member: MemberId
    reason: TakeoverReason = "drill"
    drill: bool = True

    def target(self) -> str:
        return self.member


class PlanItem(msgspec.Struct, kw_only=True, frozen=True):
    workload: WorkloadId
    source: MemberId
    successor: MemberId | None
    site: str | None = None
    reason: str = ""


class TakeoverProposed(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "takeover"
    EVENT: ClassVar[str] = "proposed"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "The coordinator proposes a plan; approvals sign its hash."

    saga: str
    member: MemberId
    reason: TakeoverReason
    drill: bool
    plan: list[PlanItem]
    plan_hash: str
    quorum: int

    def target(self) -> str:
        return self.member


class TakeoverApproved(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "takeover"
    EVENT: ClassVar[str] = "approved"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A member approves a takeover plan by signing its hash."

    saga: str
    member: MemberId
    plan_hash: str

    def target(self) -> str:
        return self.member


class TakeoverStep(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "takeover"
    EVENT: ClassVar[str] = "step"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "One step of a takeover saga started, succeeded or failed."

    saga: str
    member: MemberId
    step: str
    status: StepStatus
    workload: WorkloadId | None = None
    # The member that must act on this step (a successor's agent for a shadow start).
    actor: MemberId | None = None
    elapsed_ms: float | None = None
    detail: str = ""
    # Which try of the step (a corrupted transfer is tried again from another copy).
    attempt: int = 1
    # sha256 (hex) of the workload's data this step exported, restored or imported.
    digest: str = ""

    def target(self) -> str:
        return self.member


class TakeoverCompleted(Event, kw_only=True):
    DOMAIN: ClassVar[str] = "takeover"
    EVENT: ClassVar[str] = "completed"
    TARGETED: ClassVar[bool] = True
    SUMMARY: ClassVar[str] = "A takeover or drill finished; passed says whether all held."

    saga: str
    member: MemberId
    drill: bool
    passed: bool
    workloads: int
    approvers: list[str]
    duration_ms: float
    summary: str = ""

    def target(self) -> str:
        return self.member
