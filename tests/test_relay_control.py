"""The relay controller against the simulator fleet and a real database, without the daemon
around it: what one attempt does when something unexpected goes wrong, counted at the meter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from db_support import DIALECTS
from e2e_support import KeepingOutbox, eventually, fleet_database

from headend.balance_event import BalanceEvent
from headend.meters.access import MeterAccess
from headend.mqtt.notifier import Notifier
from headend.mqtt.topics import Topics
from headend.relay.controller import ControllerSettings, RelayController
from headend.relay.intake import BalanceIntake
from headend.storage import Repository
from headend.storage.repository import IC_MAX

TOPICS = Topics("billing", "headend")


@contextlib.asynccontextmanager
async def running(controller: RelayController) -> AsyncIterator[RelayController]:
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        controller.stop()
        async with asyncio.timeout(30):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def balance(meter_id: str, amount: str, seq: int) -> BalanceEvent:
    return BalanceEvent(
        meter_id, Decimal(amount), "CNY", seq, f"ev-{meter_id}-{seq}", datetime.now(UTC)
    )


def command_messages(outbox: KeepingOutbox, meter_id: str) -> list[dict[str, Any]]:
    return outbox.on(f"headend/meters/{meter_id}/commands")


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_an_unexpected_error_in_an_attempt_backs_off(sim_fleet, tmp_path, dialect) -> None:
    """An exhausted invocation counter (not a meter, line or protocol error) fails the attempt
    inside its session: the command is retried with backoff, not on every scan, and the
    meter sees one session per attempt."""
    async with (
        sim_fleet(1, security="hls-gmac") as fleet,
        fleet_database(dialect, tmp_path, fleet) as (db, key),
    ):
        meter_id = fleet.config(0).meter_id
        repository = Repository(db)
        # The next reservation passes 2**32-1: the session connects, then cannot cipher.
        await repository.reserve_invocation_counter(meter_id, at_least=IC_MAX - 2)
        command, _ = await repository.create_command(meter_id, "disconnect", reason="test")
        outbox = KeepingOutbox()
        controller = RelayController(
            repository,
            MeterAccess(db, repository, key, timeout_s=5),
            Notifier(outbox, TOPICS),
            ControllerSettings(retry_base_s=0.3, retry_max_backoff_s=1.2, scan_interval_s=0.02),
        )

        def failures() -> list[dict[str, Any]]:
            return [m for m in command_messages(outbox, meter_id) if m["status"] == "failed"]

        async with running(controller):
            await eventually(lambda: len(failures()) >= 3, within=30, what="three failed attempts")
        info = await repository.get_command(command.command_id)
        assert info is not None and info.status == "failed"
        assert "InvocationCounterExhausted" in (info.last_error or "")
        assert [m["attempt"] for m in failures()][:3] == [1, 2, 3]
        assert all("InvocationCounterExhausted" in m["error"] for m in failures())
        # One session per attempt, however many scans ran meanwhile (about 50 a second).
        sessions = fleet.meter_status(0)["connections"]
        assert info.attempt <= sessions <= info.attempt + 1
        assert fleet.relay(0)["history"] == []  # never operated


async def test_a_superseded_command_is_published_as_superseded_not_failed(
    sim_fleet, tmp_path
) -> None:
    """A payment that overtakes a pending disconnect: integrators read `superseded` (with why),
    not a failure."""
    async with sim_fleet(1) as fleet, fleet_database("sqlite", tmp_path, fleet) as (db, key):
        meter_id = fleet.config(0).meter_id
        repository = Repository(db)
        outbox = KeepingOutbox()
        controller = RelayController(
            repository,
            MeterAccess(db, repository, key, timeout_s=2),
            Notifier(outbox, TOPICS),
            ControllerSettings(retry_base_s=5, retry_max_backoff_s=5, scan_interval_s=0.05),
        )
        intake = BalanceIntake(repository, controller.notifier, controller)
        fleet.go_offline(0)
        async with running(controller):
            await intake.handle(balance(meter_id, "-5.00", 1), b"{}")
            await eventually(
                lambda: any(m["status"] == "failed" for m in command_messages(outbox, meter_id)),
                what="the disconnect failing while the meter is away",
            )
            await intake.handle(balance(meter_id, "5.00", 2), b"{}")
            fleet.go_online(0)
            await eventually(
                lambda: any(m["status"] == "confirmed" for m in command_messages(outbox, meter_id)),
                what="the reconnect confirmed",
            )
        messages = command_messages(outbox, meter_id)
        (superseded,) = [m for m in messages if m["status"] == "superseded"]
        assert superseded["action"] == "disconnect" and superseded["error"] is None
        assert "superseded by balance event seq 2" in superseded["detail"]
        assert not any("supersed" in (m["error"] or "") for m in messages)
        assert fleet.relay(0)["history"] == []  # it was connected all along
