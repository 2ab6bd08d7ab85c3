"""Billing batches (issue 10), end to end: the daemon with the simulator fleet, Mosquitto (which
redelivers what was not acknowledged) and both databases.

- Group commit: the messages the broker delivered while a batch committed form the next batch,
  one transaction. A message in the middle of it that the database refuses (a trigger in the
  test's own database) falls out alone: the others commit at once, the poison is redelivered
  and dead-lettered after three tries, and the PUBACKs leave in delivery order.
- Reconnects first: a payment that arrives behind 500 disconnects is executed at its meter
  while most of the disconnects still wait (the order the simulated meters saw)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from db_support import DIALECTS
from e2e_support import eventually
from sqlalchemy import text
from test_daemon_e2e import headend
from test_incoming_e2e import _REFUSE, _ddl, alarms_of, mosquitto

import headend.mqtt.bridge as bridge_module

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def acks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The topics of the PUBACKs the bridge sends, in the order it sends them (the real ack
    still goes out)."""
    sent: list[str] = []
    real = bridge_module.ack

    def spy(client: Any, message: Any) -> str | None:
        failure = real(client, message)
        if failure is None:
            sent.append(message.topic.value)
        return failure

    monkeypatch.setattr(bridge_module, "ack", spy)
    return sent


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_poison_message_falls_out_of_its_batch_and_the_rest_commit(
    sim_fleet, tmp_path, dialect: str, acks: list[str]
) -> None:
    async with (
        sim_fleet(6) as fleet,
        headend(fleet, tmp_path, dialect=dialect, broker=mosquitto()) as h,
    ):
        poison = h.ids[3]
        await _ddl(h, *(sql.format(meter=poison) for sql in _REFUSE[dialect]))
        assert h.repository is not None and h.daemon is not None
        bridge = h.daemon.bridge
        assert bridge is not None
        # Hold the first event's batch (its meter's row lock; on SQLite the writer) while the
        # next five arrive: they are then delivered and committed as one batch.
        async with h.repository.db.transaction() as session:
            if dialect == "postgresql":
                await session.execute(
                    text("SELECT meter_id FROM meters WHERE meter_id = :m FOR UPDATE"),
                    {"m": h.ids[0]},
                )
            await h.balance(0, "-5.00", 1)
            await eventually(lambda: bridge.stats.received >= 1, what="the first event taken")
            for index in (1, 2, 3, 4, 5):
                await h.balance(index, "-5.00", 1, event_id=f"batch-{index}")
            await asyncio.sleep(1.0)  # at the bridge by now (the broker forwards at once)
        for index in (0, 1, 2, 4, 5):
            await h.wait_state(index, "disconnected", within=30)
        (alarm,) = await eventually(
            lambda: alarms_of(h, "bad_event", poison), what="the poison's dead letter"
        )
        assert "dead-lettered after 3 failed tries" in alarm["detail"]["reason"]
        assert bridge.stats.largest_batch >= 5, bridge.stats
        assert bridge.stats.handler_failures == 3 and bridge.stats.dead_letters == 1

        # The rest committed with the first try (before the poison's later deliveries), once.
        (letter,) = await h.repository.balance_events(poison)
        assert letter["outcome"] == "dead_letter"
        for index in (4, 5):
            (stored,) = await h.repository.balance_events(h.ids[index])
            assert stored["outcome"] == "applied" and stored["event_id"] == f"batch-{index}"
            assert _ts(stored["received_at"]) < _ts(letter["received_at"])
        assert h.sim_state(3) == "connected" and h.remote_ops(3) == []

        # Acknowledged in delivery order, each once the batch it was in had committed (a
        # PUBACK still in paho's buffer when the poison ended the connection is lost with
        # it: that message comes again, a duplicate, and is acknowledged again, in order).
        topics = [h.topic(meter_id) for meter_id in h.ids]
        assert list(dict.fromkeys(t for t in acks if t in topics)) == topics, acks


def _ts(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


async def test_a_payment_behind_500_disconnects_is_executed_first(sim_fleet, tmp_path) -> None:
    count = 500
    async with (
        sim_fleet(count + 1, latency_ms=20) as fleet,
        headend(
            fleet,
            tmp_path,
            broker=mosquitto(),
            overrides={
                "HEADEND_POLLING_INTERVAL_S": "3600",  # the relay path alone
                "HEADEND_POLLING_CONCURRENCY": "8",  # eight commands at a time
            },
        ) as h,
    ):
        payer = count
        await h.balance(payer, "-5.00", 1)
        await h.wait_state(payer, "disconnected", within=30)
        for index in range(count):
            await h.balance(index, "-5.00", 1)
        await h.balance(payer, "50.00", 2)
        await h.wait_state(payer, "connected", within=60)

        (reconnect,) = [e for e in h.remote_ops(payer) if e["transition"] != "remote_disconnect"]
        disconnects = sorted(e["time"] for i in range(count) for e in h.remote_ops(i))
        before = [t for t in disconnects if t < reconnect["time"]]
        # Most of the disconnects were still queued when the payment was executed (without
        # reconnects first, all 500 went before it); they go on after it.
        assert len(before) < count // 2, (len(before), len(disconnects))
        await eventually(
            lambda: sum(len(h.remote_ops(i)) for i in range(count)) > len(before) + 8,
            what="disconnects executed after it",
        )
