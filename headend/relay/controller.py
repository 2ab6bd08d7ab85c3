"""The durable relay command executor.

Commands come from balance events (relay/intake.py hands each new one to `submit`), from
start-up reconciliation, and from the database: operators in another process
(relay/operator.py), polls that found a relay on while it should be off (relay/drift.py) and
retries, which the scan picks up. They live in the database, so a restart resumes every
unfinished one. Their statuses move only as relay/lifecycle.py allows; whatever goes wrong in
an attempt ends in the command's backoff. The scan also runs the overdue watch
(relay/overdue.py).

Never the wrong way: right before a relay is operated the controller re-reads the command and
the state the meter should be in (the one an operator's hold pins, else the newest balance's);
a command that was superseded, or whose action no longer matches, is not executed. The relay
is read first (a meter already where it should be is not operated) and read back afterwards;
only the read-back confirms.

One worker task per meter with an active command (not one per meter), under the meter's line
lock at COMMAND priority, so commands go before waiting polls and never share a line."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from drivers.dlms_errors import ActionFailed, ServiceRejected
from drivers.session import DlmsSession, RelayStatus
from headend import domain
from headend.cluster.ownership import LeaseLost
from headend.meters.access import MeterAccess
from headend.meters.backoff import backoff_delay
from headend.meters.line_locks import COMMAND, RECONNECT, RelayPressure
from headend.mqtt.notifier import Notifier
from headend.observability.logs import get_logger
from headend.relay import lifecycle, rules
from headend.relay.attempts import (
    EXPECTED_ERRORS,
    CommandSuperseded,
    ControllerSettings,
    Refused,
    describe_error,
    status_or_none,
)
from headend.relay.messages import publish_alarm, publish_command, publish_relay
from headend.relay.overdue import OverdueWatch
from headend.relay.turns import Turns, grouped, priority_of
from headend.storage import CommandInfo, Repository
from headend.storage.group_commit import GroupCommit

__all__ = ["ControllerSettings", "RelayController"]

log = get_logger(__name__)

_CLEARED_ON_CONFIRM = (
    domain.RELAY_STUCK,
    domain.RELAY_COMMAND_FAILED,
    domain.RELAY_COMMAND_OVERDUE,
    domain.RELAY_STATE_MISMATCH,
)


CHECKS_AT_ONCE = 4
"""Still-wanted reads in flight at once (the pool has 5 connections, 15 with overflow)."""


def _now() -> datetime:
    return datetime.now(UTC)


class RelayController:
    def __init__(
        self,
        repository: Repository,
        access: MeterAccess,
        notifier: Notifier,
        settings: ControllerSettings | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = _now,
        pressure: RelayPressure | None = None,
    ) -> None:
        self.repository = repository
        self.pressure = pressure or RelayPressure()
        self.access = access
        self.notifier = notifier
        self.settings = settings or ControllerSettings()
        self._rng = rng or random.Random()
        self._clock = clock
        self._wake = asyncio.Event()
        self._workers: dict[str, asyncio.Task[None]] = {}
        # Meters whose worker must look for another command before it stops (a balance
        # event created one while it worked); everything else is found by the scan.
        self._recheck: set[str] = set()
        self._tg: asyncio.TaskGroup | None = None
        # Attempts in flight, reconnects first (relay/turns.py); their writes group-committed.
        self.turns = Turns(self.settings.max_concurrent)
        self.group = GroupCommit(repository)
        # Checks read on their own, a few at a time: a thousand sessions asking at once would
        # queue for the relay path's connection pool in front of the balance batches.
        self._checks = Turns(CHECKS_AT_ONCE)
        self._stopping = False
        self.overdue = OverdueWatch(repository, notifier, self.settings.overdue_after_s, clock)

    def __repr__(self) -> str:
        return f"RelayController(workers={len(self._workers)})"

    # -- the service -------------------------------------------------------------------------
    async def run(self) -> None:
        """Reconcile, then execute due commands until cancelled (or `stop()`)."""
        # Each command and its 'queued' message commit together, meter by meter.
        created = await self.repository.reconcile_commands(
            on_created=lambda command: self._publish_command(command, domain.QUEUED)
        )
        if created:
            log.info("start-up: %d meter(s) not in their desired relay state", len(created))
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            writer = tg.create_task(self.group.serve(), name="relay-group-commit")
            try:
                while not self._stopping:
                    try:
                        await self._scan()
                    except Exception:
                        log.exception("relay command scan failed; retrying")
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.settings.scan_interval_s):
                            await self._wake.wait()
            finally:
                self._tg = None
                for task in self._workers.values():
                    task.cancel()
                writer.cancel()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _scan(self) -> None:
        now = self._clock()
        # A meter with a worker is skipped: the worker owns its command until it stops.
        for meter_id in await self.repository.due_meter_ids(now):
            if meter_id not in self._workers:
                self._dispatch(meter_id)
        await self.overdue.check()

    async def work_now(self, meter_id: str) -> None:
        """The meter can be reached now (an inbound meter connected to the listener): its
        active command is attempted at once, whatever its backoff. A worker already on it
        is waited for instead (its attempt reaches the meter the same way)."""
        running = self._workers.get(meter_id)
        if running is not None:
            await asyncio.wait([running], timeout=self.settings.session_budget_s)
            return
        pending = await self.repository.pending_commands(meter_id=meter_id)
        if pending:
            with self.pressure.busy():
                await self._attempt(pending[-1])

    def submit(self, command: CommandInfo) -> None:
        """A command just created (by a balance event, or a poll that found the relay on
        while it should be off): announce it and start on it at once, without waiting for
        the next scan."""
        self.announce(command)
        self.execute(command)

    def announce(self, command: CommandInfo) -> None:
        """Its 'queued' message (in the caller's unit of work: it commits with the command)."""
        self._publish_command(command, domain.QUEUED)

    def execute(self, command: CommandInfo) -> None:
        """Start on a command once it is committed, without waiting for the next scan."""
        if command.next_attempt_at is not None and command.next_attempt_at > self._clock():
            return  # put off (grace, quiet hours): the scan starts it when it is due
        self._dispatch(command.meter_id, command)

    def wake(self, meter_id: str) -> None:
        """Another member created a command for this meter (cluster/notify.py)."""
        self._dispatch(meter_id)

    def _dispatch(self, meter_id: str, command: CommandInfo | None = None) -> None:
        """Start the meter's worker, handing it `command` (just created, so it need not be
        looked up); a running worker is told to look again once its attempt is over."""
        if meter_id in self._workers:
            self._recheck.add(meter_id)
            self._wake.set()
            return
        if self._tg is None or self._stopping:
            self._wake.set()
            return
        if self.access.ownership.owns(meter_id) is None:
            return  # in a cluster, another member holds the meter (woken by its NOTIFY)
        task = self._tg.create_task(self._worker(meter_id, command), name=f"relay:{meter_id}")
        self._workers[meter_id] = task
        task.add_done_callback(lambda t: self._forget(meter_id, t))

    def _forget(self, meter_id: str, task: asyncio.Task[None] | None) -> None:
        if self._workers.get(meter_id) is task:
            del self._workers[meter_id]
            self._recheck.discard(meter_id)

    # -- one meter ---------------------------------------------------------------------------
    async def _worker(self, meter_id: str, command: CommandInfo | None = None) -> None:
        """Work the meter's due command; look for another only when a balance event asked
        for one meanwhile (retries, operator commands and the rest are the scan's)."""
        structlog.contextvars.bind_contextvars(meter_id=meter_id)  # this worker task's lines
        tried: set[tuple[str, int]] = set()
        try:
            while not self._stopping:
                if command is None:
                    due = await self.repository.pending_commands(
                        meter_id=meter_id, due_before=self._clock()
                    )
                    if not due:
                        return
                    command = due[-1]
                if (command.command_id, command.attempt) in tried:
                    return  # no progress (e.g. nothing to do now): leave it to the scan
                tried.add((command.command_id, command.attempt))
                self._recheck.discard(meter_id)
                with self.pressure.busy():
                    async with self.turns.turn(priority_of(command.action)):
                        await self._attempt(command)
                if meter_id not in self._recheck:
                    return
                command = None
        except asyncio.CancelledError:
            raise
        except Exception:
            # A database hiccup must not take the daemon down; the scan retries the meter.
            log.exception("relay worker for %s failed", meter_id)
        finally:
            # Gone from the map in the same step as the last check of _recheck: a balance
            # event can never ask a worker that has already decided to stop.
            self._forget(meter_id, asyncio.current_task())

    async def _attempt(self, command: CommandInfo) -> None:
        """One attempt. Whatever goes wrong in it (the meter, the line, a key that no longer
        decrypts, an exhausted invocation counter, the database, a meter answering something
        unexpected) ends the same way: the command fails and waits for its backoff, so no
        error can turn into a retry on every scan."""
        attempt = command.attempt + 1
        ids = {"command_id": command.command_id, "event_id": command.event_id}
        structlog.contextvars.bind_contextvars(**ids)  # this worker's lines, from here on
        try:
            await self._try(command, attempt)
        except asyncio.CancelledError:
            raise
        except LeaseLost as exc:  # the meter's new holder takes the command from here
            log.info("relay %s for %s abandoned: %s", command.action, command.meter_id, exc)
        except Exception as exc:
            if not isinstance(exc, EXPECTED_ERRORS):
                log.warning(
                    "relay %s for %s: unexpected error in attempt %d",
                    command.action,
                    command.meter_id,
                    attempt,
                    exc_info=exc,
                )
            with contextlib.suppress(LeaseLost):
                await self._failed(command, attempt, describe_error(exc))

    async def _try(self, command: CommandInfo, attempt: int) -> None:
        if self.access.ownership.enter(command.meter_id) is None:
            return  # not (or no longer) this member's meter: its holder runs it
        record = await self.access.record(command.meter_id)
        if record is None:
            log.warning(
                "command %s: meter %s not in the inventory", command.command_id, command.meter_id
            )
            await self.repository.update_command(
                command.command_id,
                lifecycle.FAIL,
                next_attempt_at=self._clock()
                + timedelta(seconds=self.settings.retry_max_backoff_s),
                last_error="meter not in the inventory",
            )
            return
        # Whether it is still wanted is checked right before the relay is operated (a command
        # superseded meanwhile is not sent: the SEND update admits only active statuses).
        if record.transport == "inbound" and not self.access.inbound.connected(record.meter_id):
            # Reachable only over its own call: the listener runs the command (work_now) as
            # soon as the meter calls, or now if its call is open.
            self.access.inbound.request(record.meter_id)
            return
        if not await self._sent(command, attempt):
            return
        try:
            priority = RECONNECT if command.action == domain.RECONNECT else COMMAND
            async with asyncio.timeout(self.settings.session_budget_s):
                async with self.access.session(record, priority) as session:
                    status, verdict, operated = await self._operate(session, command)
        except CommandSuperseded:
            return
        except Refused as refused:
            await self._refused(command, attempt, refused)
            return
        await self._confirmed(command, attempt, status, verdict, operated)

    @grouped
    async def _sent(self, command: CommandInfo, attempt: int) -> bool:
        await self.access.ownership.fence()
        sent = await self.repository.update_command(
            command.command_id,
            lifecycle.SEND,
            attempt=attempt,
            # Due again only after this attempt's backoff, should it never report back (the
            # process dies, or recording its failure fails too).
            next_attempt_at=self._clock() + timedelta(seconds=self._backoff(attempt)),
        )
        if sent is None:
            return False
        self._publish_command(sent, domain.SENT)
        return True

    async def _still_wanted(self, command: CommandInfo) -> bool:
        """The command is active and its action is what the meter's desired state asks.
        (A read of its own, never waiting for the group's writer while a meter session is
        open; only a command given up takes a write transaction, with its message.)"""
        async with self._checks.turn(priority_of(command.action)):
            current, meter_found, wanted = await self.repository.command_and_desired(
                command.command_id
            )
        if current is None or not current.active or not meter_found:
            return False
        if wanted is not None and rules.action_for(wanted) != command.action:
            async with self.repository.db.transaction():
                superseded = await self.repository.update_command(
                    command.command_id,
                    lifecycle.SUPERSEDE,
                    last_error=f"desired state is now {wanted}",
                )
                if superseded is not None:
                    why = {"detail": f"desired state is now {wanted}"}
                    self._publish_command(superseded, domain.SUPERSEDED, extra=why)
            return False
        return True

    async def _operate(
        self, session: DlmsSession, command: CommandInfo
    ) -> tuple[RelayStatus, rules.Verdict, bool]:
        """(state read back, what it means, whether the relay was operated)."""
        before = await session.relay_status()
        # The one check that the command is still wanted (the only one since it was sent),
        # right before it is confirmed as already there or the relay is touched.
        if not await self._still_wanted(command):
            raise CommandSuperseded
        verdict = rules.judge_readback(command.action, before.output_state, before.state)
        if verdict.done:
            return before, verdict, False  # already there: nothing to operate
        await self.access.ownership.fence()  # still this member's meter, right before the ACTION
        try:
            if command.action == domain.DISCONNECT:
                after = await session.disconnect()
            else:
                after = await session.reconnect()
        except (ActionFailed, ServiceRejected) as exc:
            status = await status_or_none(session)
            raise Refused(
                domain.RELAY_COMMAND_FAILED,
                f"meter refused {command.action} (control_mode {before.control_mode}): {exc}",
                status,
            ) from exc
        verdict = rules.judge_readback(command.action, after.output_state, after.state)
        if not verdict.done:
            raise Refused(domain.RELAY_STUCK, verdict.detail, after)
        return after, verdict, True

    @grouped
    async def _confirmed(
        self,
        command: CommandInfo,
        attempt: int,
        status: RelayStatus,
        verdict: rules.Verdict,
        operated: bool,
    ) -> None:
        await self.access.ownership.fence()
        now = self._clock()
        reason = command.reason or command.source
        # One transaction: confirm, record the read-back, clear the meter's relay alarms.
        confirmation = await self.repository.confirm_command(
            command.command_id,
            state=status.state,
            output_state=status.output_state,
            control_state=status.state,
            reason=reason,
            ts=now,
            clear_alarm_types=_CLEARED_ON_CONFIRM,
        )
        held = confirmation is not None and confirmation.hold
        publish_relay(self.notifier, command.meter_id, status, now, reason, held)
        if confirmation is None or confirmation.command is None:
            return  # superseded meanwhile: the newer command takes it from here
        done = confirmation.command
        previous = confirmation.previous_state
        # Tell the customer about a change, not about a meter that already was where it
        # should be (an opening balance, a restart); a change the head-end made but had not
        # recorded before a crash still counts. Arrears are news whatever the relay did: a
        # meter found already off (on site, or first read back off) is off for arrears now.
        changed = (
            operated
            or (previous is not None and previous != status.state)
            or command.action == domain.DISCONNECT
        )
        extra: dict[str, Any] = {"state": status.state}
        if verdict.outcome == rules.AWAITING_CUSTOMER:
            extra["detail"] = (
                "confirmed as far as the meter allows: ready_for_reconnection, "
                "the customer must press the button"
            )
        self._publish_command(done, domain.CONFIRMED, attempt=attempt, extra=extra)
        kind = rules.notification_for(
            command.action, status.state, operator=command.source == "operator"
        )
        if kind is not None and changed:
            self.notifier.notification(
                kind,
                command.meter_id,
                now,
                balance=confirmation.last_balance,
                currency=confirmation.last_balance_currency,
                event_id=command.event_id,
            )
        log.info(
            "relay %s confirmed for %s: %s (attempt %d)",
            command.action,
            command.meter_id,
            status.state,
            attempt,
        )

    @grouped
    async def _refused(self, command: CommandInfo, attempt: int, refused: Refused) -> None:
        await self.access.ownership.fence()
        now = self._clock()
        if refused.status is not None:
            held = await self.repository.record_relay_state(
                command.meter_id,
                refused.status.state,
                refused.status.output_state,
                refused.status.state,
                reason=f"read back after failed {command.action}",
                ts=now,
                command_id=command.command_id,
            )
            why = f"{command.action} failed"
            publish_relay(self.notifier, command.meter_id, refused.status, now, why, held)
        alarm = await self.repository.raise_alarm(refused.alarm, command.meter_id, refused.detail)
        publish_alarm(self.notifier, alarm)
        log.warning("relay %s for %s failed: %s", command.action, command.meter_id, refused.detail)
        await self._failed(command, attempt, refused.detail)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(
            attempt, self.settings.retry_base_s, self.settings.retry_max_backoff_s, self._rng
        )

    @grouped
    async def _failed(self, command: CommandInfo, attempt: int, error: str) -> None:
        await self.access.ownership.fence()
        delay = self._backoff(attempt)
        updated = await self.repository.update_command(
            command.command_id,
            lifecycle.FAIL,
            attempt=attempt,  # an attempt that failed before it was sent counts too
            next_attempt_at=self._clock() + timedelta(seconds=delay),
            last_error=error,
        )
        if updated is not None:
            self._publish_command(updated, domain.FAILED, attempt=attempt, error=error)
        log.info(
            "relay %s for %s: attempt %d failed (%s); next in %.1fs",
            command.action,
            command.meter_id,
            attempt,
            error,
            delay,
        )

    def _publish_command(
        self,
        command: CommandInfo,
        status: str,
        *,
        attempt: int | None = None,
        error: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        publish_command(
            self.notifier, command, status, self._clock(), attempt=attempt, error=error, extra=extra
        )
