"""Decision records recomputed: the honest pipeline's record holds; a doubled member, too
many assignments, or a chosen member that failed a verdict do not."""

from __future__ import annotations

import datetime as dt

import msgspec

from contracts.registry import MemberAnnounced
from contracts.workload import (
    EVERY_AGENT,
    Assignment,
    PlacedItem,
    PlacementsDispatched,
    WorkloadsPlaced,
)
from services.audit.decisions import DecisionAudit, check_decision
from services.scheduler.pipeline import decide
from services.scheduler.snapshot import snapshot_of
from services.scheduler.verdicts import record_verdicts
from support import demo_profiles
from support_workloads import demo_spec

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def test_honest_records_hold_and_broken_ones_do_not() -> None:
    profiles = {p.id: p for p in demo_profiles()}
    spec = demo_spec("kadaster-kaartviewer")
    honest = decide(spec, snapshot_of(profiles, today=NOW.date()), decided_by="amstel", now=NOW)
    assert check_decision(honest, spec=spec, assignments=honest.chosen, profiles=profiles) == []

    first = honest.chosen[0]
    doubled = msgspec.structs.replace(honest, chosen=[first, first, first])
    problems = check_decision(doubled, spec=spec, assignments=None, profiles=profiles)
    assert any("chosen twice" in p for p in problems)
    assert any(f"3 assignments for {spec.replicas}" in p for p in problems)

    ruled_out = next(v for v in record_verdicts(honest) if not v.passed and v.site is None)
    wrong = msgspec.structs.replace(
        honest, chosen=[Assignment(member=ruled_out.member, site="x")])
    problems = check_decision(wrong, spec=spec, assignments=None, profiles=profiles)
    assert any(f"chosen {ruled_out.member} failed {ruled_out.reason}" in p for p in problems)

    unknown = check_decision(honest, spec=spec, assignments=None, profiles={})
    assert any("announced no profile" in p for p in unknown)


def test_every_item_of_a_batch_is_checked() -> None:
    """A `workload.placements.v1` is checked item by item, like that many placed events."""
    profiles = {p.id: p for p in demo_profiles()}
    audit = DecisionAudit()
    for seq, profile in enumerate(profiles.values(), start=1):
        audit.feed(seq, MemberAnnounced(profile=profile))
    snapshot = snapshot_of(profiles, today=NOW.date())
    items = []
    for name in ("kadaster-kaartviewer", "rvig-brp-kern"):
        spec = demo_spec(name)
        decision = decide(spec, snapshot, decided_by="amstel", now=NOW)
        items.append(PlacedItem(spec=spec, assignments=list(decision.chosen),
                                decision=decision))
    audit.feed(10, WorkloadsPlaced(placements=items))
    assert audit.checked == 2 and audit.mismatches == []

    # One item whose event says another choice than its record: found, by its workload.
    lying = msgspec.structs.replace(items[1], assignments=[Assignment(member="x", site="y")])
    audit.feed(11, WorkloadsPlaced(placements=[items[0], lying]))
    assert audit.checked == 4
    assert [(m.seq, m.workload) for m in audit.mismatches] == [(11, "rvig-brp-kern")]
    assert "differ from the record's choice" in audit.mismatches[0].problem
    # Not counted (before --since): the specs are still learnt, nothing is checked.
    audit.feed(12, WorkloadsPlaced(placements=items), count=False)
    assert audit.checked == 4
    # An addressed batch (what schedulers send now) is checked the same way.
    audit.feed(13, PlacementsDispatched(placements=[lying], to=EVERY_AGENT))
    assert audit.checked == 5
    assert [(m.seq, m.workload) for m in audit.mismatches][-1] == (13, "rvig-brp-kern")
