"""`stekker drill takeover`, `stekker takeover declare|status` against an in-process
federation on a real nats-server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from typer.testing import CliRunner

from mesh.cli.main import app
from mesh.server import NatsCluster
from support import federation
from support_takeover import DRILLING, WORKLOAD, place, place_demo, sagas

runner = CliRunner()


def json_document(stdout: str) -> str:
    """The JSON the command printed. The federation runs in this process and CliRunner
    captures sys.stdout for all of it, so its log lines share the captured output."""
    lines = stdout.splitlines()
    first = lines.index("{")
    last = len(lines) - 1 - lines[::-1].index("}")
    return "\n".join(lines[first:last + 1])


async def stekker(nats: NatsCluster, data_dir: Path, *args: str):  # type: ignore[no-untyped-def]
    argv = ["--nats", nats.urls[0], "--data-dir", str(data_dir), *args]
    # The command runs its own event loop (asyncio.run): give it a thread of its own.
    return await asyncio.to_thread(runner.invoke, app, argv)


async def test_drill_writes_reports_and_exits_0(nats_server: NatsCluster, tmp_path: Path):
    data_dir = tmp_path / "fed"
    async with federation(nats_server.urls, data_dir, services=DRILLING) as fed:
        bus = await fed.bus("amstel")
        await place_demo(bus, ["rivm-meetdata"])  # lands on dommel

        result = await stekker(nats_server, data_dir, "drill", "takeover", "--member", "dommel")
        assert result.exit_code == 0, result.output + result.stderr
        reports = sorted((data_dir / "reports").iterdir())
        assert [p.suffix for p in reports] == [".html", ".json", ".md"]
        assert all(p.name.startswith("drill-dommel-") for p in reports)
        report = json.loads(reports[1].read_text())
        html = reports[0].read_text()
        assert html.startswith("<!doctype html>") and "PASSED" in html
        assert "<script" not in html and "http" not in html.split("<body>")[0]
        assert report["passed"] is True and report["coordinator"] == "amstel"
        assert [w["workload"] for w in report["workloads"]] == ["rivm-meetdata"]
        markdown = reports[2].read_text()
        assert markdown.startswith("# Takeover drill of `dommel`: PASSED")
        assert "| rivm-meetdata | dommel |" in markdown
        # Progress lines, then where the reports are.
        out = result.output
        assert "drill of dommel requested by amstel" in out
        assert "approved by zuidas" in out and "shadow_start ok rivm-meetdata" in out
        assert all(f"report: {path}" in out for path in reports)
        # The report is the one the saga record holds.
        saga = report["saga"]
        stored = await (await sagas(bus)).get(saga)
        assert stored is not None and stored.value.report == report

        # --json prints the report only.
        result = await stekker(nats_server, data_dir, "drill", "takeover", "--member",
                               "dommel", "--json")
        assert result.exit_code == 0, result.stderr
        printed = json.loads(json_document(result.stdout))
        assert printed["passed"] is True and printed["saga"] != saga
        assert len(list((data_dir / "reports").iterdir())) == 6

        # Acting as the target is refused with one line that says what to do.
        result = await stekker(nats_server, data_dir, "--as", "dommel", "drill", "takeover",
                               "--member", "dommel")
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1 and "--as" in result.stderr

        # Nobody would coordinate for zuidas once its node is gone: the command says so
        # at once (not after its 60 s timeout) and how to go on.
        await fed.stop_node("zuidas")
        started = time.monotonic()
        result = await stekker(nats_server, data_dir, "--as", "zuidas", "drill", "takeover",
                               "--member", "dommel")
        took = time.monotonic() - started
        assert result.exit_code == 1
        assert result.stderr.count("\n") == 1
        assert "zuidas's node is not running" in result.stderr and "--as" in result.stderr
        assert took < 30, took  # a bound far above the 2 s health wait: no 60 s timeout


async def test_declare_runs_a_takeover_and_status_shows_it(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    data_dir = tmp_path / "fed"
    async with federation(nats_server.urls, data_dir, services=DRILLING) as fed:
        await place(await fed.bus("amstel"))

        # Bad input: one line naming the option.
        result = await stekker(nats_server, data_dir, "takeover", "declare", "--member",
                               "dommel", "--reason", "boredom")
        assert result.exit_code == 1 and result.stderr.count("\n") == 1
        assert "--reason" in result.stderr
        result = await stekker(nats_server, data_dir, "takeover", "declare", "--member",
                               "nobody", "--reason", "calamity")
        assert result.exit_code == 1 and "--member: nobody" in result.stderr

        # dommel declares its own change of control.
        result = await stekker(nats_server, data_dir, "--as", "dommel", "takeover",
                               "declare", "--member", "dommel", "--reason", "acquisition",
                               "--timeout", "120")
        assert result.exit_code == 0, result.output + result.stderr
        out = result.output
        assert "declared its own change of control" in out
        assert "cutover ok" in out and "suspend ok" in out
        reports = sorted((data_dir / "reports").iterdir())
        assert [p.suffix for p in reports] == [".html", ".json", ".md"]
        assert all(p.name.startswith("takeover-dommel-") for p in reports)
        report = json.loads(reports[1].read_text())
        assert report["passed"] is True and report["drill"] is False
        (row,) = report["workloads"]
        assert row["workload"] == WORKLOAD and row["digest"] in reports[0].read_text()

        result = await stekker(nats_server, data_dir, "takeover", "status")
        assert result.exit_code == 0 and report["saga"] in result.output
        result = await stekker(nats_server, data_dir, "takeover", "status", report["saga"],
                               "--json")
        assert result.exit_code == 0, result.stderr
        assert '"state": "completed"' in result.stdout
        result = await stekker(nats_server, data_dir, "takeover", "status", "nope")
        assert result.exit_code == 1 and "SAGA: no takeover saga" in result.stderr
