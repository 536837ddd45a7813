"""What every `stekker` command shares: finding the federation, output, errors.

Commands run in the folder of a running `stekker up` find it without flags; `--nats` and
`--data-dir` override. Errors are one line on stderr and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from mesh.bus import Bus
from mesh.errors import FederationNotRunning, MeshError
from mesh.keys import Identity, load_identity
from mesh.localfed import LocalFederation, find_data_dir
from mesh.trust import TrustStore

T = TypeVar("T")


@dataclass
class Settings:
    data_dir: Path
    nats: list[str] | None
    acting_as: str | None
    token: str | None = None


_settings = Settings(data_dir=Path(".stekker"), nats=None, acting_as=None)


def configure(data_dir: Path | None, nats: str | None, acting_as: str | None,
              token: str | None = None) -> None:
    _settings.data_dir = find_data_dir(data_dir)
    _settings.nats = [u.strip() for u in nats.split(",") if u.strip()] if nats else None
    _settings.acting_as = acting_as
    _settings.token = token or None


def token_headers() -> dict[str, str]:
    """The bearer token (`--token`/STEKKER_TOKEN) as the `Fed-Token` header of a request."""
    from services.iam.tokens import H_TOKEN

    return {H_TOKEN: _settings.token} if _settings.token else {}


def settings() -> Settings:
    return _settings


def servers() -> list[str]:
    """`--nats`, else the live servers of the `stekker up` in the data folder."""
    if _settings.nats:
        return _settings.nats
    fed = LocalFederation(_settings.data_dir)
    urls = fed.urls() if fed.load() is not None else []
    if not urls:
        raise FederationNotRunning(
            f"no running federation in {_settings.data_dir} (start one with `make up` or "
            "`stekker up`, or pass --nats URL)"
        )
    return urls


def nats_credentials() -> tuple[str | None, str | None]:
    """The NATS user and password of `stekker deploy nats-config` (STEKKER_NATS_USER,
    STEKKER_NATS_PASSWORD); (None, None) on the open servers of `stekker up`."""
    return (os.environ.get("STEKKER_NATS_USER") or None,
            os.environ.get("STEKKER_NATS_PASSWORD") or None)


def acting_identity(member: str | None = None) -> Identity:
    """The member key the CLI signs with: --as, else the first key in the data folder."""
    keys_dir = _settings.data_dir / "keys"
    member = member or _settings.acting_as
    if member is None:
        found = sorted(p.stem for p in keys_dir.glob("*.key")) if keys_dir.is_dir() else []
        if not found:
            raise FederationNotRunning(
                f"no member key in {keys_dir}; pass --as MEMBER with a key there"
            )
        member = found[0]
    return load_identity(keys_dir, member)


async def open_bus(*, sign: bool = False, service: str = "cli") -> Bus:
    """Connect and put the roster in force, so everything read is verified."""
    from services.iam.service import load_roster

    identity = acting_identity() if sign else None
    user, password = nats_credentials()
    bus = await Bus.connect(servers(), identity=identity, service=service,
                            connect_timeout_s=5.0, user=user, password=password)
    try:
        roster = await load_roster(bus)
    except Exception:
        await bus.close()
        raise
    if roster is None:
        await bus.close()
        raise FederationNotRunning("the federation has no roster yet (still starting?)")
    bus.trust = TrustStore(roster)
    return bus


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; map every expected failure to one line and exit 1."""
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except MeshError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _check_driver(driver: str) -> str:
    from services.agent.drivers.factory import DRIVERS

    if driver not in DRIVERS:
        raise typer.BadParameter(f"must be one of {', '.join(DRIVERS)}, not {driver!r}")
    return driver


def driver_option() -> Any:
    """`--driver` of `up`, `node` and `service`: one definition, checked when parsed."""
    return typer.Option(
        "auto", "--driver", callback=_check_driver,
        help="Agent driver: sim (capacity model), process (real child processes), or "
        "auto (process for workloads with a run command, sim for the rest).",
    )


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"stekker: {message}", err=True)
    raise typer.Exit(code)


def to_plain(value: Any) -> Any:
    """msgspec Structs, dataclasses and datetimes to JSON-ready builtins."""
    return msgspec.to_builtins(value)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_plain(value), indent=2, sort_keys=False) + "\n")


def console() -> Console:
    return Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160)))


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console().print(table)
