"""`stekker`: the command line of the federation. Every command has --help."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

import typer

from mesh import observability
from mesh.cli import common

app = typer.Typer(
    name="stekker",
    help="Stekker: a federated control mesh for a sovereign European government cloud.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"stekker {metadata.version('stekker')}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(
        None, "--data-dir", envvar="STEKKER_DATA_DIR",
        help="Folder of the local federation (default: ./.stekker).",
    ),
    nats: str | None = typer.Option(
        None, "--nats", envvar="STEKKER_NATS",
        help="NATS URL(s), comma-separated; default: the servers of `stekker up` here.",
    ),
    acting_as: str | None = typer.Option(
        None, "--as", envvar="STEKKER_MEMBER",
        help="Member whose key signs what this command publishes (default: first key).",
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="STEKKER_TOKEN",
        help="Your bearer token (`stekker token issue`), sent with submissions and "
        "takeover requests; needed when the nodes run with --require-tokens. In a "
        "`stekker up --secure` folder the local operator's token is used by default.",
    ),
    nkey: Path | None = typer.Option(
        None, "--nkey", envvar="STEKKER_NATS_NKEY",
        help="NATS nkey seed file (`stekker deploy nats-config`) to log in with; default: "
        "in a `stekker up --secure` folder the acting member's, else none.",
    ),
    _version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version,
        help="Print the version and exit.",
    ),
) -> None:
    common.configure(data_dir, nats, acting_as, token, nkey)
    if ctx.invoked_subcommand not in ("node", "service"):
        # Commands for people log warnings only, to stderr; nodes set up their own logs.
        observability.setup("cli", level=os.environ.get("STEKKER_LOG_LEVEL", "warning"))


# Sub-commands register here, one line each.
# -- commands --
from mesh.cli import contracts_cmd, node_cmd  # noqa: E402

node_cmd.register(app)
app.add_typer(contracts_cmd.app, name="contracts")
from mesh.cli import workload_cmd  # noqa: E402

workload_cmd.register(app)
from mesh.cli import up_cmd  # noqa: E402

up_cmd.register(app)
from mesh.cli import drill_cmd  # noqa: E402

drill_cmd.register(app)
from mesh.cli import takeover_cmd  # noqa: E402

takeover_cmd.register(app)
from mesh.cli import conformance_cmd, soc_cmd  # noqa: E402

soc_cmd.register(app)
conformance_cmd.register(app)
from mesh.cli import members_cmd  # noqa: E402

members_cmd.register(app)
from mesh.cli import roster_cmd  # noqa: E402

roster_cmd.register(app)
from mesh.cli import admission_cmd  # noqa: E402

admission_cmd.register(app)
from mesh.cli import deploy_cmd  # noqa: E402

deploy_cmd.register(app)
from mesh.cli import token_cmd  # noqa: E402

token_cmd.register(app)
from mesh.cli import audit_cmd  # noqa: E402

audit_cmd.register(app)
from mesh.cli import doctor_cmd  # noqa: E402

doctor_cmd.register(app)
# -- end of commands --


# Options of the whole command line that people also type after the command
# (`stekker members --nats URL`); they are moved in front before Typer parses.
GLOBAL_OPTIONS = ("--data-dir", "--nats", "--as")


def hoist_global_options(argv: list[str]) -> list[str]:
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg.split("=", 1)[0] in GLOBAL_OPTIONS:
            if "=" in arg:
                front.append(arg)
                i += 1
                continue
            if i + 1 < len(argv):
                front.extend(argv[i:i + 2])
                i += 2
                continue
        rest.append(arg)
        i += 1
    return front + rest


def main() -> None:
    app(args=hoist_global_options(sys.argv[1:]), prog_name="stekker")


if __name__ == "__main__":
    main()
