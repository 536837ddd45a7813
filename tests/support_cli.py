"""Running `stekker` commands in-process with Typer's CliRunner, against a federation that
a test runs (in a thread, or in the test's own loop through `asyncio.to_thread`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner, Result

from mesh.cli.main import app

runner = CliRunner()


def invoke(urls: str | list[str], data_dir: Path, *args: str) -> Result:
    """`stekker --nats URLS --data-dir DIR ARGS…`, run to its end."""
    nats = urls if isinstance(urls, str) else ",".join(urls)
    return runner.invoke(app, ["--nats", nats, "--data-dir", str(data_dir), *args])


async def stekker(urls: list[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    """`invoke` from async code: exit code, stdout, stderr."""
    result = await asyncio.to_thread(invoke, urls, data_dir, *args)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def logs_to_a_file(tmp_path: Path) -> Iterator[None]:
    """The federation's nodes log while CliRunner captures the command's output: keep the
    two apart, so a test reads only what the command printed."""
    old = structlog.get_config()
    with (tmp_path / "services.log").open("w") as sink:
        structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=sink))
        try:
            yield
        finally:
            structlog.configure(**old)
