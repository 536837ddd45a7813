"""The saga's transitions: pure functions from one record to the next.

`fed_sagas/<saga>` (`SagaRecord`: plan, approvals, phase, lease, the saga-level steps)
and `fed_sagas/<saga>.<workload>` (`SagaProgress`: that workload's steps) are the truth
of a takeover's progress. Every change goes through `Bucket.modify` with one of these
functions; each returns None when the change is done already (or no longer allowed), so
a redelivered message or a resumed coordinator never does a step twice. A workload's
step rewrites only its own record: the cost of a step does not grow with the plan.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Protocol

import msgspec

from contracts.state import SagaProgress, SagaRecord
from contracts.takeover import PlanItem

FINISHED = frozenset({"completed", "failed"})

# Step names recorded in `SagaRecord.steps` and published as `takeover.step.v1`.
PLAN = "plan"
APPROVE = "approve"  # one entry per approval received (ok = counted, failed = refused)
APPROVAL = "approval"  # the quorum was reached (ok) or not in time (failed)
SHADOW_START = "shadow_start"  # on the successor: import the data (if any), start, check
REPORT = "report"
# Real takeovers (and, for EXPORT/RESTORE, drills of stateful workloads too):
FREEZE = "freeze"  # the source gets no new placements while the saga runs
EXPORT = "export"  # on the source: its data into the object store, with its sha256
RESTORE = "restore"  # the source cannot export: the newest usable backup instead
CUTOVER = "cutover"  # the placement moved to the successor by CAS, announced
VERIFY = "verify"  # the successor's agent runs the replica of the new generation
RELEASE = "release"  # no successor: the source's replica dropped, the others serve it
SUSPEND = "suspend"  # acquisition: the source suspended in the roster
COORDINATOR = "coordinator"  # a member took the saga over (its coordinator's lease ended)


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


class HasSteps(Protocol):
    """A saga record or one workload's progress record: both keep `steps`."""

    @property
    def steps(self) -> list[dict[str, object]]: ...


def find_step(
    record: HasSteps,
    step: str,
    *,
    workload: str | None = None,
    statuses: tuple[str, ...] = ("ok", "failed"),
    member: str | None = None,
    attempt: int | None = None,
) -> dict[str, object] | None:
    for entry in record.steps:
        if (entry.get("step") == step and entry.get("workload") == workload
                and entry.get("status") in statuses
                and (member is None or entry.get("member") == member)
                and (attempt is None or entry.get("attempt", 1) == attempt)):
            return entry
    return None


def data_of(record: HasSteps, workload: str, attempt: int) -> dict[str, object] | None:
    """The data an attempt moves, as recorded: the source's export, or else a backup."""
    for step in (EXPORT, RESTORE):
        found = find_step(record, step, workload=workload, attempt=attempt, statuses=("ok",))
        if found is not None:
            return found
    return None


def attempts(record: HasSteps, step: str, workload: str) -> list[dict[str, object]]:
    """Every outcome (ok or failed) of `step` for `workload`, in the order recorded."""
    return [e for e in record.steps if e.get("step") == step
            and e.get("workload") == workload and e.get("status") in ("ok", "failed")]


def with_lease(
    record: SagaRecord, *, member: str, until: dt.datetime, now: dt.datetime
) -> SagaRecord | None:
    """Renew the coordinator's lease, or take an expired one over (a step records it).

    None when the saga is finished, or another member holds a lease that still runs."""
    if record.state in FINISHED:
        return None
    if record.coordinator != member:
        if record.lease_until is not None and record.lease_until > now:
            return None
        entry = step_entry(COORDINATOR, "ok", at=now, member=member,
                           detail=f"{member} resumes the saga: the lease of "
                                  f"{record.coordinator} ended")
        return _replace(record, coordinator=member, lease_until=until,
                        steps=[*record.steps, entry], updated_at=now)
    return _replace(record, lease_until=until)


def with_consent(record: SagaRecord, member: str, now: dt.datetime) -> SagaRecord | None:
    if record.state in FINISHED or member in record.consents:
        return None
    return _replace(record, consents=[*record.consents, member], updated_at=now)


def new_saga(
    saga: str, *, target: str, coordinator: str, reason: str, drill: bool, now: dt.datetime
) -> SagaRecord:
    return SagaRecord(saga=saga, member=target, coordinator=coordinator, reason=reason,
                      drill=drill, state="planning", started_at=now, updated_at=now)


def _replace(record: SagaRecord, **changes: Any) -> SagaRecord:
    return msgspec.structs.replace(record, **changes)


def with_plan(
    record: SagaRecord, plan: list[PlanItem], plan_hash: str, quorum: int, now: dt.datetime,
    *, reserved: int | None = None,
) -> SagaRecord | None:
    """planning → approving, with the plan; None if a plan was recorded already.
    `reserved`: for how many successors capacity was booked."""
    if record.state != "planning":
        return None
    detail = f"{len(plan)} workload(s) on {record.member}"
    if reserved is not None:
        detail += f"; capacity reserved for {reserved} successor(s)"
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
    """Append a step entry unless the same (step, workload, status, attempt) is there."""
    if record.state in FINISHED:
        return None
    for old in record.steps:
        if all(old.get(k) == entry.get(k) for k in ("step", "workload", "status")) and \
                old.get("attempt", 1) == entry.get("attempt", 1):
            return None
    return _replace(record, steps=[*record.steps, entry], updated_at=now)


def with_result(
    record: SagaRecord, entry: dict[str, object], now: dt.datetime
) -> SagaRecord | None:
    """A workload step's outcome (ok or failed): the first one recorded stands."""
    if record.state in FINISHED:
        return None
    workload = entry.get("workload")
    attempt = entry.get("attempt")
    if find_step(record, str(entry.get("step")), workload=str(workload),
                 attempt=attempt if isinstance(attempt, int) else None) is not None:
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


# -- one workload's progress (`fed_sagas/<saga>.<workload>`) ------------------------------


def with_outcome(
    progress: SagaProgress | None, entry: dict[str, object], *, saga: str
) -> SagaProgress | None:
    """A workload step's outcome (ok or failed) in its progress record: the first one
    recorded for (step, attempt) stands; None when one is there already."""
    workload = str(entry.get("workload"))
    current = progress or SagaProgress(saga=saga, workload=workload)
    attempt = entry.get("attempt")
    if find_step(current, str(entry.get("step")), workload=workload,
                 attempt=attempt if isinstance(attempt, int) else None) is not None:
        return None
    return msgspec.structs.replace(current, steps=[*current.steps, entry])


def merged_steps(
    record: SagaRecord, progress: Iterable[SagaProgress]
) -> list[dict[str, object]]:
    """The saga's whole timeline: its own steps and every workload's, by time (a stable
    sort, so entries of the same millisecond keep the order they were recorded in)."""
    steps = [*record.steps]
    for one in progress:
        steps.extend(one.steps)
    return sorted(steps, key=lambda e: str(e.get("at") or ""))


def with_progress(record: SagaRecord, progress: Iterable[SagaProgress]) -> SagaRecord:
    """The record as it read before workloads had records of their own: every step in
    `steps` (for `takeover status --json` and the report)."""
    return _replace(record, steps=merged_steps(record, progress))
