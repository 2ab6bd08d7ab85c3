"""The daemon's outbox: every outgoing message lives in the database until the broker has it.

`put` never blocks and never talks to the database itself. Inside a unit of work (a state
change being committed, storage/unit.py) the message is staged in that transaction, so the
change and its message commit together or not at all. Outside one (a message that reports
nothing stored), it is queued in memory for a moment and written by `run` in a transaction of
its own; that is the only window a crash can lose, and it holds nothing the database would
have to agree with.

The bridge takes messages from a window loaded from the head of the table and removes each
row once the broker has acknowledged it (deletes are batched). It may have many in flight at
once (`take`, issue 10: the outbox drains as fast as the broker acknowledges, not one round
trip per message): they are handed out in table order, paho sends them in that order, and
after a lost connection (`rewind`) everything not yet acknowledged is handed out again from
the head of the table. A crash between the PUBACK and
the delete sends that message again after the restart with the same `message_id`, which every
payload carries, so a consumer can tell the repeat. Nothing is ever shed: how deep the table
is shows in `headend status`, and past `alarm_depth` the backlog raises `outbox_overflow`
(mqtt/backlog.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from headend.mqtt.outbox import OutboxMessage
from headend.observability import metrics
from headend.observability.logs import get_logger
from headend.storage import unit
from headend.storage.outbox import OutboxStore, outbox_row

__all__ = ["DurableOutbox"]

log = get_logger(__name__)

_IDLE_POLL_S = 0.5
"""Look at the table at least this often: rows written by another process (an operator's
CLI) or a wake-up missed across database objects still go out promptly."""


def _now() -> datetime:
    return datetime.now(UTC)


class DurableOutbox:
    def __init__(
        self,
        store: OutboxStore,
        *,
        window: int = 500,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.store = store
        self.window_size = window
        self._clock = clock
        self._loose: list[dict[str, object]] = []
        self._window: deque[OutboxMessage] = deque()
        self._row_of: dict[OutboxMessage, int] = {}
        self._acked: list[int] = []
        self._flying: dict[OutboxMessage, int] = {}  # handed out by `take`, not yet done
        self._deleting: set[int] = set()  # acknowledged, their DELETE under way
        self._committed = asyncio.Event()  # rows may be waiting in the table: the reader
        self._work = asyncio.Event()  # loose rows to write or acked rows to delete: the writer
        self.refused = 0
        store.db.commit_listeners.add(self.wake)

    def __repr__(self) -> str:
        return f"DurableOutbox(window={len(self._window)}, loose={len(self._loose)})"

    def wake(self) -> None:
        """Rows were committed: look at the table now."""
        self._committed.set()

    # -- the Outbox protocol (mqtt/outbox.py) -------------------------------------------------
    def put(self, message: OutboxMessage) -> OutboxMessage | None:
        row = outbox_row(
            message.message_id,
            message.topic,
            message.payload,
            message.qos,
            message.retain,
            self._clock(),
            message.correlation_data,
        )
        if not unit.stage(row):
            self._loose.append(row)
            self._work.set()
        return None  # nothing is ever shed

    async def next(self) -> OutboxMessage:
        while not self._window:
            try:
                await self._refill()
            except Exception as exc:  # the database is away: wait for it, keep the rows
                log.warning("outbox: cannot read the outbox table (%s); retrying", exc)
                await asyncio.sleep(_IDLE_POLL_S)
                continue
            if not self._window:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_IDLE_POLL_S):
                        await self._committed.wait()
                self._committed.clear()
        return self._window[0]

    async def take(self) -> OutboxMessage:
        """The next message not handed out yet, in table order, marked in flight (several may
        be in flight at once; `done` each as the broker acknowledges it)."""
        message = await self.next()
        self._window.popleft()
        self._flying[message] = self._row_of[message]
        return message

    def rewind(self) -> None:
        """The connection went: what is in flight goes again, from the head of the table."""
        for message in self._flying:
            self._row_of.pop(message, None)
        for message in self._window:
            self._row_of.pop(message, None)
        self._flying.clear()
        self._window.clear()

    @property
    def in_flight(self) -> int:
        return len(self._flying)

    def done(self, message: OutboxMessage) -> None:
        if self._window and self._window[0] is message:
            self._window.popleft()
        self._flying.pop(message, None)
        row = self._row_of.pop(message, None)
        if row is not None:
            metrics.OUTBOX_PUBLISHED.inc()
            self._acked.append(row)
            if len(self._acked) >= self.window_size // 2:
                self._work.set()

    def release(self, message: OutboxMessage) -> None:
        """Sending failed: it stays first in the window (and in the table)."""

    def refuse(self, message: OutboxMessage) -> None:
        log.error("outbox: message %s for %s refused; dropped", message.message_id, message.topic)
        self.refused += 1
        self.done(message)

    async def wait_empty(self) -> None:
        while True:
            await self._write_loose()
            await self._delete_acked()
            depth, _ = await self.store.depth()
            if depth == 0 and not self._window and not self._loose and not self._flying:
                return
            await asyncio.sleep(0.05)

    # -- the writer ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Write loose messages and delete acknowledged rows until cancelled."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_IDLE_POLL_S):
                        await self._work.wait()
                self._work.clear()
                try:
                    await self._write_loose()
                    await self._delete_acked()
                except Exception as exc:  # the database is away: keep everything, try again
                    log.warning("outbox: cannot write the outbox table (%s); retrying", exc)
                    await asyncio.sleep(_IDLE_POLL_S)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._write_loose())
            with contextlib.suppress(Exception):
                await asyncio.shield(self._delete_acked())

    async def _write_loose(self) -> None:
        if not self._loose:
            return
        rows, self._loose = self._loose, []
        try:
            await self.store.add(rows)
        except Exception:
            self._loose[:0] = rows  # keep them, in order, for the next try
            raise
        self._committed.set()

    async def _delete_acked(self) -> None:
        if not self._acked:
            return
        ids, self._acked = self._acked, []
        self._deleting.update(ids)
        try:
            await self.store.delete(ids)
        except Exception:
            self._acked[:0] = ids
            raise
        finally:
            self._deleting.difference_update(ids)

    async def _refill(self) -> None:
        # Acknowledged rows are deleted by `run`; reading past them here never waits for the
        # database's writer.
        await self._write_loose()
        # Rows in flight are still at the head of the table (deleted once acknowledged).
        busy = set(self._flying.values()) | set(self._acked) | self._deleting
        for entry in await self.store.head(self.window_size + len(busy)):
            if entry.id in busy:
                continue
            message = OutboxMessage(
                entry.topic,
                entry.payload,
                entry.qos,
                entry.retain,
                message_id=entry.message_id,
                correlation_data=entry.correlation_data,
            )
            self._row_of[message] = entry.id
            self._window.append(message)
