"""Load limiting instead of switching off ([prepaid] arrears_action = "limit"): a meter in
arrears gets its Limiter's threshold_normal set to `limit_w`, and on payment the threshold it
had before, each confirmed by reading the attribute back.

Durable like relay commands: the wish is on the meter row (written by the balance decision
in the event's transaction), this worker gets the meter there at command priority (before
polls), retries with backoff whatever went wrong, and announces each step on the commands
topic (action "limit" / "restore") and the customer's notification (load_limited /
load_restored) in the transaction that records the read-back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cosem_objects.classes import Limiter, Obises
from cosem_objects.data import Data
from headend import domain
from headend.meters.access import MeterAccess
from headend.meters.backoff import backoff_delay
from headend.meters.line_locks import COMMAND
from headend.mqtt.notifier import Notifier
from headend.observability.logs import get_logger
from headend.storage import Repository
from headend.storage.limits import LimitDue

__all__ = ["LimitWorker"]

log = get_logger(__name__)

NO_LIMIT_W = 0xFFFFFFFF  # restoring a meter we never saw unlimited: the largest threshold


def _now() -> datetime:
    return datetime.now(UTC)


class LimitWorker:
    def __init__(
        self,
        repository: Repository,
        access: MeterAccess,
        notifier: Notifier,
        *,
        limit_w: float,
        every_s: float = 1.0,
        retry_base_s: float = 5.0,
        retry_max_s: float = 300.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.repository = repository
        self.access = access
        self.notifier = notifier
        self.limit_w = int(limit_w)
        self.every_s = every_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"LimitWorker(limit_w={self.limit_w})"

    async def run(self) -> None:
        while True:
            try:
                due = await self.repository.limits_due(self._clock())
                for item in due:
                    await self._attempt(item)
            except Exception:
                log.exception("load limiting round failed")
            await asyncio.sleep(self.every_s)

    async def _attempt(self, item: LimitDue) -> None:
        action = domain.LIMIT if item.wanted else domain.RESTORE
        command_id = str(uuid.uuid4())
        attempt = item.attempts + 1
        try:
            record = await self.access.record(item.meter_id)
            if record is None:
                raise LookupError("meter not in the inventory")
            async with self.access.session(record, COMMAND) as session:
                current = int(
                    (
                        await session.get(
                            Limiter.CLASS_ID, Obises.LIMITER, Limiter.THRESHOLD_NORMAL
                        )
                    ).value
                )
                normal = item.normal_w
                if item.wanted:
                    if normal is None and current != self.limit_w:
                        normal = float(current)
                    target = self.limit_w
                else:
                    target = int(normal) if normal is not None else NO_LIMIT_W
                if current != target:
                    await session.set(
                        Limiter.CLASS_ID,
                        Obises.LIMITER,
                        Limiter.THRESHOLD_NORMAL,
                        Data.double_long_unsigned(target),
                    )
                back = int(
                    (
                        await session.get(
                            Limiter.CLASS_ID, Obises.LIMITER, Limiter.THRESHOLD_NORMAL
                        )
                    ).value
                )
            if back != target:
                raise RuntimeError(f"threshold read back {back} W, {target} W was set")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = backoff_delay(attempt, self.retry_base_s, self.retry_max_s)
            error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "load %s for %s failed (attempt %d): %s", action, item.meter_id, attempt, error
            )
            async with self.repository.db.transaction():
                await self.repository.record_limit(
                    item.meter_id,
                    error=error,
                    next_at=self._clock() + timedelta(seconds=delay),
                    attempts=attempt,
                )
                self._publish(command_id, item.meter_id, action, domain.FAILED, attempt, error)
            return
        now = self._clock()
        async with self.repository.db.transaction():
            await self.repository.record_limit(
                item.meter_id,
                state=domain.LIMITED if item.wanted else domain.NOT_LIMITED,
                normal_w=normal,
            )
            self._publish(command_id, item.meter_id, action, domain.CONFIRMED, attempt, None)
            self.notifier.notification(
                domain.LOAD_LIMITED if item.wanted else domain.LOAD_RESTORED,
                item.meter_id,
                now,
                extra={"limit_w": target if item.wanted else None},
            )
        log.info("load %s confirmed for %s: threshold %d W", action, item.meter_id, target)

    def _publish(
        self,
        command_id: str,
        meter_id: str,
        action: str,
        status: str,
        attempt: int,
        error: str | None,
    ) -> None:
        self.notifier.command(
            command_id=command_id,
            meter_id=meter_id,
            action=action,
            status=status,
            attempt=attempt,
            ts=self._clock(),
            error=error,
        )
