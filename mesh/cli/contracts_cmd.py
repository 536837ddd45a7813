"""`stekker contracts`: export the JSON Schemas and AsyncAPI document, check committed copies.

`make schemas` runs ``stekker contracts export --schemas contracts/schemas --asyncapi
docs/asyncapi.yaml``; `stekker contracts check` fails when the committed copies are stale
or when today's code breaks a committed schema without a major version bump (DESIGN §4).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

import contracts
from contracts.compatibility import breaking_changes
from contracts.schema_export import SCHEMA_BASE_URL, asyncapi_document, json_schemas

app = typer.Typer(
    help="Message contracts: export JSON Schemas and the AsyncAPI document, check them.",
    no_args_is_help=True,
)

# The committed copies, found from the source tree so the commands work from any folder.
PACKAGE_DIR = Path(contracts.__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
DEFAULT_SCHEMAS = PACKAGE_DIR / "schemas"
DEFAULT_ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
ASYNCAPI_FILE = "asyncapi.yaml"
REGENERATE = "run `make schemas` (stekker contracts export) and commit the result"

ASYNCAPI_HEADER = (
    "# Generated from contracts/ by `make schemas` (stekker contracts export); do not edit.\n"
)

_VERSIONED = re.compile(r"^(?P<base>.+)\.v(?P<major>[0-9]+)$")


def render_json(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered_schemas() -> dict[str, str]:
    """File name → text of every JSON Schema, exactly as `export` writes it."""
    return {f"{name}.json": render_json(schema) for name, schema in json_schemas().items()}


def rendered_asyncapi() -> str:
    """The text of `asyncapi.yaml`, exactly as `export` writes it."""
    body = yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)
    return ASYNCAPI_HEADER + body


def _is_generated_schema(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and str(data.get("$id", "")).startswith(SCHEMA_BASE_URL)


def _superseded(name: str, names: set[str]) -> str | None:
    """A newer major version of `name` among `names`, if there is one."""
    match = _VERSIONED.match(name)
    if not match:
        return None
    base, major = match["base"], int(match["major"])
    newer = [
        n
        for n in names
        if (m := _VERSIONED.match(n)) and m["base"] == base and int(m["major"]) > major
    ]
    return sorted(newer)[-1] if newer else None


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass
class CheckReport:
    breaking: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaking and not self.stale


def check_committed(schemas_dir: Path, asyncapi_file: Path) -> CheckReport:
    """Compare today's code with committed schemas and AsyncAPI document."""
    report = CheckReport()
    generated = json_schemas()
    expected = {f"{name}.json": render_json(schema) for name, schema in generated.items()}
    committed: dict[str, Path] = {}
    if schemas_dir.is_dir():
        committed = {p.name: p for p in sorted(schemas_dir.glob("*.json"))}
    else:
        report.stale.append(f"{_shown(schemas_dir)} is missing")

    for file_name in sorted(expected):
        path = committed.get(file_name)
        if path is None:
            if schemas_dir.is_dir():
                report.stale.append(f"{_shown(schemas_dir / file_name)} is missing")
        elif path.read_text(encoding="utf-8") != expected[file_name]:
            report.stale.append(f"{_shown(path)} differs from what the code generates")

    for file_name, path in committed.items():
        name = file_name.removesuffix(".json")
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            report.stale.append(f"{_shown(path)} is not valid JSON: {exc}")
            continue
        if not isinstance(old, dict):
            report.stale.append(f"{_shown(path)} is not a JSON Schema object")
            continue
        if name in generated:
            report.breaking.extend(breaking_changes(old, generated[name]))
            continue
        successor = _superseded(name, set(generated))
        if successor:
            report.stale.append(f"{_shown(path)} is no longer generated ({successor} replaced it)")
        else:
            report.breaking.append(f"{name}: the type was removed without a new major version")
            report.stale.append(f"{_shown(path)} is no longer generated")

    if not asyncapi_file.is_file():
        report.stale.append(f"{_shown(asyncapi_file)} is missing")
    elif asyncapi_file.read_text(encoding="utf-8") != rendered_asyncapi():
        report.stale.append(f"{_shown(asyncapi_file)} differs from what the code generates")
    return report


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _export_schemas(directory: Path) -> None:
    files = rendered_schemas()
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, text in files.items():
        _write(directory / file_name, text)
    # Schemas of types that no longer exist would make `check` fail for ever: remove them,
    # but only files this exporter wrote (their $id says so).
    for path in sorted(directory.glob("*.json")):
        if path.name not in files and _is_generated_schema(path):
            path.unlink()
            typer.echo(f"removed {_shown(path)} (no longer generated)")
    typer.echo(f"wrote {len(files)} schemas to {_shown(directory)}")


@app.command()
def export(
    directory: Annotated[
        Path | None,
        typer.Argument(
            help="Write <type>.json per schema and asyncapi.yaml into this folder.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    schemas: Annotated[
        Path | None,
        typer.Option("--schemas", help="Folder for the JSON Schemas.", show_default=False),
    ] = None,
    asyncapi: Annotated[
        Path | None,
        typer.Option("--asyncapi", help="File for the AsyncAPI document.", show_default=False),
    ] = None,
) -> None:
    """Write the JSON Schemas and the AsyncAPI document.

    With DIR both go there (an option overrides either place).

    Without DIR only what the options name is written.

    With neither, the committed copies (contracts/schemas/, docs/asyncapi.yaml) are rewritten.
    """
    if directory is not None:
        schemas = schemas or directory
        asyncapi = asyncapi or directory / ASYNCAPI_FILE
    elif schemas is None and asyncapi is None:
        schemas, asyncapi = DEFAULT_SCHEMAS, DEFAULT_ASYNCAPI
    if asyncapi is not None and asyncapi.is_dir():
        asyncapi = asyncapi / ASYNCAPI_FILE
    try:
        if schemas is not None:
            _export_schemas(schemas)
        if asyncapi is not None:
            _write(asyncapi, rendered_asyncapi())
            typer.echo(f"wrote {_shown(asyncapi)}")
    except OSError as exc:
        raise _fail(f"contracts export failed: {exc}") from exc
    except (TypeError, ValueError) as exc:  # a contract msgspec cannot describe
        raise _fail(f"contracts export failed: cannot generate the schemas: {exc}") from exc


@app.command()
def check(
    schemas: Annotated[
        Path, typer.Option("--schemas", help="Folder of the committed JSON Schemas.")
    ] = DEFAULT_SCHEMAS,
    asyncapi: Annotated[
        Path, typer.Option("--asyncapi", help="The committed AsyncAPI document.")
    ] = DEFAULT_ASYNCAPI,
) -> None:
    """Fail when the committed copies are stale or today's code breaks one of them."""
    try:
        report = check_committed(schemas, asyncapi)
    except OSError as exc:
        raise _fail(f"contracts check failed: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise _fail(f"contracts check failed: cannot generate the schemas: {exc}") from exc
    for line in report.breaking:
        typer.echo(f"breaking: {line}")
    for line in report.stale:
        typer.echo(f"stale: {line}")
    if report.breaking:
        raise _fail(
            f"contracts check failed: {len(report.breaking)} breaking change(s); keep the "
            "committed major version compatible or publish a new major version "
            "(.v2, fed.v2.…) side by side (DESIGN §4)"
        )
    if report.stale:
        raise _fail(f"contracts check failed: {len(report.stale)} stale file(s); {REGENERATE}")
    typer.echo(f"contracts: {len(json_schemas())} schemas and the AsyncAPI document are current")
