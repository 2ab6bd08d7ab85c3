"""The event loop the long-running processes (the daemon, the simulator) run on: uvloop where it
is installed, asyncio's own loop otherwise.

A poll is mostly event-loop work (connect, a handful of writes and reads, close): on the fleet
benchmark uvloop took a quarter to a third off the client's CPU per session and its bare-I/O
floor was half of asyncio's (benchmarks/README.md). uvloop is an optional dependency
(`pip install 'dlms-headend[uvloop]'`; it does not build on Windows), so everything works
without it. HEADEND_EVENT_LOOP=asyncio forces asyncio's loop (to rule the loop out when
chasing a problem)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["EVENT_LOOP_ENV", "loop_factory", "loop_name", "run"]

EVENT_LOOP_ENV = "HEADEND_EVENT_LOOP"

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when it is installed and not refused; None means asyncio's."""
    if os.environ.get(EVENT_LOOP_ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the loop loop_factory() picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
