"""`stekker drill takeover`: practise taking over a member, and keep the report.

The acting member (`--as`, else the first key in the data folder) asks its own takeover
service to coordinate a drill of `--member`: plan, quorum approval, a shadow start of
every workload on its successor, report (DESIGN §6 "takeover"). The command follows the
saga's events, then writes the report from `fed_sagas/<saga>` to
`<data_dir>/reports/drill-<member>-<saga>.md` and `.json`.

Exit codes: 0 the drill passed, 1 it failed (or the command could not run), 2 it did not
finish within `--timeout`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from contracts.base import Event
from contracts.state import SagaRecord
from contracts.takeover import (
    TakeoverApproved,
    TakeoverCompleted,
    TakeoverProposed,
    TakeoverRequested,
    TakeoverStep,
)
from mesh import layout
from mesh.cli import common
from mesh.envelope import Envelope, new_msg_id
from mesh.errors import ConfigError
from mesh.state import Bucket, bucket
from services.takeover.report import to_markdown

EXIT_PASSED, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2
FINISHED = ("completed", "failed")


@dataclass
class Outcome:
    saga: str
    report: dict[str, Any] | None
    last: str = "the request"


def describe(event: Event, env: Envelope) -> str | None:
    """One progress line per saga event, or None for events not worth a line."""
    if isinstance(event, TakeoverProposed):
        return (f"proposed by {env.member}: {len(event.plan)} workload(s), "
                f"plan hash {event.plan_hash[:12]}…, quorum {event.quorum}")
    if isinstance(event, TakeoverApproved):
        return f"approved by {env.member} (key {env.key_id}, signature verified)"
    if isinstance(event, TakeoverStep):
        parts = [f"{event.step} {event.status}"]
        if event.workload:
            parts.append(event.workload)
        if event.actor:
            parts.append(f"on {event.actor}")
        if event.elapsed_ms is not None:
            parts.append(f"in {event.elapsed_ms:.0f} ms")
        line = " ".join(parts)
        return f"{line}: {event.detail}" if event.detail else line
    if isinstance(event, TakeoverCompleted):
        return f"{'passed' if event.passed else 'FAILED'}: {event.summary}"
    return None


def report_paths(data_dir: Path, member: str, saga: str) -> tuple[Path, Path]:
    base = data_dir / "reports" / f"drill-{member}-{saga}"
    return base.with_suffix(".md"), base.with_suffix(".json")


def write_report(report: dict[str, Any], data_dir: Path, member: str, saga: str
                 ) -> tuple[Path, Path]:
    md, js = report_paths(data_dir, member, saga)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(to_markdown(report), encoding="utf-8")
    js.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return md, js


async def _finished_report(sagas: Bucket[SagaRecord], saga: str) -> dict[str, Any] | None:
    entry = await sagas.get(saga)
    if entry is None or entry.value.state not in FINISHED or entry.value.report is None:
        return None
    return dict(entry.value.report)


async def _drill(member: str, timeout_s: float, echo: bool) -> Outcome:
    acting = common.acting_identity().member
    if acting == member:
        raise ConfigError(
            f"you act as {member}, the member to drill; a member cannot coordinate its own "
            "takeover: pass --as with another member's id"
        )
    bus = await common.open_bus(sign=True)
    try:
        if not bus.trust.is_member(member):
            raise ConfigError(f"{member} is not a member of the roster in force")
        sagas: Bucket[SagaRecord] = await bucket(bus, layout.KV_SAGAS, SagaRecord)
        saga = new_msg_id()
        events: asyncio.Queue[tuple[Event, Envelope]] = asyncio.Queue()

        async def on_event(event: Event, env: Envelope) -> None:
            if getattr(event, "saga", None) == saga:
                events.put_nowait((event, env))

        # Started before the request, reading only new messages: nothing of this saga
        # can be published before it, and nothing older is replayed.
        await bus.consume(on_event, subjects=[f"fed.v1.takeover.*.*.{member}"],
                          durable=None, deliver="new")
        await bus.publish(TakeoverRequested(saga=saga, member=member, reason="drill",
                                            drill=True), msg_id=f"request-{saga}",
                          extra_headers=common.token_headers())
        if echo:
            typer.echo(f"drill of {member} requested by {acting} (saga {saga})")
        outcome = Outcome(saga=saga, report=None)
        deadline = time.monotonic() + timeout_s
        done = False
        while time.monotonic() < deadline:
            try:
                event, env = await asyncio.wait_for(
                    events.get(), timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                # No event for a while: the record is the truth, look there too.
                outcome.report = await _finished_report(sagas, saga)
                if outcome.report is not None:
                    return outcome
                continue
            if isinstance(event, TakeoverRequested):
                continue
            line = describe(event, env)
            if line:
                outcome.last = line
                if echo:
                    typer.echo(f"  {line}")
            done = done or isinstance(event, TakeoverCompleted)
            if done:
                # Written before the completed event was published; a replica may lag.
                outcome.report = await _finished_report(sagas, saga)
                if outcome.report is not None:
                    return outcome
        return outcome
    finally:
        await bus.close()


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Practice runs of the federation's continuity procedures.",
                      no_args_is_help=True)
    app.add_typer(sub, name="drill")

    @sub.command("takeover")
    def takeover(
        member: str = typer.Option(..., "--member", help="Member whose takeover to drill."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
        timeout: float = typer.Option(
            60.0, "--timeout", min=1.0, help="Seconds to wait for the drill to finish."
        ),
    ) -> None:
        """Drill a takeover of a member: plan, quorum approval, a shadow start of each of
        its workloads on a successor (the source is untouched), and a report written to
        <data-dir>/reports/. Exit 0 passed, 1 failed, 2 timed out."""
        outcome = common.run(lambda: _drill(member, timeout, echo=not as_json))
        if outcome.report is None:
            common.fail(f"drill of {member} (saga {outcome.saga}) did not finish within "
                        f"{timeout:g} s; last seen: {outcome.last}", code=EXIT_TIMEOUT)
        report = outcome.report
        md, js = write_report(report, common.settings().data_dir, member, outcome.saga)
        if as_json:
            common.print_json(report)
        else:
            verdict = "PASSED" if report.get("passed") else "FAILED"
            typer.echo(f"drill {verdict}: {report.get('summary', '')}")
            for failure in report.get("failures") or []:
                typer.echo(f"  - {failure}")
            typer.echo(f"report: {md}")
            typer.echo(f"report: {js}")
        raise typer.Exit(EXIT_PASSED if report.get("passed") else EXIT_FAILED)
