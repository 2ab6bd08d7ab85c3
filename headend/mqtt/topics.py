"""The topic names of the MQTT contract (DESIGN.md), with configurable prefixes.

Meter ids become topic levels, so an id that would change the topic's shape ('/', wildcards,
NUL) is refused here rather than published somewhere unexpected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from headend.domain import check_meter_id

__all__ = ["REQUEST_KINDS", "Topics", "is_valid_request_id"]

REQUEST_KINDS = ("read", "relay_status")
"""On-demand requests: ``{headend_prefix}/requests/{kind}``."""

_REQUEST_ID_RE = re.compile(r"[^\x00-\x20/+#\x7f-\x9f\ud800-\udfff]{1,128}")


def is_valid_request_id(request_id: object) -> bool:
    """1-128 printable characters without spaces, '/', '+' or '#': it becomes a topic level."""
    return isinstance(request_id, str) and _REQUEST_ID_RE.fullmatch(request_id) is not None


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

    # -- in, on-demand requests (answered on responses/{request_id}) -----------------------
    @property
    def request_filter(self) -> str:
        return f"{self.headend_prefix}/requests/+"

    def request(self, kind: str) -> str:
        return f"{self.headend_prefix}/requests/{kind}"

    def request_kind(self, topic: str) -> str | None:
        """The last level of a request topic (``read``, ``relay_status``, or a kind that does
        not exist, to be answered with an error), else None."""
        head = f"{self.headend_prefix}/requests/"
        if not topic.startswith(head):
            return None
        kind = topic[len(head) :]
        return kind if "/" not in kind else None

    def response(self, request_id: str) -> str:
        if not is_valid_request_id(request_id):
            raise ValueError(f"request id unusable in an MQTT topic: {request_id!r:.80}")
        return f"{self.headend_prefix}/responses/{request_id}"

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
