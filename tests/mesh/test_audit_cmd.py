"""`stekker audit verify` against a federation running in-test: a clean run holds; a forged
message and a placement that breaks a rule are each found and fail the exit code."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import msgspec
import pytest

from contracts.registry import MemberAnnounced
from contracts.workload import Assignment, WorkloadPlaced
from mesh.forge import publish_forged
from mesh.server import NatsCluster
from services.scheduler.pipeline import decide
from services.scheduler.snapshot import snapshot_of
from services.scheduler.verdicts import record_verdicts
from support import DEMO_WORKLOADS, demo_profiles
from support_cli import invoke, logs_to_a_file
from support_workloads import demo_spec, threaded_federation

# Imported fixture, used by every test here.
pytestmark = pytest.mark.usefixtures(logs_to_a_file.__name__)


def cli(fed_dir: Path, url: str, *args: str):  # type: ignore[no-untyped-def]
    return invoke(url, fed_dir, *args)


def audit(fed_dir: Path, url: str, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = cli(fed_dir, url, "audit", "verify", "--json", *args)
    assert result.exit_code in (0, 2), result.output
    return result.exit_code, json.loads(result.stdout)


def lying_placement() -> WorkloadPlaced:
    """dommel chosen for a workload that needs more than dommel's SEAL, its failed
    verdicts rewritten as passed: a record that says the rules held when they did not."""
    spec = msgspec.structs.replace(demo_spec("rvig-brp-kern"), id="vervalst")
    profiles = {p.id: p for p in demo_profiles()}
    now = dt.datetime.now(dt.UTC)
    honest = decide(spec, snapshot_of(profiles, today=now.date()), decided_by="amstel", now=now)
    verdicts = [msgspec.structs.replace(v, passed=True) if v.member == "dommel" else v
                for v in record_verdicts(honest)]
    chosen = [Assignment(member="dommel", site=profiles["dommel"].sites[0].id)]
    # The record lists its verdicts flat (as records before verdict classes did), so the
    # lie sits in the verdicts themselves.
    decision = msgspec.structs.replace(honest, verdicts=verdicts, classes=[], chosen=chosen)
    return WorkloadPlaced(spec=spec, assignments=chosen, generation=1, decision=decision)


def test_audit_verify(nats_server: NatsCluster, tmp_path: Path) -> None:
    fed_dir, url = tmp_path / "fed", nats_server.urls[0]
    with threaded_federation(nats_server.urls, fed_dir) as fed:
        for name in ("rvig-brp-kern", "kadaster-kaartviewer", "nctv-dreigingsbeeld"):
            submitted = cli(fed_dir, url, "workload", "submit",
                            str(DEMO_WORKLOADS / f"{name}.yaml"))
            assert submitted.exit_code in (0, 2), submitted.output

        code, clean = audit(fed_dir, url)
        assert code == 0, clean
        assert clean["ok"] and clean["roster_versions"] == 1
        assert clean["signatures"]["failed"] == 0 and clean["signatures"]["ok"] > 0
        assert clean["decisions"]["checked"] >= 3 and clean["mismatches"] == []
        human = cli(fed_dir, url, "audit", "verify")
        assert human.exit_code == 0 and "everything held" in human.stdout
        assert fed.fed is not None

        bus = fed.call(fed.fed.bus("amstel"))
        fed.call(publish_forged(bus, MemberAnnounced(profile=demo_profiles()[1]), "dommel"))
        code, forged = audit(fed_dir, url)
        assert code == 2
        assert forged["signatures"]["failed"] == 1
        assert forged["signatures"]["by_reason"] == {"unknown_key": 1}
        assert forged["signatures"]["failures"][0]["claimed_member"] == "dommel"

        fed.call(bus.publish(lying_placement()))
        code, lied = audit(fed_dir, url)
        assert code == 2
        problems = [m for m in lied["mismatches"] if m["workload"] == "vervalst"]
        assert problems and all(m["generation"] == 1 for m in problems)
        assert any("dommel" in m["problem"] and "seal_too_low" in m["problem"]
                   for m in problems), problems
        assert not [m for m in lied["mismatches"] if m["workload"] != "vervalst"]

        # --since past everything: the history is replayed but nothing more is counted.
        last = max(f["seq"] for f in forged["signatures"]["failures"])
        code, later = audit(fed_dir, url, "--since", str(last + 1))
        assert later["signatures"]["failed"] == 0 and later["messages"] < lied["messages"]
