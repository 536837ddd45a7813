"""`stekker up`: a local federation of the demo members, from nothing to a live view.

The steps, each waiting on a condition with a bound (never a fixed sleep):

1. load the member profiles and found the federation (`services.iam.genesis`): keys in
   `<data_dir>/keys`, the genesis roster in `<data_dir>/genesis.json`; idempotent;
2. claim the data folder (`LocalFederation.claim`; a second `up` is refused) and start
   one nats-server per member in one JetStream cluster, detached, so that
   `stekker member stop|start` in another terminal can manage them;
3. provision the streams and buckets once, replicas = min(3, servers);
4. start one `stekker node` per member, connected to its own member's server, and wait
   until every node answers its health request and has announced itself;
5. submit the sample workloads (signed by the first member; a resubmission is harmless,
   the scheduler places a workload once);
6. watch (`mesh.live`) until SIGINT, SIGTERM or SIGHUP, then stop every node and server
   and release the folder. Nothing started here outlives `up`, except after SIGKILL —
   then the next `up` (or `stekker down`) stops what was left.

Signals cancel the main task, so they land only at an `await`: the short synchronous
steps that spawn a process and record its pid are never cut in half, and every process
started is in `up.json` when the cleanup reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import nats.js.errors

from contracts.registry import MemberProfile
from contracts.state import MemberRecord
from contracts.workload import WorkloadSpec, WorkloadSubmitted
from mesh import layout
from mesh.accounts import AccountsFollower
from mesh.bus import Bus
from mesh.errors import AlreadyRunning, ConfigError, NatsServerFailed, NodeFailed
from mesh.keys import load_identity
from mesh.live import EventFeed, Gatherer, LineLog, render
from mesh.localfed import AUTH_DIR, LocalFederation, find_data_dir
from mesh.runtime import health_subject
from mesh.server import is_ready, log_tail
from mesh.specfile import load_failover_knobs, load_member_profile, load_workload
from mesh.state import bucket

__all__ = [
    "FEDERATION",
    "UpOptions",
    "load_profiles",
    "load_workloads",
    "node_argv",
    "node_health",
    "run_up",
    "submit_workloads",
]

FEDERATION = "stekker-demo"
DEFAULT_MEMBERS_DIR = Path("deploy/demo/members")
DEFAULT_WORKLOADS_DIR = Path("deploy/demo/workloads")
POLL_S = 0.1  # between readiness polls; each poll is itself bounded
REFRESH_S = 0.5  # the live view redraws about twice a second
NODE_LOG_TAIL = 12

Say = Callable[[str], None]


def say_stdout(line: str) -> None:
    """One line to stdout, flushed: `make up` in a pipe or a CI log shows it at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class UpOptions:
    data_dir: Path
    # Only write the keys and the genesis roster, start nothing (containers, systemd).
    found_only: bool = False
    members_dir: Path = DEFAULT_MEMBERS_DIR
    workloads_dir: Path = DEFAULT_WORKLOADS_DIR
    driver: str = "auto"
    workloads: bool = True
    # None: a live view when stdout is a terminal, lines otherwise.
    live: bool | None = None
    # A subset of services for the nodes (default: all of them).
    services: list[str] | None = None
    # More `stekker node` options for every node, e.g. the failover knobs.
    node_args: list[str] = field(default_factory=list)
    ready_timeout_s: float = 60.0
    sync_always: bool = True
    federation: str = FEDERATION
    # Servers with the accounts of `stekker deploy nats-config`, nodes with their own
    # nkeys and --require-tokens, the CLI with the local operator's token.
    secure: bool = False
    say: Say = field(default=say_stdout)


# --- files ------------------------------------------------------------------------------------


def load_profiles(members_dir: Path) -> list[tuple[Path, MemberProfile]]:
    """Every `*.toml` profile in `members_dir` (absolute paths), sorted by member id.
    Each file's `[node.failover]` is checked too, so a bad knob stops `up` before any
    process starts (each node reads it again from the same file)."""
    members_dir = Path(members_dir).absolute()
    if not members_dir.is_dir():
        raise ConfigError(f"{members_dir}: no such folder of member profiles")
    paths = sorted(members_dir.glob("*.toml"))
    found = [(path, load_member_profile(path)) for path in paths]
    for path in paths:
        load_failover_knobs(path)
    if not found:
        raise ConfigError(f"{members_dir}: no member profiles (*.toml)")
    seen: dict[str, Path] = {}
    for path, profile in found:
        if profile.id in seen:
            raise ConfigError(f"{path}: member id {profile.id!r} also in {seen[profile.id]}")
        seen[profile.id] = path
    return sorted(found, key=lambda item: item[1].id)


def load_workloads(workloads_dir: Path) -> list[tuple[Path, WorkloadSpec]]:
    """Every `*.yaml`/`*.yml` workload in `workloads_dir`, in file name order."""
    workloads_dir = Path(workloads_dir).absolute()
    if not workloads_dir.is_dir():
        raise ConfigError(f"{workloads_dir}: no such folder of workloads")
    paths = sorted([*workloads_dir.glob("*.yaml"), *workloads_dir.glob("*.yml")])
    found = [(path, load_workload(path)) for path in paths]
    seen: dict[str, Path] = {}
    for path, spec in found:
        if spec.id in seen:
            raise ConfigError(f"{path}: workload id {spec.id!r} also in {seen[spec.id]}")
        seen[spec.id] = path
    return found


def node_argv(
    *,
    data_dir: Path,
    url: str,
    member: str,
    profile_path: Path,
    driver: str,
    replicas: int,
    services: list[str] | None = None,
    nkey_file: Path | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """How `up` runs a member's node; recorded, so `member start` repeats it exactly.
    With `nkey_file` (`up --secure`) the node logs in with it and requires tokens."""
    argv = [
        sys.executable, "-m", "mesh.cli.main",
        "--data-dir", str(data_dir),
        "--nats", url,
        *(["--nkey", str(nkey_file)] if nkey_file else []),
        "node",
        "--member", member,
        "--config", str(profile_path),
        "--driver", driver,
        "--replicas", str(replicas),
    ]
    if services:
        argv += ["--services", ",".join(services)]
    if nkey_file:
        argv += ["--require-tokens"]
    return argv + list(extra or ())


# --- waiting ----------------------------------------------------------------------------------


async def node_health(bus: Bus, member: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """A node's answer to its health request, or None (not running, not yet, too slow)."""
    try:
        reply = await bus.nc.request(health_subject(member), b"", timeout=timeout)
    except (nats.errors.Error, TimeoutError, OSError):
        return None
    try:
        body = msgspec.json.decode(reply.data)
    except msgspec.DecodeError:
        return None
    return body if isinstance(body, dict) else None


async def wait_servers_ready(fed: LocalFederation, members: list[str], timeout: float) -> None:
    """Poll every member's server until ready; NatsServerFailed if one dies or the bound
    passes. Each poll runs in a thread: it is a blocking HTTP call of at most a second."""
    deadline = time.monotonic() + timeout
    pending = list(members)
    while pending:
        for member in list(pending):
            procs = fed.member(member)
            if not procs.nats_alive():
                raise NatsServerFailed(
                    f"nats-server of {member} exited while starting; "
                    f"end of {procs.nats_log}:\n{log_tail(Path(procs.nats_log))}"
                )
            if await asyncio.to_thread(is_ready, procs.monitor_port,
                                       procs.cluster_name is not None):
                pending.remove(member)
        if pending and time.monotonic() >= deadline:
            raise NatsServerFailed(
                f"nats-server of {', '.join(pending)} not ready after {timeout:.0f}s; "
                f"see {fed.logs_dir}"
            )
        if pending:
            await asyncio.sleep(POLL_S)


def _node_exited(fed: LocalFederation, member: str) -> NodeFailed:
    log = Path(fed.member(member).node_log)
    tail = "\n".join("  " + line for line in log_tail(log, NODE_LOG_TAIL).splitlines())
    return NodeFailed(f"the node of {member} exited while starting; end of {log}:\n{tail}")


async def wait_nodes_ready(
    fed: LocalFederation, bus: Bus, members: list[str], timeout: float
) -> None:
    """Until every node answers its health request and every member is in `fed_members`.

    A node that exits meanwhile fails the wait at once, with the end of its log.
    """
    members_kv = await bucket(bus, layout.KV_MEMBERS, MemberRecord)
    deadline = time.monotonic() + timeout
    healthy: set[str] = set()
    announced: set[str] = set()
    while True:
        for member in members:
            if not fed.member(member).node_alive():
                raise _node_exited(fed, member)
            if member not in healthy and await node_health(bus, member, timeout=0.5):
                healthy.add(member)
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            announced = set(await members_kv.keys()) & set(members)
        if healthy == set(members) and announced == set(members):
            return
        if time.monotonic() >= deadline:
            missing = [m for m in members if m not in healthy or m not in announced]
            raise NodeFailed(
                f"nodes not ready after {timeout:.0f}s: {', '.join(missing)} "
                f"(healthy: {', '.join(sorted(healthy)) or 'none'}; announced: "
                f"{', '.join(sorted(announced)) or 'none'}); see {fed.logs_dir}"
            )
        await asyncio.sleep(POLL_S)


async def provision(bus: Bus, replicas: int, timeout: float) -> None:
    """`bus.provision`, bounded; the bus itself retries while a new cluster's meta leader
    does not yet know every peer as online ("no suitable peers for placement")."""
    try:
        await asyncio.wait_for(bus.provision(replicas), timeout=timeout)
    except (TimeoutError, nats.errors.Error) as exc:
        raise NatsServerFailed(f"cannot create the federation's streams: {exc}") from None


async def submit_workloads(bus: Bus, specs: list[WorkloadSpec],
                           headers: dict[str, str] | None = None) -> list[int]:
    """Publish a `WorkloadSubmitted` per spec, signed by the bus's member; `headers`
    carry its token when the nodes require one.

    The message id derives from the spec, so submitting the same file twice within
    JetStream's duplicate window stores it once; later resubmissions are harmless too,
    since the scheduler creates a placement only when the workload has none.
    """
    seqs = []
    for spec in specs:
        digest = hashlib.sha256(msgspec.json.encode(spec)).hexdigest()[:16]
        seqs.append(await bus.publish(WorkloadSubmitted(spec=spec),
                                      msg_id=f"up-submit-{spec.id}-{digest}",
                                      extra_headers=headers))
    return seqs


# --- talking to the person who ran it ----------------------------------------------------------


def cli_prefix(data_dir: Path) -> str:
    """`stekker`, with `--data-dir` when the folder is not the one found by default."""
    if data_dir == find_data_dir(None):
        return "stekker"
    return f"stekker --data-dir {data_dir}"


def banner(fed: LocalFederation, members: list[str], federation: str = FEDERATION) -> list[str]:
    state = fed.load()
    urls = [state.members[m].url for m in members] if state else []
    lines = [
        f"stekker up: federation {federation!r} with {', '.join(members)}",
        f"  data folder  {fed.data_dir}",
        f"  NATS         {', '.join(urls)}",
        f"  logs         {fed.logs_dir}",
    ]
    if state is not None and state.secure:
        lines.append(f"  secure       nkey logins ({fed.data_dir / AUTH_DIR}), tokens required")
    return lines


def next_steps(data_dir: Path, members: list[str]) -> list[str]:
    cli = cli_prefix(data_dir)
    crash = members[1] if len(members) > 2 else members[-1]
    drill = members[-1]
    rows = [
        ("members", "members and their status"),
        ("workload list", "where every workload runs"),
        ("status", "the local processes and their health"),
        (f"member stop {crash} --kill", "crash a member; watch the failover here"),
        (f"member start {crash}", "bring it back"),
        (f"drill takeover --member {drill}", "a takeover drill, with a report"),
    ]
    width = max(len(command) for command, _ in rows)
    return [
        "try, in another terminal in this folder:",
        *(f"  {cli} {command.ljust(width)}  {what}" for command, what in rows),
        "Ctrl-C here stops the federation (its state stays in the data folder).",
    ]


# --- the whole run ----------------------------------------------------------------------------


async def run_up(opts: UpOptions) -> int:
    """`stekker up` from start to finish; returns the exit code.

    A failing server or node is reported here (with the end of its log) and gives 1.
    Any other MeshError propagates for the CLI to print as one line: before anything
    was started (an unreadable profile or workload, another `up` in the folder), or
    after every process started was stopped again.
    """
    say = opts.say
    data_dir = find_data_dir(opts.data_dir)
    profiles = load_profiles(opts.members_dir)
    specs = load_workloads(opts.workloads_dir) if opts.workloads else []
    members = [profile.id for _, profile in profiles]

    from services.iam.genesis import found_local_federation  # services build on mesh

    fed = LocalFederation(data_dir)
    if fed.is_running():  # checked before founding, so a refused `up` writes nothing
        state = fed.load()
        raise AlreadyRunning(
            f"stekker up already runs in {data_dir} (pid {state.up_pid if state else '?'})"
        )
    roster = found_local_federation(data_dir, opts.federation, [p for _, p in profiles])
    if opts.secure:
        secure_local_federation(data_dir, roster)
    if opts.found_only:
        say(f"founded federation {roster.body.federation!r} in {data_dir}: keys of "
            f"{', '.join(members)} in {data_dir / 'keys'}, genesis roster (version 1, "
            f"threshold {roster.body.threshold}) in {data_dir / 'genesis.json'}"
            + (f"; NATS accounts and nkey seeds in {data_dir / AUTH_DIR}" if opts.secure
               else ""))
        return 0

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    signalled: list[str] = []

    def _on_signal(sig: signal.Signals) -> None:
        if not signalled:
            signalled.append(sig.name)
            task.cancel()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in handled:
        loop.add_signal_handler(sig, _on_signal, sig)
    loop.add_signal_handler(signal.SIGCHLD, reap_children)
    claimed = False
    code = 0
    try:
        # AlreadyRunning on a race
        fed.claim(members, sync_always=opts.sync_always, secure=opts.secure)
        claimed = True
        code = await _run(opts, fed, profiles, specs, data_dir, say)
    except asyncio.CancelledError:
        if not signalled:
            raise
        task.uncancel()
    except (NatsServerFailed, NodeFailed) as exc:
        say_err(f"stekker: {exc}")
        code = 1
    except (nats.errors.Error, TimeoutError) as exc:  # the cluster failed under us
        say_err(f"stekker: NATS failed while starting the federation: "
                f"{type(exc).__name__}: {exc}; see {fed.logs_dir}")
        code = 1
    finally:
        for sig in (*handled, signal.SIGCHLD):
            loop.remove_signal_handler(sig)
        if claimed:
            say(_shutdown(fed, signalled[0] if signalled else None))
    return code


def reap_children() -> None:
    """Collect the exit status of every child that has ended.

    The servers and nodes are children of `up`. When `stekker member stop` in another
    terminal ends one, it stays a zombie until its parent collects it, and the stopping
    command, which waits until the process is gone, would wait out its whole bound.
    """
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def say_err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


async def _run(
    opts: UpOptions,
    fed: LocalFederation,
    profiles: list[tuple[Path, MemberProfile]],
    specs: list[tuple[Path, WorkloadSpec]],
    data_dir: Path,
    say: Say,
) -> int:
    members = [profile.id for _, profile in profiles]
    for line in banner(fed, members, opts.federation):
        say(line)
    started = time.monotonic()
    for member in members:
        fed.start_member_server(member)
    await wait_servers_ready(fed, members, opts.ready_timeout_s)
    replicas = min(3, len(members))
    state = fed.load()
    assert state is not None
    urls = [state.members[m].url for m in members]
    first = members[0]
    bus = await Bus.connect(urls, identity=load_identity(data_dir / "keys", first),
                            service="up", name="stekker-up",
                            nkey_file=seed_file(data_dir, first) if opts.secure else None)
    feed: EventFeed | None = None
    gatherer: Gatherer | None = None
    following: asyncio.Task[None] | None = None
    try:
        await provision(bus, replicas, opts.ready_timeout_s)
        say(f"NATS cluster ready ({len(members)} servers, state replicated {replicas}x) "
            f"in {time.monotonic() - started:.1f}s; starting nodes")
        for path, profile in profiles:
            fed.start_member_node(profile.id, node_argv(
                data_dir=data_dir, url=state.members[profile.id].url, member=profile.id,
                profile_path=path, driver=opts.driver, replicas=replicas,
                services=opts.services, extra=opts.node_args,
                nkey_file=seed_file(data_dir, profile.id) if opts.secure else None,
            ))
        await wait_nodes_ready(fed, bus, members, opts.ready_timeout_s)
        await _install_roster(bus)
        say(f"nodes ready and announced in {time.monotonic() - started:.1f}s "
            f"(driver {opts.driver})")
        if specs:
            headers = operator_token_header(data_dir, bus) if opts.secure else None
            await submit_workloads(bus, [spec for _, spec in specs], headers)
            say(f"submitted {len(specs)} workloads from {opts.workloads_dir} "
                f"(signed by {members[0]})")
        for line in next_steps(data_dir, members):
            say(line)
        if opts.secure:
            follower = AccountsFollower(fed, written_version=1)  # from genesis.json
            following = asyncio.create_task(follower.follow(bus, say), name="accounts")
        feed = EventFeed(bus)
        await feed.start()
        gatherer = Gatherer(bus, fed=fed, feed=feed)
        live = opts.live if opts.live is not None else sys.stdout.isatty()
        if live:
            await _watch_live(gatherer)
        else:
            await _watch_lines(gatherer, feed, say)
        return 0
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        if gatherer is not None:
            await gatherer.close()
        if feed is not None:
            await feed.stop()
        await bus.close()


def secure_local_federation(data_dir: Path, roster: Any) -> None:
    """`up --secure`: the accounts and every user's nkey seed in `<data>/nats-auth`,
    from the genesis roster (regenerated on every start; seeds are kept)."""
    from services.iam.nats_files import write_nats_auth

    write_nats_auth(data_dir / AUTH_DIR, roster)


def seed_file(data_dir: Path, user: str) -> Path:
    from services.iam.nats_files import seed_path

    return seed_path(data_dir / AUTH_DIR, user)


def operator_token_header(data_dir: Path, bus: Bus) -> dict[str, str]:
    """The local operator's token of the bus's member, as `stekker` commands send it."""
    from services.iam.token_files import local_operator_token
    from services.iam.tokens import H_TOKEN

    assert bus.identity is not None
    return {H_TOKEN: local_operator_token(data_dir, bus.identity, dt.datetime.now(dt.UTC))}


async def _install_roster(bus: Bus) -> None:
    from services.iam.service import load_roster

    roster = await load_roster(bus)
    if roster is not None:
        bus.trust.install(roster)


async def _watch_live(gatherer: Gatherer) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    view = await gatherer.gather()
    # Redrawn by us, not by rich's refresh thread: one gather, one frame.
    with Live(render(view), console=console, auto_refresh=False,
              redirect_stdout=False, redirect_stderr=False) as live:
        while True:
            await asyncio.sleep(REFRESH_S)
            view = await gatherer.gather()
            live.update(render(view), refresh=True)


async def _watch_lines(gatherer: Gatherer, feed: EventFeed, say: Say) -> None:
    lines = LineLog()
    while True:
        view = await gatherer.gather()
        for line in lines.step(view, feed.take_fresh()):
            say(line)
        await asyncio.sleep(REFRESH_S)


def _shutdown(fed: LocalFederation, signal_name: str | None) -> str:
    """Stop every node and server, release the folder; the one line that says so."""
    state = fed.load()
    nodes = servers = 0
    if state is not None:
        nodes = sum(p.node_alive() for p in state.members.values())
        servers = sum(p.nats_alive() for p in state.members.values())
    fed.stop_all()
    fed.release()
    why = f" on {signal_name}" if signal_name else ""
    return (f"stekker up: stopped{why}: {nodes} nodes and {servers} NATS servers; "
            f"state kept in {fed.data_dir} ({dt.datetime.now().strftime('%H:%M:%S')})")

