"""OBIS parsing/formatting, COSEM date-time fields and the class 70 transition table."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosem_objects.classes import (
    TRANSITIONS,
    ControlState,
    ScalerUnit,
    Transition,
    next_control_state,
)
from cosem_objects.dates import CosemDateTime
from cosem_objects.errors import DecodeError
from cosem_objects.obis import Obis
from cosem_objects.units import unit_name


@pytest.mark.parametrize("text", ["1.0.1.8.0.255", "1-0:1.8.0*255", "1-0:1.8.0.255", "1.0.1.8.0"])
def test_obis_forms_parse_to_the_same_code(text: str) -> None:
    obis = Obis.parse(text)
    assert obis == Obis(1, 0, 1, 8, 0, 255)
    assert str(obis) == "1.0.1.8.0.255"
    assert obis.iec() == "1-0:1.8.0*255"
    assert Obis.from_bytes(obis.to_bytes()) == obis


@pytest.mark.parametrize("bad", ["", "1.2.3", "a.b.c.d.e.f", "1.0.1.8.0.256", "1.0.1.8.0.255.7"])
def test_obis_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        Obis.parse(bad)


@given(st.binary(min_size=12, max_size=12))
def test_date_time_round_trips_any_12_bytes(raw: bytes) -> None:
    assert CosemDateTime.from_bytes(raw).to_bytes() == raw


def test_date_time_deviation_sign_is_utc_minus_local() -> None:
    # Kaifa Tirol: 15:46:35 local, deviation -120, DST active -> 13:46:35 UTC.
    value = CosemDateTime.from_bytes(bytes.fromhex("07E50713010F2E2300FF8880"))
    assert value.deviation == -120
    assert value.utc() == dt.datetime(2021, 7, 19, 13, 46, 35, tzinfo=dt.UTC)
    # A meter with the opposite convention reads differently when told so.
    assert value.utc(deviation_sign=-1) == dt.datetime(2021, 7, 19, 17, 46, 35, tzinfo=dt.UTC)


def test_date_time_wildcards() -> None:
    value = CosemDateTime.from_bytes(bytes.fromhex("FFFFFFFFFF000000008000FF"))
    assert value.year is None and value.deviation is None
    with pytest.raises(DecodeError):
        value.to_datetime()


def test_date_time_from_aware_datetime() -> None:
    moment = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    value = CosemDateTime.from_datetime(moment)
    assert value.deviation == -480
    assert value.to_datetime() == moment


def test_scaler_unit_applies_exactly() -> None:
    assert ScalerUnit(-3, 30).apply(12345678) == 12345.678
    assert ScalerUnit(2, 30).apply(5) == 500
    assert ScalerUnit(-1, 35).apply(2301) == 230.1
    assert unit_name(30) == "Wh" and unit_name(255) is None


def test_mode_0_forbids_every_transition() -> None:
    for state in ControlState:
        for transition in Transition:
            if transition is Transition.REMOTE_DISCONNECT:
                continue
            assert next_control_state(0, state, transition) is None


@pytest.mark.parametrize("mode", [1, 3, 5, 6])
def test_remote_reconnect_goes_to_ready_in_indirect_modes(mode: int) -> None:
    assert (
        next_control_state(mode, ControlState.DISCONNECTED, Transition.REMOTE_RECONNECT)
        is ControlState.READY_FOR_RECONNECTION
    )


@pytest.mark.parametrize("mode", [2, 4])
def test_remote_reconnect_connects_directly_in_modes_2_and_4(mode: int) -> None:
    assert (
        next_control_state(mode, ControlState.DISCONNECTED, Transition.REMOTE_RECONNECT)
        is ControlState.CONNECTED
    )


@pytest.mark.parametrize("mode", [3, 4, 6])
def test_manual_disconnect_is_refused_where_the_mode_says_so(mode: int) -> None:
    assert next_control_state(mode, ControlState.CONNECTED, Transition.MANUAL_DISCONNECT) is None
    assert mode in TRANSITIONS
