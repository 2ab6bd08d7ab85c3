"""Everything the head-end tells integrators over MQTT, in one place.

Whoever has something to report (the poller, the collection service, the relay controller) is
handed the one ``Notifier`` and calls the method for that kind of message; the Notifier picks
the topic, builds the payload the contract names (``payloads.py``), and leaves the finished
message with its outbox. It never talks to the broker and never blocks: what the broker is
doing is the bridge's business. Because the only thing it does with a message is ``put`` it,
an outbox that writes messages in the state change's own transaction can replace the
in-memory one without changing any caller.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from headend.domain import Action, CommandStatus, NotificationType, RelayState
from headend.mqtt.outbox import Outbox, OutboxMessage
from headend.mqtt.payloads import (
    SCHEMA_VERSION,
    ReadingValue,
    alarm_payload,
    bad_event_alarm,
    command_payload,
    encode_payload,
    event_payload,
    notification_payload,
    readings_payload,
    relay_payload,
)
from headend.mqtt.topics import Topics, is_valid_request_id
from headend.observability import metrics

__all__ = ["Notifier"]


class Notifier:
    def __init__(self, outbox: Outbox, topics: Topics) -> None:
        self.outbox = outbox
        self.topics = topics

    def __repr__(self) -> str:
        return f"Notifier(outbox={self.outbox!r}, topics={self.topics!r})"

    def readings(
        self,
        meter_id: str,
        ts: datetime,
        values: Mapping[Any, tuple[ReadingValue, str | None]],
        source: str | None = None,
    ) -> None:
        """A poll's (or a push's: source "push") register values; the only messages an
        outbox may shed when full."""
        payload = readings_payload(meter_id, ts, values, source)
        self._put(self.topics.readings(meter_id), payload, droppable=True)

    def event(
        self, meter_id: str, ts: datetime, log: str, code: int, name: str, source: str
    ) -> None:
        """A meter event (from its event log by a poll, or pushed), published once when new."""
        payload = event_payload(meter_id, ts, log, code, name, source)
        self._put(self.topics.events(meter_id), payload)

    def relay_state(
        self,
        meter_id: str,
        state: RelayState | str,
        output_state: bool,
        ts: datetime,
        reason: str | None = None,
        *,
        hold: bool = False,
    ) -> None:
        """The relay as read back from the meter (and whether an operator's hold pins it);
        retained, so a new subscriber sees it."""
        payload = relay_payload(meter_id, state, output_state, ts, reason, hold=hold)
        self._put(self.topics.relay(meter_id), payload, retain=True)

    def command(
        self,
        *,
        command_id: str | int,
        meter_id: str,
        action: Action | str,
        status: CommandStatus | str,
        attempt: int,
        ts: datetime,
        event_id: str | None = None,
        error: str | None = None,
        source: str | None = None,
        state: str | None = None,
        detail: str | None = None,
    ) -> None:
        """One step of a relay command's lifecycle."""
        payload = command_payload(
            command_id=command_id,
            meter_id=meter_id,
            action=action,
            status=status,
            attempt=attempt,
            ts=ts,
            event_id=event_id,
            error=error,
            source=source,
            state=state,
            detail=detail,
        )
        self._put(self.topics.commands(meter_id), payload)
        metrics.RELAY_COMMANDS.labels(action=str(action), status=str(status)).inc()

    def notification(
        self,
        kind: NotificationType | str,
        meter_id: str,
        ts: datetime,
        *,
        balance: Decimal | None = None,
        currency: str | None = None,
        warning_threshold: Decimal | None = None,
        event_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """A customer notification, for the SMS gateway (`extra`: a policy's own fields)."""
        payload = notification_payload(
            kind,
            meter_id,
            ts,
            balance=balance,
            currency=currency,
            warning_threshold=warning_threshold,
            event_id=event_id,
            extra=extra,
        )
        self._put(self.topics.notifications(meter_id), payload)

    def alarm(
        self,
        kind: str,
        ts: datetime,
        *,
        meter_id: str | None = None,
        detail: str | Mapping[str, Any] | None = None,
    ) -> None:
        payload = alarm_payload(kind, ts, meter_id=meter_id, detail=detail)
        self._put(self.topics.alarms, payload)

    def bad_event(
        self,
        ts: datetime,
        *,
        reason: str,
        meter_id: str | None = None,
        event_id: str | None = None,
    ) -> None:
        """The alarm for a refused balance event; safe for any (even hostile) meter id."""
        payload = bad_event_alarm(ts, reason=reason, meter_id=meter_id, event_id=event_id)
        self._put(self.topics.alarms, payload)

    def response(
        self,
        payload: Mapping[str, Any],
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> bool:
        """The answer to an on-demand request, on ``responses/{request_id}`` and on the MQTT 5
        response topic the requester set (with its correlation data). False when it could go
        nowhere (no usable request id, no usable response topic): the caller alarms instead."""
        sent = False
        request_id = payload.get("request_id")
        if isinstance(request_id, str) and is_valid_request_id(request_id):
            self._put(self.topics.response(request_id), payload)
            sent = True
        if response_topic is not None:
            try:
                self._put(response_topic, payload, correlation_data=correlation_data)
                sent = True
            except ValueError:  # a wildcard or an empty topic: not one to publish to
                pass
        return sent

    def _put(
        self,
        topic: str,
        payload: Mapping[str, Any],
        *,
        retain: bool = False,
        droppable: bool = False,
        correlation_data: bytes | None = None,
    ) -> None:
        message_id = str(uuid.uuid4())
        body = {"message_id": message_id, "schema_version": SCHEMA_VERSION, **payload}
        message = OutboxMessage(
            topic,
            encode_payload(body),
            1,
            retain,
            droppable,
            message_id=message_id,
            correlation_data=correlation_data,
        )
        self.outbox.put(message)
