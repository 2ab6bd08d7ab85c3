"""The relay command lifecycle as one transition table (the shape of h11's _state.py).

A command is created queued and stays active until the meter's read-back confirms it or a newer
wish supersedes it. An attempt sends it; a failed attempt waits for its retry; an overdue
command is escalated (an alarm for a person) and stays escalated while its retries go on, so
"escalated" is never lost to the next attempt's "sent" or "failed".

Storage applies a transition in a single UPDATE (`moves` gives the CASE it needs, so a command
that changed meanwhile is never moved along an edge the table lacks); code holding the row
calls `go`. Either way no status is set that this table does not allow."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

from headend.domain import (
    CONFIRMED,
    ESCALATED,
    FAILED,
    QUEUED,
    SENT,
    SUPERSEDED,
    CommandStatus,
)

__all__ = [
    "CONFIRM",
    "ESCALATE",
    "EVENTS",
    "FAIL",
    "INITIAL",
    "SEND",
    "SUPERSEDE",
    "Event",
    "IllegalTransition",
    "go",
    "moves",
]

SEND: Final = "send"
"""An attempt starts (the first, a retry, or one resumed after a crash mid-attempt)."""
FAIL: Final = "fail"
"""An attempt failed (or could not start); the next waits for its retry time."""
ESCALATE: Final = "escalate"
"""Not confirmed in time: the overdue alarm is raised, once."""
CONFIRM: Final = "confirm"
"""The meter's read-back proves the command done."""
SUPERSEDE: Final = "supersede"
"""A newer balance event or an operator wants something else."""
Event = Literal["send", "fail", "escalate", "confirm", "supersede"]
EVENTS: Final = (SEND, FAIL, ESCALATE, CONFIRM, SUPERSEDE)

INITIAL: Final = QUEUED
"""A new command's status."""

_TABLE: Final[Mapping[tuple[str, str], CommandStatus]] = MappingProxyType(
    {
        (QUEUED, SEND): SENT,
        (SENT, SEND): SENT,  # resumed: the process died mid-attempt
        (FAILED, SEND): SENT,  # the retry
        (ESCALATED, SEND): ESCALATED,  # retries go on, the escalation stands
        (QUEUED, FAIL): FAILED,  # e.g. the meter left the inventory before the first attempt
        (SENT, FAIL): FAILED,
        (FAILED, FAIL): FAILED,
        (ESCALATED, FAIL): ESCALATED,
        (QUEUED, ESCALATE): ESCALATED,
        (SENT, ESCALATE): ESCALATED,
        (FAILED, ESCALATE): ESCALATED,
        (QUEUED, CONFIRM): CONFIRMED,
        (SENT, CONFIRM): CONFIRMED,
        (FAILED, CONFIRM): CONFIRMED,
        (ESCALATED, CONFIRM): CONFIRMED,
        (QUEUED, SUPERSEDE): SUPERSEDED,
        (SENT, SUPERSEDE): SUPERSEDED,
        (FAILED, SUPERSEDE): SUPERSEDED,
        (ESCALATED, SUPERSEDE): SUPERSEDED,
    }
)

_MOVES: Final = {
    event: MappingProxyType({old: new for (old, on), new in _TABLE.items() if on == event})
    for event in EVENTS
}


class IllegalTransition(ValueError):
    """A status change the lifecycle does not allow (e.g. confirming a superseded command)."""


def go(status: str, event: Event) -> CommandStatus:
    """The status a command in `status` takes on `event`; IllegalTransition if it cannot."""
    try:
        return _TABLE[(status, event)]
    except KeyError:
        raise IllegalTransition(f"a {status} command cannot {event}") from None


def moves(event: Event) -> Mapping[str, CommandStatus]:
    """Every legal (status before -> status after) for `event`: what a single UPDATE applies
    to a row it has not read (WHERE status IN the keys, SET status = CASE over them)."""
    try:
        return _MOVES[event]
    except KeyError:
        raise IllegalTransition(f"unknown command event {event!r}") from None
