"""`stekker conformance`: the contract checks of a running member's node."""

from __future__ import annotations

from pathlib import Path

import typer

from mesh.cli import common
from mesh.errors import ConfigError, FederationNotRunning
from services.conformance.junit import junit_xml
from services.conformance.result import CheckResult
from services.conformance.runner import CHECKS, run_suite


def acting_member(member: str) -> str:
    """--as, else the first key in the data folder that is not the member under test.

    A member must not certify itself: the checks publish placements a real peer would,
    signed by a peer's key.
    """
    settings = common.settings()
    if settings.acting_as:
        if settings.acting_as == member:
            raise ConfigError(f"refusing to test {member} with its own key; "
                              "pass --as another member")
        return settings.acting_as
    keys_dir = settings.data_dir / "keys"
    found = sorted(p.stem for p in keys_dir.glob("*.key")) if keys_dir.is_dir() else []
    others = [m for m in found if m != member]
    if not others:
        raise FederationNotRunning(f"no member key other than {member}'s in {keys_dir}; "
                                   "pass --as MEMBER with a key there")
    return others[0]


async def _run(member: str, timeout_s: float, only: list[str] | None) -> list[CheckResult]:
    # open_bus signs with settings().acting_as: make that the chosen peer.
    common.settings().acting_as = acting_member(member)
    bus = await common.open_bus(sign=True, service="conformance")
    try:
        if bus.trust.is_member(member):  # else run_suite says it is not one
            await common.require_node(bus, member, acting=False)
        return await run_suite(bus, member, timeout_s=timeout_s, only=only)
    finally:
        await bus.close()


def register(app: typer.Typer) -> None:
    @app.command("conformance")
    def conformance(
        member: str = typer.Option(..., "--member", help="Member whose node is tested."),
        junit: Path | None = typer.Option(None, "--junit", help="Also write JUnit XML here."),
        as_json: bool = typer.Option(False, "--json", help="A JSON array of check results."),
        timeout: float = typer.Option(10.0, "--timeout", min=0.5,
                                      help="Bound of each wait, in seconds."),
        only: list[str] | None = typer.Option(
            None, "--check", help=f"Run only this check (repeatable): {', '.join(CHECKS)}."
        ),
    ) -> None:
        """Check a running member's node against the federation contract.

        Checks: its announcement, its heartbeats, binding and releasing a placement,
        refusing a forged one. Signs as --as (default: the first key here that is not the
        member's own). Exit 0 only if every check passes.
        """
        results = common.run(lambda: _run(member, timeout, only))
        if junit is not None:
            try:
                junit.parent.mkdir(parents=True, exist_ok=True)
                junit.write_text(junit_xml(results, member=member), encoding="utf-8")
            except OSError as exc:
                common.fail(f"cannot write {junit}: {exc}")
        passed = sum(1 for r in results if r.passed)
        if as_json:
            common.print_json(results)
        else:
            common.print_table(
                f"conformance of {member}",
                ["check", "result", "duration", "detail"],
                [(r.check, "PASS" if r.passed else "FAIL", f"{r.duration_s:.2f}s", r.detail)
                 for r in results],
            )
            typer.echo(f"{passed}/{len(results)} checks passed")
        if passed != len(results):
            raise typer.Exit(1)
