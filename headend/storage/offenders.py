"""The worst offenders: which meters the fleet-wide metrics are about.

The metrics never carry a meter id (a series per meter does not scale), so a gauge says that
collection degrades, a command is old or a counter is running out, never which meter. An
operator paged by one needs the names: `headend status` lists the few worst of each kind from
what is stored, so the answer holds after a restart and across the members of a cluster.

Each list is one query (two with its details), bounded by `limit`: over the meters (a scan
of the table, as `headend status` counts it anyway: an operator's command, not a hot path),
the active commands, the invocation counters and the active alarms."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import desc, func, or_, select

from headend import domain
from headend.storage.core import ALARMS, COMMANDS, COUNTERS, METERS
from headend.storage.counters import IC_MAX
from headend.storage.db import Database
from headend.storage.types import iso_or_none

__all__ = ["Offenders", "worst_offenders"]


@dataclass(frozen=True)
class Offenders:
    """Plain rows, worst first (`headend status --json` prints them as they are)."""

    silent: list[dict[str, Any]]
    """Meters not read for longer than `stale_after` (never read first), with the poll
    failure the unreachable alarm recorded."""
    stuck_commands: list[dict[str, Any]]
    """Active relay commands that have failed at least once (waiting for a retry, escalated,
    or on a retry now), most attempts first."""
    counters: list[dict[str, Any]]
    """Invocation counters closest to exhaustion (a meter that can no longer be talked to
    securely once its counter is spent)."""
    alarming: list[dict[str, Any]]
    """Meters with the most active alarms, with their types."""

    def as_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "silent": self.silent,
            "stuck_commands": self.stuck_commands,
            "counters": self.counters,
            "alarming": self.alarming,
        }


async def worst_offenders(
    db: Database, now: datetime, *, stale_after: timedelta, limit: int = 10
) -> Offenders:
    m, c, k, a = METERS.c, COMMANDS.c, COUNTERS.c, ALARMS.c
    async with db.session() as session:
        silent = (
            await session.execute(
                select(m.meter_id, m.last_reading_at)
                .where(or_(m.last_reading_at.is_(None), m.last_reading_at < now - stale_after))
                .order_by(m.last_reading_at.asc().nulls_first(), m.meter_id)
                .limit(limit)
            )
        ).all()
        unreachable: dict[str, str | None] = {}
        if silent:
            unreachable = {
                row.meter_id: row.detail
                for row in await session.execute(
                    select(a.meter_id, a.detail).where(
                        a.type == domain.METER_UNREACHABLE,
                        a.cleared.is_(False),
                        a.meter_id.in_([row.meter_id for row in silent]),
                    )
                )
            }
        started = func.coalesce(c.episode_started_at, c.created_at)
        stuck = (
            await session.execute(
                select(
                    c.meter_id, c.command_id, c.action, c.status, c.attempt, started, c.last_error
                )
                .where(
                    c.status.in_(domain.ACTIVE_COMMAND_STATUSES),
                    or_(c.attempt >= 2, c.status.in_((domain.FAILED, domain.ESCALATED))),
                )
                .order_by(desc(c.attempt), started, c.command_id)
                .limit(limit)
            )
        ).all()
        counters = (
            await session.execute(
                select(k.meter_id, k.key_id, k.value)
                .where(k.value > 0)
                .order_by(desc(k.value), k.meter_id, k.key_id)
                .limit(limit)
            )
        ).all()
        count = func.count().label("n")
        alarming = (
            await session.execute(
                select(a.meter_id, count)
                .where(a.cleared.is_(False), a.meter_id.is_not(None))
                .group_by(a.meter_id)
                .order_by(desc(count), a.meter_id)
                .limit(limit)
            )
        ).all()
        types: dict[str, set[str]] = defaultdict(set)
        if alarming:
            for row in await session.execute(
                select(a.meter_id, a.type).where(
                    a.cleared.is_(False), a.meter_id.in_([row.meter_id for row in alarming])
                )
            ):
                types[row.meter_id].add(row.type)
    return Offenders(
        silent=[
            {
                "meter_id": row.meter_id,
                "last_reading_at": iso_or_none(row.last_reading_at),
                "unreachable": unreachable.get(row.meter_id),
            }
            for row in silent
        ],
        stuck_commands=[
            {
                "meter_id": row.meter_id,
                "command_id": row.command_id,
                "action": row.action,
                "status": row.status,
                "attempt": row.attempt,
                "since": iso_or_none(row[5]),
                "last_error": row.last_error,
            }
            for row in stuck
        ],
        counters=[
            {
                "meter_id": row.meter_id,
                "key_id": row.key_id,
                "used": int(row.value),
                "headroom": IC_MAX - int(row.value),
                "used_percent": round(100 * int(row.value) / IC_MAX, 3),
            }
            for row in counters
        ],
        alarming=[
            {
                "meter_id": row.meter_id,
                "active_alarms": int(row.n),
                "types": sorted(types[row.meter_id]),
            }
            for row in alarming
        ],
    )
