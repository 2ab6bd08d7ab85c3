"""What the relay controller watches besides the commands it runs, both against
`relay.overdue_after_s`: a command whose episode is not confirmed in time (relay_command_overdue;
the command is escalated and its retries go on), and a meter its customer leaves in
ready_for_reconnection (awaiting_customer, and the ready_for_reconnection notification again,
once per episode). Both are found in the database, so they survive restarts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from headend import domain
from headend.mqtt.notifier import Notifier
from headend.observability.logs import get_logger
from headend.relay.messages import publish_alarm, publish_command
from headend.storage import CommandInfo, Repository
from headend.storage.unit import transactional

__all__ = ["OverdueWatch"]

log = get_logger(__name__)

AWAITING_SCAN_S = 30.0
"""At most this long between looks for meters waiting for their customer (a scan of the
meters, not of the few active commands): a fraction of the limit, which is in minutes."""


class OverdueWatch:
    def __init__(
        self,
        repository: Repository,
        notifier: Notifier,
        overdue_after_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.repository = repository
        self.notifier = notifier
        self.overdue_after = timedelta(seconds=overdue_after_s)
        self._clock = clock
        self._awaiting_every = timedelta(seconds=min(AWAITING_SCAN_S, overdue_after_s / 4))
        self._next_awaiting: datetime | None = None

    def __repr__(self) -> str:
        return f"OverdueWatch(overdue_after={self.overdue_after})"

    async def check(self) -> None:
        now = self._clock()
        before = now - self.overdue_after
        for command in await self.repository.overdue_commands(before):
            await self._escalate(command)
        if self._next_awaiting is None or now >= self._next_awaiting:
            self._next_awaiting = now + self._awaiting_every
            await self._awaiting(before)

    @transactional
    async def _escalate(self, command: CommandInfo) -> None:
        started = command.episode_started_at or command.created_at
        age = (self._clock() - started).total_seconds()
        detail = (
            f"{command.action} not confirmed after {age:.0f}s "
            f"({command.attempt} attempt(s)); still trying"
            + (f"; last error: {command.last_error}" if command.last_error else "")
        )
        result = await self.repository.escalate_command(command.command_id, detail)
        if result is None:
            return
        escalated, alarm = result
        log.warning("relay command %s for %s overdue", command.command_id, command.meter_id)
        publish_command(
            self.notifier,
            escalated,
            domain.ESCALATED,
            self._clock(),
            error=command.last_error or detail,
        )
        publish_alarm(self.notifier, alarm)

    @transactional
    async def _awaiting(self, ready_before: datetime) -> None:
        for waiting in await self.repository.raise_awaiting_customers(ready_before):
            alarm = waiting.alarm
            meter_id = alarm.meter_id
            assert meter_id is not None
            log.warning("meter %s: %s", meter_id, alarm.detail)
            publish_alarm(self.notifier, alarm)
            self.notifier.notification(
                domain.NOTIFY_READY_FOR_RECONNECTION,
                meter_id,
                alarm.ts,
                balance=waiting.balance,
                currency=waiting.currency,
            )
