"""One row per member for `stekker workload explain`: why it was chosen or not.

Works from the `DecisionRecord` alone, so it can explain a decision long after the
snapshot it was made from has changed.
"""

from __future__ import annotations

from typing import Any

from contracts.workload import DecisionRecord, Verdict
from services.scheduler.verdicts import by_member, record_verdicts, ruling_failure


def _best_site(record: DecisionRecord, member: str) -> str | None:
    scored = {
        key.split("/", 1)[1]: score
        for key, score in record.scores.items()
        if key.split("/", 1)[0] == member
    }
    return min(scored, key=lambda s: (-scored[s], s)) if scored else None


# The short name of the check behind each reason word, for a compact column.
CHECK_NAMES: dict[str, str] = {
    "member_excluded": "not-excluded",
    "member_not_active": "active",
    "seal_too_low": "seal",
    "classification_not_cleared": "classification",
    "certification_missing": "certifications",
    "jurisdiction_not_allowed": "jurisdiction",
    "insufficient_capacity": "capacity",
    "sov_objective_too_low": "sov-objectives",
    "non_eu_law_exposure": "non-eu-law",
    "staff_not_eu_resident": "eu-staff",
    "stack_undeclared": "stack",
    "affinity_not_met": "affinity",
    "anti_affinity": "anti-affinity",
    "residency_not_allowed": "residency",
}


def _checks(verdicts: list[Verdict], site: str | None) -> list[dict[str, Any]]:
    """Every check the member went through (and those of `site`), passed or failed."""
    return [
        {
            "check": CHECK_NAMES.get(v.reason or "", v.reason),
            "site": v.site,
            "passed": v.passed,
            "detail": v.detail,
        }
        for v in verdicts
        if v.reason and (v.site is None or v.site == site)
    ]


def explain_rows(record: DecisionRecord) -> list[dict[str, Any]]:
    """Rows in member id order: member, site, passed, reason, detail, score, chosen, and
    `checks`: every constraint the member (and that site) passed or failed."""
    chosen = {a.member: a.site for a in record.chosen}
    grouped = by_member(record_verdicts(record))
    rows = []
    for member in sorted(set(grouped) | set(chosen)):
        failure = ruling_failure(grouped.get(member, []))
        if failure is not None:
            site = chosen.get(member, failure.site)
            reason, detail, passed = failure.reason, failure.detail, False
        else:
            site = chosen.get(member) or _best_site(record, member)
            reason, passed = None, True
            if member in chosen:
                detail = "chosen"
            elif record.sampled and not any(v.site for v in grouped.get(member, [])):
                detail = "passed every member check; its sites were outside the scored sample"
            else:
                detail = "feasible; replicas went to higher scores"
        rows.append(
            {
                "member": member,
                "site": site,
                "passed": passed,
                "reason": reason,
                "detail": detail,
                "score": record.scores.get(f"{member}/{site}") if passed else None,
                "chosen": member in chosen,
                "checks": _checks(grouped.get(member, []), site),
            }
        )
    return rows
