"""`stekker node`'s failover knobs: the command line, else `[node.failover]` of the
member's config file, else the defaults; a bad knob in the file is one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mesh.cli import node_cmd
from mesh.cli.main import app
from mesh.runtime import NodeSettings
from mesh.specfile import FailoverKnobs
from support import DEMO_MEMBERS, ROOT

KNOBS = """
[node.failover]
suspicion = 2
recovery_beats = 5
flap_guard = 0
"""


def config(tmp_path: Path, extra: str = KNOBS) -> Path:
    path = tmp_path / "amstel.toml"
    path.write_text((DEMO_MEMBERS / "amstel.toml").read_text() + extra)
    return path


def test_a_flag_given_wins_over_the_file_and_the_file_over_the_default() -> None:
    knobs = FailoverKnobs(heartbeat=0.5, suspicion=2.0)
    assert node_cmd.failover_settings(knobs, {"heartbeat": None, "suspicion": 4.0,
                                              "replace_rate": 50.0}) == {
        "heartbeat_interval_s": 0.5, "suspicion_timeout_s": 4.0, "replace_rate_per_s": 50.0}
    assert node_cmd.failover_settings(FailoverKnobs(), {"flap_guard": None}) == {}
    # Every knob has its NodeSettings field.
    fields = set(NodeSettings.__dataclass_fields__)
    assert set(node_cmd.KNOBS) == set(FailoverKnobs.__struct_fields__)
    assert set(node_cmd.KNOBS.values()) <= fields


def test_node_runs_with_the_knobs_of_its_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[NodeSettings] = []

    async def record(member: str, config: Path | None, services: list[str] | None,
                     settings: NodeSettings) -> None:
        seen.append(settings)  # what the node would run with; no node is started

    monkeypatch.setattr(node_cmd, "_run", record)
    path = config(tmp_path)
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "node", "--member",
                                      "amstel", "--config", str(path), "--heartbeat", "0.7",
                                      "--flap-guard", "30"])
    assert result.exit_code == 0, result.output
    (settings,) = seen
    assert settings.heartbeat_interval_s == 0.7  # flag (the file says nothing)
    assert settings.flap_guard_s == 30.0  # flag over the file's 0
    assert settings.suspicion_timeout_s == 2.0 and settings.recovery_beats == 5  # file
    assert settings.recovery_steady_s == 2.0 and settings.replace_rate_per_s == 500.0
    # `stekker service` has no flags for them: the file's knobs hold.
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "service", "failover",
                                      "--member", "amstel", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert seen[1].suspicion_timeout_s == 2.0 and seen[1].flap_guard_s == 0.0


def test_a_bad_knob_stops_the_node_with_file_line_and_field(tmp_path: Path) -> None:
    path = config(tmp_path, "\n[node.failover]\nsuspicion = \"soon\"\n")
    line = path.read_text().splitlines().index('suspicion = "soon"') + 1
    result = subprocess.run(
        [sys.executable, "-m", "mesh.cli.main", "--data-dir", str(tmp_path / "fed"),
         "--nats", "nats://127.0.0.1:1", "node", "--member", "amstel", "--config", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"stekker: {path}:{line}: field node.failover.suspicion: Expected `float`, got `str`")


def test_help_says_where_the_knobs_come_from() -> None:
    text = CliRunner().invoke(app, ["node", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--heartbeat", "--suspicion", "--recovery-beats", "--recovery-steady",
                 "--flap-guard", "--replace-rate"):
        assert flag in text
    assert "[node.failover]" in text and "else 60" in text
