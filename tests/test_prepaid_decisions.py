"""The prepaid policies on the balance decision (relay/decision.py) and on protection
(relay/protection.py), as pure functions: a disconnect put off by grace or quiet hours, a
protected meter never disconnected for arrears (its alarm once per episode), load limiting
instead of a disconnect, and what protecting or unprotecting a meter does."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from headend.balance_event import BalanceEvent
from headend.domain import PROTECTED_IN_ARREARS
from headend.relay import protection
from headend.relay.decision import ActiveCommand, MeterSnapshot, decide

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=10)
PAID = MeterSnapshot(
    balance_seq=1,
    last_balance=Decimal("50"),
    desired_state="connected",
    confirmed_state="connected",
    active_command=None,
    default_threshold=Decimal("20"),
)


def event(seq: int, balance: str) -> BalanceEvent:
    return BalanceEvent("M1", Decimal(balance), "CNY", seq, f"e{seq}", T0)


def test_a_disconnect_for_arrears_waits_for_its_time() -> None:
    judged = decide(PAID, event(2, "-5"), disconnect_at=LATER)
    assert judged.command is not None and judged.command.action == "disconnect"
    assert judged.command.not_before == LATER == judged.scheduled_at
    # The overdue clock starts when the command may run.
    assert judged.command.episode_started_at == LATER
    assert "scheduled" in judged.detail


def test_a_meter_already_off_is_read_back_at_once_and_a_reconnect_never_waits() -> None:
    off = replace(PAID, confirmed_state="disconnected", desired_state="connected")
    judged = decide(off, event(2, "-5"), disconnect_at=LATER)
    assert judged.command is not None and judged.command.not_before is None
    assert judged.scheduled_at is None
    owed = replace(
        PAID,
        last_balance=Decimal("-5"),
        desired_state="disconnected",
        confirmed_state="disconnected",
    )
    paid = decide(owed, event(2, "10"), disconnect_at=LATER)
    assert paid.command is not None and paid.command.action == "reconnect"
    assert paid.command.not_before is None and paid.scheduled_at is None


def test_a_protected_meter_is_not_disconnected_and_alarms_on_entry_only() -> None:
    protected = replace(PAID, protected=True)
    first = decide(protected, event(2, "-5"))
    assert first.command is None and first.alarm == PROTECTED_IN_ARREARS
    assert first.meter is not None and first.meter.desired_state is None  # stays connected
    deeper = replace(protected, balance_seq=2, last_balance=Decimal("-5"))
    again = decide(deeper, event(3, "-8"))
    assert again.command is None and again.alarm is None
    # A disconnect queued before the meter was protected is given up.
    pending = replace(deeper, active_command=ActiveCommand("c1", "disconnect", "queued"))
    given_up = decide(pending, event(3, "-8"))
    assert [s.command_id for s in given_up.superseded] == ["c1"]
    # Paid: an ordinary event (nothing to switch, no alarm).
    paid = decide(deeper, event(3, "10"))
    assert paid.alarm is None and paid.command is None


def test_arrears_limit_the_load_when_so_configured() -> None:
    limiting = replace(PAID, limit_on_arrears=True)
    judged = decide(limiting, event(2, "-5"))
    assert judged.command is None and judged.limit is True
    assert judged.meter is not None and judged.meter.desired_state is None
    limited = replace(limiting, limit_wanted=True, last_balance=Decimal("-5"), balance_seq=2)
    assert decide(limited, event(3, "-9")).limit is None  # already wanted
    restored = decide(limited, event(3, "12"))
    assert restored.limit is False and restored.command is None


def test_protecting_a_meter_in_arrears_brings_it_back_on() -> None:
    step = protection.protect(Decimal("-5"), "disconnected", "disconnected", None, None, "ICU")
    assert step.step.command is not None and step.step.command.action == "reconnect"
    assert step.desired_state == "connected" and step.alarm == PROTECTED_IN_ARREARS
    operator = ActiveCommand("c9", "disconnect", "queued")
    kept = protection.protect(Decimal("-5"), "disconnected", "connected", operator, "operator", "x")
    assert kept.step.command is None and kept.step.superseded == ()
    paid = protection.protect(Decimal("5"), "connected", "connected", None, None, "ICU")
    assert paid.step.command is None and paid.alarm is None


def test_unprotecting_a_meter_in_arrears_disconnects_it_through_the_policies() -> None:
    step = protection.unprotect(Decimal("-5"), "connected", None, "moved", LATER)
    assert step.step.command is not None and step.step.command.action == "disconnect"
    assert step.step.command.not_before == LATER == step.scheduled_at
    assert step.desired_state == "disconnected"
    assert protection.unprotect(Decimal("5"), "connected", None, "x", None).step.command is None
