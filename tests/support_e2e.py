"""Helpers for process-level tests: a real `stekker up` and `stekker` commands.

Every process a test starts through these helpers is stopped by `running_up`'s exit,
whatever happened: SIGINT to `up` first (its own cleanup), then SIGKILL to whatever
`up.json` still records, so a failing test never leaves servers or nodes behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import psutil

from contracts.state import MemberRecord, PlacementRecord
from mesh import layout
from mesh.bus import Bus
from mesh.errors import MeshError
from mesh.localfed import LocalFederation
from mesh.state import bucket
from mesh.trust import TrustStore
from support import DEMO_MEMBERS, DEMO_WORKLOADS, ROOT, wait_until

STOP_BOUND_S = 60.0  # `up` stops nodes then servers, each group with a 10 s bound
CLI_BOUND_S = 90.0


def cli(data_dir: Path, *args: str) -> list[str]:
    """argv of a `stekker` command on the federation in `data_dir`."""
    return [sys.executable, "-m", "mesh.cli.main", "--data-dir", str(data_dir), *args]


def stekker(data_dir: Path, *args: str, timeout: float = CLI_BOUND_S
            ) -> subprocess.CompletedProcess[str]:
    """Run a `stekker` command to its end (bounded), output captured as text."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("STEKKER_NATS", None)
    return subprocess.run(cli(data_dir, *args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


@dataclass
class UpProcess:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log: Path

    @property
    def fed(self) -> LocalFederation:
        return LocalFederation(self.data_dir)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def interrupt(self, timeout: float = STOP_BOUND_S) -> int:
        """Ctrl-C, as a person would; returns `up`'s exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)


def up_argv(data_dir: Path, *extra: str) -> list[str]:
    return cli(data_dir, "up", "--no-live", "--members-dir", str(DEMO_MEMBERS),
               "--workloads-dir", str(DEMO_WORKLOADS), *extra)


@contextlib.contextmanager
def running_up(data_dir: Path, *extra: str) -> Iterator[UpProcess]:
    """`stekker up --no-live` on the demo federation in `data_dir`; always stopped."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}.up.out"
    env = {**os.environ}
    env.pop("STEKKER_NATS", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(up_argv(data_dir, *extra), cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    up = UpProcess(proc=proc, data_dir=data_dir, log=log)
    try:
        yield up
    except BaseException:
        # What `up` saw is the best account of what went wrong; pytest shows it.
        print(f"--- end of stekker up's output ({log}) ---\n{up.output()[-6000:]}")
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        up.fed.stop_all(kill=True)  # whatever `up` could not stop


def recorded_pids(data_dir: Path) -> list[tuple[int, float | None]]:
    """Every (pid, start time) `up.json` ever recorded for this run's processes."""
    state = LocalFederation(data_dir).load()
    assert state is not None, "no up.json"
    pids: list[tuple[int, float | None]] = []
    if state.up_pid:
        pids.append((state.up_pid, state.up_create_time))
    for procs in state.members.values():
        for pid, created in ((procs.nats_pid, procs.nats_create_time),
                             (procs.node_pid, procs.node_create_time)):
            if pid:
                pids.append((pid, created))
    return pids


def alive(pid: int, create_time: float | None = None) -> bool:
    """Running (not a zombie), and the same process if a start time is given."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def started_pids(data_dir: Path) -> list[tuple[int, float | None]]:
    """Pids of all live processes `up.json` records now (servers, nodes, `up`)."""
    return [(pid, created) for pid, created in recorded_pids(data_dir) if alive(pid, created)]


async def wait_up_ready(up: UpProcess, timeout: float = 60.0) -> None:
    """Until `up` says its nodes are ready (it prints one line when they are)."""

    def ready() -> bool:
        if up.proc.poll() is not None:
            raise AssertionError(f"stekker up exited {up.proc.returncode}:\n{up.output()}")
        return "nodes ready" in up.output()

    await wait_until(ready, timeout=timeout, interval=0.1, what="stekker up ready")


async def connect(data_dir: Path) -> Bus:
    """A reading connection to the federation in `data_dir`, with its roster in force."""
    from services.iam.service import load_roster

    fed = LocalFederation(data_dir)
    urls = await wait_until(fed.urls, timeout=30, what="servers in up.json")
    bus = await Bus.connect(urls, service="test", name="stekker-test")
    roster = await wait_until(lambda: load_roster(bus), timeout=30, what="roster")
    bus.trust = TrustStore(roster)
    return bus


async def placements(bus: Bus) -> dict[str, PlacementRecord]:
    """Every placement record."""
    kv = await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)
    return {entry.key: entry.value for entry in await kv.items()}


async def placements_now(bus: Bus) -> dict[str, PlacementRecord] | None:
    """`placements`, or None while the cluster cannot answer (a server was just killed,
    a stream leader is being elected, the connection moves to another server)."""
    try:
        return await placements(bus)
    except (nats.errors.Error, TimeoutError, MeshError):
        return None


async def announced(bus: Bus) -> set[str]:
    kv = await bucket(bus, layout.KV_MEMBERS, MemberRecord)
    return set(await kv.keys())


def demo_workload_ids() -> list[str]:
    from mesh.specfile import load_workload

    return sorted(load_workload(path).id for path in DEMO_WORKLOADS.glob("*.yaml"))


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return json.loads(result.stdout)


def wait_gone(pids: Sequence[tuple[int, float | None]], timeout: float = 20.0) -> list[int]:
    """Poll until none of `pids` runs; the ones still running after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid, created in pids if alive(pid, created)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
