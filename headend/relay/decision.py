"""What a balance event means for its meter, decided in one pure function, and the other
decisions storage applies to a meter's relay (start-up reconciliation, an operator override,
the release of an operator's hold).

Storage reads a snapshot of the meter, calls `decide` and applies the Decision in the same
transaction that stores the event; the controller publishes from the same Decision (which
commands were superseded and what they were for, the low-balance notice and the threshold it
was judged against, the command to execute). Nobody re-derives a fact from another: a rule
lives here or in rules.py, never beside SQL.

Imports nothing of storage (storage imports this), and does no I/O and reads no clock."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

from headend.balance_event import BalanceEvent
from headend.domain import (
    CONFLICTING_EVENT,
    DISCONNECT,
    DISCONNECTED,
    PROTECTED_IN_ARREARS,
    STALE_EVENT,
    Action,
    CommandStatus,
    DesiredState,
)
from headend.relay import lifecycle, rules

__all__ = [
    "APPLIED",
    "CONFLICTING",
    "DEAD_LETTER",
    "DUPLICATE",
    "IDENTITY_OUTCOMES",
    "OUTCOMES",
    "REJECTED",
    "STALE",
    "ZERO_NO_CHANGE",
    "ActiveCommand",
    "Decision",
    "MeterSnapshot",
    "MeterUpdate",
    "NewCommand",
    "Outcome",
    "Override",
    "Step",
    "StoredEvent",
    "Superseded",
    "converge",
    "decide",
    "duplicate",
    "override",
    "reconcile",
    "release",
    "target",
]

APPLIED: Final = "applied"
"""Newest for the meter: balance and desired state updated."""
ZERO_NO_CHANGE: Final = "zero_no_change"
"""Newest, balance exactly 0: the balance is updated, the relay left alone."""
STALE: Final = "stale"
"""seq not newer than the last applied: recorded, nothing executed."""
REJECTED: Final = "rejected"
"""Cannot be applied (unknown meter, a balance that is not a number): recorded, alarmed."""
DUPLICATE: Final = "duplicate"
"""(meter_id, event_id) seen before with the same content: nothing stored again."""
CONFLICTING: Final = "conflicting"
"""(meter_id, event_id) seen before with other content: recorded, alarmed, not applied."""
DEAD_LETTER: Final = "dead_letter"
"""A message that failed again and again (of whatever cause): set aside, alarmed, acknowledged
(decided by the intake, not here: nothing could be judged)."""
Outcome = Literal[
    "applied", "zero_no_change", "stale", "rejected", "duplicate", "conflicting", "dead_letter"
]
OUTCOMES: Final = (APPLIED, ZERO_NO_CHANGE, STALE, REJECTED, DUPLICATE, CONFLICTING, DEAD_LETTER)
IDENTITY_OUTCOMES: Final = (APPLIED, ZERO_NO_CHANGE, STALE)
"""The outcomes of events judged against their meter: such a stored event is the
(meter_id, event_id) it carries. A row of any other outcome (a payload refused, a meter not in
the inventory, a dead letter) gives the pair up to a later copy, so that billing's resend of an
event that could not be judged then is judged now rather than dropped as a duplicate."""


@dataclass(frozen=True, slots=True)
class ActiveCommand:
    """The meter's active command, as far as the decision needs it."""

    command_id: str
    action: str
    status: str
    episode_started_at: datetime | None = None
    """When the episode the command belongs to began (its overdue clock)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """The content of an event stored before with the same (meter_id, event_id)."""

    outcome: str
    seq: int | None
    balance: Decimal | None
    currency: str | None
    ts: datetime | None
    warning_threshold: Decimal | None

    def differences(self, event: BalanceEvent) -> tuple[str, ...]:
        """The names of the fields in which `event` differs from this one."""
        return tuple(
            name
            for name, before, now in (
                ("seq", self.seq, event.seq),
                ("balance", self.balance, event.balance),
                ("currency", self.currency, event.currency),
                ("ts", self.ts, event.ts),
                ("warning_threshold", self.warning_threshold, event.warning_threshold),
            )
            if before != now
        )


@dataclass(frozen=True, slots=True)
class MeterSnapshot:
    """A meter's prepaid state, read under its row lock."""

    balance_seq: int | None  # the last applied event's seq
    last_balance: Decimal | None
    desired_state: str | None
    confirmed_state: str | None  # what the relay last read back
    active_command: ActiveCommand | None
    default_threshold: Decimal  # the configured warning threshold (an event may override it)
    hold: bool = False  # an operator's hold pins the relay: billing switches nothing
    last_applied_ts: datetime | None = None  # the last applied event's ts
    protected: bool = False  # protected supply: never disconnected for arrears
    limit_on_arrears: bool = False  # [prepaid] arrears_action = "limit": limit, never cut
    limit_wanted: bool = False  # the meter's Limiter is (to be) set for arrears
    same_id: StoredEvent | None = None
    """The event stored before with this (meter_id, event_id) and an IDENTITY_OUTCOMES
    outcome, if any."""


@dataclass(frozen=True, slots=True)
class MeterUpdate:
    """The meter takes the event's seq, balance and currency as its newest, and these."""

    warning_active: bool
    desired_state: DesiredState | None  # None: the desired state is left as it was


@dataclass(frozen=True, slots=True)
class NewCommand:
    """A command to queue (created with lifecycle.INITIAL)."""

    action: Action
    reason: str
    episode_started_at: datetime | None = None
    """The superseded command's episode start, which this one keeps (None: starts now), so
    a newer wish never resets the overdue clock of a meter that is not where it should be."""
    not_before: datetime | None = None
    """A disconnect put off by the grace period or quiet hours: not run before this."""


@dataclass(frozen=True, slots=True)
class Superseded:
    """An active command given up, what it was for, and the status it takes."""

    command_id: str
    action: str
    status: CommandStatus
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    detail: str
    desired_state: str | None = None  # the meter's desired relay state afterwards
    meter: MeterUpdate | None = None  # None: the meter is left as it was
    command: NewCommand | None = None
    superseded: tuple[Superseded, ...] = ()
    low_balance: bool = False  # a low_balance notification is due (entry into the band)
    threshold: Decimal | None = None  # the warning threshold the balance was judged against
    alarm: str | None = None  # raised in the event's transaction, with `detail`
    holds_identity: bool = True
    """Whether the stored event takes its (meter_id, event_id): not a conflicting copy, whose
    pair another event holds."""
    scheduled_at: datetime | None = None
    """When the disconnect this decision queued will run (grace, quiet hours): the customer
    is told (disconnect_scheduled)."""
    limit: bool | None = None
    """Load limiting wanted (True) or to be lifted (False) instead of a relay operation;
    None: unchanged."""


def decide(
    meter: MeterSnapshot | None,
    event: BalanceEvent,
    *,
    disconnect_at: datetime | None = None,
) -> Decision:
    """What `event` means for `meter` (None: not in the inventory).

    An event the meter has under its (meter_id, event_id) already is a duplicate, or with
    other content a conflict; neither is applied. Only an event newer than the last applied
    one changes anything (an older one dated later raises stale_event). Its balance becomes the
    meter's, and the desired relay state follows its sign (0: no change); an active command
    for the other action is superseded, and a command is created when the meter is not known
    to be in the desired state already. `disconnect_at`: when a disconnect for arrears may run
    (grace period, quiet hours; None: at once), as the caller's clock and policy say. A
    protected meter is never disconnected for arrears: its desired state stays as it was and
    protected_in_arrears is raised when its balance goes below zero."""
    if meter is None:
        return Decision(REJECTED, "unknown meter: not in the inventory")
    if meter.same_id is not None:
        return _same_id(meter.same_id, event)
    if not event.balance.is_finite():
        return Decision(REJECTED, "balance is not a finite number")
    if not rules.is_newer(event.seq, meter.balance_seq):
        return _stale(meter, event)
    threshold = (
        event.warning_threshold if event.warning_threshold is not None else meter.default_threshold
    )
    low_balance = rules.low_balance_crossing(meter.last_balance, event.balance, threshold)
    desired = rules.desired_state(event.balance)
    update = MeterUpdate(warning_active=event.balance < threshold, desired_state=desired)
    if desired is None:
        return Decision(
            ZERO_NO_CHANGE,
            "balance is 0: relay left as it is",
            desired_state=meter.desired_state,
            meter=update,
            low_balance=low_balance,
            threshold=threshold,
        )
    if meter.hold:
        return Decision(
            APPLIED,
            f"{desired}: held by an operator, relay left as it is until the hold is released",
            desired_state=desired,
            meter=update,
            low_balance=low_balance,
            threshold=threshold,
        )
    if meter.protected and desired == DISCONNECTED:
        return _protected(meter, event, update, low_balance, threshold)
    if meter.limit_on_arrears and desired == DISCONNECTED:
        return Decision(
            APPLIED,
            f"balance {event.balance} (seq {event.seq}) below zero: load limited, not "
            "disconnected (arrears_action = limit)",
            desired_state=meter.desired_state,
            meter=replace(update, desired_state=None),
            low_balance=low_balance,
            threshold=threshold,
            limit=None if meter.limit_wanted else True,
        )
    step = converge(
        desired,
        meter.confirmed_state,
        meter.active_command,
        reason=_balance_reason(event),
        supersede_reason=f"superseded by balance event seq {event.seq}",
        # Into arrears: read the relay back even when it was last seen off (perhaps a poll
        # ago), so that the customer is told, and told only once it is confirmed off.
        read_back=desired == DISCONNECTED and meter.desired_state != DISCONNECTED,
    )
    command, scheduled_at, detail = step.command, None, step.detail
    if (
        command is not None
        and command.action == DISCONNECT
        and disconnect_at is not None
        and meter.confirmed_state != DISCONNECTED  # already off: read back now, tell at once
    ):
        command = replace(
            command,
            not_before=disconnect_at,
            # The overdue clock starts when the command may run, not during the wait.
            episode_started_at=command.episode_started_at or disconnect_at,
        )
        scheduled_at = disconnect_at
        detail = f"{detail}, scheduled for {disconnect_at.isoformat()} (grace, quiet hours)"
    return Decision(
        APPLIED,
        detail,
        desired_state=desired,
        meter=update,
        command=command,
        superseded=step.superseded,
        low_balance=low_balance,
        threshold=threshold,
        scheduled_at=scheduled_at,
        limit=False if meter.limit_wanted else None,
    )


def _protected(
    meter: MeterSnapshot,
    event: BalanceEvent,
    update: MeterUpdate,
    low_balance: bool,
    threshold: Decimal,
) -> Decision:
    """Protected supply in arrears: the relay stays on (its desired state is left as it was,
    so no poll forces it off either), a pending disconnect is given up, and a person is told
    once per episode (the episode starts when the balance goes below zero)."""
    superseded: tuple[Superseded, ...] = ()
    active = meter.active_command
    if active is not None and active.action == DISCONNECT:
        superseded = (
            Superseded(
                active.command_id,
                active.action,
                lifecycle.go(active.status, lifecycle.SUPERSEDE),
                "superseded: protected supply is not disconnected for arrears",
            ),
        )
    entered = meter.last_balance is None or meter.last_balance >= 0
    detail = (
        f"balance {event.balance}{' ' + event.currency if event.currency else ''} "
        f"(seq {event.seq}) below zero on a protected supply: not disconnected"
    )
    return Decision(
        APPLIED,
        detail,
        desired_state=meter.desired_state,
        meter=replace(update, desired_state=None),
        superseded=superseded,
        low_balance=low_balance,
        threshold=threshold,
        alarm=PROTECTED_IN_ARREARS if entered else None,
    )


@dataclass(frozen=True, slots=True)
class Step:
    """What takes a meter towards a desired state: a command to queue (None: none needed or
    one already pending) and the active command it supersedes."""

    detail: str
    command: NewCommand | None = None
    superseded: tuple[Superseded, ...] = ()


def converge(
    desired: str,
    confirmed: str | None,
    active: ActiveCommand | None,
    *,
    reason: str,
    supersede_reason: str,
    read_back: bool = False,
) -> Step:
    """The step towards `desired` for a meter last read back as `confirmed` with `active`
    pending: an active command for the other action is superseded (its episode goes on in
    the new one), and a command is created when the meter is not known to be there (or,
    with `read_back`, in any case: a meter already there is read, not operated)."""
    action = rules.action_for(desired)
    if active is not None and active.action == action:
        return Step(f"{desired}: {action} command already pending")
    superseded: tuple[Superseded, ...] = ()
    episode = None
    if active is not None:
        superseded = (
            Superseded(
                active.command_id,
                active.action,
                lifecycle.go(active.status, lifecycle.SUPERSEDE),
                supersede_reason,
            ),
        )
        episode = active.episode_started_at
    if superseded or read_back or rules.needs_command(desired, confirmed):
        # After a superseded command the meter may be in either state: operate it (an
        # operation towards the state it is in is harmless and confirmed).
        return Step(
            f"{desired}: {action} command created",
            NewCommand(action, reason, episode),
            superseded,
        )
    return Step(f"{desired}: meter already {confirmed}")


def duplicate(first_outcome: str) -> Decision:
    """An event whose (meter_id, event_id) was received before decides nothing again."""
    return Decision(DUPLICATE, f"event_id already received (first outcome: {first_outcome})")


def _same_id(earlier: StoredEvent, event: BalanceEvent) -> Decision:
    """Billing said this (meter_id, event_id) before: a copy, or two different events under
    one id, of which neither can be trusted over the other (the first stands)."""
    changed = earlier.differences(event)
    if not changed:
        return duplicate(earlier.outcome)
    return Decision(
        CONFLICTING,
        f"event_id {event.event_id} was received before with other content "
        f"({', '.join(changed)} differ; first outcome: {earlier.outcome}): not applied",
        alarm=CONFLICTING_EVENT,
        holds_identity=False,
    )


def _stale(meter: MeterSnapshot, event: BalanceEvent) -> Decision:
    """Not newer than the last applied event: never applied. When it is nevertheless dated
    after that event, billing's sequence probably went back (a restored backup, a restarted
    counter) and a person must look: each such event stays off until `headend meters
    reset-seq` accepts the new sequence."""
    detail = (
        f"seq {event.seq} is not newer than the last applied {meter.balance_seq}: "
        "recorded, not executed"
    )
    alarm = None
    last_ts = meter.last_applied_ts
    if last_ts is not None and event.ts > last_ts:
        alarm = STALE_EVENT
        detail = (
            f"seq {event.seq} is not newer than the last applied {meter.balance_seq}, but its "
            f"ts {event.ts.isoformat()} is newer than that event's {last_ts.isoformat()}: "
            f"not applied (event_id {event.event_id}); if billing's sequence was reset, "
            "accept it with `headend meters reset-seq`"
        )
    return Decision(STALE, detail, desired_state=meter.desired_state, alarm=alarm)


def reconcile(desired: str | None, confirmed: str | None) -> NewCommand | None:
    """At start-up, for a meter without an active command: the command that takes it from
    what it last read back to its desired state, if it needs one."""
    if desired is None or not rules.needs_command(desired, confirmed):
        return None
    return NewCommand(
        rules.action_for(desired),
        f"desired {desired}, last read back {confirmed or 'unknown'}",
    )


@dataclass(frozen=True, slots=True)
class Override:
    """An operator's (or start-up's) command: the desired state it sets, and why the meter's
    active command gives way to it."""

    desired_state: DesiredState
    supersede_reason: str


def override(action: str, source: str) -> Override:
    """Raises ValueError for an action that leads nowhere."""
    return Override(rules.desired_for(action), f"superseded by {source} {action}")


def release(
    desired: str | None, confirmed: str | None, active: ActiveCommand | None, reason: str
) -> Step:
    """An operator lifts a hold: the meter goes where its newest balance says (the desired
    state billing kept moving during the hold). No desired state: it stays as it is."""
    if desired is None:
        return Step("no balance yet: relay left as it is")
    return converge(
        desired,
        confirmed,
        active,
        reason=f"hold released ({reason}): desired {desired}",
        supersede_reason=f"superseded on release of the hold: desired {desired}",
    )


def target(desired: str | None, held_action: str | None) -> str | None:
    """The state a meter should be in: the one its operator's hold pins (`held_action`, the
    hold's command; None: not held), else the one its newest balance asks for."""
    return desired if held_action is None else rules.desired_for(held_action)


def _balance_reason(event: BalanceEvent) -> str:
    currency = f" {event.currency}" if event.currency else ""
    return f"balance {event.balance}{currency} (seq {event.seq})"
