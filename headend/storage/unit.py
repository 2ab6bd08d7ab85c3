"""One write transaction per unit of work, and the outgoing messages it causes written in it.

A state change and the messages that report it must be committed together: if the process
dies after the commit, the messages are in the outbox table and go out after the restart; if
it dies before, neither happened. Callers do not pass messages around for that. A unit is
the outermost `Database.transaction()` of a task; every `transaction()` the same task opens on
the same database inside it joins it (one session, one commit), and every message the task
hands the durable outbox meanwhile is staged here and inserted just before the commit.

`transactional` marks a method (of an object with `.repository.db`) as one unit: the method's
storage calls and the messages it publishes commit together. Such a method must not wait on
the network: it holds the database's write transaction (and on SQLite its only writer).

A task started from inside a unit inherits the context variable but not the unit: only the
task that opened a unit may join it (the owner check), so a worker spawned by a balance event
opens units of its own."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["Unit", "current_unit", "stage", "transactional"]


@dataclass(eq=False)
class Unit:
    key: str
    """Which database (its file or URL): two Database objects on one file share a unit."""
    session: AsyncSession
    owner: asyncio.Task[Any] | None
    staged: list[dict[str, Any]] = field(default_factory=list)
    """Outbox rows to insert before the commit."""
    open: bool = True


_current: ContextVar[Unit | None] = ContextVar("headend_storage_unit", default=None)


def current_unit(key: str | None = None) -> Unit | None:
    """The unit this task is inside (on database `key`, when given), if any."""
    unit = _current.get()
    if unit is None or not unit.open or unit.owner is not _task():
        return None
    if key is not None and unit.key != key:
        return None
    return unit


def stage(row: dict[str, Any]) -> bool:
    """Stage an outbox row in this task's unit; False when the task is in none."""
    unit = current_unit()
    if unit is None:
        return False
    unit.staged.append(row)
    return True


def enter(unit: Unit) -> object:
    return _current.set(unit)


def leave(unit: Unit, token: Any) -> None:
    unit.open = False
    _current.reset(token)


def _task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


P = ParamSpec("P")
R = TypeVar("R")


def transactional(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run `method` as one unit on `self.repository.db` (see the module docstring)."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        owner: Any = args[0]
        async with owner.repository.db.transaction():
            return await method(*args, **kwargs)

    return wrapper
