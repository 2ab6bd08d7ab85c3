"""What the daemon is waiting on: every asyncio task and the line it is suspended at, written
to the log on SIGUSR1 (`kill -USR1 <pid>`).

A head-end that has stopped making progress (a relay command not executed, polls not
finishing) is usually parked on an await: a lock, a database row another process holds, a
queue. Metrics show that it is stuck, not where; this shows where, without a debugger or a
restart that would lose the evidence."""

from __future__ import annotations

import asyncio
import logging

__all__ = ["dump_tasks", "task_report"]

log = logging.getLogger(__name__)

MAX_FRAMES = 12


def _short(path: str) -> str:
    """`.../headend/relay/controller.py` -> `relay/controller.py`: enough to find it."""
    return "/".join(path.split("/")[-2:])


def task_report(loop: asyncio.AbstractEventLoop | None = None) -> list[str]:
    """One line per task: its name, then where it waits (innermost call last)."""
    lines = []
    for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
        frames = task.get_stack(limit=MAX_FRAMES)
        where = " <- ".join(
            f"{f.f_code.co_name} ({_short(f.f_code.co_filename)}:{f.f_lineno})"
            for f in reversed(frames)
        )
        lines.append(f"{task.get_name()}: {where or 'not started'}")
    return lines


def dump_tasks() -> None:
    lines = task_report()
    log.warning("SIGUSR1: %d task(s)\n%s", len(lines), "\n".join(lines))
