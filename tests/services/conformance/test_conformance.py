"""The conformance suite against in-process members on a real nats-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.state import PlacementRecord
from mesh import layout
from mesh.errors import ConfigError
from mesh.server import NatsCluster
from mesh.state import bucket
from services.conformance.runner import CHECKS, run_suite
from support import federation

NODE = ["iam", "registry", "agent"]


async def test_a_healthy_member_passes(nats_server: NatsCluster, tmp_path: Path) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=NODE) as fed:
        bus = await fed.bus("dommel")
        results = await run_suite(bus, "amstel", timeout_s=5.0)
        assert [r.check for r in results] == list(CHECKS)
        failed = [(r.check, r.detail) for r in results if not r.passed]
        assert failed == []
        by_name = {r.check: r for r in results}
        assert "bound on" in by_name["binds_placement"].detail
        assert "including amstel" in by_name["ignores_forged"].detail
        assert all(r.duration_s >= 0 for r in results)
        # Events only: the test placements never become placements of the federation.
        placements = await bucket(bus, layout.KV_PLACEMENTS, PlacementRecord)
        assert not [k for k in await placements.keys() if k.startswith("conformance-")]


async def test_a_member_without_agent_fails(nats_server: NatsCluster, tmp_path: Path) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=NODE,
                          members=["dommel", "zuidas"]) as fed:
        await fed.start_node("amstel", ["iam", "registry"])
        bus = await fed.bus("zuidas")
        results = {r.check: r for r in await run_suite(bus, "amstel", timeout_s=1.5)}
        assert results["announcement"].passed, results["announcement"].detail
        assert not results["heartbeat"].passed
        assert "no heartbeat from amstel" in results["heartbeat"].detail
        assert not results["binds_placement"].passed
        assert "did not bind" in results["binds_placement"].detail
        # Nothing binds the forgery, but nothing of amstel refuses and reports it either:
        # the other members' agents skip placements that do not name them, unverified.
        forged = results["ignores_forged"]
        assert not forged.passed
        assert "no security.violation.v1 about forged msg" in forged.detail


async def test_refuses_to_test_itself(nats_server: NatsCluster, tmp_path: Path) -> None:
    async with federation(nats_server.urls, tmp_path / "fed", services=["iam"],
                          members=["amstel"]) as fed:
        bus = await fed.bus("amstel")
        with pytest.raises(ConfigError, match="own key"):
            await run_suite(bus, "amstel")
        with pytest.raises(ConfigError, match="not a member"):
            await run_suite(bus, "nobody")
        with pytest.raises(ConfigError, match="unknown check"):
            await run_suite(bus, "dommel", only=["bogus"])
