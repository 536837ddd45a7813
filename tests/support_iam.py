"""Helpers for identity tests: run the CLI in-process, build roster successors."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from typer.testing import CliRunner

from contracts.iam import Roster, RosterBody
from mesh.cli.main import app
from mesh.keys import Identity
from mesh.trust import sign_roster

runner = CliRunner()


async def stekker(urls: list[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    root = ["--nats", ",".join(urls), "--data-dir", str(data_dir)]
    result = await asyncio.to_thread(runner.invoke, app, [*root, *args])
    return result.exit_code, result.stdout, result.stderr


def offline(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args])
    return result.exit_code, result.stdout, result.stderr


def successor(prev: Roster, signers: Sequence[Identity], *, version: int | None = None,
              threshold: int | None = None) -> Roster:
    """The same members in a new version, signed by `signers`."""
    body = RosterBody(federation=prev.body.federation,
                      version=version or prev.body.version + 1,
                      issued_at=dt.datetime.now(dt.UTC),
                      threshold=threshold or prev.body.threshold,
                      members=prev.body.members)
    return sign_roster(body, signers)
