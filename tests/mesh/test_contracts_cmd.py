"""`stekker contracts export` and `stekker contracts check`, on temporary copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from contracts.catalog import MESSAGE_TYPES
from contracts.schema_export import asyncapi_document, json_schemas
from mesh.cli import contracts_cmd
from mesh.cli.contracts_cmd import app

runner = CliRunner()


def export_to(tmp_path: Path) -> tuple[Path, Path]:
    schemas, asyncapi = tmp_path / "schemas", tmp_path / "docs" / "asyncapi.yaml"
    result = runner.invoke(app, ["export", "--schemas", str(schemas), "--asyncapi", str(asyncapi)])
    assert result.exit_code == 0, result.output
    return schemas, asyncapi


def check(schemas: Path, asyncapi: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["check", "--schemas", str(schemas), "--asyncapi", str(asyncapi)])
    return result.exit_code, result.output


def test_export_into_one_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    names = {p.name for p in out.glob("*.json")}
    assert names == {f"{name}.json" for name in json_schemas()}
    assert {f"{name}.json" for name in MESSAGE_TYPES} <= names
    for path in out.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert text.endswith("}\n")
        data = json.loads(text)
        assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        assert data == json_schemas()[path.stem]
    assert yaml.safe_load((out / "asyncapi.yaml").read_text()) == asyncapi_document()


def test_export_to_separate_places(tmp_path: Path) -> None:
    schemas, asyncapi = export_to(tmp_path)
    assert (schemas / "workload.placed.v1.json").is_file()
    assert asyncapi.is_file()
    assert not (schemas / "asyncapi.yaml").exists()


def test_export_only_what_the_options_name(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "--asyncapi", str(tmp_path / "a.yaml")])
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["a.yaml"]


def test_export_without_arguments_writes_the_committed_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contracts_cmd, "DEFAULT_SCHEMAS", tmp_path / "s")
    monkeypatch.setattr(contracts_cmd, "DEFAULT_ASYNCAPI", tmp_path / "d" / "asyncapi.yaml")
    result = runner.invoke(app, ["export"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "iam.roster.v1.json").is_file()
    assert (tmp_path / "d" / "asyncapi.yaml").is_file()


def test_export_removes_schemas_it_no_longer_generates(tmp_path: Path) -> None:
    schemas, _ = export_to(tmp_path)
    gone = schemas / "workload.vanished.v1.json"
    gone.write_text(json.dumps({"$id": "https://stekker.eu/schemas/workload.vanished.v1.json"}))
    unrelated = schemas / "notes.json"
    unrelated.write_text("{}")
    export_to(tmp_path)
    assert not gone.exists()
    assert unrelated.exists()


def test_export_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["export", "--schemas", str(blocker)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("contracts export failed:")


def test_check_passes_on_a_fresh_export(tmp_path: Path) -> None:
    code, output = check(*export_to(tmp_path))
    assert code == 0, output
    assert "current" in output


def test_check_fails_on_a_breaking_change(tmp_path: Path) -> None:
    schemas, asyncapi = export_to(tmp_path)
    # The committed copy had a field that today's code no longer has.
    path = schemas / "workload.placed.v1.json"
    data = json.loads(path.read_text())
    data["properties"]["priority"] = {"type": "integer"}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    code, output = check(schemas, asyncapi)
    assert code == 1
    assert "breaking: workload.placed.v1: property 'priority' was removed" in output
    assert "workload.placed.v1.json differs" in output


def test_check_fails_on_a_changed_nested_type(tmp_path: Path) -> None:
    schemas, asyncapi = export_to(tmp_path)
    path = schemas / "workload.submitted.v1.json"
    data = json.loads(path.read_text())
    data["$defs"]["Resources"]["properties"]["vcpu"] = {"type": "string"}
    path.write_text(json.dumps(data))
    code, output = check(schemas, asyncapi)
    assert code == 1
    assert "'spec.resources.vcpu' changed from string to number" in output


def test_check_fails_on_a_stale_asyncapi(tmp_path: Path) -> None:
    schemas, asyncapi = export_to(tmp_path)
    asyncapi.write_text(asyncapi.read_text().replace("Stekker federation bus", "Old bus"))
    code, output = check(schemas, asyncapi)
    assert code == 1
    assert "stale:" in output and "asyncapi.yaml differs" in output
    assert "make schemas" in output
    assert "breaking" not in output


def test_check_fails_on_missing_and_extra_files(tmp_path: Path) -> None:
    schemas, asyncapi = export_to(tmp_path)
    (schemas / "member.down.v1.json").unlink()
    code, output = check(schemas, asyncapi)
    assert code == 1
    assert "member.down.v1.json is missing" in output

    schemas, asyncapi = export_to(tmp_path)
    removed = json_schemas()["member.down.v1"] | {"title": "member.gone.v1"}
    (schemas / "member.gone.v1.json").write_text(json.dumps(removed))
    code, output = check(schemas, asyncapi)
    assert code == 1
    assert "member.gone.v1: the type was removed without a new major version" in output


def test_check_accepts_a_superseded_major_as_stale_only(tmp_path: Path) -> None:
    schemas, asyncapi = export_to(tmp_path)
    # A v0 of today's v1: superseded by a major bump, so not a breaking change.
    (schemas / "member.down.v0.json").write_text(json.dumps(json_schemas()["member.down.v1"]))
    code, output = check(schemas, asyncapi)
    assert code == 1
    assert "breaking" not in output
    assert "member.down.v0.json is no longer generated (member.down.v1 replaced it)" in output


def test_check_reports_missing_committed_copies(tmp_path: Path) -> None:
    code, output = check(tmp_path / "nothing", tmp_path / "nothing.yaml")
    assert code == 1
    assert "is missing" in output
