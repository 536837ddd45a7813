"""Approving a takeover plan, and counting approvals towards the quorum (invariant 4).

Pure. No member alone may approve a takeover: the coordinator proceeds only when a
quorum of *other* active members (the target never counts) signed the hash of the very
plan it proposed. Each approval arrives as a signed `takeover.approved.v1` (the bus has
verified its signature against the roster before we see it).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

from contracts.takeover import TakeoverProposed
from services.takeover.plan import plan_hash

TARGET_APPROVES = "the target cannot approve its own takeover"
NOT_ACTIVE = "not an active roster member"
WRONG_HASH = "plan hash differs from the proposed plan"
WRONG_TARGET = "approval names another target"


@dataclass(frozen=True)
class Approval:
    member: str
    plan_hash: str
    target: str = ""
    key_id: str = ""
    msg_id: str = ""


@dataclass(frozen=True)
class Tally:
    quorum: int
    # Distinct members whose approval counts, sorted.
    approvers: tuple[str, ...]
    # Approvals that do not count, with why; each one is a security matter.
    refused: tuple[tuple[Approval, str], ...]

    @property
    def reached(self) -> bool:
        return len(self.approvers) >= self.quorum


def refusal(
    approval: Approval, *, plan_hash: str, target: str, active: Set[str]
) -> str | None:
    """Why `approval` does not count, or None when it does."""
    if approval.target and approval.target != target:
        return WRONG_TARGET
    if approval.member == target:
        return TARGET_APPROVES
    if approval.member not in active:
        return NOT_ACTIVE
    if approval.plan_hash != plan_hash:
        return WRONG_HASH
    return None


def tally(
    approvals: Iterable[Approval],
    *,
    plan_hash: str,
    target: str,
    active: Set[str],
    quorum: int,
) -> Tally:
    """Count approvals: each member once, only for this plan, never the target's."""
    approvers: set[str] = set()
    refused: list[tuple[Approval, str]] = []
    for approval in approvals:
        why = refusal(approval, plan_hash=plan_hash, target=target, active=active)
        if why is None:
            approvers.add(approval.member)
        else:
            refused.append((approval, why))
    return Tally(quorum=quorum, approvers=tuple(sorted(approvers)), refused=tuple(refused))


def check_proposal(
    proposal: TakeoverProposed,
    *,
    roster: Set[str],
    active: Set[str],
    quorum: int,
) -> str | None:
    """What is wrong with a proposal an approver is asked to sign, or None.

    `roster` is every member in the roster in force, `active` its active members, and
    `quorum` the quorum this approver computes itself against the target.
    """
    target = proposal.member
    if target not in roster:
        return f"target {target} is not a roster member"
    if plan_hash(proposal.plan) != proposal.plan_hash:
        return "plan hash does not match the proposed plan"
    if proposal.quorum < quorum:
        return f"quorum {proposal.quorum} is below the required {quorum}"
    for item in proposal.plan:
        if item.source != target:
            return f"{item.workload}: source {item.source} is not the target {target}"
        if item.successor is None:
            continue
        if item.successor == target:
            return f"{item.workload}: the target cannot be its own successor"
        if item.successor not in active:
            return f"{item.workload}: successor {item.successor} is not an active member"
    if len({item.workload for item in proposal.plan}) != len(proposal.plan):
        return "a workload appears twice in the plan"
    return None
