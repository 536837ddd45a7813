"""`stekker workload submit|list|explain` against a federation running in-test.

The CLI calls `asyncio.run`, so these tests are plain (sync) functions and the federation
runs on its own loop in a thread (`support_workloads.threaded_federation`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh.server import NatsCluster
from support import DEMO_WORKLOADS
from support_cli import invoke, logs_to_a_file
from support_workloads import threaded_federation

# Imported fixture, used by every test here.
pytestmark = pytest.mark.usefixtures(logs_to_a_file.__name__)


def cli(fed_dir: Path, url: str, *args: str):  # type: ignore[no-untyped-def]
    return invoke(url, fed_dir, "workload", *args)


def test_submit_list_explain(nats_server: NatsCluster, tmp_path: Path) -> None:
    fed_dir, url = tmp_path / "fed", nats_server.urls[0]
    with threaded_federation(nats_server.urls, fed_dir):
        brp = cli(fed_dir, url, "submit", str(DEMO_WORKLOADS / "rvig-brp-kern.yaml"))
        assert brp.exit_code == 0, brp.output
        assert "rvig-brp-kern" in brp.stdout and "amstel/" in brp.stdout

        nctv = cli(fed_dir, url, "submit", str(DEMO_WORKLOADS / "nctv-dreigingsbeeld.yaml"),
                   "--json")
        assert nctv.exit_code == 2, nctv.output
        refused = json.loads(nctv.stdout)
        assert refused["state"] == "unplaceable" and refused["members"] == []
        assert "classification_not_cleared" in refused["summary"]

        again = cli(fed_dir, url, "submit", str(DEMO_WORKLOADS / "rvig-brp-kern.yaml"))
        assert again.exit_code == 0 and "placed already" in again.stdout

        listed = cli(fed_dir, url, "list", "--json")
        assert listed.exit_code == 0, listed.output
        items = {i["id"]: i for i in json.loads(listed.stdout)}
        assert set(items) == {"rvig-brp-kern", "nctv-dreigingsbeeld"}
        kern = items["rvig-brp-kern"]
        assert kern["tenant"] == "rvig" and kern["criticality"] == "critical"
        assert kern["members"] == ["amstel"] and kern["generation"] == 1
        assert kern["state"] in ("placed", "running")
        assert [r["member"] for r in kern["replicas"]] == ["amstel"]
        assert items["nctv-dreigingsbeeld"]["state"] == "unplaceable"

        table = cli(fed_dir, url, "list")
        assert table.exit_code == 0 and "nctv-dreigingsbeeld" in table.stdout

        explained = cli(fed_dir, url, "explain", "rvig-brp-kern", "--json")
        assert explained.exit_code == 0, explained.output
        doc = json.loads(explained.stdout)
        assert doc["workload"] == "rvig-brp-kern" and doc["feasible"] is True
        rows = {r["member"]: r for r in doc["rows"]}
        assert set(rows) == {"amstel", "dommel", "zuidas"}
        assert rows["amstel"]["chosen"] and rows["amstel"]["passed"]
        assert rows["dommel"]["reason"] == "seal_too_low" and not rows["dommel"]["passed"]
        assert rows["amstel"]["sites"], "per-site verdicts of the chosen member"

        human = cli(fed_dir, url, "explain", "nctv-dreigingsbeeld")
        assert human.exit_code == 0 and "classification_not_cleared" in human.stdout

        unknown = cli(fed_dir, url, "explain", "no-such-workload")
        assert unknown.exit_code == 1
        assert unknown.stderr.strip().count("\n") == 0
        assert "no-such-workload" in unknown.stderr


def test_submit_of_a_malformed_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: kapot\ntenant: t\nresources:\n  vcpu: 2\nrequirements:\n  min_seal: 9\n"
    )
    result = invoke("nats://127.0.0.1:1", tmp_path, "workload", "submit", str(bad))
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line
    assert f"{bad}:6" in line and "requirements.min_seal" in line


def test_check_says_where_without_submitting(nats_server: NatsCluster, tmp_path: Path) -> None:
    fed_dir, url = tmp_path / "fed", nats_server.urls[0]
    with threaded_federation(nats_server.urls, fed_dir):
        fits = cli(fed_dir, url, "check", str(DEMO_WORKLOADS / "rvig-brp-kern.yaml"), "--json")
        assert fits.exit_code == 0, fits.output
        doc = json.loads(fits.stdout)
        assert doc["feasible"] is True and doc["submitted"] is False
        assert [c["member"] for c in doc["chosen"]] == ["amstel"]
        rows = {r["member"]: r for r in doc["rows"]}
        assert rows["dommel"]["reason"] == "seal_too_low"

        refused = cli(fed_dir, url, "check", str(DEMO_WORKLOADS / "nctv-dreigingsbeeld.yaml"))
        assert refused.exit_code == 2, refused.output
        assert "classification_not_cleared" in refused.stdout

        # Nothing was submitted: no placement exists.
        listed = cli(fed_dir, url, "list", "--json")
        assert listed.exit_code == 0 and json.loads(listed.stdout) == []


def test_check_of_a_malformed_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: kapot\ntenant: t\nresources:\n  vcpu: 2\nreplicas: 0\n")
    result = invoke("nats://127.0.0.1:1", tmp_path, "workload", "check", str(bad))
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and f"{bad}:5" in line and "replicas" in line


def test_an_unconfirmed_submission_is_reported_as_unknown_and_retried_safely(
    nats_server: NatsCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failpoint: the submission is stored, but its acknowledgement is lost (as in a
    partition). The user is told the truth — unknown, how to check, that retrying is
    safe — and a retry is stored once."""
    from contracts.workload import WorkloadSubmitted
    from mesh.bus import Bus

    stored: list[int] = []
    publish = Bus.publish

    async def ack_lost(self: Bus, event: object, **kwargs: object) -> int:
        seq = await publish(self, event, **kwargs)  # type: ignore[arg-type]
        if isinstance(event, WorkloadSubmitted) and not stored:
            stored.append(seq)
            raise TimeoutError("nats: timeout")
        return seq

    fed_dir, url = tmp_path / "fed", nats_server.urls[0]
    with threaded_federation(nats_server.urls, fed_dir):
        monkeypatch.setattr(Bus, "publish", ack_lost)
        spec = str(DEMO_WORKLOADS / "rvig-brp-kern.yaml")
        first = cli(fed_dir, url, "submit", spec, "--json")
        assert first.exit_code == 3, first.output
        answer = json.loads(first.stdout)
        assert answer["state"] == "unknown" and answer["submitted"] is None
        assert "workload list" in answer["check"] and "safe" in answer["retry"]
        assert stored  # the failpoint did fire after the message was stored

        human = cli(fed_dir, url, "submit", spec)  # the retry the answer suggests
        assert human.exit_code == 0, human.output

        listed = {i["id"]: i for i in json.loads(cli(fed_dir, url, "list", "--json").stdout)}
        assert listed["rvig-brp-kern"]["generation"] == 1  # placed once, not twice


def test_submission_ids_are_stable_per_spec_and_placement_state() -> None:
    from mesh.cli.workload_cmd import submission_msg_id
    from mesh.specfile import load_workload

    spec = load_workload(DEMO_WORKLOADS / "rvig-brp-kern.yaml")
    other = load_workload(DEMO_WORKLOADS / "rivm-meetdata.yaml")
    assert submission_msg_id(spec, 0) == submission_msg_id(spec, 0)
    assert submission_msg_id(spec, 0) != submission_msg_id(spec, 7)  # after a release
    assert submission_msg_id(spec, 0) != submission_msg_id(other, 0)
