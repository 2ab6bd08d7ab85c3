"""The on-demand request parser: limits, reasons, and never anything but a BadRequest."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.requests.parse import (
    MAX_OBIS_PER_REQUEST,
    MAX_REQUEST_SIZE,
    BadRequest,
    ReadRequest,
    RelayStatusRequest,
    parse_request,
)


def _raw(body: object) -> bytes:
    return json.dumps(body).encode()


def test_good_requests() -> None:
    read = parse_request(
        "read", _raw({"request_id": "r1", "meter_id": "M1", "obis": ["1.0.1.8.0.255"]})
    )
    assert read == ReadRequest("r1", "M1", ("1.0.1.8.0.255",))
    status = parse_request("relay_status", _raw({"request_id": "r2", "meter_id": "M1", "x": 1}))
    assert status == RelayStatusRequest("r2", "M1")


@pytest.mark.parametrize(
    ("kind", "payload", "reason", "request_id", "meter_id"),
    [
        ("read", b"\xff", "not JSON", None, None),
        ("read", b"[1]", "not a JSON object", None, None),
        ("read", b'{"request_id": "a", "request_id": "b"}', "duplicate key", None, None),
        ("read", b'{"request_id": NaN}', "non-finite", None, None),
        ("write", _raw({"request_id": "r", "meter_id": "M"}), "unknown request kind", "r", "M"),
        ("read", _raw({"meter_id": "M", "obis": ["1.0.1.8.0.255"]}), "request_id", None, "M"),
        ("read", _raw({"request_id": "a/b", "meter_id": "M"}), "request_id", None, "M"),
        ("read", _raw({"request_id": "r", "meter_id": "M 1"}), "meter_id", "r", None),
        ("read", _raw({"request_id": "r", "meter_id": "M", "obis": []}), "obis", "r", "M"),
        (
            "read",
            _raw({"request_id": "r", "meter_id": "M", "obis": "1.0.1.8.0.255"}),
            "obis",
            "r",
            "M",
        ),
        (
            "read",
            _raw({"request_id": "r", "meter_id": "M", "obis": ["1.0.1.8.0.256"]}),
            "above 255",
            "r",
            "M",
        ),
        (
            "read",
            _raw({"request_id": "r", "meter_id": "M", "obis": ["1.0.1.8.0.255"] * 2}),
            "twice",
            "r",
            "M",
        ),
        (
            "read",
            _raw(
                {
                    "request_id": "r",
                    "meter_id": "M",
                    "obis": [f"1.0.1.8.{i}.255" for i in range(MAX_OBIS_PER_REQUEST + 1)],
                }
            ),
            "obis",
            "r",
            "M",
        ),
        ("read", b" " * (MAX_REQUEST_SIZE + 1), "too large", None, None),
    ],
)
def test_bad_requests_say_why_and_keep_what_is_usable(
    kind: str, payload: bytes, reason: str, request_id: str | None, meter_id: str | None
) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(kind, payload)
    assert reason in caught.value.reason
    assert (caught.value.request_id, caught.value.meter_id) == (request_id, meter_id)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["read", "relay_status", "x"]), payload=st.binary(max_size=300))
def test_any_bytes_parse_or_are_a_bad_request(kind: str, payload: bytes) -> None:
    try:
        parse_request(kind, payload)
    except BadRequest:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "request_id": json_values | st.text(max_size=140),
            "meter_id": json_values | st.text(max_size=70),
            "obis": json_values | st.lists(st.text(max_size=20), max_size=40),
        },
    )
)
def test_any_json_object_parses_or_is_a_bad_request(body: dict[str, object]) -> None:
    try:
        request = parse_request("read", json.dumps(body).encode())
    except BadRequest:
        return
    assert isinstance(request, ReadRequest) and 1 <= len(request.obis) <= MAX_OBIS_PER_REQUEST
