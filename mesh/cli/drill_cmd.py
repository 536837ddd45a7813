"""`stekker drill takeover`: practise taking over a member, and keep the report.

The acting member (`--as`, else the first key in the data folder) asks its own takeover
service to coordinate a drill of `--member`: plan, quorum approval, a shadow start of
every workload on its successor, report (DESIGN §6 "takeover"). The command follows the
saga's events (a bar per workload on a terminal), then writes the report from
`fed_sagas/<saga>` to `<data_dir>/reports/drill-<member>-<saga>.md`, `.json` and `.html`.

Exit codes: 0 the drill passed, 1 it failed (or the command could not run), 2 it did not
finish within `--timeout`.
"""

from __future__ import annotations

import typer

from contracts.state import SagaRecord
from contracts.takeover import TakeoverRequested
from mesh import layout
from mesh.cli import common
from mesh.cli.saga_follow import Outcome, View, conclude, follow, start_following
from mesh.envelope import new_msg_id
from mesh.errors import ConfigError
from mesh.state import Bucket, bucket

EXIT_PASSED, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2


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
        # The acting member's takeover service coordinates the drill.
        await common.require_node(bus, acting, acting=True)
        sagas: Bucket[SagaRecord] = await bucket(bus, layout.KV_SAGAS, SagaRecord)
        saga = new_msg_id()
        events = await start_following(bus, member, saga)
        await bus.publish(TakeoverRequested(saga=saga, member=member, reason="drill",
                                            drill=True), msg_id=f"request-{saga}",
                          extra_headers=common.token_headers())
        with View(echo) as view:
            view.line(f"drill of {member} requested by {acting} (saga {saga})")
            return await follow(events, sagas, saga, timeout_s, view)
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
        """Drill a takeover of a member: plan, quorum approval, export of each stateful
        workload's data, a shadow start of each workload on its successor on a
        checksummed copy (the source is untouched), and a report (Markdown, JSON, HTML)
        written to <data-dir>/reports/. Exit 0 passed, 1 failed, 2 timed out."""
        outcome = common.run(lambda: _drill(member, timeout, echo=not as_json))
        if outcome.report is None:
            common.fail(f"drill of {member} (saga {outcome.saga}) did not finish within "
                        f"{timeout:g} s; last seen: {outcome.last}", code=EXIT_TIMEOUT)
        conclude(outcome, member, as_json=as_json, what="drill")
