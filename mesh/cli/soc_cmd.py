"""`stekker soc tail`: the SOC feed, CloudEvents 1.0 for security operations centres."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

import typer
from rich.markup import escape

from mesh.cli import common
from mesh.errors import MeshError
from mesh.soc_feed import tail
from services.soc.cloudevents import InvalidCloudEvent, check
from services.soc.render import STYLES, line_fields
from services.soc.severity import LEVELS, at_least


def _print_line(ce: dict[str, Any]) -> None:
    time, severity, kind, source, subject, summary = line_fields(ce)
    style = STYLES.get(severity, "")
    console = common.console()
    console.print(
        f"{escape(time)}  [{style}]{severity:<8}[/]  {escape(kind):<24}  "
        f"{escape(source):<10}  {escape(subject or '-'):<24}  {escape(summary)}",
        highlight=False, soft_wrap=True,
    )
    console.file.flush()


async def _tail(follow: bool, as_json: bool, severity: str | None, last: int | None) -> None:
    from mesh.bus import Bus
    from services.iam.nats_config import SOC_READER

    # The feed is plain CloudEvents, nothing to verify against the roster: in a `stekker
    # up --secure` folder it is read with the soc-reader's nkey, which can read SOC only.
    bus = await Bus.connect(common.servers(), service="soc-tail", connect_timeout_s=5.0,
                            **common.nats_credentials(SOC_READER))
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupted = False

    def _stop() -> None:
        nonlocal interrupted
        interrupted = True
        if task is not None:
            task.cancel()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not possible outside the main thread (tests): Ctrl-C then ends asyncio.run.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, _stop)
            installed.append(sig)
    try:
        levels = at_least(severity) if severity else None
        async for ce in tail(bus, follow=follow, severities=levels, last=last):
            try:
                check(ce)
            except InvalidCloudEvent as exc:
                typer.echo(f"stekker: skipping an invalid CloudEvent: {exc}", err=True)
                continue
            if as_json:
                sys.stdout.write(json.dumps(ce, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            else:
                _print_line(ce)
    except asyncio.CancelledError:
        if not interrupted:
            raise
        if task is not None:
            task.uncancel()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await bus.close()


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="The SOC feed: federation events as CloudEvents 1.0.",
                      no_args_is_help=True)
    app.add_typer(sub, name="soc")

    @sub.command("tail")
    def tail_cmd(
        follow: bool = typer.Option(False, "--follow", "-f",
                                    help="Keep waiting for new events until Ctrl-C."),
        as_json: bool = typer.Option(False, "--json",
                                     help="JSON Lines: one CloudEvent object per line."),
        severity: str | None = typer.Option(
            None, "--severity", help=f"Minimum severity: {', '.join(LEVELS)}."
        ),
        last: int | None = typer.Option(None, "--last", min=0,
                                        help="Only the newest N stored events."),
    ) -> None:
        """Print the CloudEvents on the SOC stream, oldest first.

        With --follow, wait for new ones until Ctrl-C. Each event's `id` is the id of the
        signed FED message it reports on.
        """
        if severity is not None and severity not in LEVELS:
            common.fail(f"--severity must be one of {', '.join(LEVELS)}, not {severity!r}")
        try:
            asyncio.run(_tail(follow, as_json, severity, last))
        except MeshError as exc:
            common.fail(str(exc))
        except KeyboardInterrupt:
            pass  # Ctrl-C is how one stops following: not an error
        except BrokenPipeError:
            # `stekker soc tail --json | head`: the reader left. Point stdout at /dev/null
            # so the final flush does not complain (Python's documented recipe), and exit
            # 1 quietly, as click and rich do for the human output.
            with contextlib.suppress(Exception):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
