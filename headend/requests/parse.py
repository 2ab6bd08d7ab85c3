"""On-demand requests in (``headend/requests/read``, ``headend/requests/relay_status``): the
parser and its limits.

Requests come from other systems over the network, so they are parsed like balance events
(mqtt/incoming.py): bounded in size, strict about types, no duplicate keys, and every failure
is one ``BadRequest`` whose reason goes back to the requester. A ``BadRequest`` keeps the
request id and meter id when the payload got far enough to carry usable ones, so even a
malformed request is answered where its sender listens."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from headend.domain import MAX_METER_ID_LEN, is_valid_meter_id
from headend.mqtt.topics import REQUEST_KINDS, is_valid_request_id

__all__ = [
    "MAX_OBIS_PER_REQUEST",
    "MAX_REQUEST_SIZE",
    "BadRequest",
    "ReadRequest",
    "RelayStatusRequest",
    "Request",
    "parse_request",
]

MAX_REQUEST_SIZE: Final = 4096
MAX_OBIS_PER_REQUEST: Final = 32
"""A read asks for a handful of registers; more belongs in the polling configuration."""

_OBIS_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){5}")


class BadRequest(ValueError):
    """A request that cannot be served as it came; ``reason`` goes back to the requester."""

    def __init__(
        self, reason: str, *, request_id: str | None = None, meter_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id
        self.meter_id = meter_id


@dataclass(frozen=True, slots=True)
class ReadRequest:
    request_id: str
    meter_id: str
    obis: tuple[str, ...]
    kind: str = "read"


@dataclass(frozen=True, slots=True)
class RelayStatusRequest:
    request_id: str
    meter_id: str
    kind: str = "relay_status"


Request = ReadRequest | RelayStatusRequest


class _Reject(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Reject(f"duplicate key {key[:40]!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> NoReturn:
    raise _Reject(f"non-finite number {name}")


def _obis(value: object) -> str:
    if not isinstance(value, str) or _OBIS_RE.fullmatch(value) is None:
        raise _Reject("obis must be codes like 1.0.1.8.0.255")
    if any(int(group) > 255 for group in value.split(".")):
        raise _Reject(f"obis {value} has a group above 255")
    return value


def _decode(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_REQUEST_SIZE:
        raise BadRequest(f"request too large ({len(payload)} > {MAX_REQUEST_SIZE} bytes)")
    try:
        obj = json.loads(
            bytes(payload).decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except _Reject as exc:
        raise BadRequest(f"request is not acceptable JSON: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("request is not JSON (UTF-8)") from None
    if not isinstance(obj, dict):
        raise BadRequest("request is not a JSON object")
    return obj


def parse_request(kind: str, payload: bytes) -> Request:
    """Parse the payload of ``headend/requests/{kind}``, or raise ``BadRequest`` saying why."""
    obj = _decode(payload)
    raw_id = obj.get("request_id")
    request_id = raw_id if is_valid_request_id(raw_id) else None
    raw_meter = obj.get("meter_id")
    meter_id = raw_meter if is_valid_meter_id(raw_meter) else None
    try:
        if kind not in REQUEST_KINDS:
            raise _Reject(f"unknown request kind {kind[:40]!r} (known: {', '.join(REQUEST_KINDS)})")
        if request_id is None:
            raise _Reject("request_id must be 1-128 printable characters without / + # or spaces")
        if meter_id is None:
            raise _Reject(
                f"meter_id must be 1-{MAX_METER_ID_LEN} printable characters "
                "without / + # or spaces"
            )
        if kind == "relay_status":
            return RelayStatusRequest(request_id, meter_id)
        codes = obj.get("obis")
        if not isinstance(codes, list) or not 1 <= len(codes) <= MAX_OBIS_PER_REQUEST:
            raise _Reject(f"obis must be a list of 1-{MAX_OBIS_PER_REQUEST} OBIS codes")
        parsed = tuple(_obis(code) for code in codes)
        if len(set(parsed)) != len(parsed):
            raise _Reject("obis lists a code twice")
        return ReadRequest(request_id, meter_id, parsed)
    except _Reject as exc:
        raise BadRequest(str(exc), request_id=request_id, meter_id=meter_id) from None
