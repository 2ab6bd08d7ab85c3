"""The topic names of the MQTT contract (DESIGN.md), with configurable prefixes.

Meter ids become topic levels, so an id that would change the topic's shape ('/', wildcards,
NUL) is refused here rather than published somewhere unexpected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from headend.domain import check_meter_id

__all__ = ["Topics"]

_PREFIX_RE = re.compile(r"[^\x00-\x1f+#\x7f\ud800-\udfff]+")


def _check_prefix(prefix: str) -> str:
    if (
        not isinstance(prefix, str)
        or _PREFIX_RE.fullmatch(prefix) is None
        or prefix.startswith("/")
        or prefix.endswith("/")
        or prefix.startswith("$")
        or "//" in prefix
    ):
        raise ValueError(f"bad MQTT topic prefix: {prefix!r:.80}")
    return prefix


@dataclass(frozen=True, slots=True)
class Topics:
    billing_prefix: str = "billing"
    headend_prefix: str = "headend"

    def __post_init__(self) -> None:
        _check_prefix(self.billing_prefix)
        _check_prefix(self.headend_prefix)

    # -- in, from billing ------------------------------------------------------------------
    @property
    def balance_filter(self) -> str:
        return f"{self.billing_prefix}/balance/+"

    def balance(self, meter_id: str) -> str:
        return f"{self.billing_prefix}/balance/{check_meter_id(meter_id)}"

    def balance_meter_id(self, topic: str) -> str | None:
        """The topic's meter-id level if ``topic`` is a balance topic, else None.

        The id is returned even when it is not a valid meter id (e.g. empty), so that the
        caller can report the event as bad instead of silently dropping it.
        """
        head = f"{self.billing_prefix}/balance/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :]
        if "/" in rest:
            return None
        return rest

    # -- out, to integrators ---------------------------------------------------------------
    def _meter(self, meter_id: str, leaf: str) -> str:
        return f"{self.headend_prefix}/meters/{check_meter_id(meter_id)}/{leaf}"

    def readings(self, meter_id: str) -> str:
        return self._meter(meter_id, "readings")

    def relay(self, meter_id: str) -> str:
        return self._meter(meter_id, "relay")

    def commands(self, meter_id: str) -> str:
        return self._meter(meter_id, "commands")

    def notifications(self, meter_id: str) -> str:
        return self._meter(meter_id, "notifications")

    def events(self, meter_id: str) -> str:
        return self._meter(meter_id, "events")

    @property
    def alarms(self) -> str:
        return f"{self.headend_prefix}/alarms"

    @property
    def status(self) -> str:
        return f"{self.headend_prefix}/status"
