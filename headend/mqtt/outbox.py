"""The bounded queue of outgoing MQTT messages that waits out a missing broker.

A message leaves the outbox only once the broker has taken it (PUBACK for QoS 1), so a broker
restart in the middle of a publish means the message goes again, never that it is lost. Memory is
bounded: when full, the oldest readings go first (the next poll brings fresh ones); commands,
relay states, notifications and alarms are shed only when nothing else is left. A retained message
replaces a queued older one on the same topic, since subscribers only ever see the latest.
Order of publication is the order of ``put`` (across both classes).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Outbox", "OutboxMessage"]


@dataclass(slots=True, eq=False)
class OutboxMessage:
    topic: str
    payload: bytes = field(repr=False)
    qos: int = 1
    retain: bool = False
    droppable: bool = False
    seq: int = 0


class Outbox:
    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError("outbox size must be at least 1")
        self.maxsize = maxsize
        self._low: deque[OutboxMessage] = deque()
        self._high: deque[OutboxMessage] = deque()
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

    @property
    def dropped(self) -> int:
        return self.dropped_readings + self.dropped_other

    def put(self, message: OutboxMessage) -> OutboxMessage | None:
        """Queue ``message``; returns the message shed to make room, if any."""
        message.seq = next(self._seq)
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
                return message
        (self._low if message.droppable else self._high).append(message)
        self._nonempty.set()
        self._empty.clear()
        return evicted

    def peek(self) -> OutboxMessage | None:
        """The oldest queued message, without removing it."""
        low = self._low[0] if self._low else None
        high = self._high[0] if self._high else None
        if low is None or (high is not None and high.seq < low.seq):
            return high
        return low

    async def next(self) -> OutboxMessage:
        """Wait for the oldest message and mark it in flight; ``done`` removes it."""
        while True:
            message = self.peek()
            if message is not None:
                self._in_flight = message
                return message
            self._nonempty.clear()
            await self._nonempty.wait()

    async def wait_empty(self) -> None:
        """Wait until every queued message has been ``done``."""
        await self._empty.wait()

    def done(self, message: OutboxMessage) -> None:
        """The broker has taken ``message``: forget it."""
        if self._in_flight is message:
            self._in_flight = None
        self._discard(message)

    def release(self, message: OutboxMessage) -> None:
        """Sending ``message`` failed; it stays queued, first in line."""
        if self._in_flight is message:
            self._in_flight = None

    def _discard(self, message: OutboxMessage) -> None:
        queue = self._low if message.droppable else self._high
        if queue and queue[0] is message:
            queue.popleft()
        else:
            try:
                queue.remove(message)
            except ValueError:
                pass
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
                self._forget_retained(victim)
                self._count_drop(victim)
                return victim
        return None

    def _count_drop(self, message: OutboxMessage) -> None:
        if message.droppable:
            self.dropped_readings += 1
        else:
            self.dropped_other += 1
