"""Planning a rebalance move (pure): one replica leaves, one arrives, never more than asked."""

from __future__ import annotations

import datetime as dt

from contracts.state import PlacementRecord
from contracts.workload import Assignment
from services.scheduler.pipeline import decide
from services.scheduler.rebalance import plan_move, takers_from
from services.scheduler.snapshot import snapshot_of
from support import demo_profiles
from support_workloads import demo_spec

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def _record(spec_name: str, on: list[str], history: list[str]) -> PlacementRecord:
    profiles = {p.id: p for p in demo_profiles()}
    assignments = [Assignment(member=m, site=profiles[m].sites[0].id, replica=i)
                   for i, m in enumerate(on)]
    return PlacementRecord(spec=demo_spec(spec_name), state="running", generation=2,
                           assignments=assignments, history=history)


def _snapshot():  # type: ignore[no-untyped-def]
    return snapshot_of({p.id: p for p in demo_profiles()}, today=NOW.date())


def test_moving_back_replaces_the_replica_that_took_the_members_place() -> None:
    record = _record("rivm-luchtkwaliteit-dashboard", ["amstel", "zuidas"],
                     ["gen 1: placed on amstel/x, dommel/y",
                      "gen 2: failover from dommel → zuidas (3.1 s after down)"])
    assert takers_from(record, "dommel") == ["zuidas"]
    move = plan_move(record, _snapshot(), decided_by="amstel", now=NOW, member="dommel")
    assert move is not None
    assert move.leave.member == "zuidas" and move.arrive.member == "dommel"
    chosen = [a.member for a in move.decision.chosen]
    assert sorted(chosen) == ["amstel", "dommel"] and move.decision.cause == "rebalance"
    assert move.arrive.replica == move.leave.replica  # the freed replica slot

    # A member already hosting it, or one that never did and is not wanted: nothing.
    assert plan_move(record, _snapshot(), decided_by="amstel", now=NOW, member="amstel") is None
    ideal = decide(record.spec, _snapshot(), decided_by="amstel", now=NOW)
    assert sorted(a.member for a in ideal.chosen) == ["amstel", "dommel"]
    where_wanted = _record("rivm-luchtkwaliteit-dashboard", ["amstel", "dommel"], [])
    assert plan_move(where_wanted, _snapshot(), decided_by="amstel", now=NOW,
                     member="zuidas") is None


def test_without_a_member_only_a_clear_gain_moves() -> None:
    spec = demo_spec("rvig-brp-kern")
    ideal = decide(spec, _snapshot(), decided_by="amstel", now=NOW)
    best = [a.member for a in ideal.chosen]
    settled = _record("rvig-brp-kern", best, [])
    assert plan_move(settled, _snapshot(), decided_by="amstel", now=NOW) is None

    # On a member that fails its rules now (dommel's SEAL is too low for it): it moves.
    wrong = _record("rvig-brp-kern", ["dommel"], [])
    move = plan_move(wrong, _snapshot(), decided_by="amstel", now=NOW)
    assert move is not None and move.leave.member == "dommel"
    assert [a.member for a in move.decision.chosen] == best
