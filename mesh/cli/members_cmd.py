"""`stekker members`: every roster member with its sovereignty level, sites, heartbeat,
status, free capacity and certifications, as the federation's state shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer

from contracts.iam import RosterMember
from contracts.registry import Heartbeat, MemberProfile
from contracts.resources import ZERO, Resources
from contracts.state import CapacityRecord, DownDecision, MemberRecord, SagaRecord
from mesh import layout
from mesh.bus import Bus
from mesh.cli import common
from mesh.errors import TerminalError
from mesh.runtime import NodeSettings
from mesh.state import Bucket, bucket
from services.registry.status import member_status
from services.scheduler.sovereignty import overall_seal

# What `stekker members` calls "suspected": the default suspicion timeout of a node.
SUSPICION_TIMEOUT_S = NodeSettings().suspicion_timeout_s


def free_of(capacity: CapacityRecord | None) -> Resources | None:
    """Total minus used over the member's reported sites; None when it never reported."""
    if capacity is None:
        return None
    free = ZERO
    for site in capacity.sites:
        free = free + site.total.minus(site.used)
    return free


def member_row(
    member: RosterMember,
    *,
    profile: MemberProfile | None,
    heartbeat_age_s: float | None,
    down: DownDecision | None,
    frozen: bool,
    capacity: CapacityRecord | None,
    today: dt.date,
    suspicion_timeout_s: float = SUSPICION_TIMEOUT_S,
) -> dict[str, Any]:
    """One member as `members --json` shows it. Pure."""
    free = free_of(capacity)
    return {
        "id": member.id,
        "name": profile.name if profile else member.name,
        "roster_state": member.state,
        "seal": overall_seal(profile) if profile else None,
        "sites": [
            {"id": s.id, "city": s.city, "country": s.country, "grid_region": s.grid_region}
            for s in (profile.sites if profile else [])
        ],
        "heartbeat_age_s": None if heartbeat_age_s is None else round(heartbeat_age_s, 2),
        "status": member_status(
            heartbeat_age_s=heartbeat_age_s,
            suspicion_timeout_s=suspicion_timeout_s,
            declared_down=down is not None and down.state == "down",
            frozen=frozen,
        ),
        "down_epoch": down.epoch if down is not None and down.state == "down" else None,
        "free": None if free is None else {
            "vcpu": free.vcpu, "memory_gib": free.memory_gib, "storage_gib": free.storage_gib,
        },
        "certifications": [
            {"name": c.name, "expires": c.expires.isoformat() if c.expires else None,
             "expired": c.expires is not None and c.expires < today}
            for c in (profile.certifications if profile else [])
        ],
    }


def table_row(row: dict[str, Any]) -> list[str]:
    age = row["heartbeat_age_s"]
    free = row["free"]
    return [
        row["id"],
        row["name"],
        "-" if row["seal"] is None else f"SEAL-{row['seal']}",
        row["status"] if row["roster_state"] == "active" else f"{row['status']} (suspended)",
        "-" if age is None else f"{age:.1f} s ago",
        ", ".join(f"{s['id']} ({s['city'] or '?'}, {s['country']})" for s in row["sites"]),
        "-" if free is None else (f"{free['vcpu']:g} vCPU, {free['memory_gib']:g} GiB, "
                                  f"{free['storage_gib']:g} GiB disk"),
        ", ".join(c["name"] + (" (expired)" if c["expired"] else "")
                  for c in row["certifications"]),
    ]


async def _get(kv: Bucket[Any], key: str) -> Any:
    """A record, or None when absent or unreadable (one bad record must not hide all)."""
    try:
        entry = await kv.get(key)
    except TerminalError:
        return None
    return entry.value if entry else None


async def _frozen_members(bus: Bus) -> set[str]:
    sagas: Bucket[SagaRecord] = await bucket(bus, layout.KV_SAGAS, SagaRecord)
    frozen: set[str] = set()
    for key in await sagas.keys(layout.SAGA_KEYS):
        saga = await _get(sagas, key)
        # A drill never touches its source; only a real takeover freezes the member.
        if saga is not None and saga.state == "running" and not saga.drill:
            frozen.add(saga.member)
    return frozen


async def collect(bus: Bus) -> list[dict[str, Any]]:
    assert bus.trust.roster is not None
    members = await bucket(bus, layout.KV_MEMBERS, MemberRecord)
    capacity = await bucket(bus, layout.KV_CAPACITY, CapacityRecord)
    decisions = await bucket(bus, layout.KV_DECISIONS, DownDecision)
    frozen = await _frozen_members(bus)
    now = dt.datetime.now(dt.UTC)
    rows = []
    for member in sorted(bus.trust.roster.body.members, key=lambda m: m.id):
        record: MemberRecord | None = await _get(members, member.id)
        last = await bus.last_event(Heartbeat.subject(member.id), stream=layout.HEALTH)
        age = max(0.0, (now - last[1].time).total_seconds()) if last else None
        rows.append(member_row(
            member,
            profile=record.profile if record else None,
            heartbeat_age_s=age,
            down=await _get(decisions, f"down.{member.id}"),
            frozen=member.id in frozen,
            capacity=await _get(capacity, member.id),
            today=now.date(),
        ))
    return rows


def register(app: typer.Typer) -> None:
    @app.command("members")
    def members(
        as_json: bool = typer.Option(False, "--json", help="One JSON array of members."),
    ) -> None:
        """List the members: SEAL level, sites, heartbeat, status, free capacity.

        Also each member's certifications, with expired ones marked.
        """

        async def _main() -> list[dict[str, Any]]:
            bus = await common.open_bus(sign=False, service="cli-members")
            try:
                return await collect(bus)
            finally:
                await bus.close()

        rows = common.run(_main)
        if as_json:
            common.print_json(rows)
            return
        common.print_table(
            "Members",
            ["ID", "NAME", "SEAL", "STATUS", "HEARTBEAT", "SITES", "FREE", "CERTIFICATIONS"],
            [table_row(r) for r in rows],
        )
