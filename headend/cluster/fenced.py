"""A poll's results under its lease: the readings sink a member's poller writes through.

A poll's rows and what it records about them (its relay read-back, judged for drift, which can
queue a command, and the messages) commit in the readings batch, a transaction of another task
(storage/batching.py). The rows are facts read from the meter and are stored whatever happened
to the lease since; what the poll *records and decides* runs only if the lease the session ran
under is still held, checked in that same transaction (FOR SHARE of the lease row, as
`ownership.fence`). So a member that lost a meter while its poll was in flight, or that was
paused with one in flight, neither records a read-back nor queues a command for it."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from headend.cluster.leases import ClusterOwnership
from headend.cluster.ownership import current_token
from headend.collection.poller import ReadingsSink
from headend.storage import ReadingRow
from headend.storage.batching import Then

__all__ = ["FencedReadings"]

log = logging.getLogger(__name__)


class FencedReadings:
    def __init__(self, sink: ReadingsSink, ownership: ClusterOwnership) -> None:
        self.sink = sink
        self.ownership = ownership
        self.skipped = 0

    def __repr__(self) -> str:
        return f"FencedReadings(skipped={self.skipped})"

    async def store_readings(self, rows: Iterable[ReadingRow], then: Then | None = None) -> int:
        token = current_token()  # the poll's, set when its session opened
        if then is None or token is None:
            return await self.sink.store_readings(rows, then)
        record = then

        async def fenced() -> None:
            if await self.ownership.holds(token):
                await record()
                return
            self.skipped += 1
            log.info("poll result under lost lease %s: read-back not recorded", token.name)

        return await self.sink.store_readings(rows, fenced)
