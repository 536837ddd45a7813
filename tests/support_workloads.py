"""Helpers for the scheduler, agent and `stekker workload` tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from contracts.state import MemberRecord, PlacementRecord
from mesh import layout
from mesh.bus import Bus
from mesh.specfile import load_workload
from mesh.state import Bucket, bucket
from services.agent.service import AgentService
from services.scheduler.service import SchedulerService
from support import DEMO_WORKLOADS, MEMBERS, Federation, federation, wait_until

PLACING = ["iam", "registry", "scheduler", "agent"]


def demo_spec(name: str) -> Any:
    return load_workload(DEMO_WORKLOADS / f"{name}.yaml")


def demo_specs() -> list[Any]:
    return [load_workload(p) for p in sorted(DEMO_WORKLOADS.glob("*.yaml"))]


def service_of(fed: Federation, member: str, kind: type[Any]) -> Any:
    for service in fed.nodes[member].services:
        if isinstance(service, kind):
            return service
    raise LookupError(f"{member} runs no {kind.__name__}")


def agent_of(fed: Federation, member: str) -> AgentService:
    agent: AgentService = service_of(fed, member, AgentService)
    return agent


def schedulers(fed: Federation) -> list[SchedulerService]:
    return [service_of(fed, m, SchedulerService) for m in fed.nodes]


def submissions_handled(services: Sequence[SchedulerService]) -> int:
    return sum(s.submissions.handled for s in services if s.submissions is not None)


async def placements(bus: Bus) -> Bucket[PlacementRecord]:
    return await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)


async def members_known(bus: Bus, count: int = len(MEMBERS)) -> bool:
    members = await bucket(bus, layout.KV_MEMBERS, MemberRecord)
    return len(await members.keys()) >= count


async def count_on_fed(bus: Bus, subject_filter: str) -> int:
    """How many messages FED holds on subjects matching `subject_filter`."""
    info = await bus.js.stream_info(layout.FED, subjects_filter=subject_filter)
    return sum((info.state.subjects or {}).values())


class ThreadedFederation:
    """The in-process federation on its own event loop in a thread, for tests that drive
    the synchronous CLI (whose commands call `asyncio.run`)."""

    def __init__(self, urls: list[str], data_dir: Path, services: Sequence[str]) -> None:
        self.urls = urls
        self.data_dir = data_dir
        self.services = list(services)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.fed: Federation | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="federation", daemon=True)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with federation(self.urls, self.data_dir, services=self.services) as fed:
                self.fed = fed
                bus = await fed.bus()
                await wait_until(lambda: members_known(bus), what="member profiles")
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the federation's loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ThreadedFederation:
        self._thread.start()
        if not self._ready.wait(60):
            raise AssertionError("federation did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@contextlib.contextmanager
def threaded_federation(
    urls: list[str], data_dir: Path, services: Sequence[str] = PLACING
) -> Iterator[ThreadedFederation]:
    with ThreadedFederation(urls, data_dir, services) as fed:
        yield fed
