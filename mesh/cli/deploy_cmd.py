"""`stekker deploy nats-config`: nats-server accounts and users from the roster."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import cast

import typer

from contracts.iam import Roster
from mesh.cli import common
from mesh.errors import ConfigError, MeshError
from mesh.trust import verify_genesis
from services.iam.founding import read_json
from services.iam.nats_config import nats_auth_config

ACCOUNTS_FILE = "nats-accounts.conf"
SECRETS_FILE = "nats-users.secret.json"


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


def _known_passwords(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a secrets file: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: not a secrets file (expected a JSON object)")
    return {str(k): str(v) for k, v in value.items()}


def _write_secret(path: Path, text: str) -> None:
    """Create or replace with mode 0600 from the first byte (never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, 0o600)


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
        """nats-server accounts from the roster: one user per active member that may
        publish only as itself, a `soc-reader` (reads SOC) and an `auditor` (reads FED).

        Writes `nats-accounts.conf` (bcrypt hashes; add `include nats-accounts.conf` to
        each server's config) and `nats-users.secret.json` (the passwords, mode 0600;
        passwords already in it are kept). Regenerate after every roster change.
        """
        try:
            roster = _roster_file(roster_file) if roster_file else common.run(_roster_in_force)
            out.mkdir(parents=True, exist_ok=True)
            secrets_path = out / SECRETS_FILE
            auth = nats_auth_config(roster, _known_passwords(secrets_path))
            accounts_path = out / ACCOUNTS_FILE
            accounts_path.write_text(auth.accounts, encoding="utf-8")
            _write_secret(secrets_path, json.dumps(auth.passwords, indent=2) + "\n")
        except (MeshError, OSError, ValueError) as exc:
            common.fail(str(exc))
        if as_json:
            common.print_json({
                "roster_version": roster.body.version,
                "accounts": str(accounts_path),
                "secrets": str(secrets_path),
                "users": [{"name": u.name, "kind": u.kind, "publish": list(u.publish),
                           "subscribe": list(u.subscribe)} for u in auth.users],
            })
            return
        typer.echo(f"roster v{roster.body.version}: {len(auth.users)} users "
                   f"({', '.join(u.name for u in auth.users)})")
        typer.echo(f"accounts: {accounts_path} (add `include {ACCOUNTS_FILE}` to nats-server.conf)")
        typer.echo(f"passwords: {secrets_path} (mode 0600; give each user only its own)")
