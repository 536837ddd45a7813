"""The event loop and collector settings of a long-running process (mesh/loop.py)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from mesh import loop


def test_uvloop_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("STEKKER_EVENT_LOOP", raising=False)
    assert loop.loop_factory() is uvloop.new_event_loop
    monkeypatch.setenv("STEKKER_EVENT_LOOP", "asyncio")
    assert loop.loop_factory() is None


def test_without_uvloop_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEKKER_EVENT_LOOP", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "uvloop", None)  # import fails
    assert loop.loop_factory() is None


def test_run_uses_the_chosen_loop_and_tunes_the_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = gc.get_threshold()
    try:
        async def which() -> str:
            await asyncio.sleep(0)
            return type(asyncio.get_running_loop()).__module__

        monkeypatch.setenv("STEKKER_EVENT_LOOP", "asyncio")
        assert loop.run(which()).startswith("asyncio")
        assert gc.get_threshold() == loop.GC_THRESHOLDS
        if _has_uvloop():
            monkeypatch.delenv("STEKKER_EVENT_LOOP")
            assert loop.run(which()).startswith("uvloop")
    finally:
        gc.set_threshold(*before)


def test_freeze_leaves_what_exists_out_of_collections() -> None:
    try:
        loop.freeze_gc()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
