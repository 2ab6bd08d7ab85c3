"""What a meter event means for the head-end beyond being stored and published, whoever
brought it (a push, or a poll catching an event log up): a power failure raises
`meter_power_failure`, the power coming back clears it.

Called inside the transaction that stores the event (storage/unit.py), so the alarm and its
message commit with it."""

from __future__ import annotations

from cosem_objects import event_codes
from headend import domain
from headend.mqtt.notifier import Notifier
from headend.relay.messages import publish_alarm
from headend.storage import Repository
from headend.storage.events import EventRow

__all__ = ["power_failure_effect"]


async def power_failure_effect(
    repository: Repository, notifier: Notifier | None, event: EventRow
) -> None:
    if event.code in event_codes.POWER_FAILURE_CODES:
        alarm = await repository.raise_alarm(
            domain.METER_POWER_FAILURE,
            event.meter_id,
            f"{event.name} at {event.ts.isoformat()}",
        )
        if notifier is not None:
            publish_alarm(notifier, alarm)
    elif event.code == event_codes.POWER_UP:
        await repository.clear_alarms(domain.METER_POWER_FAILURE, event.meter_id)
