"""Which meters this process may talk to, and the fence every session and result passes.

The collection service, the relay controller and meter access ask one `MeterOwnership`:
`owns(meter_id)` is the lease token the meter is held under, or None. A token is valid until
its local deadline (a little before the lease expires in the database), so:

* a session runs inside `guard(meter_id)`: it starts only on a valid token and is cancelled
  when the token's deadline passes without a renewal (`asyncio.Timeout`, moved on at each
  renewal), so a member that was paused past its lease never continues a session the next
  holder may already run;
* `fence()` checks in the database, in the transaction that commits a result (or right before
  an ACTION), that the lease is still held under the same epoch; the row is locked FOR SHARE
  until that transaction ends, so no other member can claim the lease while the result
  commits. It raises `LeaseLost`, which rolls the transaction back.

The token a task works under is a context variable (`enter`), so the storage calls of a relay
attempt are fenced without handing the token through every signature. Without [cluster] the
daemon uses `SOLE`: every meter is owned, nothing is checked."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

__all__ = ["SOLE", "LeaseLost", "LeaseToken", "MeterOwnership", "SoleOwnership", "current_token"]


class LeaseLost(Exception):
    """The lease a session or result ran under is gone (expired, or taken over): the work is
    abandoned, its transaction rolled back; the new holder does it again."""


@dataclass(frozen=True)
class LeaseToken:
    """A meter's lease as this member holds it: name, epoch (the fencing token)."""

    name: str
    epoch: int


_current: ContextVar[LeaseToken | None] = ContextVar("headend_lease_token", default=None)


def current_token() -> LeaseToken | None:
    return _current.get()


class MeterOwnership(Protocol):
    def owns(self, meter_id: str) -> LeaseToken | None:
        """The meter's lease token if this process may talk to it now, else None."""
        ...

    def enter(self, meter_id: str) -> LeaseToken | None:
        """`owns`, and the token becomes this task's (what `fence()` checks)."""
        ...

    def guard(self, meter_id: str) -> contextlib.AbstractAsyncContextManager[LeaseToken | None]:
        """A session's bounds: raises LeaseLost if not owned; cancels the body at the lease's
        local deadline."""
        ...

    async def fence(self) -> None:
        """Raise LeaseLost unless this task's lease is still held (in the database, joining
        the task's open unit of work); nothing when the task entered no lease."""
        ...

    def track(self, records: object) -> None:
        """The inventory as meter access last read it (which lease each meter is under)."""
        ...


_SOLE_TOKEN = LeaseToken("sole", 0)


class SoleOwnership:
    """One head-end alone: it owns every meter; nothing to fence."""

    def __repr__(self) -> str:
        return "SoleOwnership()"

    def owns(self, meter_id: str) -> LeaseToken | None:
        return _SOLE_TOKEN

    def enter(self, meter_id: str) -> LeaseToken | None:
        return _SOLE_TOKEN

    @contextlib.asynccontextmanager
    async def guard(self, meter_id: str) -> AsyncIterator[LeaseToken | None]:
        yield _SOLE_TOKEN

    async def fence(self) -> None:
        return None

    def track(self, records: object) -> None:
        return None


SOLE = SoleOwnership()


def set_current(token: LeaseToken | None) -> None:
    """For implementations: make `token` this task's (tasks copy the context they start in)."""
    _current.set(token)
