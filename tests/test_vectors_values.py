"""The decoded meaning of the vectors, beyond their frames: every `datetime_detail` (each
field of the 12-byte date-time, local and UTC time) and every single `value` of a GET reply,
through our own decoders (plaintext first for ciphered vectors)."""

from __future__ import annotations

from typing import Any

import pytest
from vectors import vector_params

from cosem_objects.classes import plain_value
from cosem_objects.data import Data, DataType
from cosem_objects.dates import CosemDateTime
from cosem_objects.decode import decode_apdu


def _apdu_bytes(vector: dict[str, Any]) -> bytes:
    expect = vector["expect"]
    for key in ("plaintext_hex", "reassembled_apdu_hex", "apdu_hex"):
        if expect.get(key):
            return bytes.fromhex(expect[key])
    return bytes.fromhex(vector["hex"])


def _date_times(value: Any) -> list[CosemDateTime]:
    """Every 12-byte date-time in a decoded APDU, in order."""
    found: list[CosemDateTime] = []
    if isinstance(value, Data):
        if value.type is DataType.DATE_TIME:
            found.append(value.value)
        elif value.type is DataType.OCTET_STRING and len(value.value) == 12:
            found.append(CosemDateTime.from_bytes(value.value))
        elif value.type in (DataType.ARRAY, DataType.STRUCTURE):
            for element in value.value:
                found.extend(_date_times(element))
    elif isinstance(value, CosemDateTime):
        found.append(value)
    elif hasattr(type(value), "__slots__"):
        for name in type(value).__slots__:
            found.extend(_date_times(getattr(value, name, None)))
    return found


def _detail(stamp: CosemDateTime) -> dict[str, Any]:
    utc = stamp.utc()
    return {
        "year": stamp.year,
        "month": stamp.month,
        "day": stamp.day,
        "day_of_week": stamp.day_of_week,
        "hour": stamp.hour,
        "minute": stamp.minute,
        "second": stamp.second,
        "hundredths": stamp.hundredths,
        "deviation": stamp.deviation,
        "clock_status": 0xFF if stamp.clock_status is None else stamp.clock_status,
        "local": stamp.local_datetime().isoformat(),
        "utc": None if utc is None else utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@pytest.mark.parametrize(
    "vector", vector_params(predicate=lambda v: "datetime_detail" in v["expect"])
)
def test_datetime_detail(vector: dict[str, Any]) -> None:
    expect = vector["expect"]
    stamps = _date_times(decode_apdu(_apdu_bytes(vector)))
    want = expect["datetime_detail"]
    details = [_detail(s) for s in stamps if s.is_complete]
    assert want in details, f"{want} not among {details}"
    assert expect["datetime"] == want["local"]


@pytest.mark.parametrize(
    "vector",
    vector_params(predicate=lambda v: "value" in v["expect"] and "apdu" in v["expect"]),
)
def test_single_get_values(vector: dict[str, Any]) -> None:
    apdu = decode_apdu(_apdu_bytes(vector))
    result = apdu.result  # type: ignore[attr-defined]
    assert isinstance(result, Data)
    assert plain_value(result) == vector["expect"]["value"]
