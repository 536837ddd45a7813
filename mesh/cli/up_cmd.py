"""`stekker up`, `down`, `status` and `member stop|start`: the local federation's processes.

`up` runs in the foreground and owns the federation of its data folder; the others act
on that folder from another terminal, through `up.json` (mesh.localfed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import typer

from mesh.bus import Bus
from mesh.cli import common
from mesh.cli.sites import report_site
from mesh.errors import FederationNotRunning, MeshError, NodeFailed
from mesh.localfed import LocalFederation, MemberProcs, pid_alive
from mesh.observability import setup
from mesh.server import log_tail
from mesh.services import SERVICES
from mesh.up import (
    DEFAULT_MEMBERS_DIR,
    DEFAULT_WORKLOADS_DIR,
    POLL_S,
    UpOptions,
    node_health,
    run_up,
)

DOWN_TIMEOUT_S = 60.0  # `up` stops nodes and servers with their own bounds (10 s each)


def _quiet_logs(service: str) -> None:
    """Warnings and worse only: the live view and the lines are the output here."""
    setup(service, level=os.environ.get("STEKKER_LOG_LEVEL", "warning"))


def _running_federation() -> LocalFederation:
    fed = LocalFederation(common.settings().data_dir)
    if not fed.is_running():
        state = fed.load()
        leftovers = state is not None and any(
            p.node_alive() or p.nats_alive() for p in state.members.values())
        hint = ("`stekker down` stops what it left running" if leftovers
                else "start one with `stekker up`")
        common.fail(f"no stekker up running in {fed.data_dir} ({hint})")
    return fed


def _member(fed: LocalFederation, member: str) -> MemberProcs:
    try:
        return fed.member(member)
    except FederationNotRunning:
        state = fed.load()
        known = ", ".join(sorted(state.members)) if state else "none"
        common.fail(f"unknown member {member!r} in {fed.data_dir} (members: {known})")


# --- status ---------------------------------------------------------------------------------


async def _health_of(urls: list[str], members: list[str]) -> dict[str, dict[str, Any] | None]:
    if not urls:
        return dict.fromkeys(members)
    try:
        bus = await Bus.connect(urls, connect_timeout_s=3.0, reconnect=False,
                                name="stekker-status", **common.nats_credentials())
    except MeshError:
        return dict.fromkeys(members)
    try:
        replies = await asyncio.gather(*(node_health(bus, m, timeout=1.0) for m in members))
        return dict(zip(members, replies, strict=True))
    finally:
        await bus.close()


def status_rows(fed: LocalFederation) -> list[dict[str, Any]]:
    """Per member: pids, URLs, whether each process is alive, the node's health reply."""
    state = fed.load()
    if state is None:
        raise FederationNotRunning(f"no stekker up recorded in {fed.data_dir}")
    members = sorted(state.members)
    health = asyncio.run(_health_of(fed.urls(), members))
    up_alive = pid_alive(state.up_pid, state.up_create_time)
    rows = []
    for member in members:
        p = state.members[member]
        rows.append({
            "member": member,
            "up_pid": state.up_pid if up_alive else None,
            "nats_pid": p.nats_pid,
            "nats_alive": p.nats_alive(),
            "nats_url": p.url,
            "monitor_url": f"http://127.0.0.1:{p.monitor_port}",
            "node_pid": p.node_pid,
            "node_alive": p.node_alive(),
            "health": health.get(member),
            "nats_log": p.nats_log,
            "node_log": p.node_log,
        })
    return rows


def _health_summary(health: dict[str, Any] | None) -> str:
    if not health:
        return "no answer"
    services = health.get("services") or {}
    waiting = [name for name, s in services.items() if (s or {}).get("state") != "running"]
    head = f"up {health.get('uptime_s', '?')}s, roster v{health.get('roster_version', '?')}"
    if waiting:
        return f"{head}; not running: {', '.join(waiting)}"
    return f"{head}; {len(services)} services running"


# --- member start -------------------------------------------------------------------------


async def _wait_node_healthy(fed: LocalFederation, member: str, timeout: float) -> None:
    bus = await Bus.connect(fed.require_urls(), connect_timeout_s=timeout,
                            name="stekker-member-start", **common.nats_credentials())
    try:
        deadline = time.monotonic() + timeout
        while True:
            procs = fed.member(member)
            if procs.node_argv and not procs.node_alive():
                raise NodeFailed(f"the node of {member} exited; end of {procs.node_log}:\n"
                                 + log_tail(Path(procs.node_log), 12))
            if await node_health(bus, member, timeout=0.5) is not None:
                return
            if time.monotonic() >= deadline:
                raise NodeFailed(f"the node of {member} did not answer within {timeout:.0f}s; "
                                 f"see {procs.node_log}")
            await asyncio.sleep(POLL_S)
    finally:
        await bus.close()


# --- registration -------------------------------------------------------------------------


def _group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    """The sub-command group `name`, shared if another module registered it first."""
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    sub = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        members_dir: Path = typer.Option(
            DEFAULT_MEMBERS_DIR, "--members-dir", help="Folder of member profiles (*.toml)."
        ),
        workloads_dir: Path = typer.Option(
            DEFAULT_WORKLOADS_DIR, "--workloads-dir",
            help="Folder of sample workloads (*.yaml) submitted once the members run.",
        ),
        no_workloads: bool = typer.Option(
            False, "--no-workloads", help="Do not submit the sample workloads."
        ),
        driver: str = common.driver_option(),
        no_live: bool = typer.Option(
            False, "--no-live",
            help="A line per change instead of the live view (automatic without a terminal).",
        ),
        services: str | None = typer.Option(
            None, "--services", help="Comma-separated subset of services for every node."
        ),
        timeout: float = typer.Option(
            60.0, "--timeout", help="Seconds to wait for servers and for nodes to be ready."
        ),
        heartbeat: float | None = common.heartbeat_option(),
        suspicion: float | None = common.suspicion_option(),
        replace_rate: float | None = common.replace_rate_option(),
        found_only: bool = typer.Option(
            False, "--found-only",
            help="Only write the members' keys and the genesis roster into the data "
            "folder, start nothing (for nodes run by containers or systemd).",
        ),
        secure: bool = typer.Option(
            False, "--secure",
            help="Enforce identity at the bus too: the servers run the accounts of "
            "`stekker deploy nats-config` (written to <data>/nats-auth), each node logs in "
            "with its member's nkey and runs --require-tokens; `stekker` commands in this "
            "folder use the acting member's nkey and the local operator's token "
            "(<data>/tokens) by themselves.",
        ),
    ) -> None:
        """Start the local federation and show it live until Ctrl-C stops it.

        One NATS server and one node per member (profiles in --members-dir), then the
        sample workloads; Ctrl-C, SIGTERM or a closed terminal stop every process.
        """
        names = [s.strip() for s in services.split(",") if s.strip()] if services else None
        unknown = sorted(set(names or ()) - set(SERVICES))
        if unknown:
            common.fail(f"--services: unknown {', '.join(unknown)}; known: "
                        f"{', '.join(SERVICES)}")
        _quiet_logs("up")
        opts = UpOptions(
            data_dir=common.settings().data_dir,
            members_dir=members_dir,
            workloads_dir=workloads_dir,
            driver=driver,
            workloads=not no_workloads,
            live=False if no_live else None,
            services=names,
            # Only the knobs given: the others come from each member's config file.
            node_args=[arg for flag, value in (("--heartbeat", heartbeat),
                                               ("--suspicion", suspicion),
                                               ("--replace-rate", replace_rate))
                       if value is not None for arg in (flag, str(value))],
            ready_timeout_s=timeout,
            found_only=found_only,
            secure=secure,
        )
        code = common.run(lambda: run_up(opts))
        raise typer.Exit(code)

    @app.command("down")
    def down() -> None:
        """Stop the local federation of this folder (also what a killed `up` left behind)."""
        fed = LocalFederation(common.settings().data_dir)
        state = fed.load()
        if state is None:
            common.fail(f"no stekker up recorded in {fed.data_dir}")
        if fed.is_running() and state.up_pid is not None:
            # `up` stops its processes itself on SIGTERM; wait for it to finish.
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(state.up_pid)
                proc.send_signal(signal.SIGTERM)
                _, alive = psutil.wait_procs([proc], timeout=DOWN_TIMEOUT_S)
                if alive:
                    common.fail(f"stekker up (pid {state.up_pid}) did not stop within "
                                f"{DOWN_TIMEOUT_S:.0f}s")
        alive_before = sum(p.node_alive() + p.nats_alive() for p in state.members.values())
        fed.stop_all()
        fed.release()
        typer.echo(f"stekker down: federation in {fed.data_dir} stopped"
                   + (f" ({alive_before} leftover processes)" if alive_before else ""))

    @app.command("status")
    def status(
        json_out: bool = typer.Option(False, "--json", help="One JSON array of members."),
    ) -> None:
        """The local processes per member (pids, URLs, alive or not) and node health."""
        fed = LocalFederation(common.settings().data_dir)
        try:
            rows = status_rows(fed)
        except MeshError as exc:
            common.fail(str(exc))
        if json_out:
            common.print_json(rows)
            return
        state = fed.load()
        up_pid = state.up_pid if state and fed.is_running() else None
        typer.echo(f"stekker up in {fed.data_dir}: "
                   + (f"running (pid {up_pid})" if up_pid else "not running"))
        common.print_table(
            None,
            ["member", "nats", "url", "node", "health"],
            [
                [
                    r["member"],
                    f"pid {r['nats_pid']}" if r["nats_alive"] else "stopped",
                    r["nats_url"],
                    f"pid {r['node_pid']}" if r["node_alive"] else "stopped",
                    _health_summary(r["health"]),
                ]
                for r in rows
            ],
        )

    member = _group(app, "member", "Members of the federation; stop/start local ones.")

    @member.command("stop")
    def member_stop(
        member_id: str = typer.Argument(..., metavar="ID", help="Member to stop."),
        kill: bool = typer.Option(
            False, "--kill", help="SIGKILL node and server at once, as a crash would."
        ),
    ) -> None:
        """Stop a member's node, then its NATS server (its store stays for a restart)."""
        fed = _running_federation()
        procs = _member(fed, member_id)
        if not procs.node_alive() and not procs.nats_alive():
            typer.echo(f"{member_id}: already stopped")
            return
        try:
            fed.stop_member(member_id, kill=kill)
        except MeshError as exc:
            common.fail(str(exc))
        how = "killed (SIGKILL)" if kill else "stopped"
        typer.echo(f"{member_id}: node (pid {procs.node_pid}) and NATS server "
                   f"(pid {procs.nats_pid}) {how}")

    @member.command("site-down")
    def member_site_down(
        member_id: str = typer.Argument(..., metavar="ID", help="Member (its key must be "
                                        "in this data folder: only it may report)."),
        site: str = typer.Argument(..., help="One of its sites, e.g. ehv1."),
    ) -> None:
        """Report one of a member's sites dark (a drill of a datacenter outage): its agent
        leaves the site out of its heartbeats; the others declare the site down by quorum
        and only that site's workloads move (docs/continuity.md)."""
        dark = common.run(lambda: report_site(member_id, site, dark=True))
        typer.echo(f"{member_id}: dark sites now {', '.join(dark) or 'none'}")

    @member.command("site-up")
    def member_site_up(
        member_id: str = typer.Argument(..., metavar="ID", help="Member."),
        site: str = typer.Argument(..., help="The site that is back."),
    ) -> None:
        """Report a dark site back; once it beats steadily it is recovered (nothing that
        moved away moves back by itself: `stekker workload rebalance`)."""
        dark = common.run(lambda: report_site(member_id, site, dark=False))
        typer.echo(f"{member_id}: dark sites now {', '.join(dark) or 'none'}")

    @member.command("start")
    def member_start(
        member_id: str = typer.Argument(..., metavar="ID", help="Member to start again."),
        timeout: float = typer.Option(
            30.0, "--timeout", help="Seconds to wait for the server and the node."
        ),
    ) -> None:
        """Restart a stopped member: its NATS server (same ports and store), then its node."""
        fed = _running_federation()
        procs = _member(fed, member_id)
        if procs.node_alive() and procs.nats_alive():
            typer.echo(f"{member_id}: already running")
            return
        try:
            fed.start_member(member_id, timeout=timeout)
            if procs.node_argv:
                common.run(lambda: _wait_node_healthy(fed, member_id, timeout))
        except MeshError as exc:
            common.fail(str(exc))
        procs = fed.member(member_id)
        typer.echo(f"{member_id}: started (NATS pid {procs.nats_pid}, "
                   f"node pid {procs.node_pid}), node healthy")
