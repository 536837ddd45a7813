"""`stekker members` against an in-process federation (agents report capacity, beat)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

from typer.testing import CliRunner

from contracts.state import CapacityRecord, DownDecision, MemberRecord, SagaRecord
from mesh import layout
from mesh.cli.main import app
from mesh.cli.members_cmd import free_of
from mesh.server import NatsCluster
from mesh.state import bucket
from services.scheduler.sovereignty import overall_seal
from support import MEMBERS, federation, wait_until

runner = CliRunner()
NOW = dt.datetime.now(dt.UTC)


async def stekker(urls: list[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    root = ["--nats", ",".join(urls), "--data-dir", str(data_dir)]
    result = await asyncio.to_thread(runner.invoke, app, [*root, *args])
    return result.exit_code, result.stdout, result.stderr


async def test_members_lists_every_member(nats_server: NatsCluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    async with federation(nats_server.urls, data_dir,
                          services=["iam", "registry", "agent"]) as fed:
        bus = await fed.bus()
        capacity = await bucket(bus, layout.KV_CAPACITY, CapacityRecord)
        await wait_until(lambda: _all_keys(capacity), what="every member's capacity report")
        members = await bucket(bus, layout.KV_MEMBERS, MemberRecord)
        await wait_until(lambda: _all_keys(members), what="every member's announcement")

        code, out, err = await stekker(nats_server.urls, data_dir, "members", "--json")
        assert code == 0, err
        rows = json.loads(out)
        assert [r["id"] for r in rows] == list(MEMBERS)
        for row in rows:
            profile = fed.profiles[row["id"]]
            assert row["name"] == profile.name
            assert row["seal"] == overall_seal(profile)
            assert row["sites"] == [
                {"id": s.id, "city": s.city, "country": s.country,
                 "grid_region": s.grid_region} for s in profile.sites]
            assert row["status"] == "active"
            assert 0 <= row["heartbeat_age_s"] < 3
            entry = await capacity.get(row["id"])
            assert entry is not None
            free = free_of(entry.value)
            assert free is not None
            assert row["free"] == {"vcpu": free.vcpu, "memory_gib": free.memory_gib,
                                   "storage_gib": free.storage_gib}
            assert row["free"]["vcpu"] == sum(s.capacity.vcpu for s in profile.sites)
            assert [c["name"] for c in row["certifications"]] == [
                c.name for c in profile.certifications]
            for shown, cert in zip(row["certifications"], profile.certifications,
                                   strict=True):
                assert shown["expired"] == (cert.expires is not None
                                            and cert.expires < NOW.date())
        zuidas = next(r for r in rows if r["id"] == "zuidas")
        assert zuidas["seal"] == 2
        assert {"name": "ISO27017", "expires": "2026-03-31",
                "expired": NOW.date() > dt.date(2026, 3, 31)} in zuidas["certifications"]

        # A quorum's down declaration and a running takeover show in the status.
        decisions = await bucket(bus, layout.KV_DECISIONS, DownDecision)
        await decisions.create("down.zuidas", DownDecision(
            member="zuidas", state="down", epoch=1, declared_by="amstel", declared_at=NOW))
        sagas = await bucket(bus, layout.KV_SAGAS, SagaRecord)
        await sagas.create("takeover-dommel", SagaRecord(
            saga="takeover-dommel", member="dommel", coordinator="amstel",
            reason="acquisition", drill=False, state="running"))
        await sagas.create("drill-amstel", SagaRecord(
            saga="drill-amstel", member="amstel", coordinator="dommel",
            reason="drill", drill=True, state="running"))
        code, out, err = await stekker(nats_server.urls, data_dir, "members", "--json")
        assert code == 0, err
        status = {r["id"]: r["status"] for r in json.loads(out)}
        assert status == {"amstel": "active", "dommel": "frozen", "zuidas": "down"}

        code, out, err = await stekker(nats_server.urls, data_dir, "members")
        assert code == 0, err
        for profile in fed.profiles.values():
            assert profile.id in out
        assert "SEAL-2" in out and "down" in out and "frozen" in out


async def _all_keys(kv: object) -> bool:
    return set(await kv.keys()) >= set(MEMBERS)  # type: ignore[attr-defined]


def test_members_without_a_federation_fails_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--data-dir", str(tmp_path / "none"), "members", "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("stekker: no running federation")
    assert len(result.stderr.strip().splitlines()) == 1
