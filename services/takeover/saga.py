"""The saga record's transitions: pure functions from one `SagaRecord` to the next.

`fed_sagas/<saga>` is the truth of a takeover's progress. Every change goes through
`Bucket.modify` with one of these functions; each returns None when the change is done
already (or no longer allowed), so a redelivered message or a resumed coordinator never
does a step twice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from contracts.state import SagaRecord
from contracts.takeover import PlanItem

FINISHED = frozenset({"completed", "failed"})

# Step names recorded in `SagaRecord.steps` and published as `takeover.step.v1`.
PLAN = "plan"
APPROVE = "approve"  # one entry per approval received (ok = counted, failed = refused)
APPROVAL = "approval"  # the quorum was reached (ok) or not in time (failed)
SHADOW_START = "shadow_start"
REPORT = "report"


def iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds") if t else None


def step_entry(
    step: str,
    status: str,
    *,
    at: dt.datetime,
    workload: str | None = None,
    actor: str | None = None,
    elapsed_ms: float | None = None,
    detail: str = "",
    **extra: Any,
) -> dict[str, object]:
    """One entry of `SagaRecord.steps`; plain JSON values only, so it reads back equal."""
    entry: dict[str, object] = {
        "step": step, "status": status, "workload": workload, "actor": actor,
        "elapsed_ms": elapsed_ms, "detail": detail, "at": iso(at),
    }
    entry.update(extra)
    return entry


def find_step(
    record: SagaRecord,
    step: str,
    *,
    workload: str | None = None,
    statuses: tuple[str, ...] = ("ok", "failed"),
    member: str | None = None,
) -> dict[str, object] | None:
    for entry in record.steps:
        if (entry.get("step") == step and entry.get("workload") == workload
                and entry.get("status") in statuses
                and (member is None or entry.get("member") == member)):
            return entry
    return None


def new_saga(
    saga: str, *, target: str, coordinator: str, reason: str, drill: bool, now: dt.datetime
) -> SagaRecord:
    return SagaRecord(saga=saga, member=target, coordinator=coordinator, reason=reason,
                      drill=drill, state="planning", started_at=now, updated_at=now)


def _replace(record: SagaRecord, **changes: Any) -> SagaRecord:
    return msgspec.structs.replace(record, **changes)


def with_plan(
    record: SagaRecord, plan: list[PlanItem], plan_hash: str, quorum: int, now: dt.datetime
) -> SagaRecord | None:
    """planning → approving, with the plan; None if a plan was recorded already."""
    if record.state != "planning":
        return None
    detail = f"{len(plan)} workload(s) on {record.member}"
    return _replace(
        record, state="approving", plan=plan, plan_hash=plan_hash, quorum=quorum,
        steps=[*record.steps, step_entry(PLAN, "ok", at=now, detail=detail)], updated_at=now,
    )


def with_approval(
    record: SagaRecord, *, member: str, key_id: str, msg_id: str, now: dt.datetime
) -> SagaRecord | None:
    """Record a counted approval, once per member, while the saga still needs it."""
    if record.state not in ("approving", "running") or member in record.approvals:
        return None
    entry = step_entry(APPROVE, "ok", at=now, member=member, key_id=key_id, msg_id=msg_id,
                       detail="signature verified against the roster")
    return _replace(record, approvals={**record.approvals, member: msg_id},
                    steps=[*record.steps, entry], updated_at=now)


def with_refused_approval(
    record: SagaRecord, *, member: str, key_id: str, msg_id: str, why: str, now: dt.datetime
) -> SagaRecord | None:
    """Keep a refused approval in the record, so the report shows it to auditors."""
    if record.state in FINISHED or any(
        e.get("step") == APPROVE and e.get("msg_id") == msg_id for e in record.steps
    ):
        return None
    entry = step_entry(APPROVE, "failed", at=now, member=member, key_id=key_id,
                       msg_id=msg_id, detail=why)
    return _replace(record, steps=[*record.steps, entry], updated_at=now)


def with_quorum(record: SagaRecord, approvers: list[str], now: dt.datetime) -> SagaRecord | None:
    """approving → running once the quorum approved."""
    if record.state != "approving":
        return None
    detail = f"{len(approvers)}/{record.quorum} approvals: {', '.join(approvers)}"
    return _replace(record, state="running", updated_at=now,
                    steps=[*record.steps, step_entry(APPROVAL, "ok", at=now, detail=detail)])


def with_step(record: SagaRecord, entry: dict[str, object], now: dt.datetime) -> SagaRecord | None:
    """Append a step entry unless the same (step, workload, status) is there already."""
    if record.state in FINISHED:
        return None
    for old in record.steps:
        if all(old.get(k) == entry.get(k) for k in ("step", "workload", "status")):
            return None
    return _replace(record, steps=[*record.steps, entry], updated_at=now)


def with_result(
    record: SagaRecord, entry: dict[str, object], now: dt.datetime
) -> SagaRecord | None:
    """A workload step's outcome (ok or failed): the first one recorded stands."""
    if record.state in FINISHED:
        return None
    workload = entry.get("workload")
    if find_step(record, str(entry.get("step")), workload=str(workload)) is not None:
        return None
    return _replace(record, steps=[*record.steps, entry], updated_at=now)


def with_end(
    record: SagaRecord, *, passed: bool, report: dict[str, object], now: dt.datetime
) -> SagaRecord | None:
    """→ completed (the drill passed) or failed, with the report. The first ending stands."""
    if record.state in FINISHED:
        return None
    return _replace(record, state="completed" if passed else "failed", report=report,
                    updated_at=now)
