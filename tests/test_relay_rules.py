"""The prepaid relay rules (README, "MQTT contract"), checked as pure functions (no I/O)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.meters.backoff import backoff_delay
from headend.relay import rules

THRESHOLD = Decimal("20.00")
balances = st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False)


def test_balance_sign_decides_the_relay() -> None:
    assert rules.desired_state(Decimal("0.01")) == "connected"
    assert rules.desired_state(Decimal("-0.01")) == "disconnected"
    assert rules.desired_state(Decimal("0")) is None
    assert rules.desired_state(Decimal("-0.00")) is None


@given(balances)
@settings(max_examples=300, deadline=None)
def test_desired_state_matches_sign(balance: Decimal) -> None:
    desired = rules.desired_state(balance)
    if balance > 0:
        assert desired == "connected"
    elif balance < 0:
        assert desired == "disconnected"
    else:
        assert desired is None


def test_actions_and_states_are_inverse() -> None:
    for desired in ("connected", "disconnected"):
        assert rules.desired_for(rules.action_for(desired)) == desired
    with pytest.raises(ValueError):
        rules.action_for("ready_for_reconnection")
    with pytest.raises(ValueError):
        rules.desired_for("toggle")


def test_only_newer_seq_applies() -> None:
    assert rules.is_newer(1, None)
    assert rules.is_newer(5, 4)
    assert not rules.is_newer(4, 4)  # duplicate
    assert not rules.is_newer(3, 4)  # out of order


def test_low_balance_once_per_entry_into_the_band() -> None:
    seen = [Decimal(x) for x in ("50", "19.99", "10", "5", "25", "15", "-3", "4", "6", "30", "20")]
    fired = []
    previous: Decimal | None = None
    for balance in seen:
        fired.append(rules.low_balance_crossing(previous, balance, THRESHOLD))
        previous = balance
    # A top-up from below zero into the band (-3 -> 4) warns too; moving within it does not.
    #            50     19.99 10     5      25     15    -3     4     6      30     20
    assert fired == [False, True, False, False, False, True, False, True, False, False, False]
    assert not rules.low_balance_crossing(Decimal("-3"), Decimal("-1"), THRESHOLD)
    assert not rules.low_balance_crossing(Decimal("-3"), Decimal("20"), THRESHOLD)
    assert rules.low_balance_crossing(Decimal("-0.01"), Decimal("0"), THRESHOLD)


def test_first_balance_in_band_warns() -> None:
    assert rules.low_balance_crossing(None, Decimal("3"), THRESHOLD)
    assert not rules.low_balance_crossing(None, Decimal("-3"), THRESHOLD)
    assert not rules.low_balance_crossing(None, Decimal("20"), THRESHOLD)
    assert rules.low_balance_crossing(None, Decimal("0"), THRESHOLD)


@given(st.lists(balances, min_size=1, max_size=40))
@settings(max_examples=300, deadline=None)
def test_crossings_never_exceed_entries_into_band(sequence: list[Decimal]) -> None:
    """Every notification is a distinct entry into the band (from above it or below zero)."""
    previous: Decimal | None = None
    warned_in_this_stay = False
    for balance in sequence:
        fired = rules.low_balance_crossing(previous, balance, THRESHOLD)
        in_band = Decimal(0) <= balance < THRESHOLD
        if fired:
            assert in_band
            assert not warned_in_this_stay
            warned_in_this_stay = True
        if not in_band:
            warned_in_this_stay = False
        previous = balance


def test_readback_judgement() -> None:
    ok = rules.judge_readback("disconnect", False, "disconnected")
    assert ok.outcome == rules.CONFIRMED and ok.done
    assert ok.notification == "disconnected_for_arrears"

    on = rules.judge_readback("reconnect", True, "connected")
    assert on.outcome == rules.CONFIRMED and on.notification == "reconnected"

    ready = rules.judge_readback("reconnect", False, "ready_for_reconnection")
    assert ready.outcome == rules.AWAITING_CUSTOMER and ready.done
    assert ready.notification == "ready_for_reconnection"
    assert "press the button" in ready.detail

    for action, output, state in [
        ("disconnect", True, "connected"),  # stuck closed
        ("disconnect", True, "disconnected"),  # state says open, contact still closed
        ("disconnect", False, "ready_for_reconnection"),  # customer could press the button
        ("reconnect", False, "disconnected"),
        ("reconnect", False, "connected"),
    ]:
        verdict = rules.judge_readback(action, output, state)
        assert verdict.outcome == rules.MISMATCH and not verdict.done
        assert verdict.notification is None
        assert action in verdict.detail


def test_needs_command() -> None:
    assert not rules.needs_command(None, "connected")
    assert rules.needs_command("disconnected", "connected")
    assert rules.needs_command("disconnected", None)
    assert not rules.needs_command("disconnected", "disconnected")
    assert rules.needs_command("disconnected", "ready_for_reconnection")
    assert not rules.needs_command("connected", "connected")
    assert not rules.needs_command("connected", "ready_for_reconnection")
    assert rules.needs_command("connected", "disconnected")


def test_notification_for_confirmed_states() -> None:
    assert rules.notification_for("disconnect", "disconnected") == "disconnected_for_arrears"
    assert rules.notification_for("disconnect", "disconnected", operator=True) is None
    assert rules.notification_for("reconnect", "connected") == "reconnected"
    assert rules.notification_for("reconnect", "ready_for_reconnection") == "ready_for_reconnection"
    assert rules.notification_for("reconnect", "disconnected") is None


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=2**32))
@settings(max_examples=300, deadline=None)
def test_backoff_grows_and_is_capped(attempt: int, seed: int) -> None:
    rng = random.Random(seed)
    delay = backoff_delay(attempt, 1.0, 300.0, rng)
    step = min(300.0, 2.0 ** (attempt - 1))
    assert step * 0.5 <= delay <= step
    assert delay <= 300.0


def test_backoff_jitter_spreads_a_fleet() -> None:
    rng = random.Random(7)
    delays = {round(backoff_delay(3, 10.0, 300.0, rng), 3) for _ in range(50)}
    assert len(delays) > 40
