"""Following a takeover saga from the CLI, and writing its report (drills and real).

`follow` prints the saga's events as they come: on a terminal a progress bar per
workload (rich.progress), otherwise one plain line per event, so logs and CI output
stay readable. The saga record is the truth: when events pause, the record is read.
The report is written as Markdown, JSON and a self-contained HTML page.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from contracts.base import Event
from contracts.state import SagaRecord
from contracts.takeover import (
    TakeoverApproved,
    TakeoverCompleted,
    TakeoverProposed,
    TakeoverRequested,
    TakeoverStep,
)
from mesh.bus import Bus
from mesh.envelope import Envelope
from mesh.state import Bucket
from services.takeover.html import to_html
from services.takeover.report import to_markdown

FINISHED = ("completed", "failed")
# Per-workload stages shown as a bar: data (stateful), shadow start, cut-over, verify.
STAGES = ("export", "restore", "shadow_start", "cutover", "verify")


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
        if event.attempt > 1:
            parts.append(f"(attempt {event.attempt})")
        if event.elapsed_ms is not None:
            parts.append(f"in {event.elapsed_ms:.0f} ms")
        line = " ".join(parts)
        return f"{line}: {event.detail}" if event.detail else line
    if isinstance(event, TakeoverCompleted):
        return f"{'passed' if event.passed else 'FAILED'}: {event.summary}"
    return None


class View:
    """Plain lines, or (on a terminal) a bar per workload plus the saga-level lines."""

    def __init__(self, echo: bool, tty: bool | None = None) -> None:
        self.echo = echo
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.proposed = False

    def __enter__(self) -> View:
        if self.echo and self.tty:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.fields[stage]}"))
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def line(self, text: str) -> None:
        if not self.echo:
            return
        if self.progress is not None:
            self.progress.console.print(text)
        else:
            typer.echo(text)

    def event(self, event: Event, env: Envelope) -> str | None:
        if isinstance(event, TakeoverProposed):
            # The coordinator proposes again while approvals are missing: one line.
            if self.proposed:
                return None
            self.proposed = True
        text = describe(event, env)
        if text is None:
            return None
        if self.progress is not None and isinstance(event, TakeoverProposed):
            for item in event.plan:
                self.tasks[item.workload] = self.progress.add_task(
                    item.workload, total=2 if event.drill else len(STAGES) - 1,
                    stage="planned")
        if self.progress is not None and isinstance(event, TakeoverStep) and event.workload:
            task = self.tasks.get(event.workload)
            if task is not None:
                if event.status == "ok":
                    self.progress.advance(task)
                self.progress.update(task, stage=f"{event.step} {event.status}")
                return text
        self.line(f"  {text}")
        return text


def report_paths(data_dir: Path, kind: str, member: str, saga: str) -> tuple[Path, ...]:
    base = data_dir / "reports" / f"{kind}-{member}-{saga}"
    return base.with_suffix(".md"), base.with_suffix(".json"), base.with_suffix(".html")


def write_report(report: dict[str, Any], data_dir: Path, member: str, saga: str
                 ) -> tuple[Path, ...]:
    kind = "drill" if report.get("drill") else "takeover"
    md, js, html = report_paths(data_dir, kind, member, saga)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(to_markdown(report), encoding="utf-8")
    js.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    html.write_text(to_html(report), encoding="utf-8")
    return md, js, html


def conclude(outcome: Outcome, member: str, *, as_json: bool, what: str) -> None:
    """Write the report, print it (or a verdict and where it went), exit 0 or 1."""
    from mesh.cli import common

    report = outcome.report
    assert report is not None
    paths = write_report(report, common.settings().data_dir, member, outcome.saga)
    if as_json:
        common.print_json(report)
    else:
        verdict = "PASSED" if report.get("passed") else "FAILED"
        typer.echo(f"{what} {verdict}: {report.get('summary', '')}")
        for failure in report.get("failures") or []:
            typer.echo(f"  - {failure}")
        for path in paths:
            typer.echo(f"report: {path}")
    raise typer.Exit(0 if report.get("passed") else 1)


async def finished_report(sagas: Bucket[SagaRecord], saga: str) -> dict[str, Any] | None:
    entry = await sagas.get(saga)
    if entry is None or entry.value.state not in FINISHED or entry.value.report is None:
        return None
    return dict(entry.value.report)


async def start_following(bus: Bus, member: str, saga: str
                          ) -> asyncio.Queue[tuple[Event, Envelope]]:
    """Subscribe (new messages only) before the request is published: nothing of this
    saga can come before it, and nothing older is replayed."""
    events: asyncio.Queue[tuple[Event, Envelope]] = asyncio.Queue()

    async def on_event(event: Event, env: Envelope) -> None:
        if getattr(event, "saga", None) == saga:
            events.put_nowait((event, env))

    await bus.consume(on_event, subjects=[f"fed.v1.takeover.*.*.{member}"],
                      durable=None, deliver="new")
    return events


async def follow(
    events: asyncio.Queue[tuple[Event, Envelope]], sagas: Bucket[SagaRecord], saga: str,
    timeout_s: float, view: View,
) -> Outcome:
    outcome = Outcome(saga=saga, report=None)
    deadline = time.monotonic() + timeout_s
    done = False
    while time.monotonic() < deadline:
        try:
            event, env = await asyncio.wait_for(
                events.get(), timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        except TimeoutError:
            # No event for a while: the record is the truth, look there too.
            outcome.report = await finished_report(sagas, saga)
            if outcome.report is not None:
                return outcome
            continue
        if isinstance(event, TakeoverRequested):
            continue
        text = view.event(event, env)
        if text:
            outcome.last = text
        done = done or isinstance(event, TakeoverCompleted)
        if done:
            # Written before the completed event was published; a replica may lag.
            outcome.report = await finished_report(sagas, saga)
            if outcome.report is not None:
                return outcome
    return outcome
