"""`stekker doctor`: can this installation run a member? Checked for real, in seconds.

It finds the nats-server binary and checks its version (mesh/compat.py), starts an
embedded JetStream server on a free loopback port in a temporary folder, connects,
creates the federation's streams and buckets, writes and reads back one KV record
(create-only, as placements are written), and stops the server. Nothing is left behind.
It is what an operator runs after `pip install`, and what the packaging test runs in a
fresh environment with only the runtime dependencies.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import msgspec
import typer

from mesh import layout
from mesh.bus import Bus
from mesh.cli import common
from mesh.compat import MIN_NATS_SERVER, binary_version
from mesh.errors import MeshError
from mesh.server import NatsCluster, find_nats_server
from mesh.state import bucket


class _Probe(msgspec.Struct):
    """The record `doctor` writes: any small typed record will do."""

    written_at: float


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


async def _round_trip(urls: list[str]) -> str:
    bus = await Bus.connect(urls, connect_timeout_s=10.0, reconnect=False, name="stekker-doctor")
    try:
        await bus.provision(replicas=1)
        probes = await bucket(bus, layout.KV_DECISIONS, _Probe)
        revision = await probes.create("doctor", _Probe(written_at=time.time()))
        entry = await probes.get("doctor")
        if entry is None or entry.revision != revision:
            raise MeshError("a KV record written was not read back")
        return f"streams and buckets created; KV create/read at revision {revision}"
    finally:
        await bus.close()


def run_checks() -> list[Check]:
    """Every check in order; a failed step skips the ones that need it."""
    checks = [Check("python", sys.version_info >= (3, 11),
                    f"{platform.python_version()} ({platform.machine()}); needs 3.11+"),
              Check("stekker", True, metadata.version("stekker"))]
    try:
        binary = find_nats_server()
    except MeshError as exc:
        return [*checks, Check("nats-server", False, str(exc))]
    version = binary_version(binary)
    shown = ".".join(map(str, version)) if version else "unknown version"
    minimum = ".".join(map(str, MIN_NATS_SERVER))
    checks.append(Check("nats-server", True, f"{shown} at {binary} (needs {minimum}+)"))
    with tempfile.TemporaryDirectory(prefix="stekker-doctor-") as tmp:
        folder = Path(tmp)
        server = NatsCluster.single(folder / "nats", sync_always=False)
        try:
            started = time.monotonic()
            server.start()
            checks.append(Check("embedded server", True,
                                f"JetStream ready at {server.urls[0]} in "
                                f"{time.monotonic() - started:.1f} s"))
        except MeshError as exc:
            checks.append(Check("embedded server", False, str(exc)))
        else:
            try:
                checks.append(Check("jetstream", True, asyncio.run(_round_trip(server.urls))))
            except (MeshError, OSError, TimeoutError) as exc:
                checks.append(Check("jetstream", False, str(exc) or type(exc).__name__))
        finally:
            server.stop()
    left = [s.pid for s in server.servers.values() if s.running]
    checks.append(Check("stopped", not left and not folder.exists(),
                        f"server still running (pid {left})" if left else
                        "the server stopped; its folder is removed"))
    return checks


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        as_json: bool = typer.Option(False, "--json", help="One JSON array of checks."),
    ) -> None:
        """Check that this installation can run a member: Python, the nats-server binary
        and its version (2.11 or newer), and an embedded JetStream server that starts,
        stores a record and stops. Exit 0 only if every check passes."""
        checks = run_checks()
        if as_json:
            common.print_json([c.__dict__ for c in checks])
        else:
            common.print_table(None, ["check", "", "detail"],
                               [[c.name, "ok" if c.passed else "FAILED", c.detail]
                                for c in checks])
        if not all(c.passed for c in checks):
            raise typer.Exit(1)

