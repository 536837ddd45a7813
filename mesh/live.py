"""The live view of `stekker up`: what the federation looks like right now.

Three parts, kept apart so each can be tested alone:

- **gathering** (`Gatherer`, `EventFeed`): the members as `stekker members` reads them
  (`mesh.cli.members_cmd.collect`: `fed_members`, `fed_capacity`, `fed_decisions`,
  `fed_sagas` and the newest heartbeat per member in `HEALTH`), the placements in
  `fed_placements`, the newest events of `FED` through an ephemeral consumer, and the
  local processes of `up.json`. A read that fails (a server just died, a leader is
  being elected) keeps the last good value, so the view never blanks out during the
  very moments it is for;
- **assembling** (`build_view`): a pure function from those records to a `View`;
- **showing**: `render(view)` for a terminal (rich), `changes(old, new)` for a log or a
  pipe (one short line per change).

Member status is the federation's point of view, computed as `stekker members` does
(`services.registry.status`): down when a quorum declared it, frozen while a takeover
empties it, suspected when its heartbeat is older than the suspicion timeout. The local
process state (node, nats) is shown next to it, so a killed node is visibly "stopped"
here long before it is "down" there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from contracts.base import publisher_of, target_of
from contracts.registry import CapacityReported
from contracts.resources import Resources
from contracts.state import PlacementRecord
from mesh import layout
from mesh.bus import Bus
from mesh.envelope import H_TYPE
from mesh.errors import MeshError, Rejected
from mesh.localfed import LocalFederation
from mesh.observability import logger
from mesh.state import bucket

__all__ = [
    "EventFeed",
    "EventRow",
    "Gatherer",
    "LocalProcs",
    "MemberRow",
    "View",
    "WorkloadRow",
    "build_view",
    "changes",
    "render",
]

log = logger("mesh.live")
T = TypeVar("T")

EVENTS_SHOWN = 10
READ_TIMEOUT_S = 2.0  # one read of the view; a slow server must not freeze the screen
LOCAL_WAIT_S = 0.5  # how long one frame waits for the bus reads before showing what it has
# Capacity reports come every few seconds from every member and say nothing a person
# watching needs; the members table shows the capacity itself.
QUIET_TYPES = frozenset({CapacityReported.type_name()})
ROSTER_EVERY_S = 5.0


# --- what is shown ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalProcs:
    """A member's processes on this machine, as `up.json` records them."""

    node: bool
    nats: bool


@dataclass(frozen=True)
class MemberRow:
    id: str
    status: str  # federation's view: active | suspected | down | frozen | unannounced
    seal: int | None
    sites: tuple[str, ...]
    heartbeat_age_s: float | None
    free: Resources | None
    local: LocalProcs | None  # None: not run by this `stekker up`

    @property
    def local_state(self) -> str:
        if self.local is None:
            return "-"
        if self.local.node and self.local.nats:
            return "running"
        if not self.local.node and not self.local.nats:
            return "stopped"
        return "node stopped" if self.local.nats else "nats stopped"


@dataclass(frozen=True)
class WorkloadRow:
    id: str
    criticality: str
    state: str
    generation: int
    replicas: int  # asked for
    placed: tuple[tuple[str, str], ...]  # (member, replica state), in assignment order

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(member for member, _ in self.placed)


@dataclass(frozen=True)
class EventRow:
    seq: int
    type: str
    publisher: str
    target: str | None
    time: dt.datetime | None
    verified: bool = True


@dataclass(frozen=True)
class View:
    at: dt.datetime
    members: tuple[MemberRow, ...]
    workloads: tuple[WorkloadRow, ...]
    events: tuple[EventRow, ...]
    problems: tuple[str, ...] = ()

    def member(self, member: str) -> MemberRow | None:
        return next((m for m in self.members if m.id == member), None)

    def workload(self, workload: str) -> WorkloadRow | None:
        return next((w for w in self.workloads if w.id == workload), None)


# --- assembling (pure) ------------------------------------------------------------------------


def _free(row: Mapping[str, Any]) -> Resources | None:
    free = row.get("free")
    return Resources(**free) if free else None


def build_view(
    *,
    now: dt.datetime,
    members: Sequence[Mapping[str, Any]],
    placements: Mapping[str, PlacementRecord],
    local: Mapping[str, LocalProcs] | None = None,
    events: Iterable[EventRow] = (),
    problems: Iterable[str] = (),
) -> View:
    """The view from what was read. `members` are rows as `stekker members --json` gives
    them (`members_cmd.member_row`); a local member the roster lacks gets a row too."""
    local = local or {}
    rows = {str(row["id"]): row for row in members}
    member_rows = []
    for member in sorted(set(rows) | set(local)):
        row = rows.get(member)
        if row is None:
            member_rows.append(MemberRow(id=member, status="not in roster", seal=None, sites=(),
                                         heartbeat_age_s=None, free=None,
                                         local=local.get(member)))
            continue
        status = str(row["status"])
        if row.get("seal") is None and status == "suspected":
            status = "unannounced"  # not silent: it never spoke yet
        if row.get("roster_state", "active") != "active":
            status = f"{status} ({row['roster_state']})"
        member_rows.append(
            MemberRow(
                id=member,
                status=status,
                seal=row.get("seal"),
                sites=tuple(site["id"] for site in row.get("sites") or ()),
                heartbeat_age_s=row.get("heartbeat_age_s"),
                free=_free(row),
                local=local.get(member),
            )
        )
    workload_rows = []
    for workload, record in sorted(placements.items()):
        states = {replica.member: replica.state for replica in record.replicas}
        workload_rows.append(
            WorkloadRow(
                id=workload,
                criticality=record.spec.criticality,
                state=record.state,
                generation=record.generation,
                replicas=record.spec.replicas,
                placed=tuple(
                    (a.member, states.get(a.member, "assigned")) for a in record.assignments
                ),
            )
        )
    return View(
        at=now,
        members=tuple(member_rows),
        workloads=tuple(workload_rows),
        events=tuple(events),
        problems=tuple(problems),
    )


# --- gathering --------------------------------------------------------------------------------


class EventFeed:
    """The newest events of FED, read by an ephemeral consumer.

    It starts `keep` events back, so the view opens with recent history, and then
    follows the stream. The consumer lives on one server (R1, in memory); when that
    server dies the feed makes a new one from the next sequence it has not seen yet,
    so nothing is skipped and nothing shown twice.
    """

    def __init__(self, bus: Bus, *, keep: int = EVENTS_SHOWN, quiet: frozenset[str] = QUIET_TYPES):
        self.bus = bus
        self.quiet = quiet
        self.recent: deque[EventRow] = deque(maxlen=keep)
        self._keep = keep
        self._fresh: list[EventRow] = []
        self._next_seq: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live:events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def take_fresh(self) -> list[EventRow]:
        """Events that arrived since the last call (for the line-per-change output)."""
        fresh, self._fresh = self._fresh, []
        return fresh

    async def _start_seq(self) -> int:
        info = await self.bus.js.stream_info(layout.FED)
        last = int(info.state.last_seq or 0)
        first = int(info.state.first_seq or 1)
        # Quiet events are skipped, so look further back than `keep` to fill the list.
        return max(first, last - 4 * self._keep + 1, 1)

    async def _run(self) -> None:
        while True:
            psub = None
            try:
                if self._next_seq is None:
                    self._next_seq = await self._start_seq()
                config = ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=self._next_seq,
                    ack_policy=AckPolicy.NONE,
                    filter_subject="fed.v1.>",
                    inactive_threshold=30.0,
                    mem_storage=True,
                    num_replicas=1,
                )
                info = await self.bus.js.add_consumer(layout.FED, config)
                psub = await self.bus.js.pull_subscribe_bind(
                    durable=info.name, stream=layout.FED
                )
                await self._follow(psub, info.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # server gone, leader election, ...: start over
                log.debug("event feed restarting", error=str(exc))
                await asyncio.sleep(0.5)
            finally:
                if psub is not None:
                    with contextlib.suppress(Exception):
                        await psub.unsubscribe()

    async def _follow(self, psub: Any, name: str) -> None:
        idle = 0
        while True:
            try:
                msgs = await psub.fetch(batch=64, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                idle += 1
                if idle >= 5:  # quiet for a while: is our consumer still there?
                    idle = 0
                    await self.bus.js.consumer_info(layout.FED, name)  # raises if gone
                continue
            idle = 0
            for msg in msgs:
                self._add(msg)

    def _add(self, msg: Any) -> None:
        meta = msg.metadata
        seq = int(meta.sequence.stream)
        if self._next_seq is not None and seq < self._next_seq:
            return
        self._next_seq = seq + 1
        stored = meta.timestamp or dt.datetime.now(dt.UTC)
        try:
            _, env = self.bus.verify(msg.subject, msg.headers, msg.data, stored, seq,
                                     window_s=0)
            row = EventRow(seq=seq, type=env.type_name, publisher=env.member,
                           target=target_of(msg.subject), time=env.time)
        except Rejected as rejected:
            # Shown, marked: a refused message is news to whoever watches.
            claimed = (msg.headers or {}).get(H_TYPE) or "?"
            row = EventRow(seq=seq, type=f"{claimed} ({rejected.reason})",
                           publisher=publisher_of(msg.subject) or "?",
                           target=target_of(msg.subject), time=stored, verified=False)
        if row.type in self.quiet:
            return
        self.recent.append(row)
        self._fresh.append(row)


class Gatherer:
    """Reads everything the view shows; keeps the last good value of every source."""

    def __init__(
        self,
        bus: Bus,
        *,
        fed: LocalFederation | None = None,
        feed: EventFeed | None = None,
    ) -> None:
        self.bus = bus
        self.fed = fed
        self.feed = feed
        self._last: dict[str, Any] = {}
        self._problems: list[str] = []
        self._roster_checked = -ROSTER_EVERY_S
        # The bus reads run in a task of their own: the view never waits on it longer than
        # READ_TIMEOUT_S, even if a read hangs past its own timeout (as a client that is
        # failing over to another server can), so local process changes still show.
        self._remote: asyncio.Task[None] | None = None
        self._remote_started = 0.0
        self._remote_problems: list[str] = []

    async def _read(self, source: str, read: Awaitable[T], default: T) -> T:
        try:
            value = await asyncio.wait_for(read, READ_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except (MeshError, nats.errors.Error, TimeoutError, OSError) as exc:
            self._problems.append(f"{source}: {type(exc).__name__}")
            return self._last.get(source, default)
        self._last[source] = value
        return value

    async def _items(self, name: str, record: type[T]) -> dict[str, T]:
        """Every live entry of a bucket."""
        kv = await bucket(self.bus, name, record)
        return {entry.key: entry.value for entry in await kv.items()}

    async def _members(self) -> list[dict[str, Any]]:
        from mesh.cli.members_cmd import collect  # what `stekker members` shows

        if not self.bus.trust.ready:
            return []
        return await collect(self.bus)

    def _local(self) -> dict[str, LocalProcs]:
        state = self.fed.load() if self.fed else None
        if state is None:
            return {}
        return {
            member: LocalProcs(node=procs.node_alive(), nats=procs.nats_alive())
            for member, procs in state.members.items()
        }

    async def _refresh_roster(self) -> None:
        """Take a newer roster into force (a member admitted while we watch)."""
        from services.iam.service import load_roster  # services build on mesh, not back

        roster = await load_roster(self.bus)
        if roster is not None and roster.body.version > self.bus.trust.version:
            self.bus.trust.install(roster)

    async def _read_remote(self) -> None:
        self._problems = []
        now = time.monotonic()
        if now - self._roster_checked >= ROSTER_EVERY_S or not self.bus.trust.ready:
            self._roster_checked = now
            await self._read("roster", self._refresh_roster(), None)
        await self._read("members", self._members(), [])
        await self._read("placements", self._items(layout.KV_PLACEMENTS, PlacementRecord), {})
        self._remote_problems = self._problems

    async def gather(self) -> View:
        now = time.monotonic()
        if self._remote is None or self._remote.done():
            if self._remote is not None and not self._remote.cancelled():
                self._remote.exception()  # collected; `_read` already noted any problem
            self._remote = asyncio.create_task(self._read_remote(), name="live:reads")
            self._remote_started = now
        # Wait briefly only: the local processes (and the screen) must stay current even
        # while the bus is slow; the bus values shown are the last ones read.
        await asyncio.wait({self._remote}, timeout=LOCAL_WAIT_S)
        slow = not self._remote.done() and now - self._remote_started > 2 * READ_TIMEOUT_S
        problems = ["bus: reads are slow"] if slow else list(self._remote_problems)
        return build_view(
            now=dt.datetime.now(dt.UTC),
            members=self._last.get("members", []),
            placements=self._last.get("placements", {}),
            local=self._local(),
            events=list(self.feed.recent) if self.feed else [],
            problems=problems,
        )

    async def close(self) -> None:
        if self._remote is not None and not self._remote.done():
            self._remote.cancel()


# --- showing ----------------------------------------------------------------------------------

STATUS_STYLE = {
    "active": "green",
    "suspected": "yellow",
    "down": "bold red",
    "frozen": "cyan",
    "unannounced": "dim",
    "not in roster": "red",
}
LOCAL_STYLE = {"running": "green", "stopped": "bold red", "-": "dim"}
REPLICA_STYLE = {"running": "green", "assigned": "yellow", "failed": "red", "released": "dim"}
STATE_STYLE = {"running": "green", "placed": "yellow", "pending": "yellow",
               "degraded": "bold yellow", "unplaceable": "bold red", "released": "dim"}


def fmt_age(age: float | None) -> str:
    if age is None:
        return "never"
    if age < 60:
        return f"{age:.1f}s"
    if age < 3600:
        return f"{age / 60:.0f}m"
    return f"{age / 3600:.0f}h"


def fmt_free(free: Resources | None) -> str:
    if free is None:
        return "-"
    return f"{free.vcpu:g} vCPU · {free.memory_gib:g} GiB · {free.storage_gib / 1024:.1f} TiB"


def fmt_time(when: dt.datetime | None) -> str:
    return when.astimezone().strftime("%H:%M:%S") if when else "-"


def render(view: View, *, title: str = "stekker federation") -> RenderableType:
    """The view as rich tables: members, workloads, recent events."""
    members = Table(title=f"{title} — members", title_justify="left", header_style="bold",
                    expand=False)
    for column in ("member", "status", "local", "SEAL", "sites", "heartbeat", "free"):
        members.add_column(column)
    for m in view.members:
        members.add_row(
            m.id,
            Text(m.status, style=STATUS_STYLE.get(m.status, "")),
            Text(m.local_state, style=LOCAL_STYLE.get(m.local_state, "yellow")),
            "-" if m.seal is None else f"SEAL-{m.seal}",
            ", ".join(m.sites) or "-",
            fmt_age(m.heartbeat_age_s),
            fmt_free(m.free),
        )

    workloads = Table(title="workloads", title_justify="left", header_style="bold")
    for column in ("workload", "criticality", "state", "gen", "replicas on"):
        workloads.add_column(column)
    for w in view.workloads:
        placed = Text()
        for i, (member, state) in enumerate(w.placed):
            if i:
                placed.append(" ")
            placed.append(member, style=REPLICA_STYLE.get(state, ""))
            if state != "running":
                placed.append(f"({state})", style="dim")
        placed.append(f"  {len(w.placed)}/{w.replicas}", style="dim")
        workloads.add_row(w.id, w.criticality,
                          Text(w.state, style=STATE_STYLE.get(w.state, "")),
                          str(w.generation), placed)
    if not view.workloads:
        workloads.add_row(Text("(none yet)", style="dim"), "", "", "", "")

    events = Table(title="latest events (FED)", title_justify="left", header_style="bold")
    for column in ("time", "type", "by", "about"):
        events.add_column(column)
    for e in reversed(view.events):
        events.add_row(fmt_time(e.time), Text(e.type, style="" if e.verified else "bold red"),
                       e.publisher, e.target or "")
    if not view.events:
        events.add_row("", Text("(none yet)", style="dim"), "", "")

    footer = Text(f"{fmt_time(view.at)}  Ctrl-C stops the federation", style="dim")
    if view.problems:
        footer.append("   reads failing: " + ", ".join(view.problems), style="yellow")
    return Group(members, workloads, events, footer)


def _placed(row: WorkloadRow) -> str:
    return ", ".join(f"{member}:{state}" for member, state in row.placed) or "nowhere"


def changes(old: View | None, new: View, fresh_events: Iterable[EventRow] = ()) -> list[str]:
    """Short lines saying what changed from `old` to `new` (everything, when no `old`)."""
    lines: list[str] = []
    before = {m.id: m for m in old.members} if old else {}
    for m in new.members:
        prev = before.get(m.id)
        if prev is None:
            lines.append(f"member {m.id}: {m.status}, local {m.local_state}")
            continue
        if prev.status != m.status:
            lines.append(f"member {m.id}: {prev.status} -> {m.status}")
        if prev.local_state != m.local_state:
            lines.append(f"member {m.id}: local processes {prev.local_state} -> "
                         f"{m.local_state}")
    known = {w.id: w for w in old.workloads} if old else {}
    for w in new.workloads:
        prev_w = known.get(w.id)
        if prev_w is None:
            lines.append(f"workload {w.id} ({w.criticality}): {w.state}, gen {w.generation}, "
                         f"on {_placed(w)}")
        elif (prev_w.state, prev_w.generation, prev_w.placed) != (w.state, w.generation,
                                                                   w.placed):
            lines.append(f"workload {w.id}: {w.state}, gen {w.generation}, on {_placed(w)}")
    for e in fresh_events:
        about = f" about {e.target}" if e.target else ""
        mark = "" if e.verified else " REFUSED"
        lines.append(f"event {e.type}{mark} by {e.publisher}{about}")
    stamp = fmt_time(new.at)
    return [f"{stamp} {line}" for line in lines]


@dataclass
class LineLog:
    """Line-per-change output state: the last view printed."""

    last: View | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)

    def step(self, view: View, fresh: Iterable[EventRow]) -> list[str]:
        lines = changes(self.last, view, fresh)
        if view.problems != self.problems and view.problems:
            lines.append(f"{fmt_time(view.at)} reads failing: {', '.join(view.problems)}")
        self.problems = view.problems
        self.last = view
        return lines
