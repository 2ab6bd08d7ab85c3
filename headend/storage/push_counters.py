"""The last invocation counter accepted from each meter's ciphered pushes.

A ciphered push whose counter is not above the last one accepted is a replay (someone sending
a recorded push again, or a meter whose counter went back). The check and the update are one
conditional upsert, so two copies of a push arriving at once cannot both be accepted, and the
value survives restarts."""

from __future__ import annotations

from headend.storage.core import PUSH_COUNTERS, Store, dialect_insert
from headend.storage.models import PushCounter

__all__ = ["PushCounters"]


class PushCounters(Store):
    async def accept_push_counter(self, meter_id: str, counter: int) -> bool:
        """Record `counter` as the meter's newest push counter if it is above the stored one;
        False (nothing changed) when it is not: a replay."""
        now = self.now()
        c = PUSH_COUNTERS.c
        async with self.db.transaction() as session:
            stmt = dialect_insert(session, PUSH_COUNTERS).values(
                meter_id=meter_id, value=counter, updated_at=now
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["meter_id"],
                set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
                where=c.value < stmt.excluded.value,
            ).returning(c.meter_id)
            return (await session.execute(stmt)).first() is not None

    async def last_push_counter(self, meter_id: str) -> int | None:
        async with self.db.session() as session:
            row = await session.get(PushCounter, meter_id)
            return None if row is None else int(row.value)
