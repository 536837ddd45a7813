"""The saga record's transitions and the report built from it (pure)."""

from __future__ import annotations

import datetime as dt
import json

import msgspec

from contracts.state import SagaProgress, SagaRecord
from contracts.takeover import PlanItem
from services.takeover import saga as S
from services.takeover.html import to_html
from services.takeover.plan import plan_hash
from services.takeover.report import build_report, to_markdown

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
PLAN = [
    PlanItem(workload="rivm-meetdata", source="dommel", successor="amstel", site="ams1"),
    PlanItem(workload="rivm-dashboard", source="dommel", successor="zuidas", site="rtm1"),
]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def planned(plan: list[PlanItem] = PLAN) -> SagaRecord:
    record = S.new_saga("s1", target="dommel", coordinator="amstel", reason="drill",
                        drill=True, now=T0)
    out = S.with_plan(record, plan, plan_hash(plan), 2, at(0.1))
    assert out is not None and out.state == "approving"
    return out


def approved(record: SagaRecord) -> SagaRecord:
    for member in ("amstel", "zuidas"):
        record = S.with_approval(record, member=member, key_id=f"k-{member}",
                                 msg_id=f"approve-s1-{member}", now=at(0.2)) or record
    out = S.with_quorum(record, ["amstel", "zuidas"], at(0.3))
    assert out is not None and out.state == "running"
    return out


def shadow(record: SagaRecord, workload: str, status: str, ms: float | None) -> SagaRecord:
    entry = S.step_entry(S.SHADOW_START, status, at=at(0.5), workload=workload,
                         actor="x", elapsed_ms=ms, detail=f"{status} detail")
    return S.with_result(record, entry, at(0.5)) or record


def finished(record: SagaRecord) -> tuple[SagaRecord, dict[str, object]]:
    report = build_report(record, finished_at=at(1.5))
    out = S.with_end(record, passed=bool(report["passed"]), report=report, now=at(1.5))
    assert out is not None
    return out, report


def test_transitions_are_idempotent() -> None:
    record = planned()
    assert S.with_plan(record, [], plan_hash([]), 2, at(1)) is None  # the first plan stands
    record = approved(record)
    assert S.with_approval(record, member="amstel", key_id="k", msg_id="again",
                           now=at(1)) is None
    assert S.with_quorum(record, ["amstel", "zuidas"], at(1)) is None
    record = shadow(record, "rivm-meetdata", "ok", 12.0)
    assert S.with_result(record, S.step_entry(S.SHADOW_START, "failed", at=at(1),
                                              workload="rivm-meetdata"), at(1)) is None
    record, _ = finished(record)
    assert S.with_end(record, passed=True, report={}, now=at(2)) is None
    assert S.with_step(record, S.step_entry("x", "ok", at=at(2)), at(2)) is None


def test_passed_report_and_its_json_shape() -> None:
    record = approved(planned())
    record = shadow(record, "rivm-meetdata", "ok", 12.0)
    record = shadow(record, "rivm-dashboard", "ok", 3.0)
    record, report = finished(record)
    assert record.state == "completed" and report["passed"] is True
    assert report["kind"] == "takeover-drill" and report["target"] == "dommel"
    assert report["coordinator"] == "amstel" and report["duration_ms"] == 1500.0
    assert report["approved"] is True and report["failures"] == []
    assert [(a["member"], a["key_id"], a["msg_id"], a["verified"])
            for a in report["approvals"]] == [  # type: ignore[attr-defined]
        ("amstel", "k-amstel", "approve-s1-amstel", True),
        ("zuidas", "k-zuidas", "approve-s1-zuidas", True)]
    rows = {w["workload"]: w for w in report["workloads"]}  # type: ignore[attr-defined]
    assert rows["rivm-meetdata"]["time_to_running_ms"] == 12.0
    assert rows["rivm-meetdata"]["successor"] == "amstel"
    # JSON-ready, and the saga record keeps it through a round trip.
    assert json.loads(json.dumps(report)) == report
    back = msgspec.json.decode(msgspec.json.encode(record), type=SagaRecord)
    assert back.report == report and back.plan == PLAN


def test_no_successor_fails_the_drill() -> None:
    plan = [*PLAN, PlanItem(workload="kaart", source="dommel", successor=None,
                            reason="no member may host it: certification_missing")]
    record = approved(planned(plan))
    record = shadow(record, "rivm-meetdata", "ok", 12.0)
    record = shadow(record, "rivm-dashboard", "ok", 3.0)
    record, report = finished(record)
    assert record.state == "failed" and report["passed"] is False
    rows = {w["workload"]: w for w in report["workloads"]}  # type: ignore[attr-defined]
    assert rows["kaart"]["status"] == "no_successor"
    assert report["failures"] == [
        "kaart: no successor: no member may host it: certification_missing"]


def test_a_failed_shadow_or_missing_quorum_fails_the_drill() -> None:
    record = approved(planned())
    record = shadow(record, "rivm-meetdata", "failed", None)
    _, report = finished(record)
    assert report["passed"] is False
    assert any("rivm-meetdata: failed" in f for f in report["failures"])  # type: ignore

    record = planned()
    record = S.with_refused_approval(record, member="dommel", key_id="kd", msg_id="m1",
                                     why="the target cannot approve", now=at(1)) or record
    record = S.with_step(record, S.step_entry(S.APPROVAL, "failed", at=at(20),
                                              detail="quorum not reached"), at(20)) or record
    record, report = finished(record)
    assert record.state == "failed" and report["approved"] is False
    assert report["failures"] == ["approval: quorum not reached"]
    assert report["refused_approvals"][0]["member"] == "dommel"  # type: ignore[index]
    assert {w["status"] for w in report["workloads"]} == {"not_run"}  # type: ignore


def test_an_empty_plan_passes() -> None:
    record = approved(planned([]))
    _, report = finished(record)
    assert report["passed"] is True and report["workloads"] == []
    assert "hosts no workloads" in to_markdown(report)


def test_markdown_has_the_right_rows() -> None:
    plan = [*PLAN, PlanItem(workload="kaart", source="dommel", successor=None,
                            reason="nobody | may")]
    record = approved(planned(plan))
    record = shadow(record, "rivm-meetdata", "ok", 12.4)
    record = shadow(record, "rivm-dashboard", "ok", 3.0)
    _, report = finished(record)
    md = to_markdown(report)
    lines = md.splitlines()
    assert lines[0] == "# Takeover drill of `dommel`: FAILED"
    assert "| Coordinator | amstel |" in lines
    assert "| Quorum | 2 |" in lines
    assert "| amstel | `k-amstel` | `approve-s1-amstel` | verified |" in lines
    assert "| rivm-meetdata | dommel | amstel | ams1 | 12.4 | ok | ok detail |" in lines
    assert "| rivm-dashboard | dommel | zuidas | rtm1 | 3.0 | ok | ok detail |" in lines
    # A pipe in a reason does not break the table.
    assert "| kaart | dommel | - | - | - | no_successor | nobody \\| may |" in lines
    assert "**Result: FAILED**" in lines


def test_a_stateful_row_reports_data_retries_rpo_and_html() -> None:
    record = approved(planned())
    data = {"object": "takeover/s1/rivm-meetdata/1", "digest": "ab" * 32, "size": 1024,
            "origin": "source", "rpo_s": 0.0, "rpo_target_s": 300}
    for attempt, status in ((1, "failed"), (2, "ok")):
        record = S.with_result(record, S.step_entry(
            S.EXPORT, "ok", at=at(0.4), workload="rivm-meetdata", attempt=attempt,
            **data), at(0.4)) or record
        record = S.with_result(record, S.step_entry(
            S.SHADOW_START, status, at=at(0.5), workload="rivm-meetdata", attempt=attempt,
            elapsed_ms=800.0 if status == "ok" else None, rto_target_s=60,
            detail="digest mismatch <on purpose>" if status == "failed" else "ok"),
            at(0.5)) or record
    record = shadow(record, "rivm-dashboard", "ok", 5.0)
    _, report = finished(record)
    rows = {w["workload"]: w for w in report["workloads"]}  # type: ignore[union-attr]
    row = rows["rivm-meetdata"]
    assert row["status"] == "ok" and row["attempts"] == 2 and row["digest"] == "ab" * 32
    assert row["rpo_met"] is True and row["rto_s"] == 0.8 and row["rto_met"] is True
    assert row["retries"] == ["attempt 1: digest mismatch <on purpose>"]
    assert rows["rivm-dashboard"]["stateful"] is False and report["passed"] is True
    html = to_html(report)
    assert html.startswith("<!doctype html>") and "<script" not in html
    assert "&lt;on purpose&gt;" in html and "<on purpose>" not in html
    assert "ab" * 32 in html and "PASSED" in html and "Timeline" in html


def test_a_drill_passes_a_workload_its_other_replicas_keep_serving() -> None:
    """No member may take a new replica, but the workload's other replicas serve it: the
    real takeover releases the source's replica and carries on degraded, so the drill
    that says so passes, and says how."""
    plan = [*PLAN, PlanItem(workload="brp", source="dommel", successor=None,
                            reason="placed 2/3 on amstel, zuidas (kept amstel, zuidas)")]
    record = approved(planned(plan))
    record = shadow(record, "rivm-meetdata", "ok", 12.0)
    record = shadow(record, "rivm-dashboard", "ok", 3.0)
    entry = S.step_entry(S.RELEASE, "ok", at=at(0.6), workload="brp", generation=1,
                         detail="drill: dommel's replica would be released; served by "
                                "amstel, zuidas (degraded)")
    record = S.with_step(record, entry, at(0.6)) or record
    record, report = finished(record)
    assert report["passed"] is True and record.state == "completed"
    rows = {w["workload"]: w for w in report["workloads"]}  # type: ignore[attr-defined]
    assert rows["brp"]["status"] == "released"
    assert "would be released" in rows["brp"]["detail"]
    assert "1 kept by their other replicas" in str(report["summary"])


def test_a_workloads_outcome_in_its_own_record_stands_once() -> None:
    ok = S.step_entry(S.EXPORT, "ok", at=at(0.4), workload="w", attempt=1, digest="d1")
    first = S.with_outcome(None, ok, saga="s1")
    assert first is not None and first.saga == "s1" and first.workload == "w"
    assert first.steps == [ok]
    # The same outcome again (a redelivery, a resumed coordinator), or another outcome of
    # the same attempt: the first one stands.
    assert S.with_outcome(first, ok, saga="s1") is None
    failed = S.step_entry(S.EXPORT, "failed", at=at(0.6), workload="w", attempt=1)
    assert S.with_outcome(first, failed, saga="s1") is None
    # Another attempt is another outcome.
    second = S.with_outcome(first, {**failed, "attempt": 2}, saga="s1")
    assert second is not None and len(second.steps) == 2


def test_the_report_from_progress_records_is_the_report_from_one_record() -> None:
    """Workload steps kept in per-workload records give the report they gave when the
    saga record held every step (as a record written before the split still does)."""
    record = approved(planned())
    entries = [
        S.step_entry(S.EXPORT, "ok", at=at(0.4), workload="rivm-meetdata", actor="dommel",
                     attempt=1, object="o", digest="abc", size=10, origin="source", rpo_s=0.0,
                     rpo_target_s=60),
        S.step_entry(S.SHADOW_START, "ok", at=at(0.5), workload="rivm-meetdata",
                     actor="amstel", attempt=1, elapsed_ms=12.5, detail="ok detail",
                     rto_target_s=300),
        S.step_entry(S.SHADOW_START, "failed", at=at(0.45), workload="rivm-dashboard",
                     actor="zuidas", attempt=1, detail="not healthy"),
    ]
    whole = record
    progress: dict[str, SagaProgress] = {}
    for entry in entries:
        whole = S.with_result(whole, entry, at(0.6)) or whole
        workload = str(entry["workload"])
        updated = S.with_outcome(progress.get(workload), entry, saga="s1")
        assert updated is not None
        progress[workload] = updated
    one = build_report(whole, finished_at=at(1.5))
    split = build_report(record, finished_at=at(1.5), progress=progress.values())
    # The same content; the timeline in time order (the single record kept write order).
    assert {k: v for k, v in split.items() if k != "timeline"} == \
        {k: v for k, v in one.items() if k != "timeline"}
    assert split["timeline"] == sorted(one["timeline"], key=lambda e: e["at"])  # type: ignore
    assert split["workloads"][0]["digest"] == "abc"  # type: ignore[index]
    assert split["passed"] is False
    # `takeover status --json` shows the same merged timeline in `steps`.
    merged = S.with_progress(record, progress.values())
    assert [e["at"] for e in merged.steps] == sorted(e["at"] for e in merged.steps)
    assert len(merged.steps) == len(record.steps) + len(entries)
