"""The gauges that describe what is stored, read from the database when Prometheus scrapes.

Meters by relay state, the oldest unconfirmed command, the outbox and the invocation counter
headroom are facts of the database, not of this process: reading them at scrape time (a few
aggregate queries over indexed or small tables, in one read transaction) keeps them right
after a restart, with several head-ends on one database, and with the CLI changing rows, which
counters kept in memory would not. The gauges are set only after every query has answered, in
one step of the event loop, so a scrape never sees half of a refresh."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from headend import domain
from headend.observability import metrics
from headend.storage import Database
from headend.storage.core import ALARMS, COMMANDS, COUNTERS, METERS, parse_sqlite_ts
from headend.storage.counters import IC_MAX
from headend.storage.db import OUTBOX
from headend.storage.types import to_utc

__all__ = ["refresh_fleet_gauges"]


def _age_s(now: datetime, since: object) -> float:
    if since is None:
        return 0.0
    return max(0.0, (now - to_utc(parse_sqlite_ts(since))).total_seconds())


async def refresh_fleet_gauges(db: Database, now: datetime | None = None) -> None:
    """Read the stored facts and set their gauges (callers bound this with a timeout)."""
    now = now or datetime.now(UTC)
    c = COMMANDS.c
    async with db.session() as session:
        states = (
            await session.execute(
                select(METERS.c.confirmed_relay_state, func.count()).group_by(
                    METERS.c.confirmed_relay_state
                )
            )
        ).all()
        oldest_command = await session.scalar(
            select(func.min(func.coalesce(c.episode_started_at, c.created_at))).where(
                c.status.in_(domain.ACTIVE_COMMAND_STATUSES)
            )
        )
        outbox = (await session.execute(select(func.count(), func.min(OUTBOX.c.created_at)))).one()
        highest_counter = await session.scalar(select(func.max(COUNTERS.c.value)))
        alarms = (
            await session.execute(
                select(ALARMS.c.type, func.count())
                .where(ALARMS.c.cleared.is_(False))
                .group_by(ALARMS.c.type)
            )
        ).all()
    metrics.METERS.clear()
    for state, count in states:
        metrics.METERS.labels(relay_state=state or "unknown").set(count)
    metrics.COMMAND_OLDEST_AGE.set(_age_s(now, oldest_command))
    metrics.OUTBOX_DEPTH.set(int(outbox[0]))
    metrics.OUTBOX_OLDEST_AGE.set(_age_s(now, outbox[1]))
    # `value` is the next counter not yet handed out: what is left is the limit minus it.
    metrics.INVOCATION_HEADROOM.set(IC_MAX - int(highest_counter or 0))
    metrics.ACTIVE_ALARMS.clear()
    for alarm_type, count in alarms:
        metrics.ACTIVE_ALARMS.labels(type=alarm_type).set(count)
