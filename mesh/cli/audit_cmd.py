"""`stekker audit verify`: replay FED; every signature against the roster of its time, every
placement decision recomputed from its record. The logic is `services.audit`; this is the
reading and the printing."""

from __future__ import annotations

import typer

from mesh import layout
from mesh.cli import common
from services.audit.replay import Auditor
from services.audit.report import AuditReport

# Exit code when the stream was read but something in it did not hold.
EXIT_DID_NOT_HOLD = 2


async def _verify(since: int) -> AuditReport:
    from services.iam.nats_config import AUDITOR

    # Unsigned: an auditor publishes nothing (not even violation reports of what it reads).
    # In a `stekker up --secure` folder it reads with the auditor's nkey: FED and the
    # roster bucket, nothing else.
    bus = await common.open_bus(sign=False, login=AUDITOR)
    try:
        auditor = Auditor(since=since)
        # From the first message, whatever --since says: the rosters and profiles of the
        # past decide what the later messages are judged by.
        async for message in bus.read_stream(layout.FED, start_seq=1):
            auditor.feed(message)
        return auditor.finish()
    finally:
        await bus.close()


def _print(report: AuditReport) -> None:
    failed = len(report.signature_failures)
    by_reason = ", ".join(f"{r}: {n}" for r, n in report.failures_by_reason().items())
    typer.echo(f"FED messages checked: {report.messages}"
               + (f" (from seq {report.since})" if report.since > 1 else ""))
    typer.echo(f"roster versions replayed: {report.roster_versions}")
    typer.echo(f"signatures: {report.signatures_ok} ok, {failed} failed"
               + (f" ({by_reason})" if by_reason else ""))
    typer.echo(f"decisions recomputed: {report.decisions}, mismatches: {len(report.mismatches)}")
    for f in report.signature_failures:
        typer.echo(f"  seq {f.seq} {f.subject} (claims {f.claimed_member or '?'}): "
                   f"{f.reason} {f.detail}".rstrip())
    for m in report.mismatches:
        generation = f" gen {m.generation}" if m.generation is not None else ""
        typer.echo(f"  seq {m.seq} {m.workload}{generation}: {m.problem}")
    typer.echo("everything held" if report.ok else "NOT everything held")


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Re-check the federation's record.", no_args_is_help=True)
    app.add_typer(sub, name="audit")

    @sub.command("verify")
    def verify(
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
        since: int = typer.Option(
            1, "--since", min=1, help="Check messages from this FED sequence on (the "
            "history before it is still replayed for rosters and profiles)."),
    ) -> None:
        """Replay FED: every signature against the roster in force when it was published,
        every placement decision recomputed from its record.

        Exit codes: 0 everything held, 2 something did not (see the list), 1 error.
        """
        report = common.run(lambda: _verify(since))
        if as_json:
            common.print_json(report.to_dict())
        else:
            _print(report)
        if not report.ok:
            raise typer.Exit(EXIT_DID_NOT_HOLD)
