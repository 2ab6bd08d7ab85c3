"""A backlog of outgoing messages is a person's business: past the limit `outbox_overflow` is
raised once (and itself published through the outbox), and cleared once it has drained."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from db_support import DIALECTS
from e2e_support import fleet_database

from headend.mqtt.backlog import BacklogWatch
from headend.mqtt.durable_outbox import DurableOutbox
from headend.mqtt.notifier import Notifier
from headend.mqtt.topics import Topics
from headend.storage import Repository


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_backlog_past_the_limit_raises_outbox_overflow_once_then_clears(
    sim_fleet, tmp_path: Path, dialect: str
) -> None:
    async with sim_fleet(1) as fleet, fleet_database(dialect, tmp_path, fleet) as (db, _key):
        repository = Repository(db)
        outbox = DurableOutbox(repository.outbox)
        notifier = Notifier(outbox, Topics("billing", "headend"))
        watch = BacklogWatch(repository, notifier, alarm_depth=3)
        meter_id = fleet.config(0).meter_id
        async with db.transaction():  # four messages the broker has not taken
            for n in range(4):
                notifier.alarm("relay_stuck", datetime.now(UTC), meter_id=f"{meter_id}-{n}")

        await watch.check()
        await watch.check()  # still over: not raised twice
        alarms = [a for a in await repository.list_alarms() if a.type == "outbox_overflow"]
        assert len(alarms) == 1 and alarms[0].detail is not None
        assert alarms[0].detail.startswith("4 messages wait for the broker")
        assert watch.depth == 5  # the alarm waits in the same queue

        sent = []
        for _ in range(5):  # the four, then the alarm's own message
            message = await outbox.next()
            sent.append(json.loads(message.payload))
            outbox.done(message)
        await outbox.wait_empty()
        assert [m["type"] for m in sent].count("outbox_overflow") == 1  # it went out too

        await watch.check()
        assert not [a for a in await repository.list_alarms() if a.type == "outbox_overflow"]
