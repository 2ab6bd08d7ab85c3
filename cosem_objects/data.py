"""COSEM Data: the typed values that attributes, method parameters and notifications carry.

The value model on its own, apart from its wire encoding (cosem_objects.axdr): the interface
classes, the session and the simulator build and read Data far more often than they encode it,
and a reader looking for what a `long-unsigned` holds should not have to read the codec."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from cosem_objects.dates import CosemDate, CosemDateTime, CosemTime


class DataType(IntEnum):
    NULL_DATA = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DONT_CARE = 255

    @property
    def type_name(self) -> str:
        """The name used by the Blue Book and by the test vectors (e.g. 'long-unsigned')."""
        return _TYPE_NAMES[self]


_TYPE_NAMES = {t: t.name.lower().replace("_", "-") for t in DataType}
_TYPE_NAMES[DataType.UTF8_STRING] = "utf8-string"


@dataclass(frozen=True, slots=True)
class BitString:
    """Bits in wire order: bits[0] is the most significant bit of the first byte."""

    bits: str

    def __post_init__(self) -> None:
        if any(c not in "01" for c in self.bits):
            raise ValueError("bit-string holds only '0' and '1'")

    def to_bytes(self) -> bytes:
        padded = self.bits + "0" * (-len(self.bits) % 8)
        return bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))

    @classmethod
    def from_bytes(cls, raw: bytes, nbits: int) -> BitString:
        return cls("".join(f"{b:08b}" for b in raw)[:nbits])


# A compact-array type description: (DataType,) for simple types,
# (ARRAY, count, element) or (STRUCTURE, (element, ...)).
TypeDescription = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class CompactArray:
    description: TypeDescription
    elements: tuple[Data, ...]


@dataclass(frozen=True, slots=True)
class Data:
    """One typed A-XDR value. `value` holds: None (null, dont-care), bool, int, float, bytes
    (octet-string), str (visible/utf8), BitString, CosemDateTime/CosemDate/CosemTime,
    tuple[Data, ...] (array, structure) or CompactArray."""

    type: DataType
    value: Any = None

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def null(cls) -> Data:
        return _NULL

    @classmethod
    def boolean(cls, value: bool) -> Data:
        return cls(DataType.BOOLEAN, bool(value))

    @classmethod
    def integer(cls, value: int) -> Data:
        return cls(DataType.INTEGER, value)

    @classmethod
    def long(cls, value: int) -> Data:
        return cls(DataType.LONG, value)

    @classmethod
    def unsigned(cls, value: int) -> Data:
        return cls(DataType.UNSIGNED, value)

    @classmethod
    def long_unsigned(cls, value: int) -> Data:
        return cls(DataType.LONG_UNSIGNED, value)

    @classmethod
    def double_long(cls, value: int) -> Data:
        return cls(DataType.DOUBLE_LONG, value)

    @classmethod
    def double_long_unsigned(cls, value: int) -> Data:
        return cls(DataType.DOUBLE_LONG_UNSIGNED, value)

    @classmethod
    def long64(cls, value: int) -> Data:
        return cls(DataType.LONG64, value)

    @classmethod
    def long64_unsigned(cls, value: int) -> Data:
        return cls(DataType.LONG64_UNSIGNED, value)

    @classmethod
    def enum(cls, value: int) -> Data:
        return cls(DataType.ENUM, value)

    @classmethod
    def float32(cls, value: float) -> Data:
        return cls(DataType.FLOAT32, value)

    @classmethod
    def float64(cls, value: float) -> Data:
        return cls(DataType.FLOAT64, value)

    @classmethod
    def octet_string(cls, value: bytes) -> Data:
        return cls(DataType.OCTET_STRING, bytes(value))

    @classmethod
    def visible_string(cls, value: str) -> Data:
        return cls(DataType.VISIBLE_STRING, value)

    @classmethod
    def utf8_string(cls, value: str) -> Data:
        return cls(DataType.UTF8_STRING, value)

    @classmethod
    def bit_string(cls, bits: str) -> Data:
        return cls(DataType.BIT_STRING, BitString(bits))

    @classmethod
    def array(cls, elements: Sequence[Data]) -> Data:
        return cls(DataType.ARRAY, tuple(elements))

    @classmethod
    def structure(cls, elements: Sequence[Data]) -> Data:
        return cls(DataType.STRUCTURE, tuple(elements))

    @classmethod
    def date_time(cls, value: CosemDateTime) -> Data:
        return cls(DataType.DATE_TIME, value)

    # -- views ---------------------------------------------------------------------------
    def to_python(self) -> Any:
        """Plain Python: lists for array/structure, bytes/str/int/float/bool as they are."""
        if self.type in (DataType.ARRAY, DataType.STRUCTURE):
            return [element.to_python() for element in self.value]
        if self.type is DataType.COMPACT_ARRAY:
            return [element.to_python() for element in self.value.elements]
        if self.type is DataType.BIT_STRING:
            return self.value.bits
        return self.value

    def to_json(self) -> dict[str, Any]:
        """The typed JSON form used by the test vectors: {"type": "long-unsigned", "value": 1}."""
        value: Any
        if self.type in (DataType.ARRAY, DataType.STRUCTURE):
            value = [element.to_json() for element in self.value]
        elif self.type is DataType.COMPACT_ARRAY:
            value = [element.to_json() for element in self.value.elements]
        elif isinstance(self.value, bytes):
            value = self.value.hex().upper()
        elif isinstance(self.value, BitString):
            value = self.value.bits
        elif isinstance(self.value, CosemDateTime | CosemDate | CosemTime):
            value = self.value.to_bytes().hex().upper()
        else:
            value = self.value
        return {"type": self.type.type_name, "value": value}


_NULL = Data(DataType.NULL_DATA, None)
