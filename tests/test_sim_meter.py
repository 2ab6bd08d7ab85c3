"""The simulated meter's model: identity, registers, energy, clock, profiles, rights, overrides."""

from __future__ import annotations

import datetime as dt
import itertools
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosem_objects.apdu.common import ActionResult, DataAccessResult, SelectiveAccess
from cosem_objects.axdr import encode_data
from cosem_objects.classes import (
    AssociationLN,
    Clock,
    DataObject,
    DisconnectControl,
    Obises,
    ProfileGeneric,
    Register,
    ScalerUnit,
)
from cosem_objects.data import Data, DataType
from cosem_objects.dates import CosemDateTime
from cosem_objects.obis import Obis
from simulators.config import MeterConfig, Security, derive_credentials, meter_id_for
from simulators.meter import SimMeter
from simulators.objects.catalogue import CATALOGUE, object_list
from simulators.objects.model import AccessLevel, AssociationContext
from simulators.objects.services import (
    get_attribute,
    get_value,
    invoke_method,
    set_attribute,
    set_value,
)

# 2026-03-10 12:07:30 UTC: a Tuesday, mid-interval.
T0 = dt.datetime(2026, 3, 10, 12, 7, 30, tzinfo=dt.UTC).timestamp()
IMPORT = Obis(1, 0, 1, 8, 0)
IMPORT_T1 = Obis(1, 0, 1, 8, 1)
IMPORT_T2 = Obis(1, 0, 1, 8, 2)
EXPORT = Obis(1, 0, 2, 8, 0)
VOLTAGE_L1 = Obis(1, 0, 32, 7, 0)
CURRENT_L1 = Obis(1, 0, 31, 7, 0)
POWER_L1 = Obis(1, 0, 21, 7, 0)
POWER_TOTAL = Obis(1, 0, 1, 7, 0)
PHASE_POWERS = (POWER_L1, Obis(1, 0, 41, 7, 0), Obis(1, 0, 61, 7, 0))


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_meter(clock: FakeClock, index: int = 3, **kwargs: object) -> SimMeter:
    return SimMeter(MeterConfig.create(index, seed=7, **kwargs), clock=clock)  # type: ignore[arg-type]


@pytest.fixture
def meter(clock: FakeClock) -> SimMeter:
    return make_meter(clock)


def value(meter: SimMeter, class_id: int, obis: Obis, attribute: int = 2, **kw: object) -> Data:
    result = get_attribute(meter, class_id, obis, attribute, **kw)  # type: ignore[arg-type]
    assert isinstance(result, Data), result
    return result


def wh(meter: SimMeter, obis: Obis) -> int:
    return int(value(meter, Register.CLASS_ID, obis).value)


def stamp(moment: dt.datetime) -> Data:
    return Data.octet_string(CosemDateTime.from_datetime(moment).to_bytes())


def range_access(start: Data, end: Data, columns: list[Data] | None = None) -> SelectiveAccess:
    clock_column = Data.structure(
        [
            Data.long_unsigned(8),
            Data.octet_string(Obises.CLOCK.to_bytes()),
            Data.integer(2),
            Data.long_unsigned(0),
        ]
    )
    return SelectiveAccess(1, Data.structure([clock_column, start, end, Data.array(columns or [])]))


def entry_access(first: int, last: int, first_col: int = 1, last_col: int = 0) -> SelectiveAccess:
    return SelectiveAccess(
        2,
        Data.structure(
            [
                Data.double_long_unsigned(first),
                Data.double_long_unsigned(last),
                Data.long_unsigned(first_col),
                Data.long_unsigned(last_col),
            ]
        ),
    )


def row_time(row: Data) -> dt.datetime:
    return CosemDateTime.from_bytes(row.value[0].value).to_datetime()


# -- configuration -----------------------------------------------------------------------------
def test_credentials_are_deterministic_and_distinct() -> None:
    assert derive_credentials(1, 5) == derive_credentials(1, 5)
    assert derive_credentials(1, 5) != derive_credentials(1, 6)
    assert derive_credentials(1, 5) != derive_credentials(2, 5)
    password, auth_key, enc_key, title = derive_credentials(1, 5)
    assert len(password) == 8 and password.isascii()
    assert len(auth_key) == len(enc_key) == 16 and auth_key != enc_key
    assert len(title) == 8 and title.startswith(b"SIM")


def test_config_hides_secrets_and_picks_client_sap() -> None:
    config = MeterConfig.create(4, seed=9, security="hls-gmac")
    text = repr(config)
    assert config.password.decode() not in text
    assert config.auth_key.hex() not in text and str(config.auth_key) not in text
    assert config.meter_id == meter_id_for(9, 4) == "SIM0090000004"
    assert config.client_sap == 1
    assert MeterConfig.create(4, security=Security.LLS).client_sap == 32
    assert MeterConfig.create(4).client_sap == 16


# -- identity ----------------------------------------------------------------------------------
def test_identity_objects(meter: SimMeter) -> None:
    assert value(meter, DataObject.CLASS_ID, Obises.SERIAL_NUMBER).value == meter.meter_id.encode()
    assert value(meter, DataObject.CLASS_ID, Obises.LOGICAL_DEVICE_NAME).value == (
        meter.meter_id.encode()
    )
    firmware = value(meter, DataObject.CLASS_ID, Obises.FIRMWARE)
    assert firmware.type is DataType.OCTET_STRING and firmware.value
    name = value(meter, Register.CLASS_ID, IMPORT, 1)
    assert name.value == IMPORT.to_bytes()


def test_unknown_objects_and_attributes(meter: SimMeter) -> None:
    assert get_attribute(meter, 3, Obis(1, 0, 99, 99, 0), 2) is DataAccessResult.OBJECT_UNDEFINED
    assert get_attribute(meter, 1, IMPORT, 2) is DataAccessResult.OBJECT_CLASS_INCONSISTENT
    assert get_attribute(meter, 3, IMPORT, 9) is DataAccessResult.OBJECT_UNDEFINED
    assert set_attribute(meter, 3, IMPORT, 2, Data.double_long_unsigned(1)) is (
        DataAccessResult.READ_WRITE_DENIED
    )
    assert invoke_method(meter, 3, IMPORT, 1, Data.integer(0))[0] is ActionResult.OBJECT_UNDEFINED
    # Selective access on an attribute without it.
    assert get_attribute(meter, 3, IMPORT, 2, entry_access(1, 1)) is DataAccessResult.OTHER_REASON


# -- registers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("obis", "scaler", "unit", "kind"),
    [
        (IMPORT, 0, 30, DataType.DOUBLE_LONG_UNSIGNED),
        (IMPORT_T1, 0, 30, DataType.DOUBLE_LONG_UNSIGNED),
        (IMPORT_T2, 0, 30, DataType.DOUBLE_LONG_UNSIGNED),
        (EXPORT, 0, 30, DataType.DOUBLE_LONG_UNSIGNED),
        (VOLTAGE_L1, -1, 35, DataType.LONG_UNSIGNED),
        (Obis(1, 0, 72, 7, 0), -1, 35, DataType.LONG_UNSIGNED),
        (CURRENT_L1, -2, 33, DataType.LONG_UNSIGNED),
        (POWER_L1, 0, 27, DataType.DOUBLE_LONG),
        (POWER_TOTAL, 0, 27, DataType.DOUBLE_LONG),
    ],
)
def test_register_scaler_unit_and_type(
    meter: SimMeter, obis: Obis, scaler: int, unit: int, kind: DataType
) -> None:
    scaler_unit = ScalerUnit.from_data(value(meter, Register.CLASS_ID, obis, 3))
    assert scaler_unit == ScalerUnit(scaler, unit)
    assert value(meter, Register.CLASS_ID, obis).type is kind
    encode_data(value(meter, Register.CLASS_ID, obis))  # in range for its type


def test_energy_grows_and_tariffs_add_up(meter: SimMeter, clock: FakeClock) -> None:
    readings = []
    for _ in range(3 * 96):  # three days, every 15 minutes
        readings.append(tuple(wh(meter, o) for o in (IMPORT, IMPORT_T1, IMPORT_T2)))
        clock.advance(900)
    totals = [r[0] for r in readings]
    assert all(b >= a for a, b in itertools.pairwise(totals))
    assert totals[-1] - totals[0] > 1000  # at least 1 kWh in three days
    for total, t1, t2 in readings:
        assert abs(total - (t1 + t2)) <= 1
    # The day tariff does not move at night, the night tariff does not move by day.
    pairs = list(itertools.pairwise(readings))
    assert any(b[1] == a[1] and b[2] > a[2] for a, b in pairs)
    assert any(b[2] == a[2] and b[1] > a[1] for a, b in pairs)


def test_meters_differ_and_are_reproducible(clock: FakeClock) -> None:
    a, b, a_again = make_meter(clock, 1), make_meter(clock, 2), make_meter(clock, 1)
    assert wh(a, IMPORT) != wh(b, IMPORT)
    assert wh(a, IMPORT) == wh(a_again, IMPORT)


def test_instantaneous_values_follow_the_curve(meter: SimMeter) -> None:
    total_w = value(meter, Register.CLASS_ID, POWER_TOTAL).value
    phases = [value(meter, Register.CLASS_ID, o).value for o in PHASE_POWERS]
    assert total_w > 0 and all(p > 0 for p in phases)
    assert abs(sum(phases) - total_w) <= 2
    volts = value(meter, Register.CLASS_ID, VOLTAGE_L1).value / 10
    amps = value(meter, Register.CLASS_ID, CURRENT_L1).value / 100
    assert 220 <= volts <= 240
    assert abs(volts * amps - phases[0]) <= 0.01 * volts + 1
    # Power over the interval matches the energy the interval adds.
    start = meter.energy()[0]
    meter_now = meter.now()
    assert abs(meter.energy(meter_now + 60)[0] - start - total_w / 60) < 1


def test_open_relay_stops_energy_and_current(meter: SimMeter, clock: FakeClock) -> None:
    before = wh(meter, IMPORT)
    meter.remote_disconnect()
    clock.advance(6 * 3600)
    assert wh(meter, IMPORT) == before
    assert value(meter, Register.CLASS_ID, CURRENT_L1).value == 0
    assert value(meter, Register.CLASS_ID, POWER_TOTAL).value == 0
    assert all(value(meter, Register.CLASS_ID, o).value == 0 for o in PHASE_POWERS)
    assert value(meter, Register.CLASS_ID, VOLTAGE_L1).value > 2000  # the supply is still there
    meter.remote_reconnect()
    clock.advance(3600)
    after = wh(meter, IMPORT)
    assert after > before
    # Exactly the hour since reconnection was added.
    curve = meter.curve
    offset = meter.config.utc_offset_min * 60
    hour = curve.energy(clock.t + offset)[0] - curve.energy(clock.t - 3600 + offset)[0]
    assert abs((after - before) - hour) <= 1


# -- clock -------------------------------------------------------------------------------------
def read_clock(meter: SimMeter) -> CosemDateTime:
    return CosemDateTime.from_bytes(value(meter, Clock.CLASS_ID, Obises.CLOCK).value)


def test_clock_reads_local_time_with_deviation(clock: FakeClock) -> None:
    meter = make_meter(clock, utc_offset_min=120)
    time = read_clock(meter)
    assert time.deviation == -120 and time.clock_status == 0
    assert time.hour == 14 and time.minute == 7 and time.second == 30
    assert time.to_datetime().timestamp() == T0
    assert value(meter, Clock.CLASS_ID, Obises.CLOCK, Clock.TIME_ZONE).value == -120
    assert value(meter, Clock.CLASS_ID, Obises.CLOCK, Clock.STATUS).value == 0
    assert value(meter, Clock.CLASS_ID, Obises.CLOCK, Clock.CLOCK_BASE).value == 1


def test_clock_drift_accumulates(meter: SimMeter, clock: FakeClock) -> None:
    meter.faults.clock_drift_s_per_day = 10.0
    clock.advance(86400)
    meter_time = read_clock(meter).to_datetime().timestamp()
    assert meter_time - clock.t == pytest.approx(10.0, abs=0.01)
    meter.faults.clock_drift_s_per_day = -20.0  # a new rate applies from now on
    clock.advance(43200)
    assert meter.meter_time() - clock.t == pytest.approx(0.0, abs=0.01)


def test_clock_set_and_shift(meter: SimMeter, clock: FakeClock) -> None:
    meter.faults.clock_drift_s_per_day = 30.0
    clock.advance(86400)
    target = dt.datetime.fromtimestamp(clock.t, dt.UTC)
    assert set_attribute(meter, 8, Obises.CLOCK, 2, stamp(target)) is DataAccessResult.SUCCESS
    assert meter.meter_time() == pytest.approx(clock.t, abs=0.01)
    clock.advance(86400)  # drift starts over from the setting
    assert meter.meter_time() - clock.t == pytest.approx(30.0, abs=0.01)
    # Set in local time without deviation: taken as the meter's local time.
    naive = dt.datetime(2030, 1, 1, 0, 0, 0)
    assert set_attribute(meter, 8, Obises.CLOCK, 2, stamp(naive)) is DataAccessResult.SUCCESS
    assert read_clock(meter).year == 2030
    # Shift by 10 s.
    before = meter.meter_time()
    assert invoke_method(meter, 8, Obises.CLOCK, 6, Data.long(10)) == (ActionResult.SUCCESS, None)
    assert meter.meter_time() - before == pytest.approx(10.0)
    assert invoke_method(meter, 8, Obises.CLOCK, 6, Data.long(5000))[0] is ActionResult.OTHER_REASON


def test_clock_set_rejects_bad_values(meter: SimMeter) -> None:
    assert (
        set_attribute(meter, 8, Obises.CLOCK, 2, Data.unsigned(1))
        is DataAccessResult.TYPE_UNMATCHED
    )
    assert set_attribute(meter, 8, Obises.CLOCK, 2, Data.octet_string(b"\x07")) is (
        DataAccessResult.TYPE_UNMATCHED
    )
    wildcard = CosemDateTime(None, 1, 1, None, 0, 0, 0, 0, 0, 0)
    assert set_attribute(meter, 8, Obises.CLOCK, 2, Data.octet_string(wildcard.to_bytes())) is (
        DataAccessResult.OTHER_REASON
    )


def test_time_zone_is_settable(meter: SimMeter) -> None:
    assert set_attribute(meter, 8, Obises.CLOCK, 3, Data.long(-60)) is DataAccessResult.SUCCESS
    assert read_clock(meter).deviation == -60
    assert read_clock(meter).hour == 13
    assert (
        set_attribute(meter, 8, Obises.CLOCK, 3, Data.long(5000)) is DataAccessResult.OTHER_REASON
    )


# -- load profile ------------------------------------------------------------------------------
def test_load_profile_header(meter: SimMeter) -> None:
    columns = value(meter, 7, Obises.LOAD_PROFILE, ProfileGeneric.CAPTURE_OBJECTS).to_python()
    assert [c[0] for c in columns] == [8, 3, 3]
    assert columns[0][1] == Obises.CLOCK.to_bytes() and columns[0][2] == 2
    assert columns[1][1] == IMPORT.to_bytes()
    assert value(meter, 7, Obises.LOAD_PROFILE, ProfileGeneric.CAPTURE_PERIOD).value == 900
    entries = value(meter, 7, Obises.LOAD_PROFILE, ProfileGeneric.ENTRIES_IN_USE).value
    capacity = value(meter, 7, Obises.LOAD_PROFILE, ProfileGeneric.PROFILE_ENTRIES).value
    assert entries == capacity >= 35 * 96
    assert value(meter, 7, Obises.LOAD_PROFILE, ProfileGeneric.SORT_METHOD).value == 1


def test_load_profile_full_buffer(meter: SimMeter, clock: FakeClock) -> None:
    rows = value(meter, 7, Obises.LOAD_PROFILE).value
    entries = value(meter, 7, Obises.LOAD_PROFILE, ProfileGeneric.ENTRIES_IN_USE).value
    assert len(rows) == entries
    times = [row_time(r).timestamp() for r in rows]
    assert all(b - a == 900 for a, b in itertools.pairwise(times))
    assert times[-1] <= clock.t < times[-1] + 900
    assert times[-1] - times[0] >= 35 * 86400
    energy = [r.value[1].value for r in rows]
    assert all(b >= a for a, b in itertools.pairwise(energy))
    assert rows[-1].value[1].type is DataType.DOUBLE_LONG_UNSIGNED


def test_load_profile_rows_match_the_registers(meter: SimMeter, clock: FakeClock) -> None:
    clock.t = (clock.t // 900 + 1) * 900  # exactly on a capture
    last = value(meter, 7, Obises.LOAD_PROFILE, access=entry_access(0, 0)).value
    rows = value(meter, 7, Obises.LOAD_PROFILE).value
    assert row_time(rows[-1]).timestamp() == clock.t
    assert rows[-1].value[1].value == wh(meter, IMPORT)
    assert rows[-1].value[2].value == wh(meter, EXPORT)
    assert len(last) == len(rows)  # from_entry 0 is taken as 1


def test_load_profile_range(meter: SimMeter) -> None:
    start = dt.datetime(2026, 3, 9, 10, 0, tzinfo=dt.UTC)
    end = dt.datetime(2026, 3, 9, 11, 0, tzinfo=dt.UTC)
    rows = value(meter, 7, Obises.LOAD_PROFILE, access=range_access(stamp(start), stamp(end))).value
    assert [row_time(r) for r in rows] == [start + dt.timedelta(minutes=15 * i) for i in range(5)]
    # Same range given in another zone selects the same rows.
    cest = dt.timezone(dt.timedelta(hours=2))
    again = value(
        meter,
        7,
        Obises.LOAD_PROFILE,
        access=range_access(stamp(start.astimezone(cest)), stamp(end.astimezone(cest))),
    ).value
    assert again == rows
    # Column selection: only the energy column.
    energy_column = Data.structure(
        [
            Data.long_unsigned(3),
            Data.octet_string(IMPORT.to_bytes()),
            Data.integer(2),
            Data.long_unsigned(0),
        ]
    )
    only = value(
        meter,
        7,
        Obises.LOAD_PROFILE,
        access=range_access(stamp(start), stamp(end), [energy_column]),
    ).value
    assert [r.value for r in only] == [(r.value[1],) for r in rows]


def test_load_profile_range_edges(meter: SimMeter) -> None:
    # Not on boundaries: 10:05 .. 10:40 holds 10:15 and 10:30.
    start = dt.datetime(2026, 3, 9, 10, 5, tzinfo=dt.UTC)
    end = dt.datetime(2026, 3, 9, 10, 40, tzinfo=dt.UTC)
    rows = value(meter, 7, Obises.LOAD_PROFILE, access=range_access(stamp(start), stamp(end))).value
    assert [row_time(r).minute for r in rows] == [15, 30]
    # In the future, or before the buffer: nothing.
    future = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert (
        value(
            meter, 7, Obises.LOAD_PROFILE, access=range_access(stamp(future), stamp(future))
        ).value
        == ()
    )
    # Reversed: nothing.
    assert (
        value(meter, 7, Obises.LOAD_PROFILE, access=range_access(stamp(end), stamp(start))).value
        == ()
    )


def test_load_profile_range_wildcards(meter: SimMeter) -> None:
    # A naive (no deviation) date-time is meter local time; seconds/hundredths wildcards.
    start = CosemDateTime(2026, 3, 9, None, 10, 0, None, None, None, 0)
    end = CosemDateTime(2026, 3, 9, None, 10, 30, None, None, None, 0xFF)
    rows = value(
        meter,
        7,
        Obises.LOAD_PROFILE,
        access=range_access(Data.octet_string(start.to_bytes()), Data.octet_string(end.to_bytes())),
    ).value
    assert [row_time(r).minute for r in rows] == [0, 15, 30]
    # A date-time typed value is accepted as well as an octet-string.
    typed = value(
        meter,
        7,
        Obises.LOAD_PROFILE,
        access=range_access(Data.date_time(start), Data.date_time(end)),
    ).value
    assert typed == rows


def test_load_profile_bad_selective_access(meter: SimMeter) -> None:
    wrong_object = SelectiveAccess(
        1,
        Data.structure(
            [
                Data.structure(
                    [
                        Data.long_unsigned(3),
                        Data.octet_string(IMPORT.to_bytes()),
                        Data.integer(2),
                        Data.long_unsigned(0),
                    ]
                ),
                Data.double_long_unsigned(0),
                Data.double_long_unsigned(10),
                Data.array([]),
            ]
        ),
    )
    assert (
        get_attribute(meter, 7, Obises.LOAD_PROFILE, 2, wrong_object)
        is DataAccessResult.OTHER_REASON
    )
    assert get_attribute(
        meter, 7, Obises.LOAD_PROFILE, 2, SelectiveAccess(1, Data.unsigned(1))
    ) is (DataAccessResult.TYPE_UNMATCHED)
    assert get_attribute(meter, 7, Obises.LOAD_PROFILE, 2, SelectiveAccess(3, Data.null())) is (
        DataAccessResult.OTHER_REASON
    )
    assert get_attribute(meter, 7, Obises.LOAD_PROFILE, 2, entry_access(1, 2, 5, 0)) is (
        DataAccessResult.OTHER_REASON
    )


def test_load_profile_by_entry(meter: SimMeter) -> None:
    everything = value(meter, 7, Obises.LOAD_PROFILE).value
    first_ten = value(meter, 7, Obises.LOAD_PROFILE, access=entry_access(1, 10)).value
    assert first_ten == everything[:10]
    newest = value(meter, 7, Obises.LOAD_PROFILE, access=entry_access(len(everything) - 1, 0)).value
    assert newest == everything[-2:]
    columns = value(meter, 7, Obises.LOAD_PROFILE, access=entry_access(3, 4, 2, 2)).value
    assert [r.value for r in columns] == [(r.value[1],) for r in everything[2:4]]
    beyond = value(meter, 7, Obises.LOAD_PROFILE, access=entry_access(10**6, 0)).value
    assert beyond == ()


def test_load_profile_flat_while_disconnected(meter: SimMeter, clock: FakeClock) -> None:
    clock.t = (clock.t // 900) * 900 + 1
    opened = clock.t
    meter.remote_disconnect()
    clock.advance(4 * 3600)
    closed = clock.t
    meter.remote_reconnect()
    clock.advance(3600)
    start = dt.datetime.fromtimestamp(opened - 900, dt.UTC)
    end = dt.datetime.fromtimestamp(clock.t, dt.UTC)
    rows = value(meter, 7, Obises.LOAD_PROFILE, access=range_access(stamp(start), stamp(end)))
    by_time = {row_time(r).timestamp(): r.value[1].value for r in rows.value}
    during = [e for t, e in by_time.items() if opened <= t <= closed]
    assert len(during) == 16 and len(set(during)) == 1  # flat while the relay was open
    after = [e for t, e in sorted(by_time.items()) if t > closed]
    assert after and after[-1] > during[0]  # counting again after reconnection


# -- billing profile ---------------------------------------------------------------------------
def test_billing_profile_daily_at_midnight(clock: FakeClock) -> None:
    meter = make_meter(clock, utc_offset_min=60)
    columns = value(meter, 7, Obises.BILLING_PROFILE, 3).to_python()
    assert [c[1] for c in columns[1:]] == [
        o.to_bytes() for o in (IMPORT, IMPORT_T1, IMPORT_T2, EXPORT)
    ]
    assert value(meter, 7, Obises.BILLING_PROFILE, 4).value == 86400
    rows = value(meter, 7, Obises.BILLING_PROFILE).value
    assert len(rows) == value(meter, 7, Obises.BILLING_PROFILE, 7).value >= 30
    for row in rows:
        local = CosemDateTime.from_bytes(row.value[0].value)
        assert (local.hour, local.minute, local.deviation) == (0, 0, -60)
        total, t1, t2 = (v.value for v in row.value[1:4])
        assert abs(total - t1 - t2) <= 1
    last = CosemDateTime.from_bytes(rows[-1].value[0].value).to_datetime().timestamp()
    assert rows[-1].value[1].value == round(meter.energy(last)[0])
    assert 0 <= clock.t - last < 86400


# -- access rights -----------------------------------------------------------------------------
def context(level: AccessLevel) -> AssociationContext:
    return AssociationContext(level=level)


def test_public_sees_only_the_public_subset(meter: SimMeter) -> None:
    public = context(AccessLevel.PUBLIC)
    for class_id, obis in [
        (DataObject.CLASS_ID, Obises.SERIAL_NUMBER),
        (DataObject.CLASS_ID, Obises.INVOCATION_COUNTER),
        (Clock.CLASS_ID, Obises.CLOCK),
        (AssociationLN.CLASS_ID, Obises.CURRENT_ASSOCIATION),
    ]:
        assert isinstance(get_attribute(meter, class_id, obis, 2, context=public), Data)
    for class_id, obis in [
        (Register.CLASS_ID, IMPORT),
        (DisconnectControl.CLASS_ID, Obises.DISCONNECT_CONTROL),
        (ProfileGeneric.CLASS_ID, Obises.LOAD_PROFILE),
    ]:
        assert (
            get_attribute(meter, class_id, obis, 2, context=public)
            is DataAccessResult.READ_WRITE_DENIED
        )
    now = stamp(dt.datetime.now(dt.UTC))
    assert (
        set_attribute(meter, 8, Obises.CLOCK, 2, now, context=public)
        is DataAccessResult.READ_WRITE_DENIED
    )


def test_reader_reads_everything_but_switches_nothing(meter: SimMeter) -> None:
    reader = context(AccessLevel.READER)
    assert isinstance(get_attribute(meter, 3, IMPORT, 2, context=reader), Data)
    assert isinstance(get_attribute(meter, 70, Obises.DISCONNECT_CONTROL, 3, context=reader), Data)
    assert invoke_method(
        meter, 70, Obises.DISCONNECT_CONTROL, 1, Data.integer(0), context=reader
    ) == (
        ActionResult.READ_WRITE_DENIED,
        None,
    )
    assert set_attribute(meter, 70, Obises.DISCONNECT_CONTROL, 4, Data.enum(1), context=reader) is (
        DataAccessResult.READ_WRITE_DENIED
    )
    now = stamp(dt.datetime.now(dt.UTC))
    assert (
        set_attribute(meter, 8, Obises.CLOCK, 2, now, context=reader)
        is DataAccessResult.READ_WRITE_DENIED
    )
    assert meter.output_state is True
    management = context(AccessLevel.MANAGEMENT)
    assert invoke_method(
        meter, 70, Obises.DISCONNECT_CONTROL, 1, Data.integer(0), context=management
    ) == (
        ActionResult.SUCCESS,
        None,
    )
    assert meter.output_state is False


def test_secret_is_never_readable(meter: SimMeter) -> None:
    assert (
        get_attribute(meter, 15, Obises.CURRENT_ASSOCIATION, 7)
        is DataAccessResult.READ_WRITE_DENIED
    )


def test_object_list(meter: SimMeter) -> None:
    entries = value(meter, 15, Obises.CURRENT_ASSOCIATION).value
    listed = {
        Obis.from_bytes(e.value[2].value): (e.value[0].value, e.value[1].value) for e in entries
    }
    assert set(listed) == set(CATALOGUE)
    for required in (
        Obises.SERIAL_NUMBER,
        Obises.LOGICAL_DEVICE_NAME,
        Obises.FIRMWARE,
        Obises.CLOCK,
        IMPORT,
        IMPORT_T1,
        IMPORT_T2,
        EXPORT,
        Obises.LOAD_PROFILE,
        Obises.BILLING_PROFILE,
        Obises.DISCONNECT_CONTROL,
        Obises.DISCONNECTOR_LOG,
        Obises.CURRENT_ASSOCIATION,
        Obises.INVOCATION_COUNTER,
        VOLTAGE_L1,
        CURRENT_L1,
        POWER_L1,
    ):
        assert required in listed
    assert listed[Obises.DISCONNECT_CONTROL] == (70, 0)
    assert listed[Obises.LOAD_PROFILE] == (7, 1)
    assert listed[Obises.CURRENT_ASSOCIATION] == (15, 1)
    # Built once per level and shared by every meter.
    assert object_list(AccessLevel.PUBLIC) is object_list(AccessLevel.PUBLIC)
    assert len(encode_data(object_list(AccessLevel.MANAGEMENT))) > 1024


def rights(level: AccessLevel, obis: Obis) -> tuple[dict[int, int], dict[int, int]]:
    for entry in object_list(level).value:
        if entry.value[2].value == obis.to_bytes():
            attributes, methods = entry.value[3].value
            return (
                {a.value[0].value: a.value[1].value for a in attributes.value},
                {m.value[0].value: m.value[1].value for m in methods.value},
            )
    raise AssertionError(obis)


def test_object_list_access_rights_per_association() -> None:
    attributes, methods = rights(AccessLevel.MANAGEMENT, Obises.DISCONNECT_CONTROL)
    assert attributes == {1: 1, 2: 1, 3: 1, 4: 3} and methods == {1: 1, 2: 1}
    attributes, methods = rights(AccessLevel.READER, Obises.DISCONNECT_CONTROL)
    assert attributes == {1: 1, 2: 1, 3: 1, 4: 1} and methods == {1: 0, 2: 0}
    attributes, methods = rights(AccessLevel.PUBLIC, Obises.DISCONNECT_CONTROL)
    assert set(attributes.values()) == {0} and methods == {1: 0, 2: 0}
    attributes, _ = rights(AccessLevel.PUBLIC, Obises.CLOCK)
    assert attributes[2] == 1
    attributes, _ = rights(AccessLevel.MANAGEMENT, Obises.CLOCK)
    assert attributes[2] == 3
    # Profile buffers announce their access selectors.
    for entry in object_list(AccessLevel.READER).value:
        if entry.value[2].value == Obises.LOAD_PROFILE.to_bytes():
            buffer = entry.value[3].value[0].value[1]
            assert buffer.value[2].to_python() == [1, 2]


def test_association_attributes_follow_the_context(meter: SimMeter) -> None:
    ctx = AssociationContext(
        level=AccessLevel.READER,
        client_sap=32,
        application_context=1,
        mechanism=1,
        conformance=bytes.fromhex("001E1D"),
        client_max_pdu=512,
        server_max_pdu=1024,
    )
    assert value(meter, 15, Obises.CURRENT_ASSOCIATION, 3, context=ctx).to_python() == [32, 1]
    assert value(meter, 15, Obises.CURRENT_ASSOCIATION, 4, context=ctx).value == bytes.fromhex(
        "60857405080101"
    )
    assert value(meter, 15, Obises.CURRENT_ASSOCIATION, 6, context=ctx).value == bytes.fromhex(
        "60857405080201"
    )
    info = value(meter, 15, Obises.CURRENT_ASSOCIATION, 5, context=ctx).to_python()
    assert info[0] == "000000000001111000011101" and info[1:4] == [1024, 512, 6]
    assert value(meter, 15, Obises.CURRENT_ASSOCIATION, 8, context=ctx).value == 2


def test_invocation_counter_object(meter: SimMeter) -> None:
    assert value(meter, 1, Obises.INVOCATION_COUNTER).value == 0
    meter.next_server_ic()
    meter.next_server_ic()
    assert value(meter, 1, Obises.INVOCATION_COUNTER).value == 2
    assert meter.accept_client_ic(41)
    assert not meter.accept_client_ic(41)
    assert value(meter, 1, Obises.INVOCATION_COUNTER).value == 41


# -- overrides ---------------------------------------------------------------------------------
def test_set_value_energy_keeps_counting(meter: SimMeter, clock: FakeClock) -> None:
    set_value(meter, "1.0.1.8.0.255", 1_000_000)
    assert wh(meter, IMPORT) == 1_000_000
    clock.advance(3600)
    assert wh(meter, IMPORT) > 1_000_000
    meter.clear_value(IMPORT)
    assert wh(meter, IMPORT) != 1_000_000


def test_set_value_freezes_other_values(meter: SimMeter, clock: FakeClock) -> None:
    set_value(meter, VOLTAGE_L1, 253.4)
    assert value(meter, 3, VOLTAGE_L1).value == 2534
    clock.advance(600)
    assert get_value(meter, VOLTAGE_L1) == Data.long_unsigned(2534)
    set_value(meter, Obises.FIRMWARE, "2.0.0")
    assert get_value(meter, Obises.FIRMWARE) == Data.octet_string(b"2.0.0")
    set_value(meter, CURRENT_L1, Data.long_unsigned(7))
    assert value(meter, 3, CURRENT_L1).value == 7
    meter.clear_value()
    assert meter.override(VOLTAGE_L1) is None
    assert get_value(meter, Obises.FIRMWARE) != Data.octet_string(b"2.0.0")
    with pytest.raises(KeyError):
        set_value(meter, "1.0.99.99.0.255", 1)


# -- scale -------------------------------------------------------------------------------------
def test_meters_are_cheap() -> None:
    """10,000 idle meters must fit easily in memory: no per-meter rows, timers or tasks.

    Measured on 2,000 meters (with their configs); 4 KB each is 40 MB for 10,000."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        meters = [SimMeter(MeterConfig.create(i, seed=1)) for i in range(2_000)]
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(meters) == 2_000
    assert used / 2_000 < 4096, f"{used / 2_000:.0f} bytes per meter"
    assert not hasattr(meters[0], "__dict__")


# -- robustness --------------------------------------------------------------------------------
_CLOCK_COLUMN = Data.structure(
    [
        Data.long_unsigned(8),
        Data.octet_string(Obises.CLOCK.to_bytes()),
        Data.integer(2),
        Data.long_unsigned(0),
    ]
)
_leaves = st.one_of(
    st.binary(min_size=12, max_size=12).map(Data.octet_string),
    st.binary(max_size=14).map(Data.octet_string),
    st.integers(0, 2**32 - 1).map(Data.double_long_unsigned),
    st.integers(0, 2**16 - 1).map(Data.long_unsigned),
    st.integers(-128, 127).map(Data.integer),
    st.integers(0, 255).map(Data.enum),
    st.integers(-(2**15), 2**15 - 1).map(Data.long),
    st.just(Data.null()),
    st.just(_CLOCK_COLUMN),
)
_data = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=5).flatmap(
        lambda items: st.sampled_from([Data.structure(items), Data.array(items)])
    ),
    max_leaves=12,
)
_SETTABLE = [(8, Obises.CLOCK, 2), (8, Obises.CLOCK, 3), (70, Obises.DISCONNECT_CONTROL, 4)]
_METHODS = [(8, Obises.CLOCK, m) for m in (1, 3, 6)] + [
    (70, Obises.DISCONNECT_CONTROL, 1),
    (70, Obises.DISCONNECT_CONTROL, 2),
    (7, Obises.DISCONNECTOR_LOG, 1),
    (15, Obises.CURRENT_ASSOCIATION, 1),
]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([Obises.LOAD_PROFILE, Obises.BILLING_PROFILE, Obises.DISCONNECTOR_LOG]),
    st.integers(0, 4),
    _data,
)
def test_selective_access_never_raises(obis: Obis, selector: int, parameters: Data) -> None:
    meter = SimMeter(MeterConfig.create(1), clock=FakeClock())
    result = get_attribute(meter, 7, obis, 2, SelectiveAccess(selector, parameters))
    assert isinstance(result, Data | DataAccessResult)
    if isinstance(result, Data):
        encode_data(result)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_SETTABLE), st.sampled_from(_METHODS), _data)
def test_set_and_action_never_raise(
    target: tuple[int, Obis, int], method: tuple[int, Obis, int], value: Data
) -> None:
    meter = SimMeter(MeterConfig.create(1), clock=FakeClock())
    assert isinstance(set_attribute(meter, *target, value), DataAccessResult)
    result, returned = invoke_method(meter, *method, value)
    assert isinstance(result, ActionResult)
    assert returned is None or isinstance(returned, Data)
    encode_data(get_value(meter, Obises.CLOCK))
