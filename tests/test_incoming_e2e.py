"""End to end, the incoming side of issue 9: the daemon with the simulator fleet, Mosquitto
(which redelivers what was not acknowledged) and both databases.

- Messages the database cannot store as they came (a C publisher's trailing NUL, an amount of
  dozens of digits) are bad_events, stored and acknowledged: a valid event for another meter
  right behind them is confirmed at the simulated meter within seconds.
- A message whose handling fails again and again (here: a trigger in the test's own database
  refuses one meter's balance) is dead-lettered after three tries, and later events apply.
- Event identity is (meter_id, event_id): an id reused for another meter is applied, the same
  pair with other content is a conflicting_event, an exact copy a duplicate.
- A seq reset by billing (older seq, newer ts) raises stale_event; `headend meters reset-seq`
  from another process, beside the running daemon, lets the next event apply."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest
from db_support import DIALECTS
from e2e_support import eventually
from mqtt_support import system_mosquitto
from test_daemon_e2e import Headend, _cli_env, balance_payload, headend

pytestmark = pytest.mark.timeout(240)


def mosquitto() -> tuple[str, int]:
    where = system_mosquitto()
    if where is None:
        pytest.skip("needs Mosquitto at 127.0.0.1:1883 (HEADEND_TEST_MQTT_HOST): it redelivers")
    return where


def alarms_of(h: Headend, kind: str, meter_id: str | None = None) -> list[dict[str, Any]]:
    return [
        a
        for a in h.out("alarms")
        if a["type"] == kind and (meter_id is None or a["meter_id"] == meter_id)
    ]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_unstorable_messages_are_bad_events_and_hold_up_nothing(
    sim_fleet, tmp_path, dialect: str
) -> None:
    async with (
        sim_fleet(2) as fleet,
        headend(fleet, tmp_path, dialect=dialect, broker=mosquitto()) as h,
    ):
        m0 = h.ids[0]
        await h.send(m0, balance_payload(m0, "-5.00", 1, "nul-1") + b"\x00")
        await h.send(m0, balance_payload(m0, "1" * 40, 2, "long-2"))
        await h.balance(1, "-5.00", 1)
        await h.wait_state(1, "disconnected", within=15)

        alarms = await eventually(
            lambda: len(alarms_of(h, "bad_event", m0)) >= 2 and alarms_of(h, "bad_event", m0),
            what="a bad_event alarm for each",
        )
        reasons = sorted(a["detail"]["reason"] for a in alarms)
        assert "NUL" in reasons[1] and "15 integer digits" in reasons[0], reasons
        assert [a["detail"].get("event_id") for a in alarms].count("long-2") == 1
        assert h.repository is not None
        stored = await h.repository.balance_events(m0)
        assert [r["outcome"] for r in stored] == ["rejected", "rejected"]
        raws = sorted(r["raw"] for r in stored)
        assert any(raw.endswith("}\\x00") for raw in raws) and any("1" * 40 in r for r in raws)
        assert h.sim_state(0) == "connected" and h.remote_ops(0) == []
        assert h.daemon is not None and h.daemon.bridge is not None
        assert h.daemon.bridge.stats.handler_failures == 0


_REFUSE = {
    "postgresql": (
        "CREATE FUNCTION refuse_balance() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'balance refused by the test trigger for %', NEW.meter_id; END $$",
        "CREATE TRIGGER refuse_balance BEFORE UPDATE ON meters FOR EACH ROW "
        "WHEN (NEW.meter_id = '{meter}' AND NEW.last_balance IS DISTINCT FROM OLD.last_balance) "
        "EXECUTE FUNCTION refuse_balance()",
    ),
    "sqlite": (
        "CREATE TRIGGER refuse_balance BEFORE UPDATE OF last_balance ON meters "
        "WHEN NEW.meter_id = '{meter}' "
        "BEGIN SELECT RAISE(ABORT, 'balance refused by the test trigger'); END",
    ),
}
_ALLOW = {
    "postgresql": "DROP TRIGGER refuse_balance ON meters",
    "sqlite": "DROP TRIGGER refuse_balance",
}


async def _ddl(h: Headend, *statements: str) -> None:
    assert h.repository is not None
    async with h.repository.db.engine.begin() as conn:
        for statement in statements:
            await conn.exec_driver_sql(statement)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_message_that_keeps_failing_is_dead_lettered(
    sim_fleet, tmp_path, dialect: str
) -> None:
    async with (
        sim_fleet(2) as fleet,
        headend(fleet, tmp_path, dialect=dialect, broker=mosquitto()) as h,
    ):
        m0 = h.ids[0]
        await _ddl(h, *(sql.format(meter=m0) for sql in _REFUSE[dialect]))
        await h.balance(0, "-5.00", 1, event_id="poison-1")
        await h.balance(1, "-5.00", 1)
        await h.wait_state(1, "disconnected", within=30)

        (alarm,) = await eventually(
            lambda: alarms_of(h, "bad_event", m0), what="the dead letter's alarm"
        )
        assert "dead-lettered after 3 failed tries" in alarm["detail"]["reason"]
        assert "refused by the test trigger" in alarm["detail"]["reason"]
        assert alarm["detail"]["event_id"] == "poison-1"
        assert h.repository is not None
        (letter,) = await h.repository.balance_events(m0)
        assert (letter["outcome"], letter["event_id"], letter["seq"]) == (
            "dead_letter",
            "poison-1",
            1,
        )
        assert "refused by the test trigger" in letter["detail"]
        assert json.loads(letter["raw"])["event_id"] == "poison-1"
        assert h.daemon is not None and h.daemon.bridge is not None
        assert h.daemon.bridge.stats.dead_letters == 1
        assert h.daemon.bridge.stats.handler_failures == 3
        assert h.sim_state(0) == "connected" and await h.settled(0)

        # Later events of that meter apply once the database takes them again.
        await _ddl(h, _ALLOW[dialect])
        await h.balance(0, "-5.00", 2)
        await h.wait_state(0, "disconnected", within=30)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_event_identity_is_meter_and_event_id(sim_fleet, tmp_path, dialect: str) -> None:
    async with (
        sim_fleet(2) as fleet,
        headend(fleet, tmp_path, dialect=dialect, broker=mosquitto()) as h,
    ):
        m0, m1 = h.ids
        first = balance_payload(m0, "-5.00", 1, "shared-1")
        await h.send(m0, first)
        # The same event_id for another meter is that meter's event: applied.
        await h.send(m1, balance_payload(m1, "-5.00", 1, "shared-1"))
        await h.wait_state(0, "disconnected")
        await h.wait_state(1, "disconnected")

        # The same pair with other content: alarmed, not applied.
        await h.send(m0, balance_payload(m0, "50.00", 2, "shared-1"))
        (conflict,) = await eventually(
            lambda: alarms_of(h, "conflicting_event"), what="conflicting_event"
        )
        assert conflict["meter_id"] == m0 and "shared-1" in conflict["detail"]
        assert "seq, balance" in conflict["detail"]
        # An exact copy: a duplicate, ignored; then a marker event to know it was handled.
        await h.send(m0, first)
        await h.balance(1, "-6.00", 2)
        assert h.repository is not None

        async def marker_applied() -> bool:
            meter = await h.repository.get_meter(m1)  # type: ignore[union-attr]
            return meter is not None and meter.balance_seq == 2

        await eventually(marker_applied, what="the marker event")
        stored = await h.repository.balance_events(m0)
        assert [(r["outcome"], r["event_id"]) for r in stored] == [
            ("conflicting", None),
            ("applied", "shared-1"),
        ]
        assert len(alarms_of(h, "conflicting_event")) == 1
        assert not alarms_of(h, "bad_event")
        assert h.sim_state(0) == "disconnected" and len(h.remote_ops(0)) == 1
        assert await h.settled(0)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_stale_event_then_reset_seq_lets_the_next_event_apply(
    sim_fleet, tmp_path, dialect: str
) -> None:
    async with (
        sim_fleet(1) as fleet,
        headend(fleet, tmp_path, dialect=dialect, broker=mosquitto()) as h,
    ):
        (m,) = h.ids
        await h.balance(0, "-5.00", 100)
        await h.wait_state(0, "disconnected")

        # Billing restored a backup: its seq starts again, its clock does not.
        await h.balance(0, "30.00", 1)
        (stale,) = await eventually(lambda: alarms_of(h, "stale_event"), what="stale_event")
        assert stale["meter_id"] == m
        assert "seq 1 is not newer than the last applied 100" in stale["detail"]
        assert h.repository is not None
        assert await h.settled(0) and h.sim_state(0) == "disconnected"
        assert len(h.remote_ops(0)) == 1

        # The operator accepts the new sequence, from another process, the daemon running.
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "headend.cli",
            "meters",
            "reset-seq",
            m,
            "--reason",
            "billing restored a backup (ticket 7)",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp_path,
            env=_cli_env(HEADEND_DATABASE_URL=h.url),
        )
        out, err = await asyncio.wait_for(cli.communicate(), 60)
        assert cli.returncode == 0, err.decode()
        assert "last applied seq: 100" in out.decode()
        assert [a.type for a in await h.repository.list_alarms(meter_id=m)] == []

        # The next event applies though its seq is lower than 100: a top-up from below
        # zero into the warning band reconnects the meter and warns the customer.
        await h.balance(0, "8.00", 2)
        await h.wait_state(0, "connected")
        low = await eventually(
            lambda: [n for n in h.out("notifications", 0) if n["type"] == "low_balance"],
            what="low_balance on the top-up",
        )
        assert low[0]["balance"] == "8.00"
        meter = await h.repository.get_meter(m)
        assert meter is not None and meter.balance_seq == 2
