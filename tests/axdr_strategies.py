"""Hypothesis strategies for A-XDR Data and the xDLMS APDU fields (shared by test_axdr.py,
test_apdu_xdlms.py and test_apdu_fuzz.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from cosem_objects.apdu.common import (
    ActionResult,
    AttributeDescriptor,
    DataAccessResult,
    MethodDescriptor,
    SelectiveAccess,
)
from cosem_objects.data import BitString, CompactArray, Data, DataType
from cosem_objects.dates import CosemDate, CosemDateTime, CosemTime
from cosem_objects.obis import Obis

_INT_RANGES = {
    DataType.INTEGER: (-(2**7), 2**7 - 1),
    DataType.LONG: (-(2**15), 2**15 - 1),
    DataType.DOUBLE_LONG: (-(2**31), 2**31 - 1),
    DataType.LONG64: (-(2**63), 2**63 - 1),
    DataType.UNSIGNED: (0, 2**8 - 1),
    DataType.LONG_UNSIGNED: (0, 2**16 - 1),
    DataType.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
    DataType.LONG64_UNSIGNED: (0, 2**64 - 1),
    DataType.ENUM: (0, 255),
    DataType.BCD: (-128, 127),
}


def _byte_or_wildcard() -> st.SearchStrategy[int | None]:
    """A date field: None (wire 0xFF) or any other byte value."""
    return st.none() | st.integers(0, 0xFE)


date_times = st.builds(
    CosemDateTime,
    year=st.none() | st.integers(0, 0xFFFE),
    month=_byte_or_wildcard(),
    day=_byte_or_wildcard(),
    day_of_week=_byte_or_wildcard(),
    hour=_byte_or_wildcard(),
    minute=_byte_or_wildcard(),
    second=_byte_or_wildcard(),
    hundredths=_byte_or_wildcard(),
    deviation=st.none() | st.integers(-0x7FFF, 0x7FFF),
    clock_status=_byte_or_wildcard(),
)
dates = st.builds(
    CosemDate,
    year=st.none() | st.integers(0, 0xFFFE),
    month=_byte_or_wildcard(),
    day=_byte_or_wildcard(),
    day_of_week=_byte_or_wildcard(),
)
times = st.builds(
    CosemTime,
    hour=_byte_or_wildcard(),
    minute=_byte_or_wildcard(),
    second=_byte_or_wildcard(),
    hundredths=_byte_or_wildcard(),
)

ascii_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=40)


def simple_data(kind: DataType) -> st.SearchStrategy[Data]:
    """Values of one simple (non-container) type."""
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        return st.integers(low, high).map(lambda v: Data(kind, v))
    strategies: dict[DataType, st.SearchStrategy[Any]] = {
        DataType.NULL_DATA: st.none(),
        DataType.DONT_CARE: st.none(),
        DataType.BOOLEAN: st.booleans(),
        DataType.FLOAT32: st.floats(width=32, allow_nan=False),
        DataType.FLOAT64: st.floats(allow_nan=False),
        # Lengths around the one-byte / 0x81 / 0x82 boundaries.
        DataType.OCTET_STRING: st.binary(max_size=300),
        DataType.VISIBLE_STRING: ascii_text,
        DataType.UTF8_STRING: st.text(max_size=40),
        DataType.BIT_STRING: st.text(alphabet="01", max_size=40).map(BitString),
        DataType.DATE_TIME: date_times,
        DataType.DATE: dates,
        DataType.TIME: times,
    }
    return strategies[kind].map(lambda v: Data(kind, v))


SIMPLE_TYPES = [
    t for t in DataType if t not in (DataType.ARRAY, DataType.STRUCTURE, DataType.COMPACT_ARRAY)
]
# Types that may describe a compact-array element (zero-size types are not allowed).
COMPACT_SIMPLE_TYPES = [
    t for t in SIMPLE_TYPES if t not in (DataType.NULL_DATA, DataType.DONT_CARE)
]

simple_values = st.sampled_from(SIMPLE_TYPES).flatmap(simple_data)


def _description(depth: int, containers: bool) -> st.SearchStrategy[tuple[Any, ...]]:
    simple = st.sampled_from(COMPACT_SIMPLE_TYPES).map(lambda t: (t,))
    if depth <= 0 or not containers:
        return simple
    inner = _description(depth - 1, containers)
    return st.one_of(
        simple,
        st.tuples(st.just(DataType.ARRAY), st.integers(1, 3), inner),
        st.lists(inner, min_size=1, max_size=3).map(lambda e: (DataType.STRUCTURE, tuple(e))),
    )


def _value_for(description: tuple[Any, ...]) -> st.SearchStrategy[Data]:
    kind = description[0]
    if kind == DataType.ARRAY:
        element = _value_for(description[2])
        return st.lists(element, min_size=description[1], max_size=description[1]).map(Data.array)
    if kind == DataType.STRUCTURE:
        return st.tuples(*(_value_for(d) for d in description[1])).map(Data.structure)
    return simple_data(DataType(kind))


def compact_arrays(containers: bool = False) -> st.SearchStrategy[Data]:
    """Compact arrays; with containers=True the elements may be arrays and structures."""

    @st.composite
    def build(draw: st.DrawFn) -> Data:
        description = draw(_description(2, containers))
        elements = draw(st.lists(_value_for(description), max_size=4))
        return Data(DataType.COMPACT_ARRAY, CompactArray(description, tuple(elements)))

    return build()


data_values: st.SearchStrategy[Data] = st.recursive(
    simple_values | compact_arrays(),
    lambda children: (
        st.lists(children, max_size=5).map(Data.array)
        | st.lists(children, max_size=5).map(Data.structure)
    ),
    max_leaves=12,
)

# -- APDU fields -------------------------------------------------------------------------------
obis_codes = st.builds(Obis, *(st.integers(0, 255) for _ in range(6)))
u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
iips = u8
attribute_descriptors = st.builds(AttributeDescriptor, u16, obis_codes, u8)
method_descriptors = st.builds(MethodDescriptor, u16, obis_codes, u8)
selective_access = st.builds(SelectiveAccess, u8, data_values)
optional_access = st.none() | selective_access
data_access_results = st.sampled_from(list(DataAccessResult))
action_results = st.sampled_from(list(ActionResult))
raw_blocks = st.binary(max_size=300)
