"""Sovereignty levels derived from a member's SOV-1..SOV-8 assurance levels.

The overall SEAL is never declared: a chain is as strong as its weakest link, so it is
the minimum over all eight objectives, and an objective a member says nothing about
counts as SEAL-0 (sovereignty must be shown, not assumed).
"""

from __future__ import annotations

from contracts.registry import SOV_OBJECTIVES, MemberProfile


def overall_seal(profile: MemberProfile) -> int:
    return min(profile.sov.get(objective, 0) for objective in SOV_OBJECTIVES)


def weighted_score(profile: MemberProfile) -> float:
    """The framework's weighted average over the objectives, 0.0..4.0 (for display/ranking)."""
    return sum(weight * profile.sov.get(obj, 0) for obj, weight in SOV_OBJECTIVES.items())
