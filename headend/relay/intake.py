"""Balance events in: what one billing message does, from the bridge's hands to the database
and back out as messages.

The bridge hands over what the broker delivered as a batch (`handle_batch`) and acknowledges
each message once the batch has returned, so everything here happens before the PUBACK. A
batch is one transaction (group commit, issue 10): its meters' row locks are taken first, in
one statement in meter_id order (no deadlock with another batch or process), then the events
are applied in delivery order, so two events of one meter in a batch are judged as if they
had come one by one (the newest seq decides). An event that fails is taken out and the rest
is applied again in a new transaction (the failed one is the bridge's: redelivery, dead
letter); the commands the batch created go to the controller once it has committed. For each
event, what it means is
committed in one transaction (relay/decision.py decides, storage/balances.py applies)
together with the messages that decision calls for (published from the same Decision: nothing
is judged twice; written to the outbox in that transaction: storage/unit.py), and a command it
created goes straight to the controller rather than waiting for the next scan. A refused
payload (BadEvent) and a message the bridge set aside after repeated failures (DeadLetter) are
recorded with their bad_event alarm, so that they can be acknowledged too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog

from headend import domain
from headend.balance_event import BalanceEvent
from headend.config_prepaid import PrepaidConfig
from headend.meters.line_locks import RelayPressure
from headend.mqtt.batches import NOT_TRIED, BatchResult
from headend.mqtt.incoming import BadEvent, DeadLetter, storable_text
from headend.mqtt.notifier import Notifier
from headend.observability import metrics
from headend.observability.logs import get_logger
from headend.prepaid.consumption import UsageSummary
from headend.prepaid.forecast import NO_FORECAST, Forecast, running_out
from headend.prepaid.watch import estimate_now
from headend.relay import decision
from headend.relay.controller import RelayController
from headend.relay.messages import publish_alarm
from headend.storage import BalanceOutcome, CommandInfo, Repository
from headend.storage.db import BALANCE_LANE

__all__ = ["BalanceIntake"]

log = get_logger(__name__)

MAX_FALLOUTS = 3
"""Failed events taken out of one batch before the rest is left to redelivery (a database
that is away fails every event; it is not worth a transaction per event)."""

_FORECAST_OUTCOMES = (decision.APPLIED, decision.ZERO_NO_CHANGE)
"""Events that set a balance, and so a run-out forecast."""

Usage = tuple[UsageSummary | None, bool]
"""A meter's stored consumption model, and whether credit_running_out went out this episode."""

Message = BalanceEvent | BadEvent | DeadLetter


def _now() -> datetime:
    return datetime.now(UTC)


class BalanceIntake:
    def __init__(
        self,
        repository: Repository,
        notifier: Notifier,
        controller: RelayController,
        *,
        pressure: RelayPressure | None = None,
        clock: Callable[[], datetime] = _now,
        prepaid: PrepaidConfig | None = None,
    ) -> None:
        self.repository = repository
        self.prepaid = prepaid or PrepaidConfig()
        self.notifier = notifier
        self.controller = controller
        # Polls start at a trickle while balance events are being applied (shared with the
        # controller and the collection service).
        self.pressure = pressure or controller.pressure
        self._clock = clock
        self.events_handled = 0

    def __repr__(self) -> str:
        return f"BalanceIntake(events_handled={self.events_handled})"

    async def handle(self, event: Message, raw: bytes) -> None:
        """Commit what one event means (a batch of one); raises what it failed with."""
        (result,) = await self.handle_batch([(event, raw)])
        if isinstance(result, BaseException):
            raise result

    async def handle_batch(self, batch: Sequence[tuple[Message, bytes]]) -> list[BatchResult]:
        """Commit what the events mean, in one transaction; per event, None or the exception
        it failed with (nothing of it stored), or NOT_TRIED when the batch was given up."""
        results: list[BatchResult] = [None] * len(batch)
        pending = list(range(len(batch)))
        fallouts = 0
        together = True  # first try: the events of distinct known meters in a few statements
        with self.pressure.busy():
            while pending:
                created: list[CommandInfo] = []
                current: int | None = None
                joint = False
                try:
                    async with self.repository.db.transaction(lane=BALANCE_LANE):
                        known = await self.repository.lock_meters(
                            e.meter_id
                            for i in pending
                            if isinstance(e := batch[i][0], BalanceEvent)
                        )
                        alone = pending
                        if together:
                            joint = True
                            created, alone = await self._together(batch, pending, known)
                            joint = False
                        for index in alone:
                            current = index
                            command = await self._one(*batch[index], known)
                            if command is not None:
                                created.append(command)
                        current = None
                except Exception as exc:
                    if joint:  # which event failed is not known: one at a time now
                        log.info(
                            "balance batch of %d: applied one at a time (%s)", len(pending), exc
                        )
                        together = False
                        continue
                    if current is None or fallouts >= MAX_FALLOUTS:
                        # Not one event's fault (the lock, the commit), or too many: the
                        # first is failed, the rest handed back.
                        results[pending[0]] = exc
                        for index in pending[1:]:
                            results[index] = NOT_TRIED
                        return results
                    log.warning("balance event %d of a batch of %d failed", current, len(batch))
                    results[current] = exc
                    pending.remove(current)
                    fallouts += 1
                    continue
                self.events_handled += len(pending)
                for command in created:
                    self.controller.execute(command)
                return results
        return results

    async def _together(
        self, batch: Sequence[tuple[Message, bytes]], pending: list[int], known: set[str]
    ) -> tuple[list[CommandInfo], list[int]]:
        """The first event of each known meter, applied in a few statements; returns the
        commands created and the events left to apply one at a time (after these: a meter's
        later events, unknown meters, bad events and dead letters)."""
        chosen: list[int] = []
        alone: list[int] = []
        seen: set[str] = set()
        for index in pending:
            event = batch[index][0]
            if (
                isinstance(event, BalanceEvent)
                and event.meter_id in known
                and event.meter_id not in seen
            ):
                seen.add(event.meter_id)
                chosen.append(index)
            else:
                alone.append(index)
        if not chosen:
            return [], alone
        events = [e for i in chosen if isinstance(e := batch[i][0], BalanceEvent)]
        outcomes = await self.repository.apply_balance_batch(
            events, [storable_text(batch[i][1]) for i in chosen]
        )
        # The forecasts' inputs for every event that moves a balance, in one read.
        usages = await self.repository.usages_of(
            event.meter_id
            for event, outcome in zip(events, outcomes, strict=True)
            if outcome.decision.outcome in _FORECAST_OUTCOMES
        )
        created = []
        for event, outcome in zip(events, outcomes, strict=True):
            command = await self._judged(event, outcome, usages.get(event.meter_id))
            if command is not None:
                created.append(command)
        return created, alone

    async def _one(self, event: Message, raw: bytes, known: set[str]) -> CommandInfo | None:
        if isinstance(event, DeadLetter):
            await self._dead_letter(event, raw)
        elif isinstance(event, BadEvent):
            await self._bad_event(
                raw, event.reason, meter_id=event.meter_id, event_id=event.event_id
            )
        else:
            return await self._balance(event, raw, known)
        return None

    async def _balance(
        self, event: BalanceEvent, raw: bytes, known: set[str]
    ) -> CommandInfo | None:
        # In the batch's transaction; a meter not in the inventory is stored as a bad event
        # with its alarm in the same one (no separate lookup).
        outcome = await self.repository.apply_balance_event(
            event, raw=storable_text(raw), known=known
        )
        return await self._judged(event, outcome)

    async def _judged(
        self, event: BalanceEvent, outcome: BalanceOutcome, usage: Usage | None = None
    ) -> CommandInfo | None:
        """Alarms and messages for an applied event; the command to start after the commit.
        Its log lines carry the event's meter_id and event_id. `usage`: the meter's stored
        model and episode flag when the caller read them already (else read here)."""
        ids = {"meter_id": event.meter_id, "event_id": event.event_id}
        with structlog.contextvars.bound_contextvars(**ids):
            return await self._judged_event(event, outcome, usage)

    async def _judged_event(
        self, event: BalanceEvent, outcome: BalanceOutcome, usage: Usage | None
    ) -> CommandInfo | None:
        judged = outcome.decision
        metrics.count_balance_event(judged.outcome)
        alarm = outcome.alarm
        if alarm is not None and alarm.type == domain.BAD_EVENT:
            log.warning("bad balance event for %s: %s", event.meter_id, judged.detail)
            self.notifier.bad_event(
                alarm.ts,
                reason=judged.detail,
                meter_id=event.meter_id,
                event_id=event.event_id,
            )
            return None
        if alarm is not None:  # stale_event, conflicting_event: stored, not applied
            log.warning("%s for %s: %s", alarm.type, event.meter_id, judged.detail)
            publish_alarm(self.notifier, alarm)
        if judged.outcome == decision.REJECTED:  # e.g. a balance that is not a finite number
            alarm = await self.repository.raise_alarm(
                domain.BAD_EVENT, event.meter_id, judged.detail, dedupe=False
            )
            publish_alarm(self.notifier, alarm)
            return None
        estimate = None
        if judged.outcome in _FORECAST_OUTCOMES:
            estimate = await self._forecast(event, usage)
        return self._publish(event, outcome, estimate)

    async def _forecast(self, event: BalanceEvent, stored: Usage | None) -> Forecast:
        """The run-out forecast at this balance (prepaid/forecast.py, from the meter's stored
        consumption model), and credit_running_out once per episode: the episode ends when a
        payment lifts the forecast above the limit or the balance is no longer positive."""
        if event.price is not None:
            await self.repository.mark_prepaid(event.meter_id, last_price=event.price)
        usage, notified = stored or await self.repository.usage_of(event.meter_id)
        price = event.price or self.prepaid.price_per_kwh
        now = self._clock()
        estimate = estimate_now(usage, event.balance, event.ts, price, now, self.prepaid.timezone)
        short = event.balance > 0 and running_out(estimate, self.prepaid.warn_days_ahead)
        if short and not notified:
            await self.repository.mark_prepaid(event.meter_id, running_out_notified=True)
            self.notifier.notification(
                domain.CREDIT_RUNNING_OUT,
                event.meter_id,
                now,
                balance=event.balance,
                currency=event.currency,
                event_id=event.event_id,
                extra=estimate.payload(),
            )
        elif notified and not short:
            await self.repository.mark_prepaid(event.meter_id, running_out_notified=False)
        return estimate

    async def _bad_event(
        self, raw: bytes, reason: str, *, meter_id: str | None, event_id: str | None
    ) -> None:
        _, alarm = await self.repository.record_balance_event(
            raw=storable_text(raw), detail=reason, meter_id=meter_id, event_id=event_id, seq=None
        )
        metrics.count_balance_event(decision.REJECTED)
        log.warning("bad balance event for %s: %s", meter_id, reason)
        self.notifier.bad_event(
            alarm.ts if alarm else self._clock(),
            reason=reason,
            meter_id=meter_id,
            event_id=event_id,
        )

    async def _dead_letter(self, letter: DeadLetter, raw: bytes) -> None:
        """A message that failed again and again: kept (as a storable minimum: no content
        columns but seq, which could be what failed) with the error, alarmed as a bad_event
        that says it was dead-lettered; the bridge then acknowledges it."""
        reason = f"dead-lettered after {letter.tries} failed tries: {letter.error}"
        _, alarm = await self.repository.record_balance_event(
            raw=storable_text(raw),
            outcome=decision.DEAD_LETTER,
            detail=reason,
            meter_id=letter.meter_id,
            event_id=letter.event_id,
            seq=letter.seq,
        )
        metrics.count_balance_event(decision.DEAD_LETTER)
        log.error("balance message for %s %s", letter.meter_id, reason)
        self.notifier.bad_event(
            alarm.ts if alarm else self._clock(),
            reason=reason,
            meter_id=letter.meter_id,
            event_id=letter.event_id,
        )

    def _publish(
        self, event: BalanceEvent, outcome: BalanceOutcome, estimate: Forecast | None = None
    ) -> CommandInfo | None:
        """Publish what the stored decision says; nothing here judges the event again.
        Returns the command to start once the batch has committed."""
        now = self._clock()
        judged = outcome.decision
        for old in judged.superseded:
            # Superseded is not a fault: its own status, and why (not an error).
            self.notifier.command(
                command_id=old.command_id,
                meter_id=event.meter_id,
                action=old.action,
                status=old.status,
                attempt=0,
                ts=now,
                event_id=event.event_id,
                detail=old.reason,
            )
        if judged.low_balance:
            self.notifier.notification(
                domain.LOW_BALANCE,
                event.meter_id,
                now,
                balance=event.balance,
                currency=event.currency,
                warning_threshold=judged.threshold,
                event_id=event.event_id,
                extra=(estimate or NO_FORECAST).payload(),
            )
        if judged.scheduled_at is not None:
            self.notifier.notification(
                domain.DISCONNECT_SCHEDULED,
                event.meter_id,
                now,
                extra={"scheduled_at": judged.scheduled_at.isoformat()},
                balance=event.balance,
                currency=event.currency,
                event_id=event.event_id,
            )
        command = None
        if judged.command is not None and outcome.command is not None:
            command = outcome.command
            self.controller.announce(command)
        log.info(
            "balance %s seq %s for %s: %s (%s)",
            event.balance,
            event.seq,
            event.meter_id,
            judged.outcome,
            judged.detail,
        )
        return command
