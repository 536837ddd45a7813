"""Approval counting and proposal checks (pure): no member alone approves (invariant 4)."""

from __future__ import annotations

import pytest

from contracts.takeover import PlanItem, TakeoverProposed
from services.takeover.approval import (
    NOT_ACTIVE,
    TARGET_APPROVES,
    WRONG_HASH,
    WRONG_TARGET,
    Approval,
    check_proposal,
    refusal,
    tally,
)
from services.takeover.plan import plan_hash

ACTIVE = {"amstel", "dommel", "zuidas", "vecht"}
H = "a" * 64


def count(*approvals: Approval, quorum: int = 2):
    return tally(approvals, plan_hash=H, target="dommel", active=ACTIVE, quorum=quorum)


def test_below_quorum_is_not_reached() -> None:
    t = count(Approval("amstel", H), quorum=2)
    assert t.approvers == ("amstel",) and not t.reached
    assert not count(quorum=1).reached


def test_quorum_reached_with_distinct_members() -> None:
    t = count(Approval("zuidas", H), Approval("amstel", H))
    assert t.reached and t.approvers == ("amstel", "zuidas") and t.refused == ()


def test_duplicates_count_once() -> None:
    t = count(Approval("amstel", H, msg_id="1"), Approval("amstel", H, msg_id="2"))
    assert t.approvers == ("amstel",) and not t.reached


def test_wrong_hash_and_the_target_do_not_count() -> None:
    wrong = Approval("zuidas", "b" * 64)
    own = Approval("dommel", H)
    outsider = Approval("mallory", H)
    t = count(Approval("amstel", H), wrong, own, outsider)
    assert t.approvers == ("amstel",) and not t.reached
    assert dict((a.member, why) for a, why in t.refused) == {
        "zuidas": WRONG_HASH, "dommel": TARGET_APPROVES, "mallory": NOT_ACTIVE,
    }


def test_refusal_of_an_approval_for_another_target() -> None:
    other = Approval("amstel", H, target="zuidas")
    assert refusal(other, plan_hash=H, target="dommel", active=ACTIVE) == WRONG_TARGET
    assert refusal(Approval("amstel", H, target="dommel"), plan_hash=H, target="dommel",
                   active=ACTIVE) is None


def proposal(plan: list[PlanItem], **changes: object) -> TakeoverProposed:
    fields: dict[str, object] = dict(saga="s1", member="dommel", reason="drill", drill=True,
                                     plan=plan, plan_hash=plan_hash(plan), quorum=2)
    fields.update(changes)
    return TakeoverProposed(**fields)  # type: ignore[arg-type]


PLAN = [
    PlanItem(workload="w1", source="dommel", successor="zuidas", site="rtm1"),
    PlanItem(workload="w2", source="dommel", successor=None, reason="no member may host it"),
]


def check(p: TakeoverProposed) -> str | None:
    return check_proposal(p, roster=ACTIVE | {"gone"}, active=ACTIVE, quorum=2)


def test_a_consistent_proposal_passes() -> None:
    assert check(proposal(PLAN)) is None
    assert check(proposal([])) is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"member": "nobody"}, "not a roster member"),
        ({"plan_hash": "0" * 64}, "plan hash"),
        ({"quorum": 1}, "below the required"),
    ],
)
def test_inconsistent_proposals_are_refused(changes: dict[str, object], words: str) -> None:
    problem = check(proposal(PLAN, **changes))
    assert problem is not None and words in problem


@pytest.mark.parametrize(
    ("successor", "words"),
    [("dommel", "its own successor"), ("gone", "not an active member"),
     ("mallory", "not an active member")],
)
def test_successors_must_be_other_active_members(successor: str, words: str) -> None:
    plan = [PlanItem(workload="w1", source="dommel", successor=successor, site="x")]
    problem = check(proposal(plan))
    assert problem is not None and words in problem


def test_items_must_come_from_the_target_once() -> None:
    elsewhere = [PlanItem(workload="w1", source="amstel", successor="zuidas", site="x")]
    assert "not the target" in (check(proposal(elsewhere)) or "")
    twice = [PLAN[0], PlanItem(workload="w1", source="dommel", successor="amstel", site="y")]
    assert "twice" in (check(proposal(twice)) or "")
