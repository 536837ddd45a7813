"""`stekker conformance` against in-process members: results, JUnit, exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mesh.server import NatsCluster
from support import federation
from support_cli import stekker
from support_soc import logs_to_stderr

# Imported fixture, used by every test here.
pytestmark = pytest.mark.usefixtures(logs_to_stderr.__name__)


async def test_conformance_command(nats_server: NatsCluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "fed"
    async with federation(nats_server.urls, data_dir, services=["iam", "registry", "agent"],
                          members=["dommel", "zuidas"]) as fed:
        # amstel's node runs without its agent: no heartbeats, nothing binds.
        await fed.start_node("amstel", ["iam", "registry"])
        junit = tmp_path / "out" / "conformance.xml"
        code, out, err = await stekker(nats_server.urls, data_dir, "conformance",
                                       "--member", "amstel", "--json", "--timeout", "1.5",
                                       "--junit", str(junit))
        assert code == 1, err
        results = json.loads(out)
        assert [r["check"] for r in results] == ["announcement", "heartbeat",
                                                 "binds_placement", "ignores_forged"]
        assert all(set(r) == {"check", "passed", "detail", "duration_s"} for r in results)
        assert [r["passed"] for r in results] == [True, False, False, False]
        # Without an agent nothing of amstel refuses the forgery and reports it.
        assert "no security.violation.v1" in results[3]["detail"]

        suite = ET.parse(junit).getroot().find("testsuite")
        assert suite is not None and suite.get("name") == "stekker-conformance"
        cases = suite.findall("testcase")
        assert [c.get("name") for c in cases] == [r["check"] for r in results]
        failures = [c.find("failure") for c in cases]
        assert [f is None for f in failures] == [r["passed"] for r in results]
        assert failures[1] is not None
        assert failures[1].get("message") == results[1]["detail"]

        code, out, err = await stekker(nats_server.urls, data_dir, "conformance",
                                       "--member", "dommel", "--timeout", "1.5",
                                       "--check", "announcement", "--check", "ignores_forged")
        assert code == 0, err + out
        assert "PASS" in out and "FAIL" not in out
        assert "2/2 checks passed" in out

        code, out, err = await stekker(nats_server.urls, data_dir, "--as", "amstel",
                                       "conformance", "--member", "amstel")
        assert code == 1
        assert err.strip() == ("stekker: refusing to test amstel with its own key; "
                               "pass --as another member")
        code, out, err = await stekker(nats_server.urls, data_dir, "conformance",
                                       "--member", "nobody")
        assert code == 1 and "not a member" in err

        # A member whose node is not running is not waited for: one line says so.
        await fed.stop_node("zuidas")
        code, out, err = await stekker(nats_server.urls, data_dir, "--as", "dommel",
                                       "conformance", "--member", "zuidas")
        assert code == 1 and out == ""
        assert err.strip().startswith("stekker: zuidas's node is not running")
