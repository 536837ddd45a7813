"""The local federation that `stekker up` runs in a data folder (DESIGN §8).

One nats-server per member, clustered on loopback, plus one `stekker node` process per
member. Every process is started detached (its own session), so the servers and nodes
outlive the command that started them and later `stekker` commands in the same folder
can find, stop and restart them. What runs is recorded in `<data_dir>/up.json`; every
read-modify-write of it holds an `fcntl.flock` on `<data_dir>/up.lock`, because several
`stekker` commands may act on one folder at once.

Pids are recorded with their process start time: a pid alone may have been recycled by
an unrelated process after a crash, and we must never signal that one.

Layout of a data folder:

    up.json, up.lock            the state and its lock
    nats/<member>/              a member's server.conf and JetStream store (kept across runs)
    logs/<member>.nats.log      a member's nats-server output
    logs/<member>.node.log      a member's node output
    nats-auth/                  `up --secure`: the servers' accounts, one nkey seed per user
    tokens/<member>.jwt         `up --secure`: the local operator's token per member (0600)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from mesh.errors import AlreadyRunning, FederationNotRunning, NatsServerFailed
from mesh.server import NatsServer, ServerSpec, free_ports, is_ready, log_tail

__all__ = [
    "DEFAULT_DATA_DIR",
    "FederationState",
    "LocalFederation",
    "MemberProcs",
    "find_data_dir",
    "pid_alive",
    "stop_pid",
    "stop_pids",
]

DEFAULT_DATA_DIR = Path(".stekker")
STATE_VERSION = 1
CLUSTER_NAME = "stekker"
CREATE_TIME_SLACK = 0.05  # seconds; psutil's start time of one process is stable to ~10 ms
POLL_INTERVAL = 0.05
AUTH_DIR = "nats-auth"
TOKENS_DIR = "tokens"
# Every member's server.conf lives in `nats/<member>/`; nats-server resolves an include
# relative to the file that holds it.
SECURE_INCLUDE = f'include "../../{AUTH_DIR}/nats-accounts.conf"'


def find_data_dir(explicit: Path | None = None) -> Path:
    """The data folder: the one given, else `./.stekker`. Absolute, because it is passed
    on to processes that may run elsewhere."""
    return Path(explicit or DEFAULT_DATA_DIR).expanduser().absolute()


# --- processes --------------------------------------------------------------------------------


def _process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The live process with this pid and start time, or None (gone, zombie, or recycled)."""
    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > CREATE_TIME_SLACK:
            return None  # the pid now belongs to someone else
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def pid_alive(pid: int | None, create_time: float | None = None) -> bool:
    """Whether the process recorded as (pid, create_time) still runs."""
    return _process(pid, create_time) is not None


def create_time_of(pid: int) -> float:
    """Start time of `pid`; 0.0 if it is gone already, which no live process matches."""
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).create_time()
    return 0.0


def _signal_tree(pid: int | None, create_time: float | None, sig: int) -> list[psutil.Process]:
    """Send `sig` to a recorded process and everything it spawned; return whom we hit.

    The whole tree is signalled because a node may run helpers (drivers, agents) that
    would otherwise be orphaned and hold ports or files.
    """
    proc = _process(pid, create_time)
    if proc is None:
        return []
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        tree = [proc]
    for member in tree:
        with contextlib.suppress(psutil.Error):
            member.send_signal(sig)
    return tree


def _wait_or_kill(procs: list[psutil.Process], timeout: float) -> None:
    """Wait up to `timeout` for `procs` to exit, then SIGKILL the rest and wait again."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)


def stop_pids(
    recorded: Iterable[tuple[int | None, float | None]],
    *,
    kill: bool = False,
    timeout: float = 10.0,
) -> int:
    """Stop recorded (pid, create_time) processes and their children together: SIGTERM
    (SIGKILL with `kill`), wait up to `timeout`, SIGKILL what is left. Returns how many
    of them were still running."""
    sig = signal.SIGKILL if kill else signal.SIGTERM
    hit: list[psutil.Process] = []
    running = 0
    for pid, create_time in recorded:
        tree = _signal_tree(pid, create_time, sig)
        running += bool(tree)
        hit += tree
    _wait_or_kill(hit, timeout)
    return running


def stop_pid(
    pid: int | None, create_time: float | None, *, kill: bool = False, timeout: float = 10.0
) -> bool:
    """Stop one recorded process (see `stop_pids`). Returns whether it was running."""
    return stop_pids([(pid, create_time)], kill=kill, timeout=timeout) > 0


# --- state ------------------------------------------------------------------------------------


@dataclass
class MemberProcs:
    """One member of the local federation: its server's spec and the pids running it."""

    member: str
    store_dir: str
    client_port: int
    cluster_port: int | None
    monitor_port: int
    cluster_name: str | None
    routes: list[str] = field(default_factory=list)
    sync_always: bool = True
    nats_log: str = ""
    nats_pid: int | None = None
    nats_create_time: float | None = None
    node_pid: int | None = None
    node_create_time: float | None = None
    node_log: str = ""
    node_argv: list[str] = field(default_factory=list)
    extra_config: str = ""  # the `include` of the accounts under `up --secure`

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def spec(self) -> ServerSpec:
        return ServerSpec(
            name=self.member,
            store_dir=Path(self.store_dir),
            client_port=self.client_port,
            cluster_port=self.cluster_port,
            monitor_port=self.monitor_port,
            cluster_name=self.cluster_name,
            routes=list(self.routes),
            log_file=Path(self.nats_log) if self.nats_log else None,
            sync_always=self.sync_always,
            extra_config=self.extra_config,
        )

    def nats_alive(self) -> bool:
        return pid_alive(self.nats_pid, self.nats_create_time)

    def node_alive(self) -> bool:
        return pid_alive(self.node_pid, self.node_create_time)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemberProcs:
        known = {f.name for f in fields(cls)}  # tolerate fields added by later releases
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class FederationState:
    """The content of `up.json`."""

    up_pid: int | None
    up_create_time: float | None
    started_at: str
    members: dict[str, MemberProcs] = field(default_factory=dict)
    version: int = STATE_VERSION
    # `up --secure`: servers with the generated accounts, nodes with nkeys and tokens.
    secure: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> FederationState:
        data = json.loads(text)
        members = {
            member: MemberProcs.from_dict(procs)
            for member, procs in (data.get("members") or {}).items()
        }
        return cls(
            up_pid=data.get("up_pid"),
            up_create_time=data.get("up_create_time"),
            started_at=data.get("started_at", ""),
            members=members,
            version=data.get("version", STATE_VERSION),
            secure=bool(data.get("secure", False)),
        )


# --- the federation ---------------------------------------------------------------------------


class LocalFederation:
    """The processes of `stekker up` in one data folder, as recorded in `up.json`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.state_path = self.data_dir / "up.json"
        self.lock_path = self.data_dir / "up.lock"
        self.logs_dir = self.data_dir / "logs"
        # Servers started by this object; held so their Popen handles reap them.
        self._servers: dict[str, NatsServer] = {}
        self._nodes: dict[str, subprocess.Popen[bytes]] = {}

    # state file

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (blocking) for a read-modify-write of `up.json`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self) -> FederationState | None:
        """The recorded state, or None when there is none (or it is unreadable)."""
        try:
            return FederationState.from_json(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, AttributeError):
            return None  # a torn or foreign file is as good as none

    def record(self, state: FederationState) -> None:
        """Write the state atomically (temp file + rename). Call under `locked()`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".up.json.{os.getpid()}.tmp")
        tmp.write_text(state.to_json(), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def _update_member(self, member: str, **changes: Any) -> MemberProcs:
        with self.locked():
            state = self._require_state()
            procs = state.members[member]
            for key, value in changes.items():
                setattr(procs, key, value)
            self.record(state)
            return procs

    def _require_state(self) -> FederationState:
        state = self.load()
        if state is None:
            raise FederationNotRunning(f"no stekker up recorded in {self.data_dir}")
        return state

    def member(self, member: str) -> MemberProcs:
        state = self._require_state()
        if member not in state.members:
            raise FederationNotRunning(f"member {member!r} is not part of {self.data_dir}")
        return state.members[member]

    # queries

    def is_secure(self) -> bool:
        """Whether the recorded `stekker up` runs with the generated NATS accounts."""
        state = self.load()
        return state is not None and state.secure

    def is_running(self) -> bool:
        """Whether the recorded `stekker up` process is alive."""
        state = self.load()
        return state is not None and pid_alive(state.up_pid, state.up_create_time)

    def urls(self) -> list[str]:
        """Client URLs of the members whose nats-server is alive, by member id."""
        state = self.load()
        if state is None:
            return []
        return [p.url for _, p in sorted(state.members.items()) if p.nats_alive()]

    def require_urls(self) -> list[str]:
        """`urls()`, or FederationNotRunning when nothing is up in this folder."""
        urls = self.urls()
        if not urls:
            raise FederationNotRunning(
                f"no running federation in {self.data_dir}: run `stekker up`, or pass --nats"
            )
        return urls

    # setting up

    def claim(
        self,
        members: list[str],
        *,
        up_pid: int | None = None,
        cluster_name: str = CLUSTER_NAME,
        sync_always: bool = True,
        secure: bool = False,
    ) -> FederationState:
        """Record a new `stekker up` (this process unless `up_pid`) with one server per
        member. Raises AlreadyRunning if another live `up` owns the folder. Processes a
        dead `up` left behind are stopped first: they hold ports and store locks.

        Ports are allocated anew; stores under `nats/<member>/` are kept, so the
        federation's JetStream state survives from one `up` to the next.
        """
        up_pid = up_pid or os.getpid()
        with self.locked():
            old = self.load()
            if old is not None and pid_alive(old.up_pid, old.up_create_time):
                if old.up_pid != up_pid:
                    raise AlreadyRunning(
                        f"stekker up already runs in {self.data_dir} (pid {old.up_pid})"
                    )
            if old is not None:
                self._stop_recorded(old.members.values(), kill=False, timeout=10.0)
            state = FederationState(
                up_pid=up_pid,
                up_create_time=create_time_of(up_pid),
                started_at=datetime.now(UTC).isoformat(timespec="seconds"),
                members=self._plan(members, cluster_name, sync_always),
                secure=secure,
            )
            for procs in state.members.values():
                procs.extra_config = SECURE_INCLUDE if secure else ""
            self.record(state)
            return state

    def _plan(
        self, members: list[str], cluster_name: str, sync_always: bool
    ) -> dict[str, MemberProcs]:
        if not members or len(set(members)) != len(members):
            raise ValueError(f"need distinct member ids, got {members!r}")
        clustered = len(members) > 1  # a one-server "cluster" would never elect a leader
        ports = iter(free_ports(3 * len(members)))
        planned: dict[str, MemberProcs] = {}
        for member in members:
            client, cluster, monitor = next(ports), next(ports), next(ports)
            planned[member] = MemberProcs(
                member=member,
                store_dir=str(self.data_dir / "nats" / member),
                client_port=client,
                cluster_port=cluster if clustered else None,
                monitor_port=monitor,
                cluster_name=cluster_name if clustered else None,
                sync_always=sync_always,
                nats_log=str(self.logs_dir / f"{member}.nats.log"),
                node_log=str(self.logs_dir / f"{member}.node.log"),
            )
        for procs in planned.values():
            procs.routes = [
                f"nats://127.0.0.1:{other.cluster_port}"
                for other in planned.values()
                if other is not procs and other.cluster_port is not None
            ]
        return planned

    def release(self) -> None:
        """Forget the `up` process (it is exiting); member records stay for `stop_all`."""
        with self.locked():
            state = self.load()
            if state is not None:
                state.up_pid = None
                state.up_create_time = None
                self.record(state)

    # starting

    def start_member_server(self, member: str) -> int:
        """Start a member's nats-server, detached; returns its pid. Does not wait for
        readiness: a clustered server is only ready once a quorum of peers runs."""
        procs = self.member(member)
        if procs.nats_alive():
            assert procs.nats_pid is not None
            return procs.nats_pid
        server = NatsServer(procs.spec(), detach=True)
        server.start()
        assert server.pid is not None
        self._servers[member] = server
        self._update_member(
            member, nats_pid=server.pid, nats_create_time=create_time_of(server.pid)
        )
        return server.pid

    def wait_member_ready(self, member: str, timeout: float = 20.0) -> None:
        """Wait until a member's server is ready; NatsServerFailed if it dies or the
        bound passes. Works for servers started by another process too."""
        procs = self.member(member)
        spec = procs.spec()
        deadline = time.monotonic() + timeout
        while True:
            if not procs.nats_alive():
                raise NatsServerFailed(
                    f"nats-server of {member} is not running:\n{log_tail(spec.log_file)}"
                )
            if is_ready(spec.monitor_port, spec.clustered):
                return
            if time.monotonic() >= deadline:
                raise NatsServerFailed(
                    f"nats-server of {member} not ready after {timeout:.0f}s:\n"
                    + log_tail(spec.log_file)
                )
            time.sleep(POLL_INTERVAL)

    def start_servers(self, timeout: float = 20.0) -> None:
        """Start every member's server, then wait until all are ready."""
        state = self._require_state()
        for member in state.members:
            self.start_member_server(member)
        deadline = time.monotonic() + timeout
        for member in state.members:
            self.wait_member_ready(member, max(0.0, deadline - time.monotonic()))

    def start_member_node(self, member: str, node_argv: list[str]) -> int:
        """Spawn a member's node (`node_argv`, built by the caller) detached, output to
        `logs/<member>.node.log`; records and returns its pid."""
        procs = self.member(member)
        if procs.node_alive():
            assert procs.node_pid is not None
            return procs.node_pid
        log_path = Path(procs.node_log or self.logs_dir / f"{member}.node.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            node = subprocess.Popen(
                node_argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `stekker up`, untouched by its Ctrl-C
                close_fds=True,
            )
        self._nodes[member] = node
        self._update_member(
            member,
            node_pid=node.pid,
            node_create_time=create_time_of(node.pid),
            node_log=str(log_path),
            node_argv=list(node_argv),
        )
        return node.pid

    def start_member(
        self, member: str, node_argv: list[str] | None = None, timeout: float = 20.0
    ) -> None:
        """(Re)start a member: its server, wait until ready, then its node. Without
        `node_argv` the node is started with the argv recorded last time."""
        argv = node_argv or self.member(member).node_argv
        self.start_member_server(member)
        self.wait_member_ready(member, timeout)
        if argv:
            self.start_member_node(member, argv)

    def reload_servers(self) -> int:
        """SIGHUP every live server of the folder: nats-server re-reads its config and
        includes (new accounts). Returns how many were signalled."""
        state = self.load()
        signalled = 0
        for procs in state.members.values() if state else []:
            proc = _process(procs.nats_pid, procs.nats_create_time)
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGHUP)
                    signalled += 1
        return signalled

    # stopping

    def stop_member(self, member: str, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop a member's node, then its server (SIGTERM, bounded wait, SIGKILL; or
        SIGKILL at once with `kill`, as a crash). The store stays for a restart."""
        procs = self.member(member)
        stop_pid(procs.node_pid, procs.node_create_time, kill=kill, timeout=timeout)
        self._reap(member)
        self._update_member(member, node_pid=None, node_create_time=None)
        stop_pid(procs.nats_pid, procs.nats_create_time, kill=kill, timeout=timeout)
        self._reap(member)
        self._update_member(member, nats_pid=None, nats_create_time=None)

    def stop_all(self, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop every node, then every server; the state file keeps the member records."""
        state = self.load()
        if state is None:
            return
        self._stop_recorded(state.members.values(), kill=kill, timeout=timeout)
        with self.locked():
            state = self.load()
            if state is None:
                return
            for procs in state.members.values():
                procs.node_pid = procs.node_create_time = None
                procs.nats_pid = procs.nats_create_time = None
            self.record(state)

    def _stop_recorded(self, members: Iterable[MemberProcs], *, kill: bool, timeout: float) -> None:
        """All nodes first, so none sees its server vanish under it; then all servers.
        Each group is signalled at once and waited for together."""
        members = list(members)
        stop_pids([(p.node_pid, p.node_create_time) for p in members], kill=kill, timeout=timeout)
        stop_pids([(p.nats_pid, p.nats_create_time) for p in members], kill=kill, timeout=timeout)
        for procs in members:
            self._reap(procs.member)

    def _reap(self, member: str) -> None:
        """Collect exit statuses of children this object spawned, so none stays a zombie."""
        node = self._nodes.get(member)
        if node is not None and node.poll() is not None:
            del self._nodes[member]
        server = self._servers.get(member)
        if server is not None and not server.running:
            del self._servers[member]
