"""The relay command lifecycle's transition table: every legal move, and nothing else."""

from __future__ import annotations

import itertools

import pytest

from headend import domain
from headend.relay import lifecycle
from headend.relay.lifecycle import CONFIRM, ESCALATE, FAIL, SEND, SUPERSEDE

# The lifecycle as the controller and storage use it, written out independently of the table.
LEGAL = {
    ("queued", SEND): "sent",
    ("sent", SEND): "sent",
    ("failed", SEND): "sent",
    ("escalated", SEND): "escalated",
    ("queued", FAIL): "failed",
    ("sent", FAIL): "failed",
    ("failed", FAIL): "failed",
    ("escalated", FAIL): "escalated",
    ("queued", ESCALATE): "escalated",
    ("sent", ESCALATE): "escalated",
    ("failed", ESCALATE): "escalated",
    ("queued", CONFIRM): "confirmed",
    ("sent", CONFIRM): "confirmed",
    ("failed", CONFIRM): "confirmed",
    ("escalated", CONFIRM): "confirmed",
    ("queued", SUPERSEDE): "superseded",
    ("sent", SUPERSEDE): "superseded",
    ("failed", SUPERSEDE): "superseded",
    ("escalated", SUPERSEDE): "superseded",
}


@pytest.mark.parametrize(("status", "event"), sorted(LEGAL))
def test_every_legal_transition_passes(status: str, event: lifecycle.Event) -> None:
    assert lifecycle.go(status, event) == LEGAL[(status, event)]


def test_every_other_transition_raises() -> None:
    illegal = [
        (status, event)
        for status, event in itertools.product(domain.COMMAND_STATUSES, lifecycle.EVENTS)
        if (status, event) not in LEGAL
    ]
    assert ("confirmed", SEND) in illegal and ("superseded", CONFIRM) in illegal
    assert ("escalated", ESCALATE) in illegal  # the overdue alarm is raised once
    for status, event in illegal:
        with pytest.raises(lifecycle.IllegalTransition, match=f"a {status} command cannot"):
            lifecycle.go(status, event)
    with pytest.raises(lifecycle.IllegalTransition):
        lifecycle.go("lost", SEND)
    with pytest.raises(ValueError):  # IllegalTransition is one
        lifecycle.go("queued", "explode")  # type: ignore[arg-type]


def test_moves_are_the_table_per_event() -> None:
    for event in lifecycle.EVENTS:
        expected = {old: new for (old, on), new in LEGAL.items() if on == event}
        assert dict(lifecycle.moves(event)) == expected
    with pytest.raises(lifecycle.IllegalTransition):
        lifecycle.moves("explode")  # type: ignore[arg-type]


def test_active_statuses_are_those_that_can_still_move() -> None:
    movable = {status for status, _ in LEGAL}
    assert movable == set(domain.ACTIVE_COMMAND_STATUSES)
    assert set(domain.COMMAND_STATUSES) - movable == set(domain.TERMINAL_COMMAND_STATUSES)
    assert lifecycle.INITIAL == "queued" and lifecycle.INITIAL in movable
