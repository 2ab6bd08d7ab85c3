"""The outbox table: messages waiting for the broker, oldest first.

Rows arrive in the transaction of the state change they report (storage/unit.py stages them),
or in a transaction of their own when the message reports nothing stored; they leave only when
the broker has acknowledged them (on SQLite in the relay lane for the writer: messages must
leave as fast as commands confirm, issue 10). Reading the head again after each delete, rather than
paging by id, also picks up a row whose transaction took a lower id but committed later."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select

from headend.storage.core import Clock, parse_sqlite_ts
from headend.storage.db import OUTBOX, RELAY_LANE, Database

__all__ = ["OutboxEntry", "OutboxStore", "outbox_row"]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    message_id: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    correlation_data: bytes | None = None


def outbox_row(
    message_id: str,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    now: datetime,
    correlation_data: bytes | None = None,
) -> dict[str, Any]:
    """The columns of one outbox row (what storage/unit.py stages and `add` inserts)."""
    return {
        "message_id": message_id,
        "topic": topic,
        "payload": payload,
        "qos": qos,
        "retain": retain,
        "created_at": now,
        "correlation_data": correlation_data,
    }


class OutboxStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self._clock = clock

    async def add(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        async with self.db.transaction(lane=RELAY_LANE) as session:
            await session.execute(insert(OUTBOX), list(rows))

    async def head(self, limit: int) -> list[OutboxEntry]:
        c = OUTBOX.c
        async with self.db.session() as session:
            result = await session.execute(
                select(c.id, c.message_id, c.topic, c.payload, c.qos, c.retain, c.correlation_data)
                .order_by(c.id)
                .limit(limit)
            )
            return [
                OutboxEntry(
                    int(r.id),
                    r.message_id,
                    r.topic,
                    bytes(r.payload),
                    int(r.qos),
                    bool(r.retain),
                    None if r.correlation_data is None else bytes(r.correlation_data),
                )
                for r in result
            ]

    async def delete(self, ids: Iterable[int]) -> int:
        wanted = list(ids)
        if not wanted:
            return 0
        async with self.db.transaction(lane=RELAY_LANE) as session:
            result = await session.execute(delete(OUTBOX).where(OUTBOX.c.id.in_(wanted)))
            return int(getattr(result, "rowcount", 0) or 0)

    async def depth(self) -> tuple[int, datetime | None]:
        """How many messages wait, and since when the oldest has."""
        c = OUTBOX.c
        async with self.db.session() as session:
            row = (await session.execute(select(func.count(), func.min(c.created_at)))).one()
        oldest = None if row[1] is None else parse_sqlite_ts(row[1])
        return int(row[0]), oldest
