"""What the sans-IO client core answers to a reply, one plain class per meaning (like
drivers/hdlc/events.py), so the session's loop tells "send this" from "just read on" by type,
never by an empty byte string."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cosem_objects.apdu.common import DataAccessResult
from cosem_objects.data import Data
from drivers.dlms_errors import DataAccessFailed

__all__ = ["AttributeResult", "Continue", "Done", "HlsChallenged", "KeepReading", "Outcome"]


@dataclass(frozen=True, slots=True)
class Continue:
    """The exchange needs another request (next block, next GBT ack): send `apdu`, then read."""

    apdu: bytes


@dataclass(frozen=True, slots=True)
class KeepReading:
    """A streamed general-block-transfer block arrived: nothing to send, read the next reply."""


@dataclass(frozen=True, slots=True)
class HlsChallenged:
    """The meter accepted the AARE and challenged us (HLS pass 2): the association is not up
    until the request from `hls_reply(invocation_counter)` has been answered."""


@dataclass(frozen=True, slots=True)
class Done:
    """The exchange is over; `value` is its result (Data, a list of AttributeResult, None)."""

    value: Any


Outcome = Continue | KeepReading | Done


@dataclass(frozen=True, slots=True)
class AttributeResult:
    """One attribute of a GET with-list: its value or the meter's refusal."""

    value: Data | None
    error: DataAccessResult | None

    def unwrap(self, what: str) -> Data:
        if self.error is not None or self.value is None:
            code = self.error if self.error is not None else DataAccessResult.OTHER_REASON
            raise DataAccessFailed(what, int(code), code.text)
        return self.value
