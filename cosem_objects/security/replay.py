"""Replay protection: invocation counters must only go up, per sender and key."""

from __future__ import annotations

from cosem_objects.errors import SecurityError
from cosem_objects.security.ciphering import MAX_INVOCATION_COUNTER


class InvocationCounterGuard:
    """Rejects an invocation counter that is not greater than the last one accepted from the
    same sender and key. Call check() only after the message authenticated, so a forged
    message cannot push the counter forward."""

    __slots__ = ("last",)

    def __init__(self, last: int | None = None) -> None:
        self.last = last

    def check(self, ic: int) -> None:
        if not 0 <= ic <= MAX_INVOCATION_COUNTER:
            raise SecurityError("invocation counter out of range")
        if self.last is not None and ic <= self.last:
            raise SecurityError(f"replayed invocation counter {ic} (last accepted {self.last})")
        self.last = ic

    def __repr__(self) -> str:
        return f"InvocationCounterGuard(last={self.last})"
