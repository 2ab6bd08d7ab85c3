"""A person hears about an outbox that does not drain.

The durable outbox never sheds a message, so a broker that is away for long, or a consumer
side that cannot keep up, shows as a growing table rather than as losses. Past `alarm_depth`
waiting messages the `outbox_overflow` alarm is raised (once; its own message waits in the
same queue, so it also reaches integrators once the broker is back); it clears when the
backlog is down to half of that."""

from __future__ import annotations

import asyncio

from headend import domain
from headend.mqtt.notifier import Notifier
from headend.observability.logs import get_logger
from headend.storage import Repository

__all__ = ["BacklogWatch"]

log = get_logger(__name__)


class BacklogWatch:
    def __init__(
        self,
        repository: Repository,
        notifier: Notifier,
        *,
        alarm_depth: int = 10_000,
        every_s: float = 5.0,
    ) -> None:
        self.repository = repository
        self.notifier = notifier
        self.alarm_depth = alarm_depth
        self.every_s = every_s
        self.depth = 0
        self.raised = False
        self._checked = False

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("outbox backlog check failed: %s", exc)
            await asyncio.sleep(self.every_s)

    async def check(self) -> None:
        self.depth, oldest = await self.repository.outbox.depth()
        if self.depth > self.alarm_depth:
            if self.raised:
                return
            # (An alarm standing from an earlier process dedupes to None here: not re-sent.)
            age = "" if oldest is None else f", the oldest since {oldest.isoformat()}"
            detail = f"{self.depth} messages wait for the broker{age}"
            async with self.repository.db.transaction():
                alarm = await self.repository.raise_alarm(domain.OUTBOX_OVERFLOW, None, detail)
                if alarm is not None:
                    self.notifier.alarm(alarm.type, alarm.ts, detail=alarm.detail)
            self.raised = True
            self._checked = True
            log.warning("outbox backlog: %s", detail)
        elif self.depth <= self.alarm_depth // 2:
            # The first round also clears an alarm left standing by an earlier process.
            if self.raised or not self._checked:
                await self.repository.clear_alarms(domain.OUTBOX_OVERFLOW)
            self.raised = False
        self._checked = True
