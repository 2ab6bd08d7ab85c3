"""Outgoing MQTT messages between whoever has something to say and the bridge that says it.

The ``Outbox`` protocol is the one seam: the ``Notifier`` puts finished messages in, the bridge
takes them out while the broker is there and removes each only once the broker has taken it
(PUBACK for QoS 1), so a broker restart in the middle of a publish means the message goes again,
never that it is lost. An outbox that writes its messages in the same database transaction as
the state change they report can stand in for the in-memory one without either side changing.

``MemoryOutbox`` is bounded: when full, the oldest droppable messages (readings: the next poll
brings fresh ones) go first; commands, relay states, notifications and alarms are shed only when
nothing else is left. A retained message replaces a queued older one on the same topic, since
subscribers only ever see the latest. Order of publication is the order of ``put`` (across both
classes).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from headend.observability.logs import get_logger

__all__ = ["MemoryOutbox", "Outbox", "OutboxMessage"]

log = get_logger(__name__)


def _check_publishable(topic: str, qos: int) -> None:
    """Refuse at once what the broker or paho would refuse later: such a message at the head of
    the outbox would otherwise be retried forever."""
    if qos not in (0, 1, 2):
        raise ValueError(f"bad QoS {qos}")
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"not a topic to publish to: {topic!r:.100}")
    try:
        encoded = topic.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("topic is not encodable as UTF-8") from None
    if len(encoded) > 65535:
        raise ValueError("topic too long")


@dataclass(frozen=True, slots=True, eq=False)
class OutboxMessage:
    """One finished message; compared by identity (the same text may be queued twice)."""

    topic: str
    payload: bytes = field(repr=False)
    qos: int = 1
    retain: bool = False
    droppable: bool = False
    """May be shed first when an outbox is full (readings)."""
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    """Carried in the payload too (the Notifier puts it there): a consumer drops a repeat."""
    correlation_data: bytes | None = field(default=None, repr=False)
    """MQTT 5 correlation data, for a reply on a requester's response topic."""

    def __post_init__(self) -> None:
        _check_publishable(self.topic, self.qos)


class Outbox(Protocol):
    def put(self, message: OutboxMessage) -> OutboxMessage | None:
        """Queue ``message``, never blocking; returns the message shed to make room, if any."""

    async def next(self) -> OutboxMessage:
        """Wait for the oldest message and mark it in flight; ``done`` removes it."""

    def done(self, message: OutboxMessage) -> None:
        """The broker has taken ``message``: forget it."""

    def release(self, message: OutboxMessage) -> None:
        """Sending ``message`` failed; it stays queued, first in line."""

    def refuse(self, message: OutboxMessage) -> None:
        """The client refused ``message`` outright: drop it (retrying would loop forever)."""

    async def wait_empty(self) -> None:
        """Wait until every queued message has been ``done``."""


class MemoryOutbox:
    """The in-memory ``Outbox``: what is queued is lost with the process."""

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError("outbox size must be at least 1")
        self.maxsize = maxsize
        self._low: deque[OutboxMessage] = deque()
        self._high: deque[OutboxMessage] = deque()
        self._order: dict[OutboxMessage, int] = {}
        self._retained: dict[str, OutboxMessage] = {}
        self._in_flight: OutboxMessage | None = None
        self._seq = itertools.count()
        self._nonempty = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self.dropped_readings = 0
        self.dropped_other = 0
        self.superseded = 0

    def __len__(self) -> int:
        return len(self._low) + len(self._high)

    def __repr__(self) -> str:
        return f"MemoryOutbox(queued={len(self)}, maxsize={self.maxsize})"

    @property
    def dropped(self) -> int:
        return self.dropped_readings + self.dropped_other

    def put(self, message: OutboxMessage) -> OutboxMessage | None:
        """Queue ``message``; returns the message shed to make room, if any."""
        if message.retain:
            older = self._retained.get(message.topic)
            if older is not None and older is not self._in_flight:
                self._discard(older)
                self.superseded += 1
            self._retained[message.topic] = message
        evicted: OutboxMessage | None = None
        if len(self) >= self.maxsize:
            evicted = self._evict()
            if evicted is None:  # only the message being sent is queued: shed the newcomer
                self._forget_retained(message)
                self._count_drop(message)
                self._warn_shed(message)
                return message
        self._order[message] = next(self._seq)
        (self._low if message.droppable else self._high).append(message)
        self._nonempty.set()
        self._empty.clear()
        if evicted is not None:
            self._warn_shed(evicted)
        return evicted

    def peek(self) -> OutboxMessage | None:
        """The oldest queued message, without removing it."""
        low = self._low[0] if self._low else None
        high = self._high[0] if self._high else None
        if low is None or (high is not None and self._order[high] < self._order[low]):
            return high
        return low

    async def next(self) -> OutboxMessage:
        while True:
            message = self.peek()
            if message is not None:
                self._in_flight = message
                return message
            self._nonempty.clear()
            await self._nonempty.wait()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def done(self, message: OutboxMessage) -> None:
        if self._in_flight is message:
            self._in_flight = None
        self._discard(message)

    def release(self, message: OutboxMessage) -> None:
        if self._in_flight is message:
            self._in_flight = None

    def refuse(self, message: OutboxMessage) -> None:
        self.done(message)
        self.dropped_other += 1

    def _discard(self, message: OutboxMessage) -> None:
        queue = self._low if message.droppable else self._high
        if queue and queue[0] is message:
            queue.popleft()
        else:
            try:
                queue.remove(message)
            except ValueError:
                pass
        self._order.pop(message, None)
        self._forget_retained(message)
        if not self._low and not self._high:
            self._empty.set()

    def _forget_retained(self, message: OutboxMessage) -> None:
        if message.retain and self._retained.get(message.topic) is message:
            del self._retained[message.topic]

    def _evict(self) -> OutboxMessage | None:
        for queue in (self._low, self._high):
            for index in range(min(2, len(queue))):  # the head may be in flight; skip it
                victim = queue[index]
                if victim is self._in_flight:
                    continue
                del queue[index]  # never empties the outbox: a newcomer follows at once
                self._order.pop(victim, None)
                self._forget_retained(victim)
                self._count_drop(victim)
                return victim
        return None

    def _count_drop(self, message: OutboxMessage) -> None:
        if message.droppable:
            self.dropped_readings += 1
        else:
            self.dropped_other += 1

    def _warn_shed(self, message: OutboxMessage) -> None:
        log.warning(
            "mqtt outbox full (%d): dropped a message for %s (%d readings, %d others so far)",
            self.maxsize,
            message.topic,
            self.dropped_readings,
            self.dropped_other,
        )
