"""The daemon's readings housekeeping: next month's partition made ahead, old readings gone.

Runs at start and then every `every_s`. A round that fails (a lock that could not be had
within the DDL lock timeout, the database away) is logged and tried again next round: polls
still store their rows (a missing partition is also made when rows need it), and old rows
only wait a little longer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from headend.storage.partitions import ReadingPartitions

__all__ = ["ReadingRetention"]

log = logging.getLogger(__name__)

MONTHS_AHEAD = 2  # this month and the next: a poll at midnight on the 1st finds its partition


def _now() -> datetime:
    return datetime.now(UTC)


class ReadingRetention:
    def __init__(
        self,
        partitions: ReadingPartitions,
        retention_days: int,
        *,
        every_s: float = 3600.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.partitions = partitions
        self.retention_days = retention_days
        self.every_s = every_s
        self.clock = clock
        self.rounds = 0

    async def run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.every_s)

    async def round(self) -> int:
        """One round: partitions ahead, then retention; how many partitions (PostgreSQL) or
        rows (SQLite) were dropped."""
        now = self.clock()
        dropped = 0
        try:
            await self.partitions.ensure_ahead(now, MONTHS_AHEAD)
            dropped = await self.partitions.prune(self.retention_days, now)
        except Exception as exc:  # the next round tries again
            log.warning("readings housekeeping failed, retrying in %.0f s: %s", self.every_s, exc)
        else:
            if dropped:
                log.info(
                    "readings older than %d days removed: %d %s",
                    self.retention_days,
                    dropped,
                    "partition(s)" if self.partitions.partitioned else "row(s)",
                )
        self.rounds += 1
        return dropped
