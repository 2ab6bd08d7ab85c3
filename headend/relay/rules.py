"""The prepaid relay rules (README, "MQTT contract") as pure functions, so they can be tested
exhaustively and shared by the balance decision (decision.py, which storage applies
atomically) and the controller (which judges what a meter reads back).

Nothing here does I/O or reads a clock; callers pass what they know."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from headend.domain import (
    CONNECTED,
    DISCONNECT,
    DISCONNECTED,
    DISCONNECTED_FOR_ARREARS,
    NOTIFY_READY_FOR_RECONNECTION,
    READY_FOR_RECONNECTION,
    RECONNECT,
    RECONNECTED,
    Action,
    DesiredState,
)

# Outcomes of a read-back.
CONFIRMED = "confirmed"
AWAITING_CUSTOMER = "awaiting_customer"  # reconnect done as far as the meter allows
MISMATCH = "mismatch"


def desired_state(balance: Decimal) -> DesiredState | None:
    """balance > 0: connected; < 0: disconnected; exactly 0: no change (None)."""
    if balance > 0:
        return CONNECTED
    if balance < 0:
        return DISCONNECTED
    return None


def action_for(desired: str) -> Action:
    """The operation that drives a meter towards `desired`."""
    if desired == CONNECTED:
        return "reconnect"
    if desired == DISCONNECTED:
        return "disconnect"
    raise ValueError(f"no action leads to {desired!r}")


def desired_for(action: str) -> DesiredState:
    if action == RECONNECT:
        return CONNECTED
    if action == DISCONNECT:
        return DISCONNECTED
    raise ValueError(f"unknown relay action {action!r}")


def is_newer(seq: int, last_applied_seq: int | None) -> bool:
    """Only an event newer than the last applied one (per meter) may change anything."""
    return last_applied_seq is None or seq > last_applied_seq


def low_balance_crossing(previous: Decimal | None, current: Decimal, threshold: Decimal) -> bool:
    """True once per entry into 0 <= balance < threshold: from above it (a downward crossing)
    or from below zero (a top-up that does not reach the threshold: the customer is back on
    supply but about to run out again, issue 9).

    A first-ever balance already in the band counts too (the customer has not been warned
    yet); moving within the band does not."""
    if not (Decimal(0) <= current < threshold):
        return False
    return previous is None or previous >= threshold or previous < 0


def needs_command(desired: str | None, confirmed: str | None) -> bool:
    """Whether a meter with this desired and last confirmed relay state must be operated.

    ready_for_reconnection satisfies a wish to be connected: the head-end has done what it can,
    the customer must press the button."""
    if desired is None:
        return False
    return not state_satisfies(desired, confirmed)


def state_satisfies(desired: str, state: str | None, output_state: bool | None = None) -> bool:
    if state is None:
        return False
    if desired == DISCONNECTED:
        return state == DISCONNECTED and output_state is not True
    if desired == CONNECTED:
        if state == CONNECTED:
            return output_state is not False
        return state == READY_FOR_RECONNECTION
    return False


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a read-back means for a command: confirmed, awaiting the customer, or wrong."""

    outcome: str
    state: str
    output_state: bool
    notification: str | None
    detail: str

    @property
    def done(self) -> bool:
        return self.outcome in (CONFIRMED, AWAITING_CUSTOMER)


def judge_readback(action: str, output_state: bool, control_state: str) -> Verdict:
    """Judge the relay state read back after (or instead of) operating it."""
    desired = desired_for(action)
    if desired == DISCONNECTED:
        if control_state == DISCONNECTED and not output_state:
            return Verdict(
                CONFIRMED, control_state, output_state, DISCONNECTED_FOR_ARREARS, "disconnected"
            )
    elif control_state == CONNECTED and output_state:
        return Verdict(CONFIRMED, control_state, output_state, RECONNECTED, "connected")
    elif control_state == READY_FOR_RECONNECTION and not output_state:
        return Verdict(
            AWAITING_CUSTOMER,
            control_state,
            output_state,
            NOTIFY_READY_FOR_RECONNECTION,
            "ready_for_reconnection: the customer must press the button to restore supply",
        )
    return Verdict(
        MISMATCH,
        control_state,
        output_state,
        None,
        f"{action} not effective: meter reads back control_state={control_state} "
        f"output_state={str(output_state).lower()}",
    )


def notification_for(action: str, state: str, *, operator: bool = False) -> str | None:
    """The customer notification a confirmed relay state produces.

    An operator's disconnect is not "for arrears", so it produces no arrears message."""
    if action == DISCONNECT and state == DISCONNECTED:
        return None if operator else DISCONNECTED_FOR_ARREARS
    if action == RECONNECT and state == CONNECTED:
        return RECONNECTED
    if action == RECONNECT and state == READY_FOR_RECONNECTION:
        return NOTIFY_READY_FOR_RECONNECTION
    return None
