"""Event logs caught up by polling: the standard, fraud detection, disconnector control, power
quality and power failure logs (cosem_objects/event_codes.py names them, after IDIS and
docs/dlms-notes.md section 10), those the meter's object list has.

Like the load profile, each log is read from its last stored entry on (a range read on the
clock column), so a poll fetches only what is new plus, at most, the entries of that last
second again; those the database already holds are not stored or published twice
(storage/events.py keys an event on meter, log, time and code). New entries are stored,
published on `headend/meters/{id}/events` with `"source": "poll"` and the IDIS name of their
code, and act as pushed ones do (meters/event_effects.py: a power failure raises
`meter_power_failure`), all in one transaction per poll."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass

from cosem_objects import event_codes
from cosem_objects.errors import ProtocolError
from drivers.dlms_errors import DataAccessFailed, DlmsError
from drivers.session import DlmsSession, ProfileData
from headend.collection.capabilities import Capabilities
from headend.meters.event_effects import power_failure_effect
from headend.mqtt.notifier import Notifier
from headend.storage import Repository
from headend.storage.events import EventRow

__all__ = ["EVENT_LOGS", "EventLogCatchUp", "EventLogResult"]

log = logging.getLogger(__name__)

EVENT_LOGS: tuple[str, ...] = tuple(event_codes.LOG_NAMES)
SOURCE = "poll"


@dataclass(frozen=True, slots=True)
class EventLogResult:
    log: str
    read: int  # entries the meter returned
    new: int  # of those, entries not stored before (stored and published now)


@dataclass
class EventLogCatchUp:
    repository: Repository
    notifier: Notifier | None
    backfill_s: float = 31 * 86400.0  # a log never read: from this far back

    async def run(
        self,
        session: DlmsSession,
        meter_id: str,
        caps: Capabilities | None,
        now: dt.datetime,
        problems: list[str],
    ) -> list[EventLogResult]:
        """Every event log the meter has (all of them when its object list is unknown: a
        log it lacks is then one noted problem), read first, then stored in one transaction.
        Transport errors propagate."""
        reads: list[tuple[str, int, list[EventRow]]] = []
        for code in EVENT_LOGS:
            if caps is not None and not caps.has(code):
                continue
            read = await self._read(session, meter_id, code, now, problems)
            if read is not None:
                reads.append((code, *read))
        new = await self._store(meter_id, [row for _log, _count, rows in reads for row in rows])
        counts = Counter(event.log for event in new)
        return [EventLogResult(code, count, counts[code]) for code, count, _rows in reads]

    async def _read(
        self,
        session: DlmsSession,
        meter_id: str,
        log_obis: str,
        now: dt.datetime,
        problems: list[str],
    ) -> tuple[int, list[EventRow]] | None:
        last = await self.repository.last_event_ts(meter_id, log_obis)
        start = last if last is not None else now - dt.timedelta(seconds=self.backfill_s)
        try:
            data = await session.read_profile(log_obis, start)
        except (DataAccessFailed, DlmsError, ProtocolError) as exc:
            if isinstance(exc, OSError | TimeoutError):
                raise
            problems.append(f"{log_obis}: {exc}")
            return None
        return len(data.rows), _events(meter_id, log_obis, data, last)

    async def _store(self, meter_id: str, rows: list[EventRow]) -> list[EventRow]:
        """Store, publish and act on the new events, in the order they happened.

        A log read late holds history: a power down the meter has logged a power up after
        (in any log, stored before or read now) is stored and published but raises nothing,
        so catching up the power failure log after the standard log never leaves an alarm
        standing for a supply that came back."""
        if not rows:
            return []
        repository, notifier = self.repository, self.notifier
        power_up = await self._last_power_up(meter_id, rows)
        async with repository.db.transaction():
            new = sorted(await repository.store_events(rows), key=lambda event: event.ts)
            for event in new:
                if notifier is not None:
                    notifier.event(
                        event.meter_id, event.ts, event.log, event.code, event.name, SOURCE
                    )
                over = event.code in event_codes.POWER_FAILURE_CODES and (
                    power_up is not None and power_up >= event.ts
                )
                if not over:
                    await power_failure_effect(repository, notifier, event)
        return new

    async def _last_power_up(self, meter_id: str, rows: list[EventRow]) -> dt.datetime | None:
        downs = [row.ts for row in rows if row.code in event_codes.POWER_FAILURE_CODES]
        if not downs:
            return None
        ups = [row.ts for row in rows if row.code == event_codes.POWER_UP]
        stored = await self.repository.meter_events(meter_id, since=min(downs))
        ups += [event.ts for event in stored if event.code == event_codes.POWER_UP]
        return max(ups, default=None)


def _events(
    meter_id: str, log_obis: str, data: ProfileData, last: dt.datetime | None
) -> list[EventRow]:
    """The log's rows as events: {clock, event code} (the first integer column is the code)."""
    rows: list[EventRow] = []
    for row in data.rows:
        if row.timestamp is None or (last is not None and row.timestamp < last):
            continue
        code = next(
            (v for v in row.values.values() if isinstance(v, int) and not isinstance(v, bool)),
            None,
        )
        if code is None:
            continue
        name = event_codes.event_name(code, log_obis)
        rows.append(EventRow(meter_id, log_obis, row.timestamp, code, name, SOURCE))
    return rows
