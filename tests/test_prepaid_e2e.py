"""End to end, the prepaid policies on the relay path: the daemon with the simulator, a real
broker and database. A disconnect for arrears waits out the grace period (a payment inside it
cancels it) and quiet hours (it runs when the window ends, the clock put just before the end);
a protected meter is never switched off and its arrears alarm is raised once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from db_support import DIALECTS
from e2e_support import eventually
from test_daemon_e2e import Headend, headend
from test_relay_e2e import alarms, cli, cli_json, confirmed, polls_after

pytestmark = pytest.mark.timeout(240)

FAST_POLLS = {"HEADEND_POLLING_INTERVAL_S": "2"}


def notes(h: Headend, kind: str, index: int = 0) -> list[dict[str, Any]]:
    return [n for n in h.out("notifications", index) if n["type"] == kind]


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def test_a_payment_inside_the_grace_cancels_the_disconnect(sim_fleet, tmp_path) -> None:
    overrides = {**FAST_POLLS, "HEADEND_PREPAID_DISCONNECT_GRACE_S": "4"}
    async with sim_fleet(1) as fleet, headend(fleet, tmp_path, overrides=overrides) as h:
        await h.balance(0, "50.00", 1)
        await confirmed(h, 0, "reconnect")
        sent = datetime.now(UTC)
        await h.balance(0, "-5.00", 2)
        (scheduled,) = await eventually(
            lambda: notes(h, "disconnect_scheduled"), what="disconnect_scheduled"
        )
        at = parse(scheduled["scheduled_at"])
        assert sent + timedelta(seconds=3) <= at <= datetime.now(UTC) + timedelta(seconds=4.5)
        await h.balance(0, "10.00", 3)  # paid inside the grace
        await eventually(
            lambda: [c for c in h.out("commands", 0) if c["status"] == "superseded"],
            what="the scheduled disconnect superseded",
        )
        # Past the grace and two polls later the relay was never touched.
        await eventually(lambda: datetime.now(UTC) > at + timedelta(seconds=1), within=10)
        await polls_after(h, 0)
        assert h.sim_state(0) == "connected"
        assert "remote_disconnect" not in [op["transition"] for op in h.remote_ops(0)]
        assert notes(h, "disconnected_for_arrears") == []

        # Without a payment the disconnect runs when the grace is over, not before.
        await h.balance(0, "-1.00", 4)
        second = await eventually(
            lambda: notes(h, "disconnect_scheduled")[1:], what="second disconnect_scheduled"
        )
        await h.wait_state(0, "disconnected")
        assert datetime.now(UTC) >= parse(second[0]["scheduled_at"])
        await eventually(lambda: notes(h, "disconnected_for_arrears"), what="arrears notice")


async def test_a_disconnect_inside_quiet_hours_runs_when_the_window_ends(
    sim_fleet, tmp_path
) -> None:
    # The relay path's clock stands 4 s before 08:00 UTC, the end of a night window; ahead
    # of the real one, which stamps the polls (a read-back is never older than a command's).
    real_start = datetime.now(UTC)
    fake_start = real_start.replace(hour=7, minute=59, second=56, microsecond=0)
    if fake_start < real_start:
        fake_start += timedelta(days=1)
    offset = fake_start - real_start

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    overrides = {
        **FAST_POLLS,
        "HEADEND_PREPAID_NO_DISCONNECT": '[{"from": "18:00", "to": "08:00"}]',
    }
    async with (
        sim_fleet(1) as fleet,
        headend(fleet, tmp_path, overrides=overrides, clock=clock) as h,
    ):
        await h.balance(0, "50.00", 1)
        await confirmed(h, 0, "reconnect")
        await h.balance(0, "-5.00", 2)
        (scheduled,) = await eventually(
            lambda: notes(h, "disconnect_scheduled"), what="disconnect_scheduled"
        )
        at = parse(scheduled["scheduled_at"])
        assert (at.hour, at.minute, at.second) == (8, 0, 0)
        assert h.sim_state(0) == "connected"  # held while the window lasts
        await h.wait_state(0, "disconnected", within=30)
        assert clock() >= at
        # A reconnect is never held, whatever the hour.
        await h.balance(0, "5.00", 3)
        await h.wait_state(0, "connected", within=30)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_protected_meter_is_never_switched_off_and_alarms_once(
    sim_fleet, tmp_path, dialect: str
) -> None:
    async with (
        sim_fleet(1) as fleet,
        headend(fleet, tmp_path, dialect=dialect, overrides=FAST_POLLS) as h,
    ):
        meter_id = h.ids[0]
        await h.balance(0, "50.00", 1)
        await confirmed(h, 0, "reconnect")
        run = await cli(h, "meters", "protect", meter_id, "--reason", "life support")
        assert run.returncode == 0, run.stderr
        await h.balance(0, "-5.00", 2)
        await eventually(lambda: alarms(h, "protected_in_arrears", 0), what="the alarm")
        await h.balance(0, "-8.00", 3)  # the same episode: no second alarm
        await polls_after(h, 0)
        assert h.sim_state(0) == "connected"
        assert "remote_disconnect" not in [op["transition"] for op in h.remote_ops(0)]
        assert len(alarms(h, "protected_in_arrears", 0)) == 1
        show = await cli(h, "meters", "show", meter_id)
        assert "protected" in show.stdout and "yes (life support)" in show.stdout
        status = await cli_json(h, "status")
        assert [p["meter_id"] for p in status["protected"]] == [meter_id]

        # Lifted: the meter goes where its balance says.
        run = await cli(h, "meters", "unprotect", meter_id, "--reason", "patient moved")
        assert run.returncode == 0, run.stderr
        await h.wait_state(0, "disconnected")
        assert (await cli_json(h, "status"))["protected"] == []


async def usage_model(h: Headend, index: int = 0) -> dict[str, Any]:
    from sqlalchemy import select

    from headend.storage.core import METERS

    assert h.repository is not None

    async def stored() -> dict[str, Any] | None:
        async with h.repository.db.session() as session:
            model = await session.scalar(
                select(METERS.c.usage_model).where(METERS.c.meter_id == h.ids[index])
            )
        return model if model and model.get("avg_daily_kwh_7") else None

    result: dict[str, Any] = await eventually(stored, what="the consumption model")
    return result


async def test_credit_running_out_before_the_balance_reaches_zero(sim_fleet, tmp_path) -> None:
    """The first poll catches up a week of load profile, so a new meter has a rate at once;
    a balance that buys two days of its own use is warned about (3 days ahead), once."""
    async with sim_fleet(1) as fleet, headend(fleet, tmp_path, overrides=FAST_POLLS) as h:
        model = await usage_model(h)
        daily_cost = Decimal(str(model["avg_daily_kwh_7"])) * Decimal("0.60")
        two_days = (daily_cost * 2).quantize(Decimal("0.01"))
        await h.balance(0, str(two_days), 1, warning_threshold=str(two_days * 2))
        (warned,) = await eventually(
            lambda: notes(h, "credit_running_out"), what="credit_running_out"
        )
        assert 1.5 <= warned["estimated_days_left"] <= 2.1
        assert Decimal(warned["suggested_topup"]) >= (daily_cost * 29).quantize(Decimal(1))
        assert warned["balance"] == str(two_days)
        (low,) = await eventually(lambda: notes(h, "low_balance"), what="low_balance")
        assert low["estimated_days_left"] == warned["estimated_days_left"]
        assert low["suggested_topup"] == warned["suggested_topup"]
        # Still short on the next event and the next rounds: told once per episode.
        await h.balance(0, str(two_days - 1), 2)
        await polls_after(h, 0)
        assert len(notes(h, "credit_running_out")) == 1
        # A payment ends the episode; running short again starts a new one.
        await h.balance(0, str((daily_cost * 20).quantize(Decimal("0.01"))), 3)
        await h.balance(0, str(two_days), 4)
        await eventually(
            lambda: notes(h, "credit_running_out")[1:], what="a second episode's warning"
        )


async def test_usage_statement_at_the_billing_boundary(sim_fleet, tmp_path) -> None:
    """The simulator's billing profile closes a period every midnight: the newest closed
    period is stated with the meter's own count, beside the period before it."""
    async with sim_fleet(1) as fleet, headend(fleet, tmp_path, overrides=FAST_POLLS) as h:
        (stated,) = await eventually(
            lambda: notes(h, "usage_statement"), what="usage_statement", within=45
        )
        start = parse(stated["period_start"])
        end = parse(stated["period_end"])
        assert end - start == timedelta(days=1)
        assert stated["energy_kwh"] > 0
        assert stated["previous_period_kwh"] is not None and stated["previous_period_kwh"] > 0
        assert stated["same_period_last_year_kwh"] is None  # not stored: never made up
        await polls_after(h, 0)
        assert len(notes(h, "usage_statement")) == 1  # the next one at the next boundary


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_arrears_limit_the_load_and_payment_restores_it(
    sim_fleet, tmp_path, dialect: str
) -> None:
    overrides = {
        **FAST_POLLS,
        "HEADEND_PREPAID_ARREARS_ACTION": "limit",
        "HEADEND_PREPAID_LIMIT_W": "500",
    }
    async with (
        sim_fleet(1, security="hls-gmac") as fleet,
        headend(fleet, tmp_path, dialect=dialect, overrides=overrides) as h,
    ):
        await h.balance(0, "50.00", 1)
        await confirmed(h, 0, "reconnect")
        before = fleet.relay(0)["limit_w"]
        await h.balance(0, "-5.00", 2)
        await eventually(lambda: fleet.relay(0)["limit_w"] == 500, what="the meter limited")
        await eventually(lambda: notes(h, "load_limited"), what="load_limited")
        limited = [c for c in h.out("commands", 0) if c["action"] == "limit"]
        assert [c["status"] for c in limited] == ["confirmed"]
        await polls_after(h, 0)
        assert h.sim_state(0) == "connected"  # limited, never switched off
        assert fleet.relay(0)["power_w"] <= 500
        assert "remote_disconnect" not in [op["transition"] for op in h.remote_ops(0)]

        await h.balance(0, "20.00", 3)  # paid: the threshold it had comes back
        await eventually(lambda: fleet.relay(0)["limit_w"] == before, what="the limit restored")
        await eventually(lambda: notes(h, "load_restored"), what="load_restored")
        restored = [c for c in h.out("commands", 0) if c["action"] == "restore"]
        assert [c["status"] for c in restored] == ["confirmed"]
