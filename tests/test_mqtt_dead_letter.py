"""A balance message that fails again and again is set aside (issue 9: one message that the
handler could not take stopped every later event of every meter). Against Mosquitto, which
redelivers what was not acknowledged: after `max_tries` failed deliveries the message is
handed over once more as a DeadLetter and acknowledged, and the stream goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mqtt_support import Broker, open_broker, publish_once
from test_mqtt_bridge import balance_body, running_bridge, until

from headend.mqtt.dead_letters import TryCounter, describe_failure
from headend.mqtt.incoming import BadEvent, BalanceEvent, DeadLetter

pytestmark = pytest.mark.timeout(60)

Event = BalanceEvent | BadEvent | DeadLetter


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Broker]:
    async with open_broker("mosquitto", tmp_path) as opened:
        yield opened


class Poisoned:
    """Fails on every event of the poisoned meters (as a database refusing them would);
    records what it was given. `letter_failures`: dead letters that fail to be recorded."""

    def __init__(self, *poisoned: str, letter_failures: int = 0) -> None:
        self.poisoned = set(poisoned)
        self.letter_failures = letter_failures
        self.calls: list[Event] = []

    async def __call__(self, event: Event, raw: bytes) -> None:
        self.calls.append(event)
        if isinstance(event, DeadLetter):
            if self.letter_failures:
                self.letter_failures -= 1
                raise OSError("connection to the database lost")
            return
        if event.meter_id in self.poisoned:
            raise RuntimeError("rejected by the database (password=hunter2)")

    def seen(self, kind: type, meter_id: str) -> list[Event]:
        return [e for e in self.calls if isinstance(e, kind) and e.meter_id == meter_id]


async def test_a_message_that_always_fails_is_dead_lettered_and_the_stream_goes_on(
    mosquitto: Broker,
) -> None:
    handler = Poisoned("BAD1")
    async with running_bridge(mosquitto, handler, max_tries=3) as bridge:
        prefix = f"{mosquitto.prefix}/billing/balance"
        await publish_once(mosquitto, f"{prefix}/BAD1", balance_body(mosquitto, "BAD1", seq=4))
        await publish_once(mosquitto, f"{prefix}/OK1", balance_body(mosquitto, "OK1", seq=1))
        await until(lambda: bool(handler.seen(BalanceEvent, "OK1")), within=20)
        await until(lambda: bridge.stats.acked == 2)
        tried = handler.seen(BalanceEvent, "BAD1")
        (letter,) = handler.seen(DeadLetter, "BAD1")
        assert len(tried) == 3 and bridge.stats.handler_failures == 3
        assert isinstance(letter, DeadLetter) and letter.tries == 3
        assert (letter.meter_id, letter.event_id, letter.seq) == ("BAD1", "evt-4", 4)
        assert "rejected by the database" in letter.error and "hunter2" not in letter.error
        assert bridge.stats.dead_letters == 1
        # Acknowledged: a later connection is not offered it again.
        await publish_once(mosquitto, f"{prefix}/OK1", balance_body(mosquitto, "OK1", seq=2))
        await until(lambda: len(handler.seen(BalanceEvent, "OK1")) == 2)
        await asyncio.sleep(0.3)
        assert len(handler.seen(BalanceEvent, "BAD1")) == 3


async def test_a_dead_letter_that_cannot_be_recorded_stays_unacknowledged(
    mosquitto: Broker,
) -> None:
    # The database is away: the dead letter fails too, so the message is kept; once the
    # database is back the original is tried first, and it goes through.
    handler = Poisoned("FLAKY", letter_failures=1)
    async with running_bridge(mosquitto, handler, max_tries=2) as bridge:
        topic = f"{mosquitto.prefix}/billing/balance/FLAKY"
        await publish_once(mosquitto, topic, balance_body(mosquitto, "FLAKY", seq=1))
        await until(lambda: bool(handler.seen(DeadLetter, "FLAKY")), within=20)
        handler.poisoned.clear()  # the database is back
        await until(lambda: bridge.stats.acked == 1, within=20)
        assert [type(e).__name__ for e in handler.calls] == [
            "BalanceEvent",
            "BalanceEvent",
            "DeadLetter",
            "BalanceEvent",
        ]
        assert bridge.stats.dead_letters == 0


def test_try_counter_counts_per_message_and_stays_bounded() -> None:
    counter = TryCounter(max_tries=3, max_counted=2)
    a, b, c = (TryCounter.key("t", payload) for payload in (b"a", b"b", b"c"))
    assert TryCounter.key("t", b"a") == a != TryCounter.key("u", b"a")
    assert [counter.failed(a), counter.failed(a)] == [1, 2] and not counter.exhausted(2)
    assert counter.exhausted(counter.failed(a))
    counter.forget(a)
    assert counter.failed(a) == 1
    counter.failed(b)
    counter.failed(c)  # a, the least recently failed, is forgotten
    assert len(counter) == 2 and counter.failed(a) == 1
    with pytest.raises(ValueError):
        TryCounter(max_tries=0)


def test_failures_are_described_without_statements_or_secrets() -> None:
    class DBAPIError(Exception):
        def __init__(self) -> None:
            super().__init__("[SQL: INSERT INTO meters ...] [parameters: ('secret',)]")
            self.orig = ValueError("value too long for type character varying(64)")

    assert describe_failure(DBAPIError()) == (
        "ValueError: value too long for type character varying(64)"
    )
    described = describe_failure(RuntimeError("auth_key=00112233445566778899aabbccddeeff x"))
    assert "00112233" not in described and described.startswith("RuntimeError: ")
    assert len(describe_failure(RuntimeError("x" * 5000))) <= 300
