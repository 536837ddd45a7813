"""The takeover report: a JSON-ready dict built from the saga record and its workloads'
progress records, and its Markdown.

Pure. The dict is stored in `SagaRecord.report` and written by `stekker drill takeover`
as `drill-<member>-<saga>.json` (and `.md`). Its shape (version 1):

    kind, version, saga, target, coordinator, reason, drill,
    started_at, finished_at (RFC 3339), duration_ms,
    plan_hash, quorum, approved,
    approvals:         [{member, key_id, msg_id, verified, at}]
    refused_approvals: [{member, key_id, msg_id, reason, at}]
    workloads:         [{workload, source, successor, site, status, time_to_running_ms, detail,
                         stateful, origin, digest, bytes, attempts, retries,
                         rpo_s, rpo_target_s, rpo_met, rto_s, rto_target_s, rto_met,
                         generation}]
                       status: ok | released | failed | no_successor | not_run
                       origin: source | backup (where the data came from), None if no data
                       retries: [text] one per attempt that did not count (a corrupted
                       transfer, a source that did not answer)
                       rto_s: real takeover: outage until the successor ran it; drill: the
                       time to running of the shadow copy (import included)
    timeline:          [{at, step, status, workload, actor, detail}]
    failures:          [text], passed, summary

When does a drill pass? The quorum approved the plan, and every workload on the target
has a successor that started a shadow copy (on the imported, digest-checked data when
the workload is stateful) and found it healthy. A real takeover passes when, moreover,
every placement was cut over and runs on its successor, and (acquisition) the source
was suspended. A workload nobody may
host FAILS the drill: the continuity promise does not hold for it, and that is exactly
what a drill is there to find out. A target that hosts nothing passes (nothing to lose).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from contracts.state import SagaProgress, SagaRecord
from contracts.takeover import PlanItem
from services.takeover.saga import (
    APPROVAL,
    APPROVE,
    CUTOVER,
    EXPORT,
    PLAN,
    RELEASE,
    RESTORE,
    SHADOW_START,
    VERIFY,
    HasSteps,
    attempts,
    find_step,
    iso,
    merged_steps,
)

REPORT_VERSION = 1
# Row statuses that keep the promise: moved (ok), or no member may take a new replica but
# the workload's other replicas serve it and the source's was (in a drill: would be)
# released.
DONE = frozenset({"ok", "released"})


def _workload_row(record: SagaRecord, item: PlanItem, steps: HasSteps) -> dict[str, Any]:
    """`item`'s row; `steps` holds its workload's steps (the saga's own are in `record`)."""
    row: dict[str, Any] = {
        "workload": item.workload, "source": item.source, "successor": item.successor,
        "site": item.site, "status": "not_run", "time_to_running_ms": None,
        "detail": item.reason, "stateful": False, "origin": None, "digest": None,
        "bytes": None, "attempts": 0, "retries": [], "rpo_s": None, "rpo_target_s": None,
        "rto_s": None, "rto_target_s": None, "generation": None,
    }
    if item.successor is None:
        row["status"] = "no_successor"
        released = find_step(steps, RELEASE, workload=item.workload, statuses=("ok",))
        if released is not None:
            # Still served by its other replicas; the source's one is gone, as it must
            # (a drill says it would be).
            row["status"], row["detail"] = "released", released.get("detail")
            row["generation"] = released.get("generation")
        return row
    tries = attempts(steps, SHADOW_START, item.workload)
    result = next((e for e in tries if e.get("status") == "ok"), tries[-1] if tries else None)
    if result is not None:
        row["status"] = result.get("status")
        row["time_to_running_ms"] = result.get("elapsed_ms")
        row["detail"] = result.get("detail") or row["detail"]
        row["attempts"] = len(tries)
        row["rto_target_s"] = result.get("rto_target_s")
        elapsed = result.get("elapsed_ms")
        row["rto_s"] = round(elapsed / 1000, 3) if isinstance(elapsed, int | float) else None
    data = [e for e in attempts(steps, EXPORT, item.workload)
            + attempts(steps, RESTORE, item.workload)]
    retries = [f"attempt {e.get('attempt', 1)}: {e.get('step')}: {e.get('detail')}"
               for e in data if e.get("status") == "failed"]
    retries += [f"attempt {e.get('attempt', 1)}: {e.get('detail')}" for e in tries
                if e.get("status") == "failed" and e is not result]
    row["retries"] = retries
    used = next((e for e in data if e.get("status") == "ok"
                 and (result is None or e.get("attempt", 1) == result.get("attempt", 1))),
                None)
    if used is not None:
        row.update(stateful=True, origin=used.get("origin"), digest=used.get("digest"),
                   bytes=used.get("size"), rpo_s=used.get("rpo_s"),
                   rpo_target_s=used.get("rpo_target_s"))
    if not record.drill and row["status"] == "ok":
        cut = find_step(steps, CUTOVER, workload=item.workload)
        verify = find_step(steps, VERIFY, workload=item.workload)
        last = verify or cut
        if cut is None or cut.get("status") != "ok" or verify is None \
                or verify.get("status") != "ok":
            row["status"] = "failed" if last is not None else "not_run"
            row["detail"] = (last or {}).get("detail") or "not cut over"
        else:
            row["generation"] = cut.get("generation")
            row["rto_s"] = verify.get("rto_s")
            row["detail"] = f"{row['detail']}; {verify.get('detail')}"
    for kind in ("rto", "rpo"):
        value, target = row.get(f"{kind}_s"), row.get(f"{kind}_target_s")
        row[f"{kind}_met"] = (value <= target if isinstance(value, int | float)
                              and isinstance(target, int | float) else None)
    return row


def _timeline(steps: list[dict[str, object]]) -> list[dict[str, Any]]:
    return [{"at": e.get("at"), "step": e.get("step"), "status": e.get("status"),
             "workload": e.get("workload"), "actor": e.get("actor") or e.get("member"),
             "detail": e.get("detail")} for e in steps]


def build_report(
    record: SagaRecord, *, finished_at: dt.datetime, progress: Iterable[SagaProgress] = (),
) -> dict[str, Any]:
    """The report of `record` and its workloads' `progress` records (a record written
    before workloads had records of their own keeps every step in `record.steps`)."""
    steps = merged_steps(record, progress)
    by_workload: dict[str, list[dict[str, object]]] = defaultdict(list)
    for e in steps:
        if e.get("workload"):
            by_workload[str(e["workload"])].append(e)
    approved = find_step(record, APPROVAL, statuses=("ok",)) is not None
    approvals = [
        {"member": e.get("member"), "key_id": e.get("key_id"), "msg_id": e.get("msg_id"),
         "verified": True, "at": e.get("at")}
        for e in steps if e.get("step") == APPROVE and e.get("status") == "ok"
    ]
    refused = [
        {"member": e.get("member"), "key_id": e.get("key_id"), "msg_id": e.get("msg_id"),
         "reason": e.get("detail"), "at": e.get("at")}
        for e in steps if e.get("step") == APPROVE and e.get("status") == "failed"
    ]
    rows = [_workload_row(record, item, SagaProgress(saga=record.saga, workload=item.workload,
                                                     steps=by_workload[item.workload]))
            for item in record.plan]
    failures = [
        f"{e.get('step')}: {e.get('detail')}"
        for e in steps
        if e.get("status") == "failed" and e.get("workload") is None
        and e.get("step") != APPROVE
    ]
    if approved:
        # Rows are judged only once the plan was approved; before that nothing ran.
        failures += [
            f"{row['workload']}: {_failure_word(row['status'])}: {row['detail']}"
            for row in rows if row["status"] not in DONE
        ]
    planned = find_step(record, PLAN, statuses=("ok",)) is not None
    passed = planned and approved and all(row["status"] in DONE for row in rows)
    started = record.started_at or finished_at
    kind = "drill" if record.drill else "takeover"
    return {
        "kind": "takeover-drill" if record.drill else "takeover",
        "version": REPORT_VERSION,
        "saga": record.saga,
        "target": record.member,
        "coordinator": record.coordinator,
        "reason": record.reason,
        "drill": record.drill,
        "started_at": iso(started),
        "finished_at": iso(finished_at),
        "duration_ms": round((finished_at - started).total_seconds() * 1000, 1),
        "plan_hash": record.plan_hash,
        "quorum": record.quorum,
        "approved": approved,
        "approvals": approvals,
        "refused_approvals": refused,
        "workloads": rows,
        "timeline": _timeline(steps),
        "failures": failures,
        "passed": passed,
        "summary": _summary(record, kind, passed, rows, approvals),
    }


def _failure_word(status: str) -> str:
    return {"no_successor": "no successor", "not_run": "no result"}.get(status, status)


def _summary(
    record: SagaRecord, kind: str, passed: bool, rows: list[dict[str, Any]],
    approvals: list[dict[str, Any]],
) -> str:
    ok = sum(1 for row in rows if row["status"] == "ok")
    released = sum(1 for row in rows if row["status"] == "released")
    approvers = ", ".join(sorted(str(a["member"]) for a in approvals)) or "nobody"
    verdict = "passed" if passed else "failed"
    kept = f", {released} kept by their other replicas" if released else ""
    return (f"{kind} of {record.member} {verdict}: {ok}/{len(rows)} workload(s) started on "
            f"a successor{kept}; approved by {approvers} (quorum {record.quorum})")


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        value = f"{value:.1f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    """The report for humans: title, summary table, approvals, workloads, verdict."""
    verdict = "PASSED" if report.get("passed") else "FAILED"
    what = "Takeover drill" if report.get("drill") else "Takeover"
    duration = report.get("duration_ms")
    lines = [f"# {what} of `{report.get('target')}`: {verdict}", "",
             str(report.get("summary", "")), ""]
    lines += _table(["Item", "Value"], [
        ["Saga", f"`{report.get('saga')}`"],
        ["Target", report.get("target")],
        ["Coordinator", report.get("coordinator")],
        ["Reason", report.get("reason")],
        ["Started", report.get("started_at")],
        ["Finished", report.get("finished_at")],
        ["Duration", f"{duration / 1000:.2f} s" if isinstance(duration, int | float) else None],
        ["Plan hash", f"`{report.get('plan_hash')}`" if report.get("plan_hash") else None],
        ["Quorum", report.get("quorum")],
        ["Approved", "yes" if report.get("approved") else "no"],
        ["Result", f"**{verdict}**"],
    ])
    lines += ["", "## Approvals", ""]
    approvals = report.get("approvals") or []
    if approvals:
        lines += _table(["Member", "Key id", "Message id", "Signature"], [
            [a.get("member"), f"`{a.get('key_id')}`", f"`{a.get('msg_id')}`",
             "verified" if a.get("verified") else "not verified"]
            for a in approvals
        ])
    else:
        lines.append("No approvals were counted.")
    refused = report.get("refused_approvals") or []
    if refused:
        lines += ["", "## Refused approvals (reported as security violations)", ""]
        lines += _table(["Member", "Key id", "Message id", "Reason"], [
            [r.get("member"), f"`{r.get('key_id')}`", f"`{r.get('msg_id')}`", r.get("reason")]
            for r in refused
        ])
    lines += ["", "## Workloads", ""]
    workloads = report.get("workloads") or []
    if workloads:
        lines += _table(
            ["Workload", "Source", "Successor", "Site", "Time to running (ms)", "Status",
             "Detail"],
            [[w.get("workload"), w.get("source"), w.get("successor"), w.get("site"),
              w.get("time_to_running_ms"), w.get("status"), w.get("detail")]
             for w in workloads],
        )
    else:
        lines.append(f"`{report.get('target')}` hosts no workloads: nothing to take over.")
    failures = report.get("failures") or []
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {_cell(f)}" for f in failures]
    lines += ["", f"**Result: {verdict}**", ""]
    if report.get("drill"):
        lines += ["Drill mode: the source was untouched and the real placements were not "
                  "changed; each shadow copy was stopped after its check.", ""]
    return "\n".join(lines)
