"""`stekker member apply|request|endorse|suspend|remove`: changing who is in the roster."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import cast

import typer

from contracts.iam import AdmissionRequested, RosterChange
from mesh.cli import common
from mesh.errors import ConfigError, MeshError
from mesh.keys import load_or_create_identity
from services.iam.changes import make_admission_request
from services.iam.endorsing import endorse_change, file_admission
from services.iam.founding import read_json, write_json


def _endorse(change: RosterChange, member: str) -> None:
    async def _main() -> str:
        bus = await common.open_bus(sign=True, service="cli-iam")
        try:
            event = await endorse_change(bus, change, member)
        finally:
            await bus.close()
        return event.body_sha256

    digest = common.run(_main)
    typer.echo(f"endorsed: {change} {member} as roster body {digest[:16]}; it takes effect "
               "when the threshold of the roster's members endorsed the same body")


def register(app: typer.Typer) -> None:
    from mesh.cli.up_cmd import _group

    member = _group(app, "member", "Members of the federation; stop/start local ones.")

    @member.command("apply")
    def apply(
        candidate: str = typer.Option(..., "--member", help="Your (the candidate's) id."),
        federation: str = typer.Option(..., "--federation", help="The federation's name."),
        report: Path = typer.Option(..., "--conformance", help="Your conformance report."),
        name: str = typer.Option("", "--name", help="Your organisation's name."),
        out: Path = typer.Option(Path("admission-request.json"), "--out"),
    ) -> None:
        """For a candidate, offline: a self-signed admission request to hand to a member."""
        try:
            identity = load_or_create_identity(common.settings().data_dir / "keys", candidate)
            data = report.read_bytes()
        except (MeshError, OSError) as exc:
            common.fail(str(exc))
        request = make_admission_request(identity, federation, name or candidate, str(report),
                                         data, dt.datetime.now(dt.UTC))
        write_json(out, request)
        typer.echo(f"admission request of {candidate} (key id {identity.key_id}): {out}")

    @member.command("request")
    def request(file: Path = typer.Argument(..., help="A candidate's admission request.")) -> None:
        """File a candidate's admission request on the bus, as the acting member (--as)."""
        try:
            req = cast(AdmissionRequested, read_json(file, AdmissionRequested))
        except ConfigError as exc:
            common.fail(str(exc))

        async def _main() -> None:
            bus = await common.open_bus(sign=True, service="cli-iam")
            try:
                await file_admission(bus, req)
            finally:
                await bus.close()

        common.run(_main)
        typer.echo(f"admission request of {req.candidate} filed; members now endorse it")

    @member.command("endorse")
    def endorse_cmd(candidate: str = typer.Argument(..., help="The candidate's id.")) -> None:
        """Endorse a candidate's admission (signs the proposed next roster)."""
        _endorse("admit", candidate)

    @member.command("suspend")
    def suspend_cmd(member_id: str = typer.Argument(..., help="The member to suspend.")) -> None:
        """Endorse suspending a member: its keys and tokens count no more once in force."""
        _endorse("suspend", member_id)

    @member.command("remove")
    def remove_cmd(member_id: str = typer.Argument(..., help="The member to remove.")) -> None:
        """Endorse removing a member from the roster."""
        _endorse("remove", member_id)
