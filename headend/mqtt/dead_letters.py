"""How often each balance message failed, so that one message never holds up the stream.

A message whose handling fails stays unacknowledged and the broker offers it again (after a
reconnect), first: a message that always fails would stop every later one, for every meter
(issue 9). The bridge counts each message's failed deliveries here, by topic and payload
(a redelivery carries no id of its own), and sets it aside as a dead letter at `max_tries`.
Counts live in memory: a restart gives every message its tries again, which is harmless."""

from __future__ import annotations

import hashlib
from typing import Final

from headend.mqtt.payloads import scrub_text

__all__ = ["MAX_TRIES", "TryCounter", "describe_failure"]

MAX_TRIES: Final = 3
"""Deliveries of one message that may fail before it is dead-lettered."""


class TryCounter:
    """Failed deliveries per message; at most `max_counted` messages are remembered (the one
    that failed least recently is forgotten first)."""

    def __init__(self, max_tries: int = MAX_TRIES, max_counted: int = 1024) -> None:
        if max_tries < 1:
            raise ValueError("max_tries must be at least 1")
        self.max_tries = max_tries
        self._max_counted = max_counted
        self._tries: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._tries)

    @staticmethod
    def key(topic: str, payload: bytes) -> bytes:
        return hashlib.sha256(topic.encode("utf-8", "replace") + b"\x00" + payload).digest()

    def failed(self, key: bytes) -> int:
        """Count one more failed delivery; returns how many there were."""
        tries = self._tries.pop(key, 0) + 1
        self._tries[key] = tries
        if len(self._tries) > self._max_counted:
            del self._tries[next(iter(self._tries))]
        return tries

    def exhausted(self, tries: int) -> bool:
        return tries >= self.max_tries

    def forget(self, key: bytes) -> None:
        """The message was handled (or set aside): its count goes."""
        self._tries.pop(key, None)


def describe_failure(exc: BaseException) -> str:
    """The failure, for a dead letter's record and alarm: a database error by its driver's
    message (SQLAlchemy's own text carries the statement and its parameters), scrubbed of
    anything that looks secret, and bounded."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause) or type(cause).__name__
    return scrub_text(f"{type(cause).__name__}: {text}", 300)
