"""Relay control in storage, on SQLite and PostgreSQL: operator holds and their release, command
episodes (the overdue clock), a poll's read-back judged for drift, and the clock of a meter
waiting for its customer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from db_support import DIALECTS, temp_database
from sqlalchemy import select
from test_storage import T0, add_meters, event

from headend.storage import Database, HoldConflict, Repository, UnknownMeter
from headend.storage.core import OPERATOR_ACTIONS


class Clock:
    """The repository's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0 + timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture(params=DIALECTS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with temp_database(request.param, tmp_path) as database:
        await add_meters(database, "M1", "M2")
        yield database


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def repo(db: Database, clock: Clock) -> Repository:
    return Repository(db, warning_threshold=Decimal("20.00"), clock=clock)


async def operator_actions(db: Database, meter_id: str) -> list[tuple[str, str]]:
    o = OPERATOR_ACTIONS.c
    async with db.session() as session:
        rows = await session.execute(
            select(o.action, o.reason).where(o.meter_id == meter_id).order_by(o.id)
        )
        return [(r.action, r.reason) for r in rows]


async def confirm(repo: Repository, meter_id: str, state: str, *clear: str) -> None:
    (command,) = await repo.pending_commands(meter_id=meter_id)
    done = await repo.confirm_command(
        command.command_id,
        state=state,
        output_state=state == "connected",
        control_state=state,
        clear_alarm_types=clear,
    )
    assert done is not None and done.command is not None


# -- operator holds -------------------------------------------------------------------------------


async def test_a_hold_pins_the_relay_against_billing_until_released(
    repo: Repository, db: Database
) -> None:
    await repo.apply_balance_event(event("M1", 1, "50"))
    await confirm(repo, "M1", "connected")
    held, superseded = await repo.create_command(
        "M1", "disconnect", reason="operator: line work", hold=True
    )
    assert superseded == ()
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.hold and meter.hold_reason == "operator: line work"
    assert meter.desired_relay_state == "connected"  # billing's wish, kept for the release
    assert [(h.meter_id, h.held_state, h.desired_state) for h in await repo.held_meters()] == [
        ("M1", "disconnected", "connected")
    ]

    # Billing goes on: stored, the desired state moves, nothing is switched or superseded.
    for seq, balance in ((2, "-5"), (3, "40")):
        outcome = await repo.apply_balance_event(event("M1", seq, balance))
        assert outcome.decision.outcome == "applied" and "held by an operator" in (
            outcome.decision.detail
        )
        assert outcome.command is None or outcome.command.command_id == held.command_id
        assert outcome.decision.command is None and outcome.decision.superseded == ()
    (pending,) = await repo.pending_commands(meter_id="M1")
    assert pending.command_id == held.command_id and pending.status == "queued"
    # Right before operating, the controller asks what the meter should be: held off.
    assert (await repo.command_and_desired(held.command_id))[2] == "disconnected"
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.desired_relay_state == "connected"

    # A held meter takes no plain operator command, and start-up reconciliation leaves it.
    with pytest.raises(HoldConflict, match="held"):
        await repo.create_command("M1", "reconnect", reason="operator: oops")
    await confirm(repo, "M1", "disconnected")
    assert await repo.reconcile_commands() == []

    release = await repo.release_hold("M1", "line work done")
    assert release.command is not None and release.command.action == "reconnect"
    assert release.command.source == "release" and release.superseded == ()
    meter = await repo.get_meter("M1")
    assert meter is not None and not meter.hold and meter.hold_reason is None
    assert await repo.held_meters() == []
    assert (await repo.command_and_desired(release.command.command_id))[2] == "connected"
    assert await operator_actions(db, "M1") == [
        ("hold", "operator: line work"),
        ("release", "line work done"),
    ]
    with pytest.raises(HoldConflict, match="not held"):
        await repo.release_hold("M1", "again")
    with pytest.raises(UnknownMeter):
        await repo.release_hold("NOPE", "x")


async def test_release_supersedes_a_pending_held_command_and_keeps_its_episode(
    repo: Repository, clock: Clock
) -> None:
    await repo.apply_balance_event(event("M1", 1, "50"))
    held, _ = await repo.create_command("M1", "disconnect", reason="operator: fire", hold=True)
    clock.advance(600)
    release = await repo.release_hold("M1", "fire out")
    assert [s.command_id for s in release.superseded] == [held.command_id]
    assert release.command is not None and release.command.action == "reconnect"
    assert release.command.episode_started_at == held.created_at
    # Already where billing wants it: released without a command.
    await confirm(repo, "M1", "connected")
    await repo.create_command("M1", "reconnect", reason="operator: test", hold=True)
    await confirm(repo, "M1", "connected")
    quiet = await repo.release_hold("M1", "done")
    assert quiet.command is None and quiet.superseded == ()


async def test_moving_a_hold_re_pins_it(repo: Repository, db: Database) -> None:
    first, _ = await repo.create_command("M1", "disconnect", reason="a", hold=True)
    second, superseded = await repo.create_command("M1", "reconnect", reason="b", hold=True)
    assert superseded == (first.command_id,)
    assert (await repo.held_meters())[0].held_state == "connected"
    assert (await repo.command_and_desired(second.command_id))[2] == "connected"
    assert [a for a, _ in await operator_actions(db, "M1")] == ["hold", "hold"]


# -- episodes -------------------------------------------------------------------------------------


async def test_the_overdue_clock_starts_with_the_first_command_of_the_episode(
    repo: Repository, clock: Clock
) -> None:
    start = clock.now
    off = await repo.apply_balance_event(event("M1", 1, "-5"))
    assert off.command is not None and off.command.episode_started_at == start
    clock.advance(1200)
    on = await repo.apply_balance_event(event("M1", 2, "5"))
    assert on.command is not None and on.command.episode_started_at == start
    # 30 minutes after the first command, not after the newer balance.
    overdue = await repo.overdue_commands(start + timedelta(seconds=1))
    assert [c.command_id for c in overdue] == [on.command.command_id]
    assert await repo.overdue_commands(start) == []
    # An operator's command that supersedes it keeps the episode too.
    clock.advance(60)
    operator, _ = await repo.create_command("M1", "disconnect", reason="x")
    assert operator.episode_started_at == start
    # A new episode after a confirmation starts afresh.
    await confirm(repo, "M1", "disconnected")
    fresh = await repo.apply_balance_event(event("M1", 3, "5"))
    assert fresh.command is not None and fresh.command.episode_started_at == clock.now


# -- a poll's read-back ---------------------------------------------------------------------------


async def test_a_poll_finding_the_relay_on_in_arrears_alarms_and_disconnects_again(
    repo: Repository, clock: Clock
) -> None:
    await repo.apply_balance_event(event("M1", 1, "-5"))
    await confirm(repo, "M1", "disconnected")
    clock.advance(60)
    quiet = await repo.record_poll_readback("M1", "disconnected", False)
    assert quiet.drift.outcome == "in_step" and quiet.alarm is None and quiet.command is None
    assert len(await repo.relay_history("M1")) == 1  # unchanged: no history row

    clock.advance(60)
    drift = await repo.record_poll_readback("M1", "connected", True)
    assert drift.drift.outcome == "mismatch" and not drift.hold
    assert drift.alarm is not None and drift.alarm.type == "relay_state_mismatch"
    assert "relay read back connected" in (drift.alarm.detail or "")
    assert drift.command is not None and drift.command.action == "disconnect"
    assert drift.command.source == "drift"
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.confirmed_relay_state == "connected"
    assert [h.state for h in await repo.relay_history("M1")] == ["connected", "disconnected"]
    # While that command is on its way, nothing more is judged.
    clock.advance(60)
    again = await repo.record_poll_readback("M1", "connected", True)
    assert again.drift.outcome == "not_judged" and again.alarm is None and again.command is None
    # Its confirmation clears the alarm (the controller names it among the types to clear).
    await confirm(repo, "M1", "disconnected", "relay_state_mismatch")
    assert [a.type for a in await repo.list_alarms(meter_id="M1")] == []


async def test_a_poll_finding_the_relay_off_while_paid_only_alarms(
    repo: Repository, clock: Clock
) -> None:
    await repo.apply_balance_event(event("M1", 1, "50"))
    await confirm(repo, "M1", "connected")
    clock.advance(60)
    off = await repo.record_poll_readback("M1", "disconnected", False)
    assert off.drift.outcome == "mismatch" and off.command is None
    assert off.alarm is not None and "not reconnected by the head-end" in (off.alarm.detail or "")
    assert await repo.pending_commands(meter_id="M1") == []
    clock.advance(60)
    standing = await repo.record_poll_readback("M1", "disconnected", False)
    assert standing.alarm is None  # one alarm while it stands
    clock.advance(60)
    back = await repo.record_poll_readback("M1", "connected", True)
    assert back.drift.outcome == "in_step" and back.alarms_cleared == 1
    assert await repo.list_alarms(meter_id="M1") == []


async def test_a_held_meter_found_on_is_alarmed_not_switched(repo: Repository) -> None:
    await repo.apply_balance_event(event("M1", 1, "50"))
    await repo.create_command("M1", "disconnect", reason="operator: line work", hold=True)
    await confirm(repo, "M1", "disconnected")
    polled = await repo.record_poll_readback("M1", "connected", True)
    assert polled.hold and polled.drift.outcome == "mismatch" and polled.command is None
    assert polled.alarm is not None and "held by an operator" in (polled.alarm.detail or "")
    assert await repo.pending_commands(meter_id="M1") == []
    with pytest.raises(UnknownMeter):
        await repo.record_poll_readback("NOPE", "connected", True)


# -- awaiting the customer ------------------------------------------------------------------------


async def test_awaiting_customer_once_per_episode(repo: Repository, clock: Clock) -> None:
    limit = timedelta(seconds=1800)
    await repo.apply_balance_event(event("M1", 1, "-5"))
    await confirm(repo, "M1", "disconnected")
    await repo.apply_balance_event(event("M1", 2, "5"))
    ready_at = clock.advance(10)
    await confirm(repo, "M1", "ready_for_reconnection")
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.ready_since == ready_at
    clock.advance(900)
    await repo.record_poll_readback("M1", "ready_for_reconnection", False)  # clock not reset
    assert await repo.raise_awaiting_customers(clock.now - limit) == []
    clock.advance(1000)
    (waiting,) = await repo.raise_awaiting_customers(clock.now - limit)
    assert waiting.alarm.type == "awaiting_customer" and waiting.alarm.meter_id == "M1"
    assert waiting.ready_since == ready_at and waiting.balance == Decimal("5")
    clock.advance(3600)
    assert await repo.raise_awaiting_customers(clock.now - limit) == []  # once per episode

    # The customer presses the button: the episode ends and its alarm clears.
    clock.advance(10)
    await repo.record_poll_readback("M1", "connected", True)
    meter = await repo.get_meter("M1")
    assert meter is not None and meter.ready_since is None and not meter.awaiting_alarm_raised
    assert await repo.list_alarms(meter_id="M1") == []

    # A meter that should be off is not waiting for its customer.
    await repo.record_relay_state("M2", "ready_for_reconnection", False, ts=clock.now)
    await repo.apply_balance_event(event("M2", 1, "-5"))
    clock.advance(7200)
    assert await repo.raise_awaiting_customers(clock.now - limit) == []
