"""Reading verdicts back: which failure rules a member out, if any.

Shared by the pipeline (for its summary) and `explain` (which only has the record), so
both always name the same reason for the same member.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from contracts.workload import DecisionRecord, Verdict, VerdictClass
from services.scheduler.filters import REASONS


def expand(classes: Iterable[VerdictClass], verdicts: Iterable[Verdict]) -> list[Verdict]:
    """Class verdicts copied to each member of their class (first, as the filters ran),
    then the per-member verdicts."""
    expanded = [
        msgspec.structs.replace(v, member=member)
        for cls in classes
        for member in cls.members
        for v in cls.verdicts
    ]
    expanded.extend(verdicts)
    return expanded


def record_verdicts(record: DecisionRecord) -> list[Verdict]:
    """Every verdict of a record, one list (see `expand`). A record written before
    classes existed holds them all in `verdicts` already, and reads back unchanged."""
    return expand(record.classes, record.verdicts)


def by_member(verdicts: Iterable[Verdict]) -> dict[str, list[Verdict]]:
    grouped: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        grouped.setdefault(verdict.member, []).append(verdict)
    return grouped


def _rank(verdict: Verdict) -> int:
    return REASONS.index(verdict.reason) if verdict.reason in REASONS else len(REASONS)


def ruling_failure(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The failure that rules one member out, or None when some site of it is feasible.

    A failed member-level filter wins, first in filter order. Otherwise the member is out
    only when every site failed; then the site that got furthest through the filters
    speaks (a site short of capacity in an allowed country says more than a site abroad),
    ties going to the lowest site id.
    """
    member_level = [v for v in verdicts if v.site is None]
    failed = [v for v in member_level if not v.passed]
    if failed:
        return failed[0]
    sites: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        if verdict.site is not None:
            sites.setdefault(verdict.site, []).append(verdict)
    site_failures = []
    for site in sorted(sites):
        failures = [v for v in sites[site] if not v.passed]
        if not failures:
            return None
        site_failures.append(failures[0])
    best: Verdict | None = None
    for verdict in site_failures:  # in site id order, so a tie keeps the lowest site
        if best is None or _rank(verdict) > _rank(best):
            best = verdict
    return best
