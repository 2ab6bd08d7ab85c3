"""Bad input at the listener: counted always, alarmed once per kind, sender and window.

A meter with a wrong key pushes every fifteen minutes, and an attacker can send a thousand
forged pushes a second; a person needs to hear of each problem once, not once a push, and the
listener must not keep unbounded state about everyone who ever sent it garbage. So the
(kind, sender) pairs alarmed recently are an LRU of at most `max_senders` entries."""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable

__all__ = ["Guard"]


class Guard:
    def __init__(
        self,
        window_s: float = 3600.0,
        max_senders: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_senders = max_senders
        self._clock = clock
        self._alarmed: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"Guard(counts={dict(self.counts)}, tracked={len(self._alarmed)})"

    def report(self, kind: str, sender: str) -> bool:
        """Count one `kind` problem from `sender`; True when it should raise an alarm now."""
        self.counts[kind] += 1
        key = (kind, sender)
        now = self._clock()
        last = self._alarmed.get(key)
        if last is not None and now - last < self.window_s:
            self._alarmed.move_to_end(key)
            return False
        self._alarmed[key] = now
        self._alarmed.move_to_end(key)
        while len(self._alarmed) > self.max_senders:
            self._alarmed.popitem(last=False)
        return True
