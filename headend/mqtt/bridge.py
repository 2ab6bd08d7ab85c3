"""The head-end's one MQTT connection: balance events and requests in, everything else out.

Why it is shaped this way:
- Acknowledge after commit: a persistent session with paho's automatic PUBACK off; a balance
  event is acknowledged only once its handler returned (it is in the database), in delivery
  order (MQTT-4.6.0-2), and never on a later connection than it came on (packet ids are per
  connection). A handler that raises leaves it unacked; the bridge reconnects for redelivery.
- Group commit: what the broker delivered meanwhile (up to ``batch_size``) goes to
  ``on_balance_batch`` as one transaction; acks stop at the first message that failed.
- One message never holds up the stream: the ``max_tries``-th failure of a message is handed
  over as a ``DeadLetter`` (recorded, alarmed) and acknowledged.
- One ``async with aiomqtt.Client(...)`` per attempt; a reader moves messages from aiomqtt's
  iterator (its one public sign of a lost connection) to a queue, so the end of a connection
  is seen at once. What aiomqtt cannot do publicly (manual ack) is in ``paho_access.py``.
- ``headend/status`` is ``online`` (retained), else ``offline`` (stop or will); every network
  await has a timeout; the outbox drains while connected; reconnects back off with jitter.
- On-demand requests (``headend/requests/+``) are only queued by their handler and
  acknowledged in their turn, never holding up a balance event. With ``mqtt5`` the bridge
  speaks MQTT 5 (a persistent session that never expires) so that a request's response topic
  and correlation data reach the handler; the embedded broker (amqtt) speaks 3.1.1 only.
- In a cluster (``share_group``) balance events and requests come on shared subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import ssl
from collections.abc import Callable
from typing import Any

import aiomqtt

from headend.config import MqttConfig
from headend.mqtt.batches import (
    BATCH_SIZE,
    NOT_TRIED,
    BalanceBatchHandler,
    BalanceHandler,
    BridgeStats,
    Delivered,
    HandlerFailedError,
    NotTried,
    hand_over,
    one_by_one,
    settle,
)
from headend.mqtt.dead_letters import MAX_TRIES, TryCounter
from headend.mqtt.incoming import (
    MAX_EVENT_SIZE,
    BadEvent,
    BalanceEvent,
    parse_balance_event,
)
from headend.mqtt.mqtt5 import reply_address, session_options
from headend.mqtt.outbox import Outbox
from headend.mqtt.paho_access import (
    ack,
    drop_connection,
    enable_manual_ack,
    queue_publish,
    read_waiting,
)
from headend.mqtt.payloads import status_payload
from headend.mqtt.pipeline import MAX_IN_FLIGHT, PipelinedOutbox, send_one_by_one, send_pipelined
from headend.mqtt.tls import tls_context_for
from headend.mqtt.topics import Topics
from headend.observability import metrics
from headend.observability.logs import get_logger

__all__ = [
    "NOT_TRIED",
    "BalanceBatchHandler",
    "BalanceHandler",
    "BridgeStats",
    "MqttBridge",
    "RequestHandler",
]

log = get_logger(__name__)


RequestHandler = Callable[[str, bytes, str | None, bytes | None], None]
"""Takes one request (kind, payload, MQTT 5 response topic, correlation data) without
blocking or raising; it is acknowledged as soon as this returns."""


class _Outcome(enum.Enum):
    STOPPED = "stopped"
    LOST = "lost"
    CONNECT_FAILED = "connect_failed"
    HANDLER_FAILED = "handler_failed"


class MqttBridge:
    def __init__(
        self,
        settings: MqttConfig,
        topics: Topics,
        outbox: Outbox,
        on_balance: BalanceHandler,
        *,
        host: str | None = None,
        port: int | None = None,
        tls_context: ssl.SSLContext | None = None,
        max_event_size: int = MAX_EVENT_SIZE,
        timeout_s: float = 10.0,
        handler_timeout_s: float | None = 60.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stop_grace_s: float = 5.0,
        max_tries: int = MAX_TRIES,
        rng: random.Random | None = None,
        share_group: str | None = None,
        on_request: RequestHandler | None = None,
        mqtt5: bool = False,
        on_balance_batch: BalanceBatchHandler | None = None,
        batch_size: int = BATCH_SIZE,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        """``host``/``port`` override the settings (e.g. the embedded broker's address).
        ``share_group`` (a cluster): balance events come on the shared subscription
        ``$share/{share_group}/...``, each to one member of the group."""
        chosen_host = host if host is not None else settings.host
        if chosen_host is None:
            raise ValueError("no MQTT host: start the embedded broker and pass its address")
        self._host: str = chosen_host
        self._port = port if port is not None else settings.port
        self._client_id = settings.client_id
        self._username = settings.username
        self._password = settings.password  # revealed only when a client is made
        self._keepalive = settings.keepalive
        if tls_context is None:
            tls_context = tls_context_for(settings.tls)
        self._tls_context = tls_context
        self.topics = topics
        self.outbox = outbox
        self.stats = BridgeStats()
        self._on_balance = on_balance
        self._on_request = on_request
        self._mqtt5 = mqtt5
        self._on_batch = on_balance_batch or one_by_one(on_balance)
        self._batch_size = max(1, batch_size)
        self._max_in_flight = max(1, max_in_flight)
        self._max_event_size = max_event_size
        self._timeout = timeout_s
        self._handler_timeout = handler_timeout_s
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._stop_grace = stop_grace_s
        self._tries = TryCounter(max_tries)
        self._rng = rng or random.Random()
        self._stop_requested = asyncio.Event()
        self._connected = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._finished = asyncio.Event()
        self._running = False
        self._generation = 0
        # In a cluster each balance event and each request goes to one member.
        share = "" if share_group is None else f"$share/{share_group}/"
        self._balance_filter = share + topics.balance_filter
        self._request_filter = share + topics.request_filter

    def __repr__(self) -> str:
        return (
            f"MqttBridge(host={self._host!r}, port={self._port}, client_id={self._client_id!r}, "
            f"connected={self.connected})"
        )

    # -- public API --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Wait until subscribed and ``online`` is published (wrap it in ``asyncio.timeout``)."""
        await self._connected.wait()

    async def flush(self) -> None:
        """Wait until every queued message reached the broker (wrap it in ``asyncio.timeout``)."""
        await self.outbox.wait_empty()

    async def run(self) -> None:
        """Connect, serve and reconnect until ``stop()``; meant for a TaskGroup."""
        if self._running:
            raise RuntimeError("MqttBridge.run() is already running")
        self._running = True
        self._finished.clear()
        failures = 0
        try:
            while not self._stop_requested.is_set():
                outcome = await self._session()
                if outcome is _Outcome.STOPPED or self._stop_requested.is_set():
                    break
                if outcome is _Outcome.LOST:
                    failures = 0
                delay = self._backoff(failures)
                failures += 1
                log.info("mqtt %s; reconnecting in %.2fs", outcome.value, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop_requested.wait()
        finally:
            self._running = False
            self._connected.clear()
            self._finished.set()

    async def stop(self) -> None:
        """Finish the event in hand, flush the outbox (briefly), say ``offline``, disconnect.

        Final: a stopped bridge does not run again (make a new one).
        """
        self._stop_requested.set()
        if not self._running:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._stop_grace * 2 + self._timeout * 2):
                await self._finished.wait()

    # -- internals ---------------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        ceiling = min(self._backoff_max, self._backoff_initial * (2 ** min(failures, 30)))
        return self._rng.uniform(ceiling / 2, ceiling)

    def _make_client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self._host,
            self._port,
            identifier=self._client_id,
            **session_options(self._mqtt5),
            username=self._username,
            password=None if self._password is None else self._password.reveal(),
            keepalive=self._keepalive,
            timeout=self._timeout,
            tls_context=self._tls_context,
            will=aiomqtt.Will(self.topics.status, status_payload(online=False), qos=1, retain=True),
            max_inflight_messages=self._max_in_flight,
        )
        enable_manual_ack(client)
        return client

    async def _session(self) -> _Outcome:
        """One connection attempt, served until it ends."""
        client = self._make_client()
        loop = asyncio.get_running_loop()
        connected = False
        outcome = _Outcome.CONNECT_FAILED
        try:
            # aiomqtt bounds the TCP connect (paho, 5 s) and the CONNACK wait (timeout_s); this
            # outer bound only guards against either of those not holding. It is lifted once
            # connected, and set again to bound the clean DISCONNECT on the way out.
            async with asyncio.timeout(self._timeout * 2 + 5) as deadline:
                async with client:
                    connected = True
                    deadline.reschedule(None)
                    try:
                        outcome = await self._serve(client)
                    finally:
                        deadline.reschedule(loop.time() + self._timeout)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                drop_connection(client)
            if not connected:
                self.stats.connect_failures += 1
                metrics.MQTT_CONNECT_FAILURES.inc()
                log.info("mqtt connect to %s:%s failed: %s", self._host, self._port, exc)
                return _Outcome.CONNECT_FAILED
            log.debug("mqtt disconnect was not clean: %s", exc)
        finally:
            if connected:
                self.stats.disconnects += 1
        return outcome

    async def _serve(self, client: aiomqtt.Client) -> _Outcome:
        """Say ``online``, subscribe, then receive and send until the connection or we stop."""
        self._generation += 1
        generation = self._generation
        self.stats.connects += 1
        outcome = _Outcome.CONNECT_FAILED  # until subscribed: a failure here does not reset backoff
        inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        # Started first, so that a connection lost at any point from here on is noticed.
        reader = asyncio.create_task(self._read(client, inbox))
        tasks: list[asyncio.Task[Any]] = [reader]
        offline_sent = False
        try:
            await client.publish(
                self.topics.status,
                status_payload(online=True),
                qos=1,
                retain=True,
                timeout=self._timeout,
            )
            await client.subscribe(self._balance_filter, qos=1, timeout=self._timeout)
            if self._on_request is not None:
                await client.subscribe(self._request_filter, qos=1, timeout=self._timeout)
            self._connected.set()
            metrics.MQTT_CONNECTS.inc()
            outcome = _Outcome.LOST
            log.info("mqtt connected to %s:%s as %s", self._host, self._port, self._client_id)
            receiver = asyncio.create_task(self._receive(client, generation, inbox))
            sender = asyncio.create_task(self._send(client))
            stopper = asyncio.create_task(self._stop_requested.wait())
            tasks += [receiver, sender, stopper]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if stopper.done():
                outcome = _Outcome.STOPPED
                await self._drain_gracefully(receiver)
                offline_sent = await self._say_offline(client)
            elif receiver.done() and isinstance(receiver.exception(), HandlerFailedError):
                outcome = _Outcome.HANDLER_FAILED
            for task in (reader, receiver, sender):
                failure = task.exception() if task.done() and not task.cancelled() else None
                if failure is not None and not isinstance(
                    failure, aiomqtt.MqttError | HandlerFailedError
                ):
                    log.error("mqtt bridge task failed", exc_info=failure)
        except aiomqtt.MqttError as exc:
            log.info("mqtt connection lost: %s", exc)
        except Exception:
            log.exception("mqtt session failed")
        finally:
            self._connected.clear()
            self._generation += 1  # no acknowledgement may leave on this connection any more
            current = asyncio.current_task()
            cancelled = current is not None and current.cancelling() > 0
            shutting_down = cancelled or self._stop_requested.is_set()
            await self._let_handler_finish(shutting_down=shutting_down)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            if shutting_down and not offline_sent:
                # Cancelled while connected: no time for a confirmed publish, queue it before
                # the DISCONNECT so it still goes out first on the same socket.
                with contextlib.suppress(Exception):
                    queue_publish(client, self.topics.status, status_payload(online=False), 1, True)
        return outcome

    @staticmethod
    async def _read(client: aiomqtt.Client, inbox: asyncio.Queue[aiomqtt.Message]) -> None:
        """Ends (MqttError) when the connection does, whatever the handler is doing."""
        async for message in client.messages:
            inbox.put_nowait(message)

    async def _let_handler_finish(self, *, shutting_down: bool) -> None:
        """Never cancel a handler half-way through its commit just because the socket went."""
        if self._idle.is_set():
            return
        limit = self._handler_timeout if self._handler_timeout is not None else self._stop_grace
        if shutting_down:
            limit = min(limit, self._stop_grace)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self._idle.wait()

    async def _drain_gracefully(self, receiver: asyncio.Task[None]) -> None:
        """Let the event in hand commit and be acknowledged, and give the outbox a moment."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._stop_grace):
                await self._idle.wait()
        receiver.cancel()
        with contextlib.suppress(BaseException):
            await receiver
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._stop_grace):
                await self.flush()

    async def _say_offline(self, client: aiomqtt.Client) -> bool:
        try:
            await client.publish(
                self.topics.status,
                status_payload(online=False),
                qos=1,
                retain=True,
                timeout=min(self._timeout, self._stop_grace),
            )
        except aiomqtt.MqttError:
            return False
        return True

    async def _receive(
        self, client: aiomqtt.Client, generation: int, inbox: asyncio.Queue[aiomqtt.Message]
    ) -> None:
        while True:
            batch = [await inbox.get()]
            read_waiting(client, self._batch_size)  # what else the broker has sent...
            await asyncio.sleep(0)  # ...moved to the inbox by the reader
            while len(batch) < self._batch_size and not inbox.empty():
                batch.append(inbox.get_nowait())
            if self._stop_requested.is_set():
                return  # left unacknowledged: the broker offers them again next time
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            self._idle.clear()
            try:
                await self._process(client, generation, batch)
            finally:
                self._idle.set()

    async def _process(
        self, client: aiomqtt.Client, generation: int, batch: list[aiomqtt.Message]
    ) -> None:
        """Hand the batch over, then acknowledge in delivery order; raises
        HandlerFailedError at the first message that is to stay unacknowledged."""
        items: list[Delivered] = []
        for message in batch:
            topic = message.topic.value
            kind = self.topics.request_kind(topic)
            if kind is not None and self._on_request is not None:
                self._take_request(kind, message)  # queued only: acked in its turn below
                items.append(Delivered(message, topic, None, b""))
                continue
            meter_id = self.topics.balance_meter_id(topic)
            if meter_id is None:
                self.stats.ignored += 1
                items.append(Delivered(message, topic, None, b""))
                continue
            self.stats.received += 1
            raw = message.payload if isinstance(message.payload, bytes) else b""
            event: BalanceEvent | BadEvent
            try:
                event = parse_balance_event(meter_id, raw, self._max_event_size)
            except BadEvent as bad:
                event = bad
                self.stats.bad_events += 1
            items.append(Delivered(message, topic, event, raw))
        start = 0
        while start < len(items):
            rest = items[start:]
            results = await hand_over(rest, self._on_batch, self._handler_timeout)
            for item, result in zip(rest, results, strict=True):
                if isinstance(result, NotTried):
                    break  # handed over again, from here
                if item.event is not None:
                    await settle(
                        item, result, self._tries, self.stats, self._on_batch, self._handler_timeout
                    )
                self._ack(client, generation, item.message)
                start += 1

    def _take_request(self, kind: str, message: aiomqtt.Message) -> None:
        assert self._on_request is not None
        self.stats.requests += 1
        raw = message.payload if isinstance(message.payload, bytes) else b""
        try:
            self._on_request(kind, raw, *reply_address(message))
        except Exception:  # the handler should not raise; one request never stops the bridge
            log.exception("request on %s not taken", message.topic.value[:200])

    def _published(self) -> None:
        self.stats.published += 1

    def _ack(self, client: aiomqtt.Client, generation: int, message: aiomqtt.Message) -> None:
        if message.qos == 0:
            return
        if generation != self._generation:
            return  # that connection is gone; the broker will offer the message again
        failure = ack(client, message)
        if failure is None:
            self.stats.acked += 1
        else:
            log.info("mqtt ack of message %d failed: %s", message.mid, failure)

    async def _send(self, client: aiomqtt.Client) -> None:
        if isinstance(self.outbox, PipelinedOutbox):
            await send_pipelined(
                client,
                self.outbox,
                max_in_flight=self._max_in_flight,
                publish_timeout_s=self._timeout,
                on_published=self._published,
                mqtt5=self._mqtt5,
            )
            return
        await send_one_by_one(
            client,
            self.outbox,
            publish_timeout_s=self._timeout,
            on_published=self._published,
            mqtt5=self._mqtt5,
        )
