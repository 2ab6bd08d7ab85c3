"""The MQTT bridge against real brokers: the embedded amqtt one always, the system Mosquitto
(127.0.0.1:1883 or HEADEND_TEST_MQTT_HOST) when it answers, and a private Mosquitto process
for the tests that take the broker away (the system one is never stopped).

amqtt does not redeliver unacknowledged messages (see headend/mqtt/broker.py), so redelivery is
asserted on Mosquitto only; on amqtt the same tests check that nothing is acknowledged early and
that the bridge keeps going."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from mqtt_support import (
    Broker,
    Collector,
    MosquittoProcess,
    forget_session,
    make_tls_files,
    mosquitto_binary,
    open_broker,
    publish_once,
)

from headend.config import MqttConfig, TlsConfig
from headend.meters.secrets import Secret
from headend.mqtt.bridge import MqttBridge
from headend.mqtt.incoming import BadEvent, BalanceEvent
from headend.mqtt.notifier import Notifier
from headend.mqtt.outbox import MemoryOutbox, OutboxMessage
from headend.mqtt.payloads import encode_payload
from headend.mqtt.topics import Topics

REPO = Path(__file__).resolve().parents[1]
Event = BalanceEvent | BadEvent
Handler = Callable[[Event, bytes], Awaitable[None]]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["amqtt", "mosquitto"])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    async with open_broker(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture(params=["amqtt", "mosquitto-proc"])
async def restartable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    async with open_broker(request.param, tmp_path) as opened:
        yield opened


def settings_for(broker: Broker, **changes: Any) -> MqttConfig:
    base: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": f"{broker.prefix}-hes",
        "billing_prefix": f"{broker.prefix}/billing",
        "headend_prefix": f"{broker.prefix}/headend",
        "keepalive": 10,
    }
    return MqttConfig(**{**base, **changes})


def make_bridge(
    settings: MqttConfig, handler: Handler, *, outbox_size: int = 10_000, **options: Any
) -> MqttBridge:
    """A bridge with its own topics (from the settings' prefixes) and in-memory outbox."""
    topics = Topics(settings.billing_prefix, settings.headend_prefix)
    return MqttBridge(settings, topics, MemoryOutbox(outbox_size), handler, **options)


def notifier_of(bridge: MqttBridge) -> Notifier:
    """What the daemon's parts would use to put messages in the bridge's outbox."""
    return Notifier(bridge.outbox, bridge.topics)


class Recorder:
    """A balance handler that records calls and can be told to block or fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[Event, bytes]] = []
        self.fail_next = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self._changed = asyncio.Event()

    async def __call__(self, event: Event, raw: bytes) -> None:
        self.calls.append((event, raw))
        self._changed.set()
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("database is down")

    async def wait_calls(self, n: int, within: float = 10) -> None:
        async with asyncio.timeout(within):
            while len(self.calls) < n:
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running_bridge(
    broker: Broker, handler: Handler, **options: Any
) -> AsyncIterator[MqttBridge]:
    settings_changes = options.pop("settings", {})
    settings = settings_for(broker, **settings_changes)
    options = {
        "timeout_s": 3.0,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.4,
        "stop_grace_s": 2.0,
        **options,
    }
    bridge = make_bridge(settings, handler, **options)
    task = asyncio.create_task(bridge.run())
    try:
        async with asyncio.timeout(10):
            await bridge.wait_connected()
        yield bridge
    finally:
        await bridge.stop()
        async with asyncio.timeout(15):
            await task
        if not broker.restartable:
            await forget_session(broker, settings.client_id, f"{broker.prefix}/headend/status")


def balance_body(broker: Broker, meter_id: str = "MTR1", seq: int = 1, **changes: Any) -> bytes:
    body = {
        "meter_id": meter_id,
        "balance": "12.50",
        "currency": "CNY",
        "seq": seq,
        "event_id": f"evt-{seq}",
        "ts": "2026-11-26T08:00:00Z",
        **changes,
    }
    return json.dumps(body).encode()


async def until(predicate: Callable[[], bool], within: float = 10) -> None:
    """Poll a condition (the bridge's counters have no event to wait on)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# -- in: balance events --------------------------------------------------------------------------


async def test_balance_event_reaches_handler_and_is_acked_only_after_it(broker: Broker) -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    async with running_bridge(broker, recorder) as bridge:
        body = balance_body(broker, seq=7, warning_threshold="20.00")
        await publish_once(broker, f"{broker.prefix}/billing/balance/MTR1", body)
        await recorder.wait_calls(1)
        event, raw = recorder.calls[0]
        assert isinstance(event, BalanceEvent)
        assert (event.meter_id, event.balance, event.seq) == ("MTR1", Decimal("12.50"), 7)
        assert event.warning_threshold == Decimal("20.00")
        assert raw == body
        await asyncio.sleep(0.2)
        assert bridge.stats.acked == 0  # the handler has not returned: no PUBACK yet
        recorder.gate.set()
        await until(lambda: bridge.stats.acked == 1)
        assert bridge.stats.handler_failures == 0


async def test_bad_event_is_handed_over_acked_and_the_bridge_goes_on(broker: Broker) -> None:
    recorder = Recorder()
    async with running_bridge(broker, recorder) as bridge:
        topic = f"{broker.prefix}/billing/balance/MTR1"
        await publish_once(broker, topic, b"\xff not json")
        await publish_once(broker, topic, balance_body(broker, meter_id="MTR2"))
        await publish_once(broker, topic, balance_body(broker, seq=2, balance="-3.00"))
        await recorder.wait_calls(3)
        first, second, third = (event for event, _ in recorder.calls)
        assert isinstance(first, BadEvent) and first.reason == "payload is not UTF-8"
        assert isinstance(second, BadEvent) and "does not match the topic" in second.reason
        assert second.event_id == "evt-1"
        assert isinstance(third, BalanceEvent) and third.balance == Decimal("-3.00")
        await until(lambda: bridge.stats.acked == 3)
        assert bridge.stats.bad_events == 2


async def test_failing_handler_leaves_the_event_for_redelivery(broker: Broker) -> None:
    recorder = Recorder()
    recorder.fail_next = 1
    async with running_bridge(broker, recorder) as bridge:
        topic = f"{broker.prefix}/billing/balance/MTR1"
        await publish_once(broker, topic, balance_body(broker, seq=1))
        await recorder.wait_calls(1)
        await until(lambda: bridge.stats.handler_failures == 1)
        await until(lambda: bridge.stats.connects >= 2)  # reconnected, so the broker offers it
        if broker.redelivers_unacked:
            await recorder.wait_calls(2)
            redelivered = recorder.calls[1][0]
            assert isinstance(redelivered, BalanceEvent) and redelivered.event_id == "evt-1"
            await until(lambda: bridge.stats.acked == 1)
        await publish_once(broker, topic, balance_body(broker, seq=2))
        await until(lambda: any(getattr(e, "seq", None) == 2 for e, _ in recorder.calls))
        await until(lambda: bridge.stats.acked == (2 if broker.redelivers_unacked else 1))
        seqs = [getattr(e, "seq", None) for e, _ in recorder.calls]
        assert seqs == ([1, 1, 2] if broker.redelivers_unacked else [1, 2])


async def test_unacked_event_survives_a_broker_restart_mid_handler(tmp_path: Path) -> None:
    """The handler is still committing when the broker goes: no stale PUBACK on the new
    connection, and the broker (Mosquitto, persistent) hands the event over again."""
    async with open_broker("mosquitto-proc", tmp_path) as broker:
        recorder = Recorder()
        recorder.gate = asyncio.Event()
        async with running_bridge(broker, recorder) as bridge:
            await publish_once(
                broker, f"{broker.prefix}/billing/balance/MTR1", balance_body(broker, seq=5)
            )
            await recorder.wait_calls(1)
            await broker.stop()
            await until(lambda: not bridge.connected)
            recorder.gate.set()  # commit finishes while the broker is away
            await broker.start()
            await recorder.wait_calls(2, within=15)
            assert [getattr(e, "seq", None) for e, _ in recorder.calls] == [5, 5]
            await until(lambda: bridge.stats.acked == 1)


# -- status and last will ------------------------------------------------------------------------


async def test_status_online_while_connected_offline_after_stop(broker: Broker) -> None:
    status = f"{broker.prefix}/headend/status"
    async with Collector(broker, status) as seen:
        async with running_bridge(broker, Recorder()):
            await seen.wait_for(status, b"online")
        await seen.wait_for(status, b"offline")
        statuses = seen.payloads(status)
        assert statuses.index(b"offline") > statuses.index(b"online")
    if not broker.restartable:
        await forget_session(broker, "cleanup", status)


CHILD = """
import asyncio, sys
from headend.config import MqttConfig
from headend.mqtt.bridge import MqttBridge
from headend.mqtt.outbox import MemoryOutbox
from headend.mqtt.topics import Topics

async def main():
    host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    settings = MqttConfig(host=host, port=port, client_id=prefix + "-child",
                          billing_prefix=prefix + "/billing", headend_prefix=prefix + "/headend")
    async def on_balance(event, raw):
        pass
    topics = Topics(settings.billing_prefix, settings.headend_prefix)
    bridge = MqttBridge(settings, topics, MemoryOutbox(), on_balance, timeout_s=3)
    task = asyncio.create_task(bridge.run())
    async with asyncio.timeout(10):
        await bridge.wait_connected()
    print("connected", flush=True)
    await task

asyncio.run(main())
"""


async def test_last_will_says_offline_when_the_process_dies(broker: Broker) -> None:
    status = f"{broker.prefix}/headend/status"
    async with Collector(broker, status) as seen:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            broker.host,
            str(broker.port),
            broker.prefix,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            assert child.stdout is not None
            async with asyncio.timeout(20):
                assert (await child.stdout.readline()).strip() == b"connected"
            await seen.wait_for(status, b"online")
            # os.kill, not child.kill(): Popen.send_signal polls, reaping the child behind
            # asyncio's watcher ("Unknown child process pid").
            os.kill(child.pid, signal.SIGKILL)  # no DISCONNECT, no goodbye
            await seen.wait_for(status, b"offline")
        finally:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
            async with asyncio.timeout(10):
                await child.wait()
    if not broker.restartable:
        await forget_session(broker, f"{broker.prefix}-child", status)


# -- out: the outbox over a broker outage --------------------------------------------------------


async def test_outbox_keeps_messages_while_the_broker_is_away(restartable: Broker) -> None:
    broker = restartable
    recorder = Recorder()
    async with running_bridge(broker, recorder) as bridge:
        topics = bridge.topics
        notifier = notifier_of(bridge)
        await broker.stop()
        await until(lambda: not bridge.connected)
        ts = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
        for i in range(5):
            notifier.relay_state(f"MTR{i}", "disconnected", False, ts, "arrears")
        assert len(bridge.outbox) == 5
        await asyncio.sleep(0.3)  # a few reconnect attempts fail meanwhile
        assert len(bridge.outbox) == 5 and bridge.stats.connect_failures >= 1
        await broker.start()
        async with asyncio.timeout(15):
            await bridge.wait_connected()
            await bridge.flush()
        assert bridge.outbox.dropped == 0
        relay_filter = f"{broker.prefix}/headend/meters/+/relay"
        async with Collector(broker, relay_filter) as seen:  # retained: seen whenever we look
            for i in range(5):
                got = json.loads(await seen.wait_for(topics.relay(f"MTR{i}")))
                assert got["meter_id"] == f"MTR{i}" and got["state"] == "disconnected"
        # and it subscribed again: a balance event still arrives
        await publish_once(broker, f"{broker.prefix}/billing/balance/MTR1", balance_body(broker))
        await recorder.wait_calls(1)


async def test_outbox_delivers_in_order_to_a_persistent_subscriber(tmp_path: Path) -> None:
    async with open_broker("mosquitto-proc", tmp_path) as broker:
        readings_topic = f"{broker.prefix}/headend/meters/MTR1/readings"
        commands_topic = f"{broker.prefix}/headend/meters/MTR1/commands"
        async with Collector(broker, f"{broker.prefix}/headend/meters/#", identifier="sms"):
            pass  # subscribed; its session lives on in the broker (and its persistence file)
        async with running_bridge(broker, Recorder()) as bridge:
            notifier = notifier_of(bridge)
            assert (notifier.topics.commands("MTR1"), notifier.topics.readings("MTR1")) == (
                commands_topic,
                readings_topic,
            )
            await broker.stop()
            await until(lambda: not bridge.connected)
            ts = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
            for attempt in range(1, 4):
                notifier.command(
                    command_id="c1",
                    meter_id="MTR1",
                    action="disconnect",
                    status="sent",
                    attempt=attempt,
                    ts=ts,
                )
                notifier.readings("MTR1", ts, {"1.0.1.8.0.255": (attempt, "Wh")})
            await broker.start()
            async with asyncio.timeout(15):
                await bridge.flush()
        seen = Collector(broker, f"{broker.prefix}/headend/meters/#", identifier="sms")
        seen.filters = ()  # the session already has the subscription
        async with seen:
            await until(lambda: len(seen.messages) >= 6)
        attempts = [json.loads(p)["attempt"] for p in seen.payloads(commands_topic)]
        values = [
            json.loads(p)["values"]["1.0.1.8.0.255"]["value"] for p in seen.payloads(readings_topic)
        ]
        assert attempts == [1, 2, 3] and values == [1, 2, 3]


async def test_full_outbox_sheds_readings_first(restartable: Broker) -> None:
    broker = restartable
    async with running_bridge(broker, Recorder(), outbox_size=4) as bridge:
        notifier = notifier_of(bridge)
        await broker.stop()
        await until(lambda: not bridge.connected)
        ts = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
        for i in range(3):
            notifier.readings("MTR1", ts, {})
            notifier.alarm("meter_unreachable", ts, meter_id=f"M{i}")
        assert len(bridge.outbox) == 4
        assert (bridge.outbox.dropped_readings, bridge.outbox.dropped_other) == (2, 0)
        await broker.start()
        async with asyncio.timeout(15):
            await bridge.flush()


async def test_stop_without_a_broker_returns(tmp_path: Path) -> None:
    async with open_broker("amqtt", tmp_path) as broker:
        await broker.stop()
        bridge = make_bridge(settings_for(broker), Recorder(), backoff_initial_s=0.05)
        task = asyncio.create_task(bridge.run())
        await until(lambda: bridge.stats.connect_failures >= 2)
        bridge.outbox.put(OutboxMessage("x/y", encode_payload({"kept": True})))
        await bridge.stop()
        async with asyncio.timeout(5):
            await task
        assert not bridge.connected and len(bridge.outbox) == 1


def test_bridge_needs_a_host() -> None:
    async def handler(event: Event, raw: bytes) -> None:
        pass

    with pytest.raises(ValueError, match="embedded broker"):
        asyncio.run(_make(MqttConfig(host=None), handler))


async def _make(settings: MqttConfig, handler: Handler) -> MqttBridge:
    return make_bridge(settings, handler)


# -- nothing secret on the wire ------------------------------------------------------------------


async def test_no_secret_in_anything_the_bridge_publishes(broker: Broker) -> None:
    password = "mqtt-Pa55word"
    key = "00112233445566778899aabbccddeeff"
    ts = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    everything = f"{broker.prefix}/#"
    async with Collector(broker, everything) as seen:
        async with running_bridge(
            broker, Recorder(), settings={"username": "hes", "password": Secret(password)}
        ) as bridge:
            assert password not in repr(bridge)
            error = f"association refused (auth_key={key}, password={password})"
            notifier = notifier_of(bridge)
            notifier.command(
                command_id=1,
                meter_id="MTR1",
                action="disconnect",
                status="failed",
                attempt=1,
                ts=ts,
                error=error,
            )
            notifier.alarm("meter_unreachable", ts, meter_id="MTR1", detail={"error": error})
            notifier.relay_state("MTR1", "connected", True, ts, error)
            async with asyncio.timeout(10):
                await bridge.flush()
        await seen.wait_for(f"{broker.prefix}/headend/status", b"offline")
        assert len(seen.messages) >= 5
        for message in seen.messages:
            wire = bytes(message.payload).decode()  # type: ignore[arg-type]
            assert password not in wire and key not in wire.lower()
    if not broker.restartable:
        await forget_session(
            broker,
            "cleanup",
            f"{broker.prefix}/headend/status",
            f"{broker.prefix}/headend/meters/MTR1/relay",
        )


# -- TLS and the real config ---------------------------------------------------------------------


async def test_tls_with_the_brokers_ca_connects_and_without_it_does_not(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto binary not installed (apt-get install mosquitto)")
    ca, cert, key = make_tls_files(tmp_path)
    process = MosquittoProcess(
        tmp_path, extra_conf=(f"cafile {ca}", f"certfile {cert}", f"keyfile {key}")
    )
    await process.start()
    try:
        broker = Broker("mosquitto-tls", process.host, process.port, True, _process=process)
        trusted = settings_for(broker, tls=TlsConfig(ca_file=ca))
        async with running_bridge(broker, Recorder(), settings={"tls": TlsConfig(ca_file=ca)}) as b:
            notifier_of(b).alarm("relay_stuck", datetime.now(UTC))
            async with asyncio.timeout(10):
                await b.flush()
            assert b.stats.published == 1
        assert trusted.tls.active

        untrusting = make_bridge(
            settings_for(broker, tls=TlsConfig(enabled=True)),  # system CAs: not ours
            Recorder(),
            timeout_s=2,
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
        )
        task = asyncio.create_task(untrusting.run())
        await until(lambda: untrusting.stats.connect_failures >= 2)
        assert untrusting.stats.connects == 0 and not untrusting.connected
        await untrusting.stop()
        async with asyncio.timeout(10):
            await task
    finally:
        await process.stop()


async def test_bridge_takes_headend_config_with_a_secret_password(tmp_path: Path) -> None:
    async with open_broker("amqtt", tmp_path) as broker:
        mqtt_config = MqttConfig(
            host=broker.host,
            port=broker.port,
            client_id=f"{broker.prefix}-cfg",
            billing_prefix=f"{broker.prefix}/billing",
            headend_prefix=f"{broker.prefix}/headend",
            username="hes",
            password=Secret("cfg-Pa55"),
        )
        recorder = Recorder()
        bridge = make_bridge(mqtt_config, recorder, timeout_s=3)
        assert "cfg-Pa55" not in repr(bridge)
        task = asyncio.create_task(bridge.run())
        try:
            async with asyncio.timeout(10):
                await bridge.wait_connected()
            await publish_once(
                broker, f"{broker.prefix}/billing/balance/MTR1", balance_body(broker)
            )
            await recorder.wait_calls(1)
        finally:
            await bridge.stop()
            async with asyncio.timeout(10):
                await task


async def test_cancelled_bridge_still_says_offline(broker: Broker) -> None:
    """A daemon shut down by cancelling its TaskGroup must not leave a retained "online"."""
    settings = settings_for(broker)
    status = f"{broker.prefix}/headend/status"
    async with Collector(broker, status) as seen:
        bridge = make_bridge(settings, Recorder(), timeout_s=3)
        task = asyncio.create_task(bridge.run())
        async with asyncio.timeout(10):
            await bridge.wait_connected()
        await seen.wait_for(status, b"online")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await seen.wait_for(status, b"offline")
    if not broker.restartable:
        await forget_session(broker, settings.client_id, status)
