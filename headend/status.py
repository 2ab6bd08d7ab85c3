"""What `headend status` reports, as plain data: the CLI prints it, the demo summarises it and
tests assert on it, so it lives apart from all three."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from headend.storage import Database, Repository
from headend.storage.offenders import worst_offenders
from headend.storage.types import iso_or_none

__all__ = ["status_report"]


async def status_report(
    url: str, *, limit: int = 50, stale_after_s: float = 3600.0, worst: int = 10
) -> dict[str, Any]:
    """What `headend status` shows, as plain data (also used by the demo and tests).
    `stale_after_s`: a meter not read for that long is among the worst offenders (the CLI
    passes a few polling intervals)."""
    # A read: it never changes the schema, so it never waits for the write lock either.
    db = await Database.open(url, run_migrations=False)
    try:
        repository = Repository(db)
        summary = await repository.fleet_summary()
        pending = await repository.pending_commands()
        holds = await repository.held_meters()
        protected = await repository.protected_meters()
        alarms = await repository.list_alarms(limit=limit)
        outbox_depth, outbox_oldest = await repository.outbox.depth()
        offenders = await worst_offenders(
            db, datetime.now(UTC), stale_after=timedelta(seconds=stale_after_s), limit=worst
        )
    finally:
        await db.dispose()
    return {
        "meters": summary.meters,
        "relay_states": summary.relay_states,
        "desired_disconnected": summary.desired_disconnected,
        "active_commands": summary.active_commands,
        "escalated_commands": summary.escalated_commands,
        "active_alarms": summary.active_alarms,
        "last_reading_at": iso_or_none(summary.last_reading_at),
        "outbox": {"depth": outbox_depth, "oldest": iso_or_none(outbox_oldest)},
        "pending_commands": [
            {
                "command_id": c.command_id,
                "meter_id": c.meter_id,
                "action": c.action,
                "status": c.status,
                "attempt": c.attempt,
                "source": c.source,
                "created_at": iso_or_none(c.created_at),
                "next_attempt_at": iso_or_none(c.next_attempt_at),
                "last_error": c.last_error,
            }
            for c in pending[:limit]
        ],
        "holds": [
            {
                "meter_id": h.meter_id,
                "held_state": h.held_state,
                "reason": h.reason,
                "since": iso_or_none(h.since),
                "desired_state": h.desired_state,
                "confirmed_state": h.confirmed_state,
            }
            for h in holds
        ],
        "protected": [
            {
                "meter_id": p["meter_id"],
                "reason": p["protected_reason"],
                "since": iso_or_none(p["protected_at"]),
                "balance": None if p["last_balance"] is None else str(p["last_balance"]),
            }
            for p in protected
        ],
        "alarms": [
            {
                "type": a.type,
                "meter_id": a.meter_id,
                "detail": a.detail,
                "ts": iso_or_none(a.ts),
            }
            for a in alarms
        ],
        "worst": offenders.as_dict(),
    }
