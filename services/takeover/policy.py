"""When a member signs a takeover plan: the approver's policy. Pure.

A drill harms nobody, so a consistent drill plan is approved at once. A real takeover
moves a member's workloads away and, for an acquisition, ends its rights: one member's
word must never be enough (invariant 4). So a member approves a real plan only when

- the target itself declared the change of control (`takeover declare` by the target),
- or its own operator asked for this takeover too (its consent is in the saga),
- or, for a calamity, the federation declared the target down (a quorum of observers).

The quorum of such approvals then stands for "a quorum of the others agrees".
"""

from __future__ import annotations

from contracts.state import SagaRecord


def approval_problem(record: SagaRecord, *, me: str, target_down: bool) -> str | None:
    """Why `me` does not (yet) approve `record`'s plan, or None when it may."""
    if record.drill:
        return None
    if record.member in record.consents:
        return None  # the target declared its own change of control
    if me in record.consents:
        return None
    if record.reason == "calamity" and target_down:
        return None
    if record.reason == "calamity":
        return (f"{record.member} is not declared down and {me}'s operator did not ask "
                "for this takeover")
    return (f"{record.member} did not declare a change of control and {me}'s operator "
            "did not ask for this takeover")
