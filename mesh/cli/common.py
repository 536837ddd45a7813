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
from mesh.errors import FederationNotRunning, MeshError, NodeNotRunning
from mesh.keys import Identity, load_identity
from mesh.localfed import AUTH_DIR, LocalFederation, find_data_dir
from mesh.trust import TrustStore

T = TypeVar("T")


@dataclass
class Settings:
    data_dir: Path
    nats: list[str] | None
    acting_as: str | None
    token: str | None = None
    nkey: Path | None = None


_settings = Settings(data_dir=Path(".stekker"), nats=None, acting_as=None)


def configure(data_dir: Path | None, nats: str | None, acting_as: str | None,
              token: str | None = None, nkey: Path | None = None) -> None:
    _settings.data_dir = find_data_dir(data_dir)
    _settings.nats = [u.strip() for u in nats.split(",") if u.strip()] if nats else None
    _settings.acting_as = acting_as
    _settings.token = token or None
    _settings.nkey = nkey


def _local_secure() -> bool:
    """Whether the data folder holds a `stekker up --secure` (servers with accounts)."""
    return LocalFederation(_settings.data_dir).is_secure()


def token_headers() -> dict[str, str]:
    """The bearer token as the `Fed-Token` header of a request: `--token`/STEKKER_TOKEN,
    else in a `stekker up --secure` folder the local operator's token of the acting
    member (`<data>/tokens/<member>.jwt`, renewed when short), else none."""
    import datetime as dt

    from services.iam.token_files import local_operator_token
    from services.iam.tokens import H_TOKEN

    if _settings.token:
        return {H_TOKEN: _settings.token}
    if not _local_secure():
        return {}
    now = dt.datetime.now(dt.UTC)
    return {H_TOKEN: local_operator_token(_settings.data_dir, acting_identity(), now)}


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


def nats_credentials(user: str | None = None) -> dict[str, Any]:
    """How to log in to NATS, as keyword arguments of `Bus.connect`:

    `--nkey`/STEKKER_NATS_NKEY (a user's seed file of `stekker deploy nats-config`); else
    STEKKER_NATS_USER and STEKKER_NATS_PASSWORD; else, in the folder of a `stekker up
    --secure`, the seed `up` wrote for `user` (default: the acting member); else none
    (the open servers of a plain `stekker up`).
    """
    if _settings.nkey is not None:
        return {"nkey_file": _settings.nkey}
    if os.environ.get("STEKKER_NATS_USER"):
        return {"user": os.environ["STEKKER_NATS_USER"],
                "password": os.environ.get("STEKKER_NATS_PASSWORD") or None}
    if _local_secure():
        from services.iam.nats_files import seed_path

        return {"nkey_file": seed_path(_settings.data_dir / AUTH_DIR, user or acting_member())}
    return {}


def acting_member() -> str:
    """--as, else the first member with a key in the data folder."""
    if _settings.acting_as is not None:
        return _settings.acting_as
    keys_dir = _settings.data_dir / "keys"
    found = sorted(p.stem for p in keys_dir.glob("*.key")) if keys_dir.is_dir() else []
    if not found:
        raise FederationNotRunning(
            f"no member key in {keys_dir}; pass --as MEMBER with a key there"
        )
    return found[0]


def acting_identity(member: str | None = None) -> Identity:
    """The member key the CLI signs with: --as, else the first key in the data folder."""
    return load_identity(_settings.data_dir / "keys", member or acting_member())


async def open_bus(*, sign: bool = False, service: str = "cli",
                   login: str | None = None, member: str | None = None) -> Bus:
    """Connect and put the roster in force, so everything read is verified. `login`:
    the NATS user in a `stekker up --secure` folder (default: the acting member).
    `member`: sign (and log in) as this member (else --as, else the default)."""
    from services.iam.service import load_roster

    identity = acting_identity(member) if sign else None
    login = login or member
    bus = await Bus.connect(servers(), identity=identity, service=service,
                            connect_timeout_s=5.0, **nats_credentials(login))
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


# How long a command waits for a node's answer before it says the node is not there.
NODE_CHECK_TIMEOUT_S = 2.0


def _start_hint(member: str) -> str:
    """What to do when `member`'s node does not answer: in the folder of a `stekker up`
    that runs the member, the command that starts it; elsewhere, where to look."""
    fed = LocalFederation(_settings.data_dir)
    state = fed.load() if not _settings.nats else None
    if state is not None and member in state.members:
        return f"start it with `stekker member start {member}`"
    return f"start its `stekker node --member {member}`, or check its logs"


async def require_node(bus: Bus, member: str, *, acting: bool) -> dict[str, Any]:
    """`member`'s node's health, or NodeNotRunning within a few seconds with what to do.

    A command whose work is done by one member's node (the acting member coordinates a
    takeover; the tested member answers a conformance run) asks that node first, instead
    of waiting out its own timeout for an answer that cannot come. `acting`: the member
    is the one the command acts as (so acting as another one is a way out)."""
    from mesh.up import node_health

    health = await node_health(bus, member, timeout=NODE_CHECK_TIMEOUT_S)
    way_out = " or act as another member with `--as MEMBER`" if acting else ""
    if health is None:
        raise NodeNotRunning(
            f"{member}'s node is not running (no answer to its health request within "
            f"{NODE_CHECK_TIMEOUT_S:g} s): {_start_hint(member)},{way_out}".rstrip(",")
        )
    services = health.get("services")
    not_running = sorted(
        name for name, state in (services.items() if isinstance(services, dict) else ())
        if isinstance(state, dict) and state.get("state", "running") != "running"
    )
    if not_running:
        raise NodeNotRunning(
            f"{member}'s node is up but not ready (services not running: "
            f"{', '.join(not_running)}): wait a moment and try again, or see its log"
        )
    return health


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


# The failover knobs of `up` and `node` (docs/continuity.md). Each may also be set in
# the member's config file, `[node.failover]`; a flag given overrides the file, and
# without either the default below holds (`mesh.runtime.NodeSettings`).
# (`\\[`: help text is rich markup, where a bare [...] would vanish as a tag.)
FROM_FILE = "; else \\[node.failover] {key} in the member's config file, else {default}"


def _knob_option(flag: str, minimum: float, text: str, default: str) -> Any:
    key = flag.removeprefix("--").replace("-", "_")
    return typer.Option(None, flag, min=minimum, show_default=False,
                        help=text + FROM_FILE.format(key=key, default=default) + ".")


def heartbeat_option() -> Any:
    return _knob_option("--heartbeat", 0.05, "Heartbeat interval of the member's agent, s",
                        "1")


def suspicion_option() -> Any:
    return _knob_option("--suspicion", 0.1,
                        "Silence after which an observer suspects a member, s", "3")


def recovery_beats_option() -> Any:
    return _knob_option("--recovery-beats", 1, "Beats in a row before a member declared "
                        "down counts as recovered", "3")


def recovery_steady_option() -> Any:
    return _knob_option("--recovery-steady", 0.0,
                        "... and spread over at least this many seconds", "2")


def flap_guard_option() -> Any:
    return _knob_option("--flap-guard", 0.0, "Seconds after a recovery during which a "
                        "member is suspected only after 3x the suspicion timeout, 0: off",
                        "60")


def replace_rate_option() -> Any:
    return _knob_option("--replace-rate", 0.01, "Failover disruption budget: "
                        "re-placements per second by each scheduler", "500")


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
