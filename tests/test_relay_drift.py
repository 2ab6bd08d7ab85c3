"""A poll's relay read-back judged against the state the meter should be in (relay/drift.py)."""

from __future__ import annotations

import pytest

from headend.relay import drift


@pytest.mark.parametrize(
    ("target", "state", "output"),
    [
        ("disconnected", "disconnected", False),
        ("connected", "connected", True),
        ("connected", "ready_for_reconnection", False),  # the customer's button, not drift
    ],
)
def test_in_step(target: str, state: str, output: bool) -> None:
    assert drift.judge(target, state, output) == drift.Drift(drift.IN_STEP)


@pytest.mark.parametrize("state", ["connected", "ready_for_reconnection"])
def test_on_or_armed_while_it_should_be_off_is_disconnected_again(state: str) -> None:
    judged = drift.judge("disconnected", state, state == "connected")
    assert judged.outcome == drift.MISMATCH
    assert judged.command is not None and judged.command.action == "disconnect"
    assert f"relay read back {state}" in judged.detail and "should be disconnected" in (
        judged.command.reason
    )


def test_off_while_it_should_be_on_only_raises_the_alarm() -> None:
    judged = drift.judge("connected", "disconnected", False)
    assert judged.outcome == drift.MISMATCH and judged.command is None
    assert "not reconnected by the head-end" in judged.detail


def test_a_held_meter_is_alarmed_never_switched() -> None:
    judged = drift.judge("disconnected", "connected", True, held=True)
    assert judged.outcome == drift.MISMATCH and judged.command is None
    assert "held by an operator" in judged.detail


def test_nothing_is_judged_without_a_target_or_while_a_command_is_pending() -> None:
    assert drift.judge(None, "connected", True).outcome == drift.NOT_JUDGED
    pending = drift.judge("disconnected", "connected", True, pending=True)
    assert pending == drift.Drift(drift.NOT_JUDGED)
