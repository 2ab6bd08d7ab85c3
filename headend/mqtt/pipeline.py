"""Outgoing messages with many in flight (issue 10: the outbox drains as fast as the broker
acknowledges, not one PUBACK round trip per message).

Up to `max_in_flight` QoS 1 messages are published and not yet acknowledged at once, in the
outbox's order: paho sends them in the order of the publish calls, which is the order the
tasks start. The first failure ends the connection; everything unacknowledged is handed out
again from the head of the table on the next one (`rewind`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, Protocol, runtime_checkable

import aiomqtt

from headend.mqtt.mqtt5 import publish_properties
from headend.mqtt.outbox import Outbox, OutboxMessage

__all__ = ["MAX_IN_FLIGHT", "PipelinedOutbox", "send_one_by_one", "send_pipelined"]

log = logging.getLogger(__name__)

MAX_IN_FLIGHT: Final = 100
"""Outgoing QoS 1 messages published and not yet acknowledged, at most, per connection."""


@runtime_checkable
class PipelinedOutbox(Protocol):
    """An outbox that can have many messages in flight (mqtt/durable_outbox.py)."""

    async def take(self) -> OutboxMessage: ...

    def done(self, message: OutboxMessage) -> None: ...

    def refuse(self, message: OutboxMessage) -> None: ...

    def rewind(self) -> None: ...


async def send_pipelined(
    client: aiomqtt.Client,
    outbox: PipelinedOutbox,
    *,
    max_in_flight: int,
    publish_timeout_s: float,
    on_published: Callable[[], None],
    mqtt5: bool = False,
) -> None:
    """Publish from `outbox` until the connection fails (raises) or this is cancelled."""
    outbox.rewind()
    room = asyncio.Semaphore(max_in_flight)
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    flying: set[asyncio.Task[None]] = set()

    async def publish(message: OutboxMessage) -> None:
        try:
            await client.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                retain=message.retain,
                # A reply's correlation data (MQTT 5 requests): mqtt/mqtt5.py.
                properties=publish_properties(message.correlation_data, mqtt5),
                timeout=publish_timeout_s,
            )
        except ValueError:
            log.error("mqtt message for %s refused by the client; dropped", message.topic)
            outbox.refuse(message)
        except Exception as exc:
            if not failed.done():
                failed.set_exception(exc)
            return
        else:
            outbox.done(message)
            on_published()
        finally:
            room.release()

    taking: asyncio.Future[OutboxMessage] | None = None
    try:
        while True:
            await room.acquire()
            if failed.done():
                failed.result()
            taking = asyncio.ensure_future(outbox.take())
            await asyncio.wait((taking, failed), return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                taking.cancel()
                failed.result()  # raises: the connection is to end
            task = asyncio.create_task(publish(taking.result()))
            flying.add(task)
            task.add_done_callback(flying.discard)
    finally:
        if taking is not None:
            taking.cancel()
        for task in list(flying):
            task.cancel()
        if failed.done():
            failed.exception()  # retrieved (it ends the connection; logged there)
        outbox.rewind()


async def send_one_by_one(
    client: aiomqtt.Client,
    outbox: Outbox,
    *,
    publish_timeout_s: float,
    on_published: Callable[[], None],
    mqtt5: bool = False,
) -> None:
    """Publish from an outbox that hands out one message at a time (the in-memory one), each
    acknowledged before the next; until the connection fails (raises) or this is cancelled."""
    while True:
        message = await outbox.next()
        try:
            await client.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                retain=message.retain,
                properties=publish_properties(message.correlation_data, mqtt5),
                timeout=publish_timeout_s,
            )
        except ValueError:  # paho refuses it outright: retrying would loop forever
            log.error("mqtt message for %s refused by the client; dropped", message.topic)
            outbox.refuse(message)
            continue
        except BaseException:
            outbox.release(message)
            raise
        outbox.done(message)
        on_published()
