"""Relay operations as a simulated meter reports them: outcomes, log event codes, history.

Kept apart from the meter's state so the COSEM objects (the disconnector control log) can name
the log's size and codes without importing the meter."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cosem_objects import event_codes
from cosem_objects.classes import ControlState, Transition


class RelayOutcome(StrEnum):
    OK = "ok"  # the relay did what was asked (or was already there)
    DENIED = "denied"  # the control mode forbids the transition
    STUCK = "stuck"  # fault: the meter says yes but nothing moves
    FAILURE = "failure"  # fault: the switch reports a hardware fault


class EventCode:
    """Disconnector control log event codes: IDIS's, from the table the head-end names them
    with (cosem_objects/event_codes.py)."""

    READY_FOR_MANUAL_RECONNECTION = event_codes.DISCONNECTOR_READY_FOR_MANUAL_RECONNECTION
    MANUAL_DISCONNECTION = event_codes.MANUAL_DISCONNECTION
    MANUAL_CONNECTION = event_codes.MANUAL_CONNECTION
    REMOTE_DISCONNECTION = event_codes.REMOTE_DISCONNECTION
    REMOTE_CONNECTION = event_codes.REMOTE_CONNECTION
    LOCAL_DISCONNECTION = event_codes.LOCAL_DISCONNECTION
    DISCONNECT_RECONNECT_FAILURE = 68  # "Disconnect/reconnect failure" in that table
    LOCAL_RECONNECTION = event_codes.LOCAL_RECONNECTION


SOURCES = {
    Transition.REMOTE_DISCONNECT: "remote",
    Transition.REMOTE_RECONNECT: "remote",
    Transition.MANUAL_DISCONNECT: "manual",
    Transition.MANUAL_RECONNECT: "manual",
    Transition.LOCAL_DISCONNECT: "local",
    Transition.LOCAL_RECONNECT: "local",
}


def event_code(transition: Transition, after: ControlState) -> int:
    """The log code of a transition that moved the relay into `after`."""
    if transition is Transition.REMOTE_DISCONNECT:
        return EventCode.REMOTE_DISCONNECTION
    if transition is Transition.REMOTE_RECONNECT:
        if after is ControlState.CONNECTED:
            return EventCode.REMOTE_CONNECTION
        return EventCode.READY_FOR_MANUAL_RECONNECTION
    if transition is Transition.MANUAL_DISCONNECT:
        return EventCode.MANUAL_DISCONNECTION
    if transition is Transition.MANUAL_RECONNECT:
        return EventCode.MANUAL_CONNECTION
    if transition is Transition.LOCAL_DISCONNECT:
        return EventCode.LOCAL_DISCONNECTION
    return EventCode.LOCAL_RECONNECTION


@dataclass(frozen=True, slots=True)
class RelayEvent:
    """One relay operation as the control API reports it."""

    time: float  # unix seconds (real time, not the meter's drifting clock)
    source: str  # "remote" | "manual" | "local"
    transition: Transition
    before: ControlState
    after: ControlState
    outcome: RelayOutcome

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "source": self.source,
            "transition": self.transition.name.lower(),
            "before": self.before.label,
            "after": self.after.label,
            "outcome": self.outcome.value,
        }
