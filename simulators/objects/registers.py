"""Data (class 1) and Register (class 3) objects of the simulated meter.

Registers hold integers with a scaler, as meters do: energy in Wh (scaler 0, u32), voltage in
0.1 V (scaler -1, u16), current in 0.01 A (scaler -2, u16), power in W (scaler 0, i32)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cosem_objects.classes import ScalerUnit
from cosem_objects.data import Data, DataType
from cosem_objects.obis import Obis
from simulators.objects.model import AccessLevel, AttributeDef, CosemObject, Meter

WH, W, V, A = 30, 27, 35, 33

_RANGES = {
    DataType.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
    DataType.DOUBLE_LONG: (-(2**31), 2**31 - 1),
    DataType.LONG_UNSIGNED: (0, 2**16 - 1),
    DataType.LONG: (-(2**15), 2**15 - 1),
    DataType.LONG64_UNSIGNED: (0, 2**64 - 1),
}


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    obis: Obis
    scaler: int
    unit: int
    kind: DataType
    value: Callable[[Meter], float]  # the physical value now, in `unit`

    def raw(self, meter: Meter) -> Data:
        low, high = _RANGES[self.kind]
        number = round(self.value(meter) / 10**self.scaler)
        return Data(self.kind, min(max(number, low), high))


def _phase(index: int, part: int) -> Callable[[Meter], float]:
    return lambda meter: meter.phase_values(index)[part]


REGISTERS: tuple[RegisterSpec, ...] = (
    RegisterSpec(
        Obis(1, 0, 1, 8, 0), 0, WH, DataType.DOUBLE_LONG_UNSIGNED, lambda m: m.energy()[0]
    ),
    RegisterSpec(
        Obis(1, 0, 1, 8, 1), 0, WH, DataType.DOUBLE_LONG_UNSIGNED, lambda m: m.energy()[1]
    ),
    RegisterSpec(
        Obis(1, 0, 1, 8, 2), 0, WH, DataType.DOUBLE_LONG_UNSIGNED, lambda m: m.energy()[2]
    ),
    RegisterSpec(
        Obis(1, 0, 2, 8, 0), 0, WH, DataType.DOUBLE_LONG_UNSIGNED, lambda m: m.energy()[3]
    ),
    RegisterSpec(Obis(1, 0, 1, 7, 0), 0, W, DataType.DOUBLE_LONG, lambda m: m.power()[0]),
    RegisterSpec(Obis(1, 0, 2, 7, 0), 0, W, DataType.DOUBLE_LONG, lambda m: m.power()[1]),
    RegisterSpec(Obis(1, 0, 32, 7, 0), -1, V, DataType.LONG_UNSIGNED, _phase(0, 0)),
    RegisterSpec(Obis(1, 0, 52, 7, 0), -1, V, DataType.LONG_UNSIGNED, _phase(1, 0)),
    RegisterSpec(Obis(1, 0, 72, 7, 0), -1, V, DataType.LONG_UNSIGNED, _phase(2, 0)),
    RegisterSpec(Obis(1, 0, 31, 7, 0), -2, A, DataType.LONG_UNSIGNED, _phase(0, 1)),
    RegisterSpec(Obis(1, 0, 51, 7, 0), -2, A, DataType.LONG_UNSIGNED, _phase(1, 1)),
    RegisterSpec(Obis(1, 0, 71, 7, 0), -2, A, DataType.LONG_UNSIGNED, _phase(2, 1)),
    RegisterSpec(Obis(1, 0, 21, 7, 0), 0, W, DataType.DOUBLE_LONG, _phase(0, 2)),
    RegisterSpec(Obis(1, 0, 41, 7, 0), 0, W, DataType.DOUBLE_LONG, _phase(1, 2)),
    RegisterSpec(Obis(1, 0, 61, 7, 0), 0, W, DataType.DOUBLE_LONG, _phase(2, 2)),
)


def register_object(spec: RegisterSpec, read: AccessLevel) -> CosemObject:
    scaler_unit = ScalerUnit(spec.scaler, spec.unit).to_data()
    return CosemObject(
        class_id=3,
        version=0,
        obis=spec.obis,
        attributes={
            1: logical_name_attribute(spec.obis, read),
            2: AttributeDef(read, lambda meter, _ctx, _access: spec.raw(meter)),
            3: AttributeDef(read, lambda _meter, _ctx, _access: scaler_unit),
        },
        methods={},
    )


def data_object(obis: Obis, read: AccessLevel, value: Callable[[Meter], Data]) -> CosemObject:
    return CosemObject(
        class_id=1,
        version=0,
        obis=obis,
        attributes={
            1: logical_name_attribute(obis, read),
            2: AttributeDef(read, lambda meter, _ctx, _access: value(meter)),
        },
        methods={},
    )


def logical_name_attribute(obis: Obis, read: AccessLevel) -> AttributeDef:
    name = Data.octet_string(obis.to_bytes())
    return AttributeDef(read, lambda _meter, _ctx, _access: name)
