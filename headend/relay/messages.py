"""The relay side's messages, built from stored records in one place so that the controller,
its overdue watch and the poller say the same thing the same way (README, "MQTT contract")."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from drivers.session import RelayStatus
from headend.mqtt.notifier import Notifier
from headend.storage import CommandInfo
from headend.storage.records import AlarmInfo

__all__ = ["publish_alarm", "publish_command", "publish_relay"]


def publish_command(
    notifier: Notifier,
    command: CommandInfo,
    status: str,
    ts: datetime,
    *,
    attempt: int | None = None,
    error: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    notifier.command(
        command_id=command.command_id,
        meter_id=command.meter_id,
        action=command.action,
        status=status,
        attempt=command.attempt if attempt is None else attempt,
        ts=ts,
        event_id=command.event_id,
        error=error,
        source=command.source,
        **(extra or {}),
    )


def publish_relay(
    notifier: Notifier, meter_id: str, status: RelayStatus, ts: datetime, reason: str, hold: bool
) -> None:
    notifier.relay_state(meter_id, status.state, status.output_state, ts, reason, hold=hold)


def publish_alarm(notifier: Notifier, alarm: AlarmInfo | None) -> None:
    """None: an identical alarm already stands, nothing new to say."""
    if alarm is not None:
        notifier.alarm(alarm.type, alarm.ts, meter_id=alarm.meter_id, detail=alarm.detail)
