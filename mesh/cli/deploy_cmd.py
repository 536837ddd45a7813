"""`stekker deploy nats-config`: nats-server accounts and users from the roster."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import typer

from contracts.iam import Roster
from mesh.cli import common
from mesh.errors import ConfigError, MeshError
from mesh.trust import verify_genesis
from services.iam.founding import read_json
from services.iam.nats_files import ACCOUNTS_FILE, write_nats_auth


async def _roster_in_force() -> Roster:
    bus = await common.open_bus()  # reads and verifies the whole chain
    try:
        assert bus.trust.roster is not None
        return bus.trust.roster
    finally:
        await bus.close()


def _roster_file(path: Path) -> Roster:
    roster = cast(Roster, read_json(path, Roster))
    if roster.body.version == 1:
        verify_genesis(roster)  # a later version alone cannot be checked without its chain
    return roster


def register(app: typer.Typer) -> None:
    from mesh.cli.up_cmd import _group

    deploy = _group(app, "deploy", "Configuration for deploying the federation.")

    @deploy.command("nats-config")
    def nats_config(
        out: Path = typer.Option(..., "--out", help="Folder to write the files to."),
        roster_file: Path | None = typer.Option(
            None, "--roster",
            help="A roster file (e.g. genesis.json); default: the roster in force on the bus.",
        ),
        as_json: bool = typer.Option(False, "--json", help="What was written, as JSON."),
    ) -> None:
        """nats-server accounts from the roster: one nkey user per active member that
        publishes only as itself, writes only its own keys of the per-member buckets and
        cannot reconfigure, delete or purge streams; a `soc-reader` (reads SOC) and an
        `auditor` (reads FED); nobody else connects (see docs/identity.md).

        Writes `nats-accounts.conf` (public nkeys and permissions; add `include
        nats-accounts.conf` to each server's config) and one seed per user,
        `<user>.nk` (mode 0600; seeds already there are kept). Regenerate and reload
        the servers after every roster change.
        """
        try:
            roster = _roster_file(roster_file) if roster_file else common.run(_roster_in_force)
            if out.exists() and not out.is_dir():
                raise ConfigError(f"--out {out}: not a folder")
            written = write_nats_auth(out, roster)
        except (MeshError, OSError, ValueError) as exc:
            common.fail(str(exc))
        users = written.auth.users
        if as_json:
            common.print_json({
                "roster_version": roster.body.version,
                "accounts": str(written.accounts),
                "seeds": {name: str(path) for name, path in written.seeds.items()},
                "users": [{"name": u.name, "kind": u.kind, "publish": list(u.publish),
                           "publish_deny": list(u.publish_deny),
                           "subscribe": list(u.subscribe),
                           "subscribe_deny": list(u.subscribe_deny)} for u in users],
            })
            return
        typer.echo(f"roster v{roster.body.version}: {len(users)} users "
                   f"({', '.join(u.name for u in users)})")
        typer.echo(f"accounts: {written.accounts} (add `include {ACCOUNTS_FILE}` to "
                   "nats-server.conf)")
        typer.echo(f"seeds: {out}/<user>.nk (mode 0600; give each user only its own, "
                   "e.g. STEKKER_NATS_NKEY=<file>)")
