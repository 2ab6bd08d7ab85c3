"""LISTEN/NOTIFY wake-ups (headend/cluster/notify.py): a command created in another process's
transaction reaches every member's listener when, and only when, that transaction commits."""

from __future__ import annotations

import asyncio

import pytest
from e2e_support import eventually, fleet_database

from headend.cluster.notify import CommandListener
from headend.relay.operator import create_operator_command
from headend.storage import Repository

pytestmark = pytest.mark.timeout(60)


async def test_a_new_command_wakes_the_listener_on_commit(sim_fleet, tmp_path) -> None:
    async with sim_fleet(2) as fleet, fleet_database("postgresql", tmp_path, fleet) as (db, _):
        woken: list[str] = []
        url = db.url
        listener = CommandListener(url, woken.append)
        task = asyncio.create_task(listener.run())
        try:
            async with asyncio.timeout(10):
                await listener.connected.wait()
            meter = fleet.config(1).meter_id
            repository = Repository(db)
            with pytest.raises(RuntimeError):
                async with db.transaction():
                    await create_operator_command(repository, meter, "disconnect", "test")
                    raise RuntimeError("rolled back")
            await asyncio.sleep(0.5)
            assert meter not in woken  # nothing committed, nobody woken
            await create_operator_command(repository, meter, "disconnect", "test")
            await eventually(lambda: meter in woken, within=10, what="the wake-up")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
