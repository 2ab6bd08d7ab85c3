"""Balance messages handed over in batches (group commit, issue 10): what a batch handler is
given and what it answers, per message.

The bridge gives what the broker has delivered while the previous batch was committed (up to
`BATCH_SIZE`) to one call, which commits what it can in one transaction and answers for each
message: committed, failed (with the exception; nothing of it stored) or not tried. The bridge
then acknowledges in delivery order and treats each failure as it treats a lone one (counted,
redelivered, dead-lettered at the last try). A handler of one message at a time still fits,
through `one_by_one`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import aiomqtt

from headend.mqtt.dead_letters import TryCounter, describe_failure
from headend.mqtt.incoming import BadEvent, BalanceEvent, DeadLetter

__all__ = [
    "BATCH_SIZE",
    "NOT_TRIED",
    "BalanceBatchHandler",
    "BalanceHandler",
    "BatchResult",
    "BridgeStats",
    "Delivered",
    "HandlerFailedError",
    "NotTried",
    "call_batch",
    "hand_over",
    "one_by_one",
    "settle",
]

log = logging.getLogger("headend.mqtt.bridge")

BalanceHandler = Callable[[BalanceEvent | BadEvent | DeadLetter, bytes], Awaitable[None]]
"""Called once per balance message (again after a redelivery); must commit before returning.
A DeadLetter comes right after the same message failed for the ``max_tries``-th time."""

BATCH_SIZE: Final = 200
"""Most balance messages committed in one transaction (the broker's in-flight window for this
client bounds it too: Mosquitto's ``max_inflight_messages``, 20 by default)."""


class NotTried:
    def __repr__(self) -> str:
        return "NOT_TRIED"


NOT_TRIED: Final = NotTried()
"""A batch handler's answer for a message it did not get to (it is handed over again)."""

BatchResult = BaseException | NotTried | None
BalanceBatchHandler = Callable[
    [Sequence[tuple[BalanceEvent | BadEvent | DeadLetter, bytes]]], Awaitable[list[BatchResult]]
]
"""Called with the messages of one batch, in delivery order; commits what it can and returns,
per message, None (committed), the exception it failed with (nothing of it committed), or
NOT_TRIED. Raising fails the whole batch (counted against its first message)."""


def one_by_one(handler: BalanceHandler) -> BalanceBatchHandler:
    """A batch through a one-message handler, in order; it stops at the first failure."""

    async def batch_handler(
        batch: Sequence[tuple[BalanceEvent | BadEvent | DeadLetter, bytes]],
    ) -> list[BatchResult]:
        results: list[BatchResult] = []
        for event, raw in batch:
            if results and results[-1] is not None:
                results.append(NOT_TRIED)
                continue
            try:
                await handler(event, raw)
            except Exception as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    return batch_handler


@dataclass(slots=True)
class BridgeStats:
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    received: int = 0
    acked: int = 0
    bad_events: int = 0
    handler_failures: int = 0
    dead_letters: int = 0
    ignored: int = 0
    """Messages on topics that are not balance topics (amqtt sends stray retained messages)."""
    requests: int = 0
    published: int = 0
    batches: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class Delivered:
    message: aiomqtt.Message
    topic: str
    event: BalanceEvent | BadEvent | None
    """None: not a balance topic (acknowledged, never handed over)."""
    raw: bytes


class HandlerFailedError(Exception):
    """The message is to stay unacknowledged: the bridge ends the connection."""


async def call_batch(
    handler: BalanceBatchHandler,
    batch: Sequence[tuple[BalanceEvent | BadEvent | DeadLetter, bytes]],
    timeout_s: float | None,
) -> list[BatchResult]:
    if timeout_s is None:
        return await handler(batch)
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            return await handler(batch)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise TimeoutError(f"balance handler took longer than {timeout_s:g} s") from None


async def hand_over(
    items: list[Delivered], handler: BalanceBatchHandler, timeout_s: float | None
) -> list[BatchResult]:
    """Results per item; an ignored message (no event) is None without being handed."""
    wanted = [(item.event, item.raw) for item in items if item.event is not None]
    if not wanted:
        return [None] * len(items)
    try:
        answers = list(await call_batch(handler, wanted, timeout_s))
        if len(answers) != len(wanted):
            raise RuntimeError(f"batch handler answered {len(answers)} of {len(wanted)}")
    except Exception as exc:
        answers = [exc] + [NOT_TRIED] * (len(wanted) - 1)
    handed = iter(answers)
    return [None if item.event is None else next(handed) for item in items]


async def settle(
    item: Delivered,
    failure: BatchResult,
    tries_of: TryCounter,
    stats: BridgeStats,
    handler: BalanceBatchHandler,
    timeout_s: float | None,
) -> None:
    """Count a failure; raises HandlerFailedError while the message is to stay unacked,
    and hands it over as a DeadLetter at its last try."""
    topic, raw = item.topic, item.raw
    key = tries_of.key(topic, raw)
    if failure is None:
        tries_of.forget(key)
        return
    assert item.event is not None and not isinstance(failure, NotTried)
    stats.handler_failures += 1
    tries = tries_of.failed(key)
    if not tries_of.exhausted(tries):
        log.warning(
            "balance handler failed on %s (try %d of %d; left unacknowledged, will be redelivered)",
            topic[:200],
            tries,
            tries_of.max_tries,
            exc_info=failure,
        )
        raise HandlerFailedError from failure
    assert not isinstance(item.event, DeadLetter)
    letter = DeadLetter(item.event, tries, describe_failure(failure))
    log.error("balance message on %s failed %d times: dead-lettered", topic[:200], tries)
    try:
        (recorded,) = await call_batch(handler, [(letter, raw)], timeout_s)
        if recorded is not None:
            raise (
                recorded
                if isinstance(recorded, BaseException)
                else RuntimeError("dead letter not handled")
            )
    except Exception as exc:  # counted: the original is tried first next time
        log.warning("dead letter for %s not recorded", topic[:200], exc_info=exc)
        raise HandlerFailedError from exc
    stats.dead_letters += 1
    tries_of.forget(key)
