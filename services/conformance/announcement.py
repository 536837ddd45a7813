"""What a valid announcement of a member is. Pure."""

from __future__ import annotations

from contracts.registry import SOV_OBJECTIVES, MemberProfile


def announcement_problems(profile: MemberProfile, member: str) -> list[str]:
    """Everything wrong with `profile` as `member`'s announcement; empty when valid.

    The schema (checked when the message was verified) covers types and formats; this
    covers what the schema cannot say: whose profile it is, that it has somewhere to run,
    and that it states a level for every sovereignty objective, so placement can judge it.
    """
    problems: list[str] = []
    if profile.id != member:
        problems.append(f"profile id {profile.id!r} is not {member!r}")
    if not profile.sites:
        problems.append("no sites")
    missing = [sov for sov in SOV_OBJECTIVES if sov not in profile.sov]
    if missing:
        problems.append(f"sovereignty objectives without a level: {', '.join(missing)}")
    unknown = sorted(set(profile.sov) - set(SOV_OBJECTIVES))
    if unknown:
        problems.append(f"unknown sovereignty objectives: {', '.join(unknown)}")
    return problems
