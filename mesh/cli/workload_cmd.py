"""`stekker workload`: submit, check or rebalance workloads, list placements, explain."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import typer

from contracts.state import PlacementRecord
from contracts.workload import DecisionRecord, WorkloadSpec, WorkloadSubmitted
from mesh import layout
from mesh.cli import common
from mesh.errors import ConfigError, MeshError
from mesh.specfile import load_workload
from mesh.state import Bucket, bucket

# Exit code of `submit` when the federation refused the placement (no member may host it).
EXIT_UNPLACEABLE = 2
# Exit code of `submit` when the bus did not confirm the submission: placed or not is unknown.
EXIT_UNKNOWN = 3
POLL_S = 0.1


def summary(key: str, record: PlacementRecord) -> dict[str, Any]:
    """One placement as a plain object: what `list --json` prints per workload."""
    decision = record.decision
    return {
        "id": key,
        "tenant": record.spec.tenant,
        "criticality": record.spec.criticality,
        "state": record.state,
        "replicas_wanted": record.spec.replicas,
        "members": [a.member for a in record.assignments],
        "sites": [f"{a.member}/{a.site}" for a in record.assignments],
        "generation": record.generation,
        "replicas": [
            {"member": r.member, "site": r.site, "state": r.state, "detail": r.detail}
            for r in record.replicas
        ],
        "summary": decision.summary if decision else "",
        "history": list(record.history),
        "failover": failover_summary(record),
    }


def failover_summary(record: PlacementRecord) -> dict[str, Any] | None:
    """The last failover move and its RTO: achieved (declaration → the new replicas
    running; None while they are not) against the workload's target."""
    from services.scheduler.replace import achieved_rto_s

    move = record.failover
    if move is None:
        return None
    achieved = achieved_rto_s(record)
    return {
        "from": f"{move.lost}/{move.site}" if move.site else move.lost,
        "to": list(move.to),
        "declared_at": move.declared_at.isoformat(),
        "placed_s": round((move.placed_at - move.declared_at).total_seconds(), 3),
        "rto_achieved_s": None if achieved is None else round(achieved, 3),
        "rto_target_s": move.rto_target_s,
        "rto_met": None if achieved is None else achieved <= move.rto_target_s,
    }


def _rto_cell(item: dict[str, Any]) -> str:
    move = item.get("failover")
    if not move:
        return "-"
    achieved = move["rto_achieved_s"]
    done = "pending" if achieved is None else f"{achieved:.1f}"
    return f"{done}/{move['rto_target_s']} s"


async def _placements(bus: Any) -> Bucket[PlacementRecord]:
    return await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)


def _where(item: dict[str, Any]) -> str:
    return ", ".join(item["sites"]) or "-"


def _replica_cell(item: dict[str, Any]) -> str:
    return " ".join(f"{r['member']}:{r['state']}" for r in item["replicas"]) or "-"


def _load(file: Path) -> WorkloadSpec:
    try:
        return load_workload(file)
    except ConfigError as exc:
        common.fail(str(exc))


def submission_msg_id(spec: WorkloadSpec, revision: int) -> str:
    """The submission's message id: the same spec submitted again over the same placement
    state (`revision`: of its placement record, 0 for none) gets the same id, so a retry
    after an unconfirmed publish is stored once (JetStream de-duplicates on it); after a
    release the record's revision differs, and a new submission is a new message."""
    digest = hashlib.sha256(msgspec.json.encode(spec)).hexdigest()[:24]
    return f"submit-{spec.id}-{digest}-r{revision}"


def unconfirmed(spec: WorkloadSpec, error: Exception) -> dict[str, Any]:
    """The truthful answer when the bus did not confirm a submission: it may or may not
    have been stored (an ack lost in a partition), so it may still be placed."""
    return {"id": spec.id, "submitted": None, "state": "unknown",
            "error": str(error) or type(error).__name__,
            "check": f"stekker workload list  (or: stekker workload explain {spec.id})",
            "retry": "submitting the same file again is safe: it is de-duplicated, and the "
                     "first placement of a workload id stands"}


async def _submit(spec: WorkloadSpec, wait_s: float) -> dict[str, Any] | None:
    """Publish the submission; wait (bounded) for its placement record."""
    bus = await common.open_bus(sign=True)
    try:
        placements = await _placements(bus)
        before = await placements.get(spec.id)
        msg_id = submission_msg_id(spec, before.revision if before is not None else 0)
        try:
            await bus.publish(WorkloadSubmitted(spec=spec), msg_id=msg_id,
                              extra_headers=common.token_headers())
        except (MeshError, nats.errors.Error, TimeoutError) as exc:
            return unconfirmed(spec, exc)
        if before is not None and before.value.state != "released":
            # The scheduler keeps the first placement of an id; say so instead of waiting.
            return {**summary(spec.id, before.value), "already_placed": True}
        deadline = time.monotonic() + wait_s
        while True:
            try:
                entry = await placements.get(spec.id)
            except (TimeoutError, nats.errors.Error):
                entry = None  # a cluster electing its leaders answers late: poll on
            if entry is not None and (before is None or entry.revision != before.revision):
                return summary(spec.id, entry.value)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(POLL_S)  # polling KV from a CLI: bounded by --wait
    finally:
        await bus.close()


def site_verdicts(decision: DecisionRecord, member: str) -> list[dict[str, Any]]:
    """The per-site verdicts of one member (capacity, jurisdiction), where they matter."""
    return [
        {"site": v.site, "passed": v.passed, "reason": v.reason, "detail": v.detail}
        for v in decision.verdicts  # site verdicts are never shared by a class
        if v.member == member and v.site is not None
    ]


async def _list() -> list[dict[str, Any]]:
    bus = await common.open_bus(sign=False)
    try:
        entries = await (await _placements(bus)).items()
    finally:
        await bus.close()
    return [summary(e.key, e.value) for e in entries]


async def _record(workload: str) -> PlacementRecord | None:
    bus = await common.open_bus(sign=False)
    try:
        entry = await (await _placements(bus)).get(workload)
    finally:
        await bus.close()
    return entry.value if entry else None


def _site_failures(verdicts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The first failed verdict of each site that failed one, in order."""
    failures: dict[str, dict[str, Any]] = {}
    for verdict in verdicts:
        if not verdict["passed"] and verdict["site"] not in failures:
            failures[verdict["site"]] = verdict
    return failures


def _checks_cell(checks: list[dict[str, Any]]) -> str:
    """`✓ seal ✗ classification …`: each constraint the member passed or failed."""
    return " ".join(f"{'✓' if c['passed'] else '✗'} {c['check']}" for c in checks)


def decision_document(decision: DecisionRecord) -> dict[str, Any]:
    """A decision as `explain --json` and `check --json` print it (rows per member)."""
    from services.scheduler.explain import explain_rows

    rows = [{**row, "sites": site_verdicts(decision, row["member"])}
            for row in explain_rows(decision)]
    return {
        "summary": decision.summary,
        "feasible": decision.feasible,
        "cause": decision.cause,
        "decided_by": decision.decided_by,
        "chosen": [{"member": a.member, "site": a.site, "replica": a.replica}
                   for a in decision.chosen],
        "rows": rows,
    }


def show_decision(
    decision: DecisionRecord, *, as_json: bool, title: str, extra: dict[str, Any]
) -> None:
    """Print why each member was chosen or not: one JSON document, or a table followed by
    the sites ruled out. Shared by `explain` (a recorded decision) and `check` (a fresh
    one), so both read the same."""
    document = {**extra, **decision_document(decision)}
    if as_json:
        common.print_json(document)
        return
    rows = document["rows"]
    common.print_table(
        f"{title}: {decision.summary}",
        ["MEMBER", "SITE", "PASSED", "REASON", "DETAIL", "CHECKS", "SCORE", "CHOSEN"],
        [
            [r["member"], r["site"] or "-", "yes" if r["passed"] else "no",
             r["reason"] or "-", r["detail"], _checks_cell(r["checks"]),
             "-" if r["score"] is None else f"{r['score']:.3f}",
             "yes" if r["chosen"] else ""]
            for r in rows
        ],
    )
    for row in rows:
        for site, verdict in _site_failures(row["sites"]).items():
            typer.echo(f"  {row['member']}/{site} ruled out: {verdict['reason']} "
                       f"({verdict['detail']})")


async def _check(spec: WorkloadSpec) -> DecisionRecord:
    """Decide `spec` on the federation's current snapshot, without submitting it."""
    from services.scheduler.pipeline import decide
    from services.scheduler.reader import load_snapshot

    bus = await common.open_bus(sign=False)
    try:
        now = dt.datetime.now(dt.UTC)
        snapshot, _ = await load_snapshot(bus, today=now.date())
    finally:
        await bus.close()
    decided_by = common.settings().acting_as or "check"
    return decide(spec, snapshot, decided_by=decided_by, now=now)

async def _rebalance(member: str | None, max_moves: int, dry_run: bool,
                     rate: float) -> list[dict[str, Any]]:
    from services.scheduler.rebalancer import rebalance

    # Signed even in a dry run: the plan's decisions name the member that made them.
    bus = await common.open_bus(sign=True)
    try:
        outcomes = await rebalance(bus, member=member, max_moves=max_moves, dry_run=dry_run,
                                   rate_per_s=rate)
    finally:
        await bus.close()
    return [o.to_dict() for o in outcomes]


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Submit workloads, list their placements, explain decisions.",
                      no_args_is_help=True)
    app.add_typer(sub, name="workload")

    @sub.command("submit")
    def submit(
        file: Path = typer.Argument(..., help="Workload spec (YAML or TOML)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
        wait: float = typer.Option(
            10.0, "--wait", min=0.0, help="Seconds to wait for the placement (0: do not wait)."
        ),
    ) -> None:
        """Submit a workload (signed by the acting member) and show where it landed.

        Exit codes: 0 placed (or still pending after --wait), 2 unplaceable, 3 the bus
        did not confirm the submission (placed or not is unknown: check with `workload
        list`; submitting the same file again is safe), 1 error.
        """
        spec = _load(file)
        item = common.run(lambda: _submit(spec, wait))
        if item is None:
            if as_json:
                common.print_json({"id": spec.id, "submitted": True, "state": "pending"})
            else:
                typer.echo(f"submitted {spec.id}; no placement yet after {wait:g} s "
                           "(see `stekker workload list`)")
            return
        if item["state"] == "unknown":
            if as_json:
                common.print_json(item)
            else:
                typer.echo(f"{spec.id}: outcome unknown: the bus did not confirm the "
                           f"submission ({item['error']}). It may have been stored and "
                           f"still be placed. Check: {item['check']}. "
                           f"Retry: {item['retry']}.", err=True)
            raise typer.Exit(EXIT_UNKNOWN)
        if as_json:
            common.print_json(item)
        elif item.get("already_placed"):
            typer.echo(f"{spec.id} was placed already ({item['state']}, generation "
                       f"{item['generation']}) on {_where(item)}; the first placement stands")
        elif item["state"] == "unplaceable":
            typer.echo(f"{spec.id} unplaceable: {item['summary']}")
        else:
            typer.echo(f"{spec.id} {item['state']} (generation {item['generation']}) on "
                       f"{_where(item)}: {item['summary']}")
        if item["state"] == "unplaceable":
            raise typer.Exit(EXIT_UNPLACEABLE)

    @sub.command("check")
    def check(
        file: Path = typer.Argument(..., help="Workload spec (YAML or TOML)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Where the workload would go now, and why, without submitting it.

        Exit codes: 0 feasible, 2 no member may host it, 1 error.
        """
        spec = _load(file)
        decision = common.run(lambda: _check(spec))
        show_decision(decision, as_json=as_json, title=f"{spec.id} (check, not submitted)",
                      extra={"workload": spec.id, "submitted": False})
        if not decision.feasible:
            raise typer.Exit(EXIT_UNPLACEABLE)

    @sub.command("rebalance")
    def rebalance(
        member: str | None = typer.Option(
            None, "--member", help="Move replicas back to this member (e.g. one that "
            "recovered) where it is feasible and wanted."),
        max_moves: int = typer.Option(10, "--max", min=0, help="Move at most this many."),
        rate: float = typer.Option(2.0, "--rate", min=0.01,
                                   help="Moves per second at most."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan only."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON array."),
    ) -> None:
        """Move replicas to where they now belong: an explicit, rate-limited move back
        after a member recovers (never automatic). Each move is one new generation that
        drops the leaving member and adds the new one, so no workload ever runs on more
        members than it asked for."""
        moves = common.run(lambda: _rebalance(member, max_moves, dry_run, rate))
        if as_json:
            common.print_json(moves)
            return
        if not moves:
            typer.echo("nothing to move" + (f" to {member}" if member else ""))
            return
        common.print_table(
            "Rebalance plan (dry run)" if dry_run else "Rebalanced",
            ["WORKLOAD", "FROM", "TO", "GEN", "WHY"],
            [[m["workload"], m["from"], m["to"], m["generation"], m["why"]] for m in moves],
        )

    @sub.command("list")
    def list_(
        as_json: bool = typer.Option(False, "--json", help="Print one JSON array."),
    ) -> None:
        """List every workload's placement: state, members, generation, replicas, and
        after a failover the RTO achieved against its target (declaration → running)."""
        items = common.run(_list)
        if as_json:
            common.print_json(items)
            return
        common.print_table(
            "Workloads",
            ["ID", "TENANT", "CRITICALITY", "STATE", "GEN", "WHERE", "REPLICAS", "RTO"],
            [
                [i["id"], i["tenant"], i["criticality"], i["state"], i["generation"],
                 _where(i), _replica_cell(i) if i["replicas"] else i["summary"],
                 _rto_cell(i)]
                for i in items
            ],
        )

    @sub.command("explain")
    def explain(
        workload: str = typer.Argument(..., help="Workload id."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Why each member was chosen or not: the constraint it passed or failed, scores."""
        record = common.run(lambda: _record(workload))
        if record is None:
            common.fail(f"no workload {workload!r} (see `stekker workload list`)")
        decision = record.decision
        if decision is None:
            common.fail(f"workload {workload!r} has no recorded decision yet")
        move = failover_summary(record)
        show_decision(decision, as_json=as_json, title=workload, extra={
            "workload": workload, "generation": record.generation, "failover": move})
        if move is not None and not as_json:
            achieved = move["rto_achieved_s"]
            typer.echo(f"failover from {move['from']} to {', '.join(move['to']) or '-'}: "
                       f"placed {move['placed_s']:.1f} s after the declaration; RTO "
                       + ("pending (new replicas not running yet)" if achieved is None
                          else f"{achieved:.1f} s") + f" of {move['rto_target_s']} s target")
