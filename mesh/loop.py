"""How a long-running stekker process runs its event loop.

- **uvloop** where it is installed (a dependency on Linux and macOS): the same asyncio
  API on libuv, with a cheaper loop iteration, callback scheduling and socket writes,
  which a node pays for on every message. `STEKKER_EVENT_LOOP=asyncio` keeps the
  standard loop; without uvloop the standard loop is used anyway.
- **Garbage collection for many live records**: a node holds thousands of decoded
  records (its live view, what runs) and allocates many short-lived ones per message.
  With the default thresholds the collector walks the old ones again and again (a fifth
  of a node's CPU in the placement benchmark). What exists once the node has started is
  frozen out of collection, and young objects are collected every 50,000 allocations
  rather than 700. Reference counting still frees everything without cycles at once.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
GC_THRESHOLDS = (50_000, 20, 100)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when installed and not turned off; None: the standard loop."""
    if os.environ.get("STEKKER_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def tune_gc() -> None:
    """Fewer collections for a process that keeps many objects (see the module doc)."""
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_gc() -> None:
    """Leave everything allocated so far (modules, the started services' state) out of
    every later collection: call once a process has started."""
    gc.collect()
    gc.freeze()


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the chosen loop, with the collector tuned."""
    tune_gc()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
