"""`stekker member apply|request|endorse|suspend|remove|rotate-key|endorse-rotation`:
changing who is in the roster, and with which key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import cast

import typer

from contracts.iam import AdmissionRequested, RosterChange
from mesh.cli import common
from mesh.errors import ConfigError, MeshError
from mesh.keys import load_identity, load_or_create_identity
from services.iam.changes import make_admission_request
from services.iam.endorsing import endorse_change, file_admission, file_rotation
from services.iam.founding import read_json, write_json
from services.iam.key_files import install_new_key, next_keys_dir
from services.iam.rotation import make_rotation


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


async def _start_rotation(grace_s: float) -> None:
    data_dir = common.settings().data_dir
    bus = await common.open_bus(sign=True, service="cli-iam")
    try:
        old = common.acting_identity()
        new = load_or_create_identity(next_keys_dir(data_dir), old.member)
        retired_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=grace_s)
        assert bus.trust.roster is not None  # open_bus puts one in force or fails
        rotation = make_rotation(old, new, bus.trust.roster.body.federation, retired_at)
        await file_rotation(bus, rotation)
        event = await endorse_change(bus, "rotate", old.member)
    finally:
        await bus.close()
    typer.echo(f"rotation of {old.member}: {old.key_id} -> {new.key_id} (new key in "
               f"{next_keys_dir(data_dir)}), old key retires at {retired_at.isoformat()}; "
               f"endorsed as roster body {event.body_sha256[:16]}. Other members run "
               f"`stekker member endorse-rotation {old.member}`; once in force, run "
               "`stekker member rotate-key --finish` and restart your nodes")


async def _finish_rotation() -> None:
    data_dir = common.settings().data_dir
    old = common.acting_identity()
    new = load_identity(next_keys_dir(data_dir), old.member)
    bus = await common.open_bus(service="cli-iam")
    try:
        in_force = bus.trust.key(old.member, new.key_id) is not None
    finally:
        await bus.close()
    if not in_force:
        raise ConfigError(f"the roster in force does not hold {old.member}'s new key "
                          f"{new.key_id} yet; wait for the endorsements")
    retired = install_new_key(data_dir / "keys", old, new)
    typer.echo(f"{old.member} now signs with {new.key_id}; the old key is kept in {retired}. "
               "Restart this member's nodes.")


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

    @member.command("rotate-key")
    def rotate_key_cmd(
        grace: float = typer.Option(
            300.0, "--grace", min=0.0,
            help="Seconds the old key stays valid, to restart your nodes with the new one."),
        finish: bool = typer.Option(
            False, "--finish",
            help="Once the rotation is in force: make the new key the member's key file."),
    ) -> None:
        """Replace the acting member's (--as) key: a roster change signed by the old and
        the new key, endorsed like any other (`stekker member endorse-rotation ID`)."""
        if finish:
            common.run(_finish_rotation)
            return
        common.run(lambda: _start_rotation(grace))

    @member.command("endorse-rotation")
    def endorse_rotation_cmd(
        member_id: str = typer.Argument(..., help="The member whose key rotation to endorse."),
    ) -> None:
        """Endorse a member's key rotation (filed with `stekker member rotate-key`)."""
        _endorse("rotate", member_id)

    @member.command("remove")
    def remove_cmd(member_id: str = typer.Argument(..., help="The member to remove.")) -> None:
        """Endorse removing a member from the roster."""
        _endorse("remove", member_id)
