"""The collection loop: pops due meters from the Scheduler and polls them, at most
`concurrency` sessions at once, each under its line lock (POLL priority, so relay commands
waiting for the same line go first). A meter that fails repeatedly raises one
`meter_unreachable` alarm per outage, cleared by its next good poll."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from cosem_objects.errors import ProtocolError
from drivers.dlms_errors import DlmsError
from headend.cluster.ownership import LeaseLost
from headend.collection.poller import Poller, PollReport
from headend.collection.scheduler import PollJob, Scheduler
from headend.meters.access import MeterAccess
from headend.meters.inbound_links import MeterNotConnected
from headend.meters.line_locks import POLL, RelayPressure
from headend.mqtt.notifier import Notifier
from headend.observability import metrics
from headend.observability.logs import get_logger
from headend.relay.messages import publish_alarm
from headend.storage import Repository

__all__ = ["CollectionService"]

log = get_logger(__name__)


# Poll concurrency is divided by this while relay work is in progress.
RELAY_PRESSURE_DIVISOR = 20


class CollectionService:
    def __init__(
        self,
        access: MeterAccess,
        poller: Poller,
        scheduler: Scheduler,
        repository: Repository,
        notifier: Notifier | None,
        *,
        concurrency: int = 1000,
        session_budget_s: float = 300.0,
        refresh_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        pressure: RelayPressure | None = None,
    ) -> None:
        self.access = access
        self.pressure = pressure or RelayPressure()
        self.poller = poller
        self.scheduler = scheduler
        self.repository = repository
        self.notifier = notifier
        self.concurrency = max(1, concurrency)
        self.session_budget_s = session_budget_s
        self.refresh_s = refresh_s
        self._clock = clock
        self._running = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._refresh_soon = False
        self.polls_ok = 0
        self.polls_failed = 0
        self.last_reports: dict[str, PollReport] = {}
        self.serving = False  # the scheduler loop is running (/readyz asks)
        # Inbound meters whose poll came due while they were not connected: polled when
        # they next connect (poll_now), not counted as failures meanwhile.
        self.waiting_inbound: set[str] = set()

    def __repr__(self) -> str:
        return f"CollectionService(meters={len(self.scheduler)}, running={self._running})"

    @property
    def running(self) -> int:
        return self._running

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def ownership_changed(self) -> None:
        """A cluster member took or lost leases: re-read which meters are ours at once."""
        self._refresh_soon = True
        self._wake.set()

    async def refresh(self) -> None:
        """Bring the schedule in line with the inventory (in a cluster: this member's part)."""
        records = await self.access.refresh()
        now = self._clock()
        owns = self.access.ownership.owns
        wanted = {r.meter_id for r in records if owns(r.meter_id) is not None}
        for meter_id in wanted:
            self.scheduler.add(meter_id, now)
        for meter_id in [m for m in self.scheduler.meter_ids() if m not in wanted]:
            self.scheduler.remove(meter_id)

    async def run(self) -> None:
        await self.refresh()
        next_refresh = self._clock() + self.refresh_s
        async with asyncio.TaskGroup() as tg:
            self.serving = True
            try:
                while not self._stopping:
                    now = self._clock()
                    if now >= next_refresh or self._refresh_soon:
                        self._refresh_soon = False
                        with contextlib.suppress(Exception):
                            await self.refresh()
                        next_refresh = now + self.refresh_s
                    # Relay work first: while it runs, polls start only at a trickle.
                    limit = self.concurrency
                    if self.pressure.active:
                        limit = max(1, self.concurrency // RELAY_PRESSURE_DIVISOR)
                    free = limit - self._running
                    if free > 0:
                        for job in self.scheduler.pop_due(now, free):
                            self._running += 1
                            tg.create_task(self._poll(job), name=f"poll:{job.meter_id}")
                    due = self.scheduler.next_due()
                    wait = next_refresh - now
                    if due is not None and self._running < limit:
                        wait = min(wait, due - now)
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, wait)):
                            await self._wake.wait()
            finally:
                self._stopping = True
                self.serving = False

    async def poll_now(self, meter_id: str) -> bool:
        """An inbound meter connected: poll it now if a poll is due or came due while it was
        away. Returns whether it was polled."""
        job = self.scheduler.take(
            meter_id, self._clock(), even_if_not_due=meter_id in self.waiting_inbound
        )
        if job is None:
            return False
        self.waiting_inbound.discard(meter_id)
        self._running += 1
        await self._poll(job)
        return True

    async def _poll(self, job: PollJob) -> None:
        structlog.contextvars.bind_contextvars(meter_id=job.meter_id)  # this task's lines
        ok = False
        error = ""
        lost = False
        try:
            record = await self.access.record(job.meter_id)
            if record is None:
                self.scheduler.remove(job.meter_id)
                return
            if record.transport == "inbound" and not self.access.inbound.connected(job.meter_id):
                self.waiting_inbound.add(job.meter_id)
                self.scheduler.finished(job, self._clock(), True)
                self.access.inbound.request(job.meter_id)  # its call, if open, wakes for it
                return
            async with asyncio.timeout(self.session_budget_s):
                async with self.access.session(record, POLL) as session:
                    report = await self.poller.poll(session, job.meter_id, job)
            self.last_reports[job.meter_id] = report
            ok = True
        except MeterNotConnected:
            self.waiting_inbound.add(job.meter_id)  # it went away meanwhile: next time
            self.scheduler.finished(job, self._clock(), True)
            return
        except LeaseLost as exc:  # another member has the meter now: not a failure
            log.info("poll of %s abandoned: %s", job.meter_id, exc)
            self.scheduler.remove(job.meter_id)
            lost = True
        except (OSError, TimeoutError, ProtocolError, DlmsError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            metrics.POLL_FAILURES.labels(reason=metrics.failure_reason(exc)).inc()
            log.info("poll of %s failed: %s", job.meter_id, error)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            metrics.POLL_FAILURES.labels(reason=metrics.failure_reason(exc)).inc()
            log.exception("poll of %s failed", job.meter_id)
        finally:
            self._running -= 1
            self._wake.set()
        if not lost:
            await self._finished(job, ok, error)

    async def _finished(self, job: PollJob, ok: bool, error: str) -> None:
        entry = self.scheduler.get(job.meter_id)
        was_alarmed = entry is not None and entry.unreachable_alarmed
        failures = entry.failures + 1 if entry is not None else 0
        became_unreachable = self.scheduler.finished(job, self._clock(), ok)
        metrics.POLLS.labels(outcome="ok" if ok else "failed").inc()
        if ok:
            self.polls_ok += 1
        else:
            self.polls_failed += 1
        if not (was_alarmed if ok else became_unreachable):
            return  # nothing to record: no write transaction for an ordinary poll
        try:
            # The alarm and its message commit together (storage/unit.py).
            async with self.repository.db.transaction():
                if ok:
                    await self.repository.clear_alarms("meter_unreachable", job.meter_id)
                    return
                alarm = await self.repository.raise_alarm(
                    "meter_unreachable",
                    job.meter_id,
                    f"{failures} polls failed in a row; last: {error}",
                )
                if self.notifier is not None:
                    publish_alarm(self.notifier, alarm)
        except Exception:
            log.exception("recording the poll outcome of %s failed", job.meter_id)
