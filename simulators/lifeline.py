"""Exit with the parent: `dlms-sim --parent-pid PID` stops (cleanly: meters and control port
closed) as soon as the process that started it is gone, however it went, SIGKILL included.

A watchdog on the parent pid, rather than prctl(PR_SET_PDEATHSIG) in the child's preexec_fn:
preexec_fn runs between fork and exec, which CPython documents as unsafe in a process with
threads, and the head-end that starts us has threads (aiosqlite's, the loop's executor); the
death signal is also Linux-only and follows the *thread* that forked, not the process. When
the parent dies the kernel hands the child to a reaper (init or a subreaper), so getppid()
changes, and can never come back to the old pid: checking it twice a second costs nothing
and is never fooled by pid reuse. A parent that died before we even started is caught by the
first check."""

from __future__ import annotations

import asyncio
import os

__all__ = ["CHECK_EVERY_S", "watch_parent"]

CHECK_EVERY_S = 0.5


async def watch_parent(
    parent_pid: int, stop: asyncio.Event, every_s: float = CHECK_EVERY_S
) -> None:
    """Set `stop` once our parent is no longer `parent_pid`."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            stop.set()
            return
        await asyncio.sleep(every_s)
