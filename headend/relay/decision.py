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

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

from headend.balance_event import BalanceEvent
from headend.domain import DISCONNECTED, Action, CommandStatus, DesiredState
from headend.relay import lifecycle, rules

__all__ = [
    "APPLIED",
    "DUPLICATE",
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
"""event_id seen before: nothing stored again."""
Outcome = Literal["applied", "zero_no_change", "stale", "rejected", "duplicate"]
OUTCOMES: Final = (APPLIED, ZERO_NO_CHANGE, STALE, REJECTED, DUPLICATE)


@dataclass(frozen=True, slots=True)
class ActiveCommand:
    """The meter's active command, as far as the decision needs it."""

    command_id: str
    action: str
    status: str
    episode_started_at: datetime | None = None
    """When the episode the command belongs to began (its overdue clock)."""


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
    low_balance: bool = False  # a low_balance notification is due (downward crossing)
    threshold: Decimal | None = None  # the warning threshold the balance was judged against


def decide(meter: MeterSnapshot | None, event: BalanceEvent) -> Decision:
    """What `event` means for `meter` (None: not in the inventory).

    Only an event newer than the last applied one changes anything. Its balance becomes the
    meter's, and the desired relay state follows its sign (0: no change); an active command
    for the other action is superseded, and a command is created when the meter is not known
    to be in the desired state already."""
    if meter is None:
        return Decision(REJECTED, "unknown meter: not in the inventory")
    if not event.balance.is_finite():
        return Decision(REJECTED, "balance is not a finite number")
    if not rules.is_newer(event.seq, meter.balance_seq):
        return Decision(
            STALE,
            f"seq {event.seq} is not newer than the last applied {meter.balance_seq}: "
            "recorded, not executed",
            desired_state=meter.desired_state,
        )
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
    return Decision(
        APPLIED,
        step.detail,
        desired_state=desired,
        meter=update,
        command=step.command,
        superseded=step.superseded,
        low_balance=low_balance,
        threshold=threshold,
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
    """An event whose event_id was received before decides nothing again."""
    return Decision(DUPLICATE, f"event_id already received (first outcome: {first_outcome})")


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
