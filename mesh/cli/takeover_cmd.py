"""`stekker takeover declare` and `stekker takeover status`: real takeovers.

`declare --member X --reason acquisition|calamity` publishes a signed request:
- acting as X itself: X declares its own change of control; the other members race to
  coordinate it (create-only CAS) and approve it (the target's own declaration);
- acting as another member: that member coordinates, or, when a takeover of X is under
  way already, joins it: its operator's consent, without which a member does not
  approve a real takeover (unless X was declared down, for a calamity).
It then follows the saga like `stekker drill takeover` and writes the report (Markdown,
JSON, HTML) to `<data_dir>/reports/takeover-<member>-<saga>.*`.

Exit codes: 0 the takeover passed, 1 it failed (or the command could not run), 2 it did
not finish within `--timeout` (the saga goes on; see `stekker takeover status SAGA`).
"""

from __future__ import annotations

from typing import Any

import typer

from contracts.state import SagaProgress, SagaRecord
from contracts.takeover import TakeoverRequested
from mesh import layout
from mesh.cli import common
from mesh.cli.saga_follow import (
    FINISHED,
    Outcome,
    View,
    conclude,
    follow,
    start_following,
    write_report,
)
from mesh.envelope import new_msg_id
from mesh.errors import ConfigError
from mesh.state import Bucket, bucket
from services.takeover.saga import with_progress

EXIT_PASSED, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2
REASONS = ("acquisition", "calamity")


def running_saga(records: list[SagaRecord], member: str) -> SagaRecord | None:
    """The unfinished real takeover of `member`, if one is under way (to join it)."""
    live = [r for r in records if r.member == member and not r.drill
            and r.state not in FINISHED]
    return min(live, key=lambda r: str(r.started_at or "")) if live else None


async def _declare(member: str, reason: str, timeout_s: float, echo: bool) -> Outcome:
    acting = common.acting_identity().member
    bus = await common.open_bus(sign=True)
    try:
        if not bus.trust.is_member(member):
            raise ConfigError(f"--member: {member} is not a member of the roster in force")
        if acting != member:
            # The acting member's takeover service coordinates (or consents): without
            # its node nobody would, and the command would wait out --timeout.
            await common.require_node(bus, acting, acting=True)
        sagas: Bucket[SagaRecord] = await bucket(bus, layout.KV_SAGAS, SagaRecord)
        joining = running_saga([e.value for e in await sagas.items(layout.SAGA_KEYS)], member)
        saga = joining.saga if joining is not None else new_msg_id()
        events = await start_following(bus, member, saga)
        await bus.publish(TakeoverRequested(saga=saga, member=member,
                                            reason=reason,  # type: ignore[arg-type]
                                            drill=False),
                          msg_id=f"request-{saga}-{acting}",
                          extra_headers=common.token_headers())
        with View(echo) as view:
            who = "its own change of control" if acting == member else f"by {acting}"
            how = f"joining saga {saga}" if joining else f"saga {saga}"
            view.line(f"takeover of {member} ({reason}) declared {who} ({how})")
            return await follow(events, sagas, saga, timeout_s, view)
    finally:
        await bus.close()


def _status_rows(records: list[SagaRecord]) -> list[list[Any]]:
    rows = []
    for r in sorted(records, key=lambda r: str(r.started_at or "")):
        rows.append([r.saga, r.member, r.reason, "drill" if r.drill else "real", r.state,
                     r.coordinator, f"{len(r.approvals)}/{r.quorum}",
                     str(r.updated_at or "")[:19]])
    return rows


def _progress(record: SagaRecord) -> list[list[Any]]:
    by_workload: dict[str, list[dict[str, object]]] = {}
    for e in record.steps:
        by_workload.setdefault(str(e.get("workload")), []).append(e)
    rows = []
    for item in record.plan:
        steps = by_workload.get(item.workload, [])
        last = steps[-1] if steps else None
        rows.append([item.workload, item.successor or "-",
                     f"{last.get('step')} {last.get('status')}" if last else "waiting",
                     (last or {}).get("detail", "")])
    return rows


async def _status(saga: str | None) -> list[SagaRecord]:
    bus = await common.open_bus()
    try:
        sagas: Bucket[SagaRecord] = await bucket(bus, layout.KV_SAGAS, SagaRecord)
        if saga is None:
            return [e.value for e in await sagas.items(layout.SAGA_KEYS)]
        entry = await sagas.get(saga)
        if entry is None:
            raise ConfigError(f"SAGA: no takeover saga {saga!r}")
        # Each workload's steps are kept under the saga's key; shown as one timeline.
        progress = await bucket(bus, layout.KV_SAGAS, SagaProgress)
        return [with_progress(entry.value,
                              [e.value for e in await progress.items(layout.progress_keys(saga))])]
    finally:
        await bus.close()


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Real takeovers: a member's workloads and data moved to others.",
                      no_args_is_help=True)
    app.add_typer(sub, name="takeover")

    @sub.command("declare")
    def declare(
        member: str = typer.Option(..., "--member", help="Member whose workloads to take over."),
        reason: str = typer.Option(..., "--reason", help="acquisition or calamity."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
        timeout: float = typer.Option(
            300.0, "--timeout", min=1.0, help="Seconds to follow the saga."),
    ) -> None:
        """Declare a member's acquisition or calamity: its workloads and data move.

        Or join a takeover of it under way (your member's consent). After a quorum of
        the other members approved, its workloads and data move to successors, checked
        by sha256; an acquired member is then suspended. Exit 0 passed, 1 failed, 2
        still running after --timeout."""
        if reason not in REASONS:
            common.fail(f"--reason: {reason!r} is not one of {', '.join(REASONS)}")
        outcome = common.run(lambda: _declare(member, reason, timeout, echo=not as_json))
        if outcome.report is None:
            common.fail(f"takeover of {member} (saga {outcome.saga}) not finished within "
                        f"{timeout:g} s; it goes on: stekker takeover status {outcome.saga}"
                        f"; last seen: {outcome.last}", code=EXIT_TIMEOUT)
        conclude(outcome, member, as_json=as_json, what="takeover")

    @sub.command("status")
    def status(
        saga: str = typer.Argument(None, help="A saga id; without it, every saga."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Takeover sagas (drills too) and their state.

        With SAGA: its workloads' progress, and its report written to
        <data-dir>/reports/ once it finished."""
        records = common.run(lambda: _status(saga))
        if as_json:
            common.print_json(records if saga is None else records[0])
            return
        if saga is None:
            common.print_table("Takeover sagas", ["Saga", "Target", "Reason", "Kind", "State",
                                                  "Coordinator", "Approvals", "Updated"],
                               _status_rows(records))
            return
        record = records[0]
        common.print_table(f"Saga {record.saga}", ["Item", "Value"], [
            ["target", record.member], ["reason", record.reason],
            ["kind", "drill" if record.drill else "real"], ["state", record.state],
            ["coordinator", record.coordinator],
            ["approvals", f"{', '.join(sorted(record.approvals)) or 'none'} "
                          f"({len(record.approvals)}/{record.quorum})"],
            ["consents", ", ".join(record.consents) or "-"]])
        common.print_table("Workloads", ["Workload", "Successor", "Last step", "Detail"],
                           _progress(record))
        if record.report is not None:
            for path in write_report(dict(record.report), common.settings().data_dir,
                                     record.member, record.saga):
                typer.echo(f"report: {path}")
