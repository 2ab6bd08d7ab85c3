"""Invocation counters for ciphered sessions: a GCM invocation counter used twice under one key
breaks the cipher, so counters are reserved in the database (committed before use) and never
handed out twice, across restarts and processes. headend.meters.counters adapts this to the
driver's InvocationCounterStore."""

from __future__ import annotations

from sqlalchemy import func

from headend.storage.core import COUNTERS, Store, dialect_insert

__all__ = ["IC_MAX", "Counters", "InvocationCounterExhausted"]

IC_MAX = 0xFFFFFFFF  # invocation counters are 32-bit; past this the key must be changed


class InvocationCounterExhausted(Exception):
    """A meter's invocation counter would pass 2**32-1: its key must be renewed."""


class Counters(Store):
    async def reserve_invocation_counter(
        self, meter_id: str, n: int = 1, *, key_id: str = "default", at_least: int = 1
    ) -> int:
        """Reserve `n` consecutive invocation counters for (meter, key); return the first.

        One atomic upsert: concurrent callers (tasks or processes) always get disjoint
        ranges, and a range once handed out is never handed out again, even after a crash
        (the reservation is committed before the counters are used). `at_least` lifts the
        counter to a value learned from the meter. Raises InvocationCounterExhausted past
        2**32-1 (nothing is reserved then)."""
        if n < 1:
            raise ValueError("n must be >= 1")
        floor = max(1, at_least)
        now = self.now()
        async with self.db.transaction() as session:
            dialect = session.bind.dialect.name
            stmt = dialect_insert(session, COUNTERS).values(
                meter_id=meter_id, key_id=key_id, value=floor + n, updated_at=now
            )
            current = COUNTERS.c.value
            if dialect == "postgresql":
                lifted = func.greatest(current, floor)
            else:
                lifted = func.max(current, floor)  # SQLite's scalar max()
            stmt = stmt.on_conflict_do_update(
                index_elements=["meter_id", "key_id"],
                set_={"value": lifted + n, "updated_at": stmt.excluded.updated_at},
            ).returning(COUNTERS.c.value)
            end = int((await session.execute(stmt)).scalar_one())
            first = end - n
            if end - 1 > IC_MAX:
                raise InvocationCounterExhausted(
                    f"meter {meter_id}: invocation counter for key {key_id} exhausted; "
                    "renew the key"
                )
            return first
