"""The `process` driver: runs a workload as a real local child process.

Each instance gets `root/<instance_id>/` with a `data/` folder (kept after stop, so a
move's data can be checked) and `out.log` (stdout and stderr). `spec.run.command` may
use `{python}` (this interpreter), `{data_dir}` and `{port}` (a free loopback port).
An instance is healthy while its process lives and, when `run.health_path` is set,
GET http://127.0.0.1:<port><health_path> answers 2xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

from contracts.workload import WorkloadSpec
from services.agent.data import pack, unpack
from services.agent.drivers.base import DriverError, Instance

LOG_TAIL_CHARS = 400


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill(command: list[str], *, data_dir: Path, port: int) -> list[str]:
    """Fill the placeholders. Plain replacement, so other braces in arguments stay."""
    values = {"{python}": sys.executable, "{data_dir}": str(data_dir), "{port}": str(port)}
    out = []
    for part in command:
        for placeholder, value in values.items():
            part = part.replace(placeholder, value)
        out.append(part)
    return out


async def http_ok(port: int, path: str, timeout: float = 1.0) -> bool:
    """GET 127.0.0.1:port+path answers 2xx (a minimal HTTP/1.0 client; no dependencies)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout
        )
    except (OSError, TimeoutError):
        return False
    try:
        request = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("ascii", "replace"))
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
        parts = status.split()
        return len(parts) >= 2 and parts[1][:1] == b"2"
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " ".join(text[-LOG_TAIL_CHARS:].split())


class ProcessDriver:
    name = "process"

    def __init__(
        self,
        root: Path,
        *,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 5.0,
        settle_s: float = 0.3,
    ) -> None:
        self.root = Path(root)
        self.settle_s = settle_s
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self.instances: dict[str, Instance] = {}

    async def start(self, instance_id: str, spec: WorkloadSpec, site: str) -> Instance:
        if spec.run is None:
            raise DriverError(
                f"workload {spec.id} has no `run` section, so the process driver cannot run it"
            )
        if not spec.run.command:
            raise DriverError(f"workload {spec.id}: run.command is empty")
        old = self.instances.get(instance_id)
        if old is not None:
            await self.stop(old)
        home = self.root / instance_id
        data_dir = self.data_dir(instance_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        command = fill(spec.run.command, data_dir=data_dir, port=port)
        log_path = home / "out.log"
        with log_path.open("ab") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                    cwd=home,
                    # Its own process group, so stop reaches whatever it forks.
                    start_new_session=True,
                )
            except OSError as exc:
                raise DriverError(f"cannot start {command[0]!r}: {exc}") from None
        instance = Instance(
            instance_id=instance_id, spec=spec, site=site, data_dir=data_dir, pid=proc.pid,
            port=port, detail={"log": str(log_path), "command": " ".join(command)},
        )
        self._procs[instance_id] = proc
        self.instances[instance_id] = instance
        await self._wait_healthy(instance, proc, log_path)
        return instance

    def data_dir(self, instance_id: str) -> Path:
        return self.root / instance_id / "data"

    async def export(self, instance_id: str, spec: WorkloadSpec) -> bytes:
        """A tar of the data folder, read while the process may still write (as a
        backup of a live database would be without its cooperation)."""
        folder = self.data_dir(instance_id)
        if not folder.is_dir():
            raise DriverError(f"{instance_id} has no data folder here")
        return await asyncio.to_thread(pack, folder)

    async def import_(self, instance_id: str, spec: WorkloadSpec, data: bytes) -> None:
        if instance_id in self.instances:
            raise DriverError(f"{instance_id} runs; its data cannot be replaced under it")
        await asyncio.to_thread(unpack, self.data_dir(instance_id), data)

    async def has_data(self, instance_id: str, spec: WorkloadSpec) -> bool:
        folder = self.data_dir(instance_id)
        return folder.is_dir() and any(folder.iterdir())

    async def _wait_healthy(
        self, instance: Instance, proc: asyncio.subprocess.Process, log_path: Path
    ) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        delay = 0.02
        while True:
            if proc.returncode is not None:
                await self.stop(instance)
                raise DriverError(
                    f"{instance.instance_id} exited with code {proc.returncode} while "
                    f"starting: {_tail(log_path) or '(no output)'}"
                )
            if await self.healthy(instance):
                run = instance.spec.run
                if run is not None and run.health_path:
                    return
                # Without a health check, "alive" must mean more than "not dead yet": a
                # command that fails at once should fail the start, not look healthy.
                try:
                    await asyncio.wait_for(proc.wait(), self.settle_s)
                except TimeoutError:
                    return
                continue
            if time.monotonic() > deadline:
                await self.stop(instance)
                raise DriverError(
                    f"{instance.instance_id} was not healthy within {self.start_timeout_s:g} s"
                    f": {_tail(log_path) or '(no output)'}"
                )
            await asyncio.sleep(delay)  # polling a child process: nothing to wait on
            delay = min(delay * 2, 0.2)

    async def healthy(self, instance: Instance) -> bool:
        proc = self._procs.get(instance.instance_id)
        if proc is None or proc.pid != instance.pid or proc.returncode is not None:
            return False
        run = instance.spec.run
        if run is None or not run.health_path or instance.port is None:
            return True
        return await http_ok(instance.port, run.health_path)

    async def stop(self, instance: Instance) -> None:
        proc = self._procs.get(instance.instance_id)
        if proc is None or proc.pid != instance.pid:
            return
        if proc.returncode is None:
            self._signal(proc, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout_s)
            except TimeoutError:
                self._signal(proc, signal.SIGKILL)
                await proc.wait()
        # Also the children it may have left in its group.
        self._signal(proc, signal.SIGKILL)
        del self._procs[instance.instance_id]
        self.instances.pop(instance.instance_id, None)

    @staticmethod
    def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    async def close(self) -> None:
        # All at once: a node's shutdown waits for the slowest child, not for their sum.
        await asyncio.gather(
            *(self.stop(i) for i in list(self.instances.values())), return_exceptions=True
        )
