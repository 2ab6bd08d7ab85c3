"""What a balance event means for a meter (relay/decision.py), checked as a pure function."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.balance_event import BalanceEvent
from headend.relay import decision, lifecycle
from headend.relay.decision import (
    APPLIED,
    REJECTED,
    STALE,
    ZERO_NO_CHANGE,
    ActiveCommand,
    MeterSnapshot,
    MeterUpdate,
    NewCommand,
    Superseded,
    decide,
)

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
DEFAULT = Decimal("20.00")
FRESH = MeterSnapshot(
    balance_seq=None,
    last_balance=None,
    desired_state=None,
    confirmed_state=None,
    active_command=None,
    default_threshold=DEFAULT,
)


def event(seq: int, balance: str, threshold: str | None = None) -> BalanceEvent:
    return BalanceEvent(
        meter_id="M1",
        balance=Decimal(balance),
        currency="CNY",
        seq=seq,
        event_id=f"e{seq}",
        ts=T0,
        warning_threshold=None if threshold is None else Decimal(threshold),
    )


def test_unknown_meter_and_unusable_balance_are_rejected() -> None:
    unknown = decide(None, event(1, "-5"))
    assert unknown == decision.Decision(REJECTED, "unknown meter: not in the inventory")
    nan = decide(FRESH, event(1, "NaN"))
    assert nan.outcome == REJECTED and "finite" in nan.detail
    assert nan.meter is None and nan.command is None and nan.threshold is None


def test_older_or_equal_seq_is_stale_and_changes_nothing() -> None:
    meter = replace(
        FRESH,
        balance_seq=10,
        last_balance=Decimal("-1"),
        desired_state="disconnected",
        active_command=ActiveCommand("c1", "disconnect", "sent"),
    )
    for seq in (10, 9):
        stale = decide(meter, event(seq, "50"))
        assert stale.outcome == STALE and "not newer than the last applied 10" in stale.detail
        assert stale.desired_state == "disconnected"
        assert (stale.meter, stale.command, stale.superseded) == (None, None, ())
        assert not stale.low_balance and stale.threshold is None


def test_negative_balance_disconnects_with_a_new_command() -> None:
    judged = decide(FRESH, event(5, "-3.20"))
    assert judged == decision.Decision(
        APPLIED,
        "disconnected: disconnect command created",
        desired_state="disconnected",
        meter=MeterUpdate(warning_active=True, desired_state="disconnected"),
        command=NewCommand("disconnect", "balance -3.20 CNY (seq 5)"),
        superseded=(),
        low_balance=False,  # below zero is not a low-balance warning
        threshold=DEFAULT,
    )


def test_a_pending_command_for_the_same_action_stands() -> None:
    meter = replace(
        FRESH, balance_seq=1, active_command=ActiveCommand("c1", "disconnect", "failed")
    )
    judged = decide(meter, event(2, "-4"))
    assert judged.outcome == APPLIED and judged.command is None and judged.superseded == ()
    assert judged.detail == "disconnected: disconnect command already pending"


@pytest.mark.parametrize("status", ["queued", "sent", "failed", "escalated"])
def test_direction_change_supersedes_the_active_command_and_says_what_it_was(status: str) -> None:
    meter = replace(
        FRESH,
        balance_seq=1,
        last_balance=Decimal("-1"),
        desired_state="disconnected",
        confirmed_state="disconnected",  # even when the meter already reads back "connected"
        active_command=ActiveCommand("c1", "disconnect", status),
    )
    judged = decide(meter, event(2, "25"))
    assert judged.superseded == (
        Superseded("c1", "disconnect", "superseded", "superseded by balance event seq 2"),
    )
    assert judged.command == NewCommand("reconnect", "balance 25 CNY (seq 2)")
    assert judged.desired_state == "connected" and judged.detail.endswith("command created")


def test_a_command_that_is_no_longer_active_cannot_be_superseded() -> None:
    meter = replace(FRESH, active_command=ActiveCommand("c1", "disconnect", "confirmed"))
    with pytest.raises(lifecycle.IllegalTransition):
        decide(meter, event(1, "5"))


def test_no_command_when_the_meter_already_reads_back_the_desired_state() -> None:
    for confirmed in ("connected", "ready_for_reconnection"):
        judged = decide(replace(FRESH, confirmed_state=confirmed), event(1, "100"))
        assert judged.outcome == APPLIED and judged.command is None
        assert judged.detail == f"connected: meter already {confirmed}"


def test_zero_balance_is_newest_but_leaves_the_relay() -> None:
    meter = replace(FRESH, balance_seq=1, last_balance=Decimal("-5"), desired_state="disconnected")
    zero = decide(meter, event(2, "0.00"))
    assert zero.outcome == ZERO_NO_CHANGE and zero.desired_state == "disconnected"
    assert zero.meter == MeterUpdate(warning_active=True, desired_state=None)
    assert zero.command is None and zero.superseded == ()


def test_low_balance_once_per_downward_crossing_against_the_default_threshold() -> None:
    meter = replace(FRESH, balance_seq=1, last_balance=Decimal("50"))
    crossing = decide(meter, event(2, "19.99"))
    assert crossing.low_balance and crossing.threshold == DEFAULT
    assert crossing.meter is not None and crossing.meter.warning_active
    within = decide(replace(meter, last_balance=Decimal("19.99")), event(2, "10"))
    assert not within.low_balance and within.threshold == DEFAULT


def test_low_balance_on_a_top_up_from_below_zero_into_the_band() -> None:
    arrears = replace(
        FRESH, balance_seq=1, last_balance=Decimal("-5"), desired_state="disconnected"
    )
    top_up = decide(arrears, event(2, "8.00"))
    assert top_up.outcome == APPLIED and top_up.desired_state == "connected"
    assert top_up.low_balance and top_up.threshold == DEFAULT
    assert top_up.command == NewCommand("reconnect", "balance 8.00 CNY (seq 2)")
    assert not decide(arrears, event(2, "25.00")).low_balance  # past the band: no warning


def test_the_event_threshold_overrides_the_default_even_when_it_is_zero() -> None:
    custom = decide(FRESH, event(1, "40", threshold="50.00"))
    assert custom.low_balance and custom.threshold == Decimal("50.00")
    # 0 is a threshold, not "none given": nothing warns, and the default is not used.
    zero = decide(FRESH, event(1, "5", threshold="0"))
    assert zero.threshold == Decimal("0")
    assert not zero.low_balance
    assert zero.meter is not None and not zero.meter.warning_active


def test_duplicate_reconcile_and_override() -> None:
    dup = decision.duplicate("applied")
    assert dup.outcome == decision.DUPLICATE and "first outcome: applied" in dup.detail
    assert decision.reconcile(None, "connected") is None
    assert decision.reconcile("connected", "ready_for_reconnection") is None
    assert decision.reconcile("disconnected", None) == NewCommand(
        "disconnect", "desired disconnected, last read back unknown"
    )
    assert decision.override("reconnect", "operator") == decision.Override(
        "connected", "superseded by operator reconnect"
    )
    with pytest.raises(ValueError):
        decision.override("explode", "operator")


balances = st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False)
states = st.sampled_from([None, "connected", "disconnected", "ready_for_reconnection"])
actives = st.one_of(
    st.none(),
    st.builds(
        ActiveCommand,
        st.just("c1"),
        st.sampled_from(["disconnect", "reconnect"]),
        st.sampled_from(["queued", "sent", "failed", "escalated"]),
    ),
)


@given(
    balances,
    st.one_of(st.none(), balances),
    st.one_of(st.none(), st.integers(0, 5)),
    st.integers(0, 5),
    states,
    actives,
)
@settings(max_examples=400, deadline=None)
def test_at_most_one_active_command_for_the_desired_state_afterwards(
    balance: Decimal,
    previous: Decimal | None,
    last_seq: int | None,
    seq: int,
    confirmed: str | None,
    active: ActiveCommand | None,
) -> None:
    meter = replace(
        FRESH,
        balance_seq=last_seq,
        last_balance=previous,
        confirmed_state=confirmed,
        active_command=active,
    )
    judged = decide(meter, event(seq, str(balance)))
    if judged.outcome != APPLIED:
        assert judged.command is None and judged.superseded == ()
        return
    kept = active if not judged.superseded else None
    afterwards = [c.action for c in (kept, judged.command) if c is not None]
    assert len(afterwards) <= 1  # the database allows one active command per meter
    wanted = "disconnect" if judged.desired_state == "disconnected" else "reconnect"
    assert all(action == wanted for action in afterwards)
    assert all(s.action != wanted and s.status == "superseded" for s in judged.superseded)


# -- operator holds, episodes, release --------------------------------------------------------


@pytest.mark.parametrize("balance", ["25", "-25"])
def test_a_held_meter_takes_the_balance_but_no_command(balance: str) -> None:
    """Billing moves the desired state of a held meter (where it goes on release), and
    neither supersedes the operator's command nor queues one."""
    meter = replace(
        FRESH,
        balance_seq=1,
        desired_state="connected",
        confirmed_state="disconnected",
        active_command=ActiveCommand("op1", "disconnect", "failed"),
        hold=True,
    )
    judged = decide(meter, event(2, balance))
    wanted = "connected" if balance == "25" else "disconnected"
    assert judged.outcome == APPLIED and judged.desired_state == wanted
    assert judged.meter is not None and judged.meter.desired_state == wanted
    assert judged.command is None and judged.superseded == ()
    assert "held by an operator" in judged.detail


def test_a_superseding_command_keeps_the_episode_of_the_one_it_supersedes() -> None:
    meter = replace(
        FRESH,
        balance_seq=1,
        active_command=ActiveCommand("c1", "disconnect", "escalated", episode_started_at=T0),
    )
    judged = decide(meter, event(2, "25"))
    assert judged.command is not None and judged.command.episode_started_at == T0
    fresh = decide(FRESH, event(1, "-5"))
    assert fresh.command is not None and fresh.command.episode_started_at is None


def test_release_goes_where_the_newest_balance_says() -> None:
    held = ActiveCommand("op1", "disconnect", "failed", episode_started_at=T0)
    # Paid during the hold: the operator's pending disconnect gives way to a reconnect.
    paid = decision.release("connected", "disconnected", held, "line work done")
    assert paid.superseded == (
        Superseded(
            "op1",
            "disconnect",
            "superseded",
            "superseded on release of the hold: desired connected",
        ),
    )
    assert paid.command == NewCommand(
        "reconnect", "hold released (line work done): desired connected", T0
    )
    # Already where billing wants it: nothing to do.
    there = decision.release("disconnected", "disconnected", None, "done")
    assert there.command is None and there.superseded == ()
    assert decision.release("connected", "disconnected", None, "x").command == NewCommand(
        "reconnect", "hold released (x): desired connected"
    )
    assert decision.release(None, "disconnected", None, "x").command is None


def test_the_target_is_the_held_state_else_the_desired_one() -> None:
    assert decision.target("connected", None) == "connected"
    assert decision.target("connected", "disconnect") == "disconnected"
    assert decision.target(None, "reconnect") == "connected"
    assert decision.target(None, None) is None


def test_going_into_arrears_reads_back_even_a_meter_last_seen_off() -> None:
    """The customer must hear of arrears once the relay is confirmed off, also when it was
    last seen off already (on site, or by a poll): a command reads it back. Staying in
    arrears queues nothing more."""
    off = replace(FRESH, balance_seq=1, desired_state="connected", confirmed_state="disconnected")
    judged = decide(off, event(2, "-5"))
    assert judged.command == NewCommand("disconnect", "balance -5 CNY (seq 2)")
    assert decide(replace(off, desired_state=None), event(2, "-5")).command is not None
    still = decide(replace(off, desired_state="disconnected"), event(2, "-6"))
    assert still.command is None and still.detail == "disconnected: meter already disconnected"


def test_same_id_is_a_duplicate_or_a_conflict_whatever_the_meter_state() -> None:
    first = event(5, "-2.00")
    stored = decision.StoredEvent("applied", 5, Decimal("-2"), "CNY", T0, None)
    meter = replace(FRESH, balance_seq=5, last_balance=Decimal("-2"), same_id=stored)
    assert decide(meter, first).outcome == decision.DUPLICATE
    for change in (
        {"seq": 6},
        {"balance": Decimal("3")},
        {"currency": "EUR"},
        {"ts": T0.replace(hour=9)},
        {"warning_threshold": Decimal("1")},
    ):
        other = decide(meter, replace(first, **change))
        assert other.outcome == decision.CONFLICTING and other.alarm == "conflicting_event"
        assert not other.holds_identity
        assert (other.meter, other.command, other.superseded, other.low_balance) == (
            None,
            None,
            (),
            False,
        )


def test_stale_event_alarm_only_when_the_ts_is_newer() -> None:
    meter = replace(FRESH, balance_seq=10, last_balance=Decimal("-1"), last_applied_ts=T0)
    older = decide(meter, replace(event(3, "50"), ts=T0.replace(hour=7)))
    assert older.outcome == STALE and older.alarm is None
    equal = decide(meter, event(10, "50"))
    assert equal.outcome == STALE and equal.alarm is None
    newer = decide(meter, replace(event(3, "50"), ts=T0.replace(hour=9)))
    assert newer.outcome == STALE and newer.alarm == "stale_event"
    assert (newer.meter, newer.command) == (None, None)
    assert "seq 3 is not newer than the last applied 10" in newer.detail
    # Never applied before: nothing to be stale against.
    assert decide(replace(meter, balance_seq=None), event(3, "50")).outcome == APPLIED
